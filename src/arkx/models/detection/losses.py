"""Set-prediction loss of the detector (DINO's terms): match queries to targets, then focal + L1 + GIoU.

For the final output and for every auxiliary (earlier-layer) output, queries are matched to the
targets (Hungarian, :mod:`.matcher`); every query is trained by a sigmoid focal loss towards its
matched target's class (unmatched queries towards "no class": all zeros), and matched queries'
boxes by L1 and 1 - GIoU. Each term is divided by the number of target boxes in the batch (at least
1), so an image with no boxes only teaches its queries to say "background".

Two more parts when the decoder output carries them (:class:`.decoder.DetectionDecoder`):

- ``enc``, the two-stage proposals selected from the encoder memory: the same matched terms (all
  classes, as DINO's intermediate loss), suffix ``_enc``.
- ``dn``, the contrastive denoising slots, for the final and every auxiliary layer (suffixes ``_dn`` and
  ``_dn_<i>``): no matching, each slot knows the target it copies. Focal loss on every (non-padding)
  slot towards its target's class for positives and "no object" for negatives; L1 and GIoU on
  positives only. Divided by ``number of target boxes * groups`` (each group copies every box once).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from arkx.models.detection.matcher import HungarianMatcher


class SetCriterion(nn.Module):
    """forward(outputs, targets) -> dict of scalar losses.

    Keys: ``loss`` (the weighted total to back-propagate), ``loss_class``, ``loss_bbox``,
    ``loss_giou`` (final layer, unweighted) and ``loss_class_<i>``, ``loss_bbox_<i>``,
    ``loss_giou_<i>`` for auxiliary output ``i``; ``*_enc`` for the two-stage proposals, ``*_dn`` and
    ``*_dn_<i>`` for the denoising slots (module docstring), each with the same weights as the matched terms,
    as DINO weighs them. outputs/targets as in :class:`HungarianMatcher`.
    Default weights are those of Deformable DETR / DINO (class 2, L1 5, GIoU 2); the matcher's costs
    default to the same values.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None, weight_class: float = 2.0,
                 weight_bbox: float = 5.0, weight_giou: float = 2.0, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, aux_loss: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher or HungarianMatcher(weight_class, weight_bbox, weight_giou, focal_alpha, focal_gamma)
        self.weights = dict(loss_class=weight_class, loss_bbox=weight_bbox, loss_giou=weight_giou)
        self.focal_alpha, self.focal_gamma, self.aux_loss = focal_alpha, focal_gamma, aux_loss

    def class_loss(self, logits: torch.Tensor, targets: list[dict], matches, num_boxes: float) -> torch.Tensor:
        one_hot = torch.zeros_like(logits)
        for i, ((query_index, target_index), target) in enumerate(zip(matches, targets)):
            one_hot[i, query_index.to(logits.device), target["labels"][target_index].to(logits.device)] = 1
        focal = sigmoid_focal_loss(logits, one_hot, alpha=self.focal_alpha, gamma=self.focal_gamma,
                                   reduction="none")
        return focal.sum() / num_boxes

    def box_losses(self, boxes: torch.Tensor, targets: list[dict], matches,
                   num_boxes: float) -> tuple[torch.Tensor, torch.Tensor]:
        predicted = torch.cat([boxes[i, q.to(boxes.device)] for i, (q, _) in enumerate(matches)])
        wanted = torch.cat([t["boxes"].to(boxes)[j.to(boxes.device)] for (_, j), t in zip(matches, targets)])
        if predicted.numel() == 0:
            zero = boxes.sum() * 0  # keeps the graph (and every parameter's .grad) defined
            return zero, zero
        l1 = (predicted - wanted).abs().sum() / num_boxes
        giou = torch.diag(generalized_box_iou(box_convert(predicted, "cxcywh", "xyxy"),
                                              box_convert(wanted, "cxcywh", "xyxy")))
        return l1, (1 - giou).sum() / num_boxes

    def single_output(self, output: dict, targets: list[dict], num_boxes: float) -> dict[str, torch.Tensor]:
        matches = self.matcher(output, targets)
        # float32 even under autocast: GIoU and focal terms of near-perfect boxes lose their signal in bf16
        l1, giou = self.box_losses(output["boxes"].float(), targets, matches, num_boxes)
        return dict(loss_class=self.class_loss(output["logits"].float(), targets, matches, num_boxes),
                    loss_bbox=l1, loss_giou=giou)

    def denoising_terms(self, output: dict, dn: dict, targets: list[dict],
                        num_boxes: float) -> dict[str, torch.Tensor]:
        """Loss terms of one layer's denoising slots (``output``: dict(logits, boxes) ``[B, P, ...]``; ``dn``: the
        decoder's ``dn`` dict with ``target_index`` (-1 = padding), ``positive`` and ``groups``)."""
        logits, boxes = output["logits"].float(), output["boxes"].float()
        target_index, positive = dn["target_index"].to(logits.device), dn["positive"].to(logits.device)
        valid = target_index >= 0
        one_hot = torch.zeros_like(logits)
        wanted_boxes = []
        for i, target in enumerate(targets):
            slots = positive[i].nonzero().flatten()
            copied = target_index[i, slots]
            one_hot[i, slots, target["labels"].to(logits.device)[copied]] = 1
            wanted_boxes.append(target["boxes"].to(boxes)[copied])
        normaliser = num_boxes * float(dn["groups"])
        focal = sigmoid_focal_loss(logits, one_hot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none")
        loss_class = (focal.sum(-1) * valid).sum() / normaliser
        predicted, wanted = boxes[positive], torch.cat(wanted_boxes)
        if predicted.numel() == 0:
            zero = boxes.sum() * 0
            return dict(loss_class=loss_class, loss_bbox=zero, loss_giou=zero)
        giou = torch.diag(generalized_box_iou(box_convert(predicted, "cxcywh", "xyxy"),
                                              box_convert(wanted, "cxcywh", "xyxy")))
        return dict(loss_class=loss_class, loss_bbox=(predicted - wanted).abs().sum() / normaliser,
                    loss_giou=(1 - giou).sum() / normaliser)

    def named_terms(self, outputs: dict, targets: list[dict], num_boxes: float):
        """``(suffix, terms)`` of every part of ``outputs``: final, auxiliary, proposals, denoising."""
        yield "", self.single_output(outputs, targets, num_boxes)
        if self.aux_loss:
            for i, aux in enumerate(outputs.get("aux", [])):
                yield f"_{i}", self.single_output(aux, targets, num_boxes)
        if "enc" in outputs:
            yield "_enc", self.single_output(outputs["enc"], targets, num_boxes)
        dn = outputs.get("dn")
        if dn is not None:
            yield "_dn", self.denoising_terms(dn, dn, targets, num_boxes)
            if self.aux_loss:
                for i, aux in enumerate(dn.get("aux", [])):
                    yield f"_dn_{i}", self.denoising_terms(aux, dn, targets, num_boxes)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        num_boxes = max(float(sum(int(t["labels"].numel()) for t in targets)), 1.0)
        losses, total = {}, 0.0
        for suffix, terms in self.named_terms(outputs, targets, num_boxes):
            total = total + sum(self.weights[name] * value for name, value in terms.items())
            losses.update({f"{name}{suffix}": value for name, value in terms.items()})
        return dict(loss=total, **losses)
