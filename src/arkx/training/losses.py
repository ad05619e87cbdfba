"""Losses: masked multi-label BCE, masked softmax CE, and student-teacher consistency.

Missing labels (NaN targets) never count as negatives: they contribute zero loss and zero gradient.
The mean is over labelled entries only, so a batch with few labels is not down-weighted silently.
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
    if kind == "multilabel":
        return masked_bce(logits, targets)
    if kind == "multiclass":
        return masked_cross_entropy(logits, targets)
    raise ValueError(f"unknown task kind {kind!r}")


def consistency_loss(student_proj: torch.Tensor, teacher_proj: torch.Tensor) -> torch.Tensor:
    """MSE between student and (detached) teacher projections; gradient flows to the student only."""
    return F.mse_loss(student_proj.float(), teacher_proj.detach().float())


def combine(task: torch.Tensor, consistency: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - c)·task + c·consistency, the authors' weighting."""
    return (1.0 - weight) * task + weight * consistency
