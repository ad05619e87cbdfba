"""Losses: masked multi-label BCE, masked softmax CE, segmentation BCE + soft Dice, and student-teacher consistency.

Missing labels (NaN targets) never count as negatives: they contribute zero loss and zero gradient.
The mean is over labelled entries only, so a batch with few labels is not down-weighted silently.
The same holds for masks: a structure not annotated for an image (``present`` False) gives no loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over entries whose target is not NaN (0 if none are labelled)."""
    mask = ~torch.isnan(targets)
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    per_entry = F.binary_cross_entropy_with_logits(logits.float(), safe.float(), reduction="none")
    per_entry = torch.where(mask, per_entry, torch.zeros_like(per_entry))
    return per_entry.sum() / mask.sum().clamp(min=1)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax CE for one-hot (or soft) target rows; rows with any NaN are unlabelled and skipped."""
    labelled = ~torch.isnan(targets).any(dim=1)
    safe = torch.where(labelled[:, None], targets, torch.zeros_like(targets))
    per_row = -(safe.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    per_row = torch.where(labelled, per_row, torch.zeros_like(per_row))
    return per_row.sum() / labelled.sum().clamp(min=1)


def task_loss(kind: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss of a task of ``kind`` (its registered :class:`arkx.tasks.TaskKind` computes it)."""
    from ..tasks import get_kind

    return get_kind(kind).loss(logits, targets)


#: Soft Dice smoothing: added to numerator and denominator, so an empty structure predicted empty costs 0 and
#: the gradient stays finite; 1 pixel is small next to any structure at the sizes arkx trains at.
DICE_SMOOTH = 1.0


def _check_mask_shapes(logits: torch.Tensor, masks: torch.Tensor, present: torch.Tensor) -> None:
    if logits.dim() != 4 or tuple(masks.shape) != tuple(logits.shape) or tuple(present.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"segmentation loss: logits {tuple(logits.shape)}, masks {tuple(masks.shape)} and present "
                         f"{tuple(present.shape)}; expected [B, M, H, W], [B, M, H, W] and [B, M]")


def masked_mask_bce(logits: torch.Tensor, masks: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean pixel BCE-with-logits over the (image, structure) pairs that are annotated (0 if none are)."""
    _check_mask_shapes(logits, masks, present)
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), masks.float(), reduction="none")
    per_pair = per_pixel.mean(dim=(2, 3))
    return _mean_over_present(per_pair, present)


def masked_soft_dice(logits: torch.Tensor, masks: torch.Tensor, present: torch.Tensor,
                     smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Mean soft Dice loss ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` (``p`` the sigmoid probabilities,
    ``s`` = ``smooth``) per image and structure, over the annotated pairs (0 if none are)."""
    _check_mask_shapes(logits, masks, present)
    probs = torch.sigmoid(logits.float())
    target = masks.float()
    intersection = (probs * target).sum(dim=(2, 3))
    total = probs.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    per_pair = 1.0 - (2.0 * intersection + smooth) / (total + smooth)
    return _mean_over_present(per_pair, present)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (equal weights), each a mean over annotated (image, structure) pairs."""
    return masked_mask_bce(logits, masks, present) + masked_soft_dice(logits, masks, present)


def _mean_over_present(per_pair: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    # torch.where, not multiplication: a non-finite value on an unannotated pair must not leak in as NaN
    present = present.to(device=per_pair.device, dtype=torch.bool)
    kept = torch.where(present, per_pair, torch.zeros_like(per_pair))
    return kept.sum() / present.sum().clamp(min=1)


def consistency_loss(student_proj: torch.Tensor, teacher_proj: torch.Tensor) -> torch.Tensor:
    """MSE between student and (detached) teacher projections; gradient flows to the student only."""
    return F.mse_loss(student_proj.float(), teacher_proj.detach().float())


def combine(task: torch.Tensor, consistency: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - c)·task + c·consistency, the authors' weighting."""
    return (1.0 - weight) * task + weight * consistency
