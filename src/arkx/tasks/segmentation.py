"""The ``segmentation`` kind: one sigmoid mask per structure, from a UperNet decoder shared by every dataset.

The shared decoder (:class:`arkx.models.segmentation.UperNetDecoder`, the model's ``seg_decoder`` branch,
options from ``model.branch_options["seg_decoder"]``) reads the backbone's pyramid; each dataset's head
(``model.seg_heads[name]``) is a 1x1 conv to its structures, upsampled to the input's size. Structures are
independent (multi-label: lungs and heart may overlap), so each has its own sigmoid.

Targets are the batch's masks on the model input's grid (the loader's view: ``arkx.data.geometry``'s
``warp_batch`` / ``resize_batch``) with their ``mask_present`` flags; a structure not annotated for an
image gives no loss and no score. The loss is BCE + soft Dice (:func:`arkx.training.losses.segmentation_loss`),
scores are Dice and IoU (:class:`arkx.evaluation.segmentation.SegmentationCounts`, batch by batch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ArkxValueError
from .base import Task, TaskKind, TaskScore, register_kind

#: the model's branch holding the shared decoder, and the head dictionary of this kind
DECODER = "seg_decoder"


class SegmentationKind(TaskKind):
    name = "segmentation"
    head_attr = "seg_heads"
    needs_pyramid = True
    loader_targets = ("masks",)

    def build_head(self, task: Task, model: Any) -> nn.Module:
        from ..models.segmentation import SegmentationHead

        decoder = self.decoder(model)
        return SegmentationHead(decoder.channels, task.num_outputs)

    def decoder(self, model: Any) -> nn.Module:
        """The model's shared UperNet decoder, built on first need from ``model.branch_options["seg_decoder"]``."""
        from ..models.segmentation import UperNetDecoder

        options = dict(model.branch_options.get(DECODER, {}))
        return model.ensure_branch(DECODER, lambda: UperNetDecoder(model.pyramid_channels, **options))

    def decoder_features(self, model: Any, features: Any) -> torch.Tensor:
        """The decoder's maps ``[B, channels, H/4, W/4]`` (a consistency site of Foundation X)."""
        from ..models.features import branch_output

        if features.pyramid is None:
            raise ValueError("segmentation needs the feature pyramid: forward_features(x, pyramid=True)")
        return branch_output(features, DECODER, lambda: model.seg_decoder(features.pyramid))

    def head_output(self, model: Any, features: Any, task: Task, targets: Any = None) -> torch.Tensor:
        """Logits ``[B, M, H, W]`` at the input's size (``features.image_size``); ``targets`` is not used."""
        return model.seg_heads[task.name](self.decoder_features(model, features), features.image_size)

    def targets(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masks bool [B, M, H, W], present bool [B, M])`` from a batch on the model input's grid (all
        structures count as annotated when the batch has no ``mask_present``)."""
        if batch.masks is None:
            raise ArkxValueError("segmentation task: the batch has no masks (the dataset declares no mask labels)")
        masks = batch.masks.to(torch.bool)
        present = batch.mask_present
        if present is None:
            present = torch.ones(masks.shape[:2], dtype=torch.bool, device=masks.device)
        return masks, present.to(torch.bool)

    def batch_targets(self, batch: Any, data: Any = None, generator: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss targets (:meth:`targets`; masks have no label policy, so ``data`` and ``generator`` are unused)."""
        return self.targets(batch)

    def eval_targets(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`targets` on the CPU."""
        masks, present = self.targets(batch)
        return masks.cpu(), present.cpu()

    def loss(self, output: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        from ..training.losses import segmentation_loss

        masks, present = targets
        return segmentation_loss(output, masks, present)

    def loss_count(self, targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return targets[1].sum()  # the losses are means over the annotated (image, structure) pairs

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """Per-structure probabilities (sigmoid), detached."""
        return torch.sigmoid(output.detach().float())

    def score(self, predictions: Any, targets: Any, task: Task) -> TaskScore:
        """Dice (``mean``: macro over structures) and IoU per image and structure, counted batch by batch.

        ``predictions``: probabilities ``[N, M, H, W]`` or a list of per-batch ones; ``targets``: ``(masks,
        present)`` or a list of per-batch pairs. Threshold 0.5; an empty ground truth is left out of the means
        (:mod:`arkx.evaluation.segmentation`). ``raw`` is the :class:`~arkx.evaluation.segmentation.SegmentationScores`.
        """
        from ..evaluation.segmentation import SegmentationCounts

        if not isinstance(predictions, list):
            predictions, targets = [predictions], [targets]
        if len(predictions) != len(targets):
            raise ArkxValueError(f"segmentation score: {len(predictions)} batches of predictions, {len(targets)} of targets")
        counts = SegmentationCounts(task.label_names)
        for probabilities, (masks, present) in zip(predictions, targets):
            counts.update(probabilities, masks, present)
        scores = counts.scores()
        details = {"iou": scores.mean_iou, **{f"iou/{k}": v for k, v in scores.per_class_iou.items()}}
        return TaskScore("dice", scores.mean_dice, scores.per_class_dice, details, raw=scores)


register_kind(SegmentationKind())
