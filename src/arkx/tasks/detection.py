"""The ``detection`` kind: boxes with classes, from a DINO detector on the backbone's pyramid.

The deformable encoder (:class:`arkx.models.detection.DeformableEncoder`, the model's ``det_encoder``
branch) is shared by every detection dataset; each dataset has its own decoder (``model.det_heads[name]``:
its proposal head for mixed query selection, queries, denoising label embeddings, iterative box refinement
with look-forward-twice, class and box heads per layer), as Foundation X lays them out. Options come from
``model.branch_options["det_encoder"]`` and ``["det_decoder"]`` (d_model, layers, queries, ``two_stage``,
``anchor_side``, ``dn_number``, ``dn_label_noise``, ``dn_box_noise``); the ones used are written back, so a saved model
rebuilds the same architecture.

Targets are the batch's boxes on the model input's grid (after the same geometry as the image:
``arkx.data.geometry``), converted to normalised ``cxcywh``. In training they also reach the head
(``head_output(..., targets)``) for the contrastive denoising queries; without them (inference) the output
is ``logits``, ``boxes``, ``aux`` (+ ``image_size``) only. The loss is the set criterion (Hungarian
matching; sigmoid focal + L1 + GIoU on the final and every auxiliary output, the selected proposals
``enc`` and the denoising part ``dn``, which is trained against its known targets). Predictions are the top
``top_k`` (query, class) pairs in input pixels; the score is COCO mAP at IoU 0.4 (also 0.5 and 0.5:0.95)
through pycocotools (:func:`arkx.evaluation.detection.mean_average_precision`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ArkxValueError
from .base import Task, TaskKind, TaskScore, register_kind

ENCODER = "det_encoder"
DECODER_OPTIONS = "det_decoder"
#: small defaults: a user sets bigger ones through model.branch_options (DINO uses d_model 256, 6+6 layers,
#: 900 selected queries, dn_number 100, label noise 0.5, box noise 0.4). ``num_queries`` is the number of
#: proposals selected (two-stage); ``dn_number`` about how many denoising slots per image (0 = off).
ENCODER_DEFAULTS = dict(d_model=128, n_layers=2, n_heads=8, n_points=4, ffn_dim=512)
DECODER_DEFAULTS = dict(num_queries=50, n_layers=3, n_heads=8, n_points=4, ffn_dim=512, two_stage=True,
                        dn_number=20, dn_label_noise=0.5, dn_box_noise=0.4, anchor_side=0.05)
TOP_K = 100


#: what a decoder saved before the DINO options existed was: no two-stage selection, no denoising queries
LEGACY_DECODER = dict(two_stage=False, dn_number=0)


def saved_branch_options(branches: dict | None) -> dict | None:
    """Branch options as a saved model recorded them, completed for files written by an older arkx: a saved
    ``det_decoder`` always lists every option of its time, so one without ``two_stage`` is the plain
    deformable decoder and rebuilds as such (not with today's defaults, which its weights would not fit)."""
    if not branches or DECODER_OPTIONS not in branches or "two_stage" in branches[DECODER_OPTIONS]:
        return branches
    return {**branches, DECODER_OPTIONS: {**branches[DECODER_OPTIONS], **LEGACY_DECODER}}


def _options(model: Any, key: str, defaults: dict) -> dict:
    """The options of ``key`` (the user's over the defaults), written back into ``model.branch_options`` so the
    model's saved branch config rebuilds exactly this architecture even if the defaults change later."""
    options = {**defaults, **dict(model.branch_options.get(key, {}))}
    model.branch_options[key] = dict(options)
    return options


class DetectionKind(TaskKind):
    name = "detection"
    head_attr = "det_heads"
    needs_pyramid = True
    loader_targets = ("boxes",)

    def __init__(self) -> None:
        self._criteria: dict[tuple[int, int], nn.Module] = {}

    def encoder(self, model: Any) -> nn.Module:
        """The model's shared deformable encoder, built on first need."""
        from ..models.detection import DeformableEncoder

        options = _options(model, ENCODER, ENCODER_DEFAULTS)
        return model.ensure_branch(ENCODER, lambda: DeformableEncoder(list(model.pyramid_channels), **options))

    def build_head(self, task: Task, model: Any) -> nn.Module:
        from ..models.detection import DetectionDecoder

        encoder = self.encoder(model)
        options = _options(model, DECODER_OPTIONS, DECODER_DEFAULTS)
        return DetectionDecoder(task.num_outputs, d_model=encoder.d_model, n_levels=len(model.pyramid_channels),
                                **options)

    def encoder_features(self, model: Any, features: Any):
        """The encoder's output (a consistency site of Foundation X), computed once per forward pass: the head
        and the consistency site read the same tensor (:func:`arkx.models.features.branch_output`)."""
        from ..models.features import branch_output

        if features.pyramid is None:
            raise ValueError("detection needs the feature pyramid: forward_features(x, pyramid=True)")
        return branch_output(features, ENCODER, lambda: model.det_encoder(features.pyramid))

    def head_output(self, model: Any, features: Any, task: Task, targets: Any = None) -> dict:
        """The decoder's dict (``logits`` [B, Q, C], ``boxes`` [B, Q, 4] normalised cxcywh, ``aux``; in training
        also ``enc`` and, given ``targets`` (:meth:`batch_targets`), ``dn``) plus ``image_size`` (the input's
        side, to turn boxes into pixels)."""
        out = dict(model.det_heads[task.name](self.encoder_features(model, features), targets=targets))
        out["image_size"] = features.image_size
        return out

    def batch_targets(self, batch: Any, data: Any = None, generator: Any = None) -> list[dict[str, torch.Tensor]]:
        """Per image ``dict(boxes normalised cxcywh, labels)`` from the batch's pixel boxes on its grid."""
        from ..models.detection import make_targets

        if batch.boxes is None:
            raise ArkxValueError("detection task: the batch has no boxes (the dataset declares no box or mask labels)")
        return make_targets(batch.boxes, batch.box_labels, batch.grid)

    def loss(self, output: dict, targets: list[dict]) -> torch.Tensor:
        return self._criterion(output)(output, targets)["loss"]

    def _criterion(self, output: dict) -> nn.Module:
        from ..models.detection import SetCriterion

        num_classes = int(output["logits"].shape[-1])
        key = (num_classes, len(output.get("aux", [])))
        if key not in self._criteria:
            self._criteria[key] = SetCriterion(num_classes)
        return self._criteria[key]

    def predict(self, output: dict) -> list[dict[str, torch.Tensor]]:
        """Per image the top (query, class) pairs: ``dict(boxes xyxy pixels, scores, labels)``."""
        from ..models.detection import postprocess

        size = output["image_size"]
        return postprocess(output, size if isinstance(size, int) else tuple(size), top_k=TOP_K)

    def eval_targets(self, batch: Any) -> list[dict[str, Any]]:
        if batch.boxes is None:
            raise ArkxValueError("detection task: the batch has no boxes")
        return [dict(boxes=b.detach().cpu().numpy(), labels=lab.detach().cpu().numpy())
                for b, lab in zip(batch.boxes, batch.box_labels)]

    def score(self, predictions: list, targets: list, task: Task) -> TaskScore:
        """COCO mAP at IoU 0.4 (``mean``), with mAP50 and mAP50:95 in ``details``; per-class AP40."""
        from ..evaluation.detection import mean_average_precision

        predictions, targets = _flatten(predictions), _flatten(targets)
        result = mean_average_precision(predictions, targets, task.label_names)
        return TaskScore("map40", float(result.map40), dict(result.per_class_ap40),
                         dict(map50=float(result.map50), map50_95=float(result.map50_95)), raw=result)


def _flatten(per_batch: list) -> list:
    """Per-image entries from a list of per-batch lists (or already per image)."""
    if per_batch and isinstance(per_batch[0], list):
        return [entry for batch in per_batch for entry in batch]
    return list(per_batch)


register_kind(DetectionKind())
