"""Contrastive denoising (CDN) queries of DINO: noised ground truth the decoder learns to clean up (training only).

From each image's target boxes the decoder gets extra queries, in ``groups``: every group holds one
*positive* (small noise) and one *negative* (larger noise) copy of every target. A copy's content is the
embedding of its class (flipped to a random class with probability ``label_noise / 2``, as in DINO); its
reference box is the target box with each corner moved by a random fraction of the box's half size times
``box_noise``: fractions in ``[0, 1)`` for positives, ``[1, 2)`` for negatives. The decoder must bring
positives back to their box and class, and call negatives "no object" (the contrast teaches it to reject
near-duplicates, which the Hungarian-matched queries otherwise learn slowly). The targets are known, so
no matching is needed: the loss (:meth:`arkx.models.detection.losses.SetCriterion.denoising_terms`) reads
which target each query copies.

Images of a batch have different numbers of boxes: each group is ``2 * most`` slots (``most`` = the largest
count in the batch; positives first, then negatives), and an image's unused slots are padding: hidden from
every other query by the attention mask and left out of the loss (DINO lets its padding slots be seen and
trains them as background; hiding them makes an image's denoising independent of the batch it is in).

Self-attention mask over ``[denoising slots, matching queries]`` (True = may not attend), so that nothing of
the ground truth leaks into the matching queries and the groups stay independent reconstructions:
matching queries never see denoising slots; a group never sees another group; padding slots are seen by
nobody but themselves. Denoising slots do see the matching queries (no leakage in that direction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_convert

#: smallest side of a noised box (a negative's corners may cross): keeps its inverse sigmoid finite
MIN_SIDE = 1e-4


@dataclass
class DenoisingQueries:
    """The denoising part of one batch. ``size`` slots per image, ``groups`` groups of ``2 * per_group`` slots.

    labels: int64 ``[B, size]`` (noised classes; 0 in padding slots). boxes: ``[B, size, 4]`` noised
    normalised cxcywh. target_index: int64 ``[B, size]``, the target a slot copies (-1 = padding).
    positive: bool ``[B, size]``. attention_mask: bool ``[B, size + Q, size + Q]`` over
    ``[denoising, matching]`` for ``Q`` matching queries (True = blocked).
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    target_index: torch.Tensor
    positive: torch.Tensor
    groups: int
    per_group: int
    attention_mask: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.labels.shape[1])


def group_count(total: int, most_boxes: int) -> int:
    """Groups that fit ``total`` denoising slots when each group is ``2 * most_boxes`` slots (at least one)."""
    return max(1, total // (2 * most_boxes))


def _padded_targets(targets: list[dict], most: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets stacked to ``most`` per image: boxes ``[B, most, 4]``, labels ``[B, most]``, present ``[B, most]``."""
    batch = len(targets)
    boxes = torch.full((batch, most, 4), 0.5, device=device)
    labels = torch.zeros(batch, most, dtype=torch.long, device=device)
    present = torch.zeros(batch, most, dtype=torch.bool, device=device)
    for i, target in enumerate(targets):
        n = int(target["labels"].numel())
        boxes[i, :n] = target["boxes"].to(device=device, dtype=boxes.dtype).reshape(-1, 4)
        labels[i, :n] = target["labels"].to(device).long()
        present[i, :n] = True
    return boxes, labels, present


def noised_labels(labels: torch.Tensor, num_classes: int, label_noise: float) -> torch.Tensor:
    """Each label replaced by a uniformly random class (possibly itself) with probability ``label_noise / 2``."""
    flip = torch.rand(labels.shape, device=labels.device) < label_noise * 0.5
    random_classes = torch.randint(0, num_classes, labels.shape, device=labels.device)
    return torch.where(flip, random_classes, labels)


def noised_boxes(boxes: torch.Tensor, negative: torch.Tensor, box_noise: float) -> torch.Tensor:
    """Corners moved by ``sign * fraction * half side * box_noise``, fraction in [0, 1) (positives) or [1, 2)
    (``negative``); boxes ``[..., 4]`` normalised cxcywh, result clipped to the image."""
    corners = box_convert(boxes, "cxcywh", "xyxy")
    half_sides = torch.cat([boxes[..., 2:], boxes[..., 2:]], dim=-1) / 2  # (w, h, w, h) / 2 for (x0, y0, x1, y1)
    sign = torch.randint(0, 2, corners.shape, device=boxes.device).to(boxes.dtype) * 2 - 1
    fraction = torch.rand(corners.shape, device=boxes.device) + negative[..., None].to(boxes.dtype)
    moved = (corners + sign * fraction * half_sides * box_noise).clamp(0, 1)
    out = box_convert(moved, "xyxy", "cxcywh")
    return torch.cat([out[..., :2], out[..., 2:].clamp(min=MIN_SIDE)], dim=-1)


def attention_mask(groups: int, per_group: int, num_matching: int, padding: torch.Tensor) -> torch.Tensor:
    """bool ``[B, T, T]`` with ``T = groups * 2 * per_group + num_matching`` (module docstring); ``padding``:
    bool ``[B, groups * 2 * per_group]`` marks the unused slots."""
    size = groups * 2 * per_group
    total = size + num_matching
    device = padding.device
    blocked = torch.zeros(total, total, dtype=torch.bool, device=device)
    blocked[size:, :size] = True  # matching queries never see the (ground-truth carrying) denoising slots
    group_of = torch.arange(size, device=device) // (2 * per_group)
    blocked[:size, :size] = group_of[:, None] != group_of[None, :]  # groups stay independent
    blocked = blocked[None].repeat(padding.shape[0], 1, 1)
    blocked[:, :, :size] |= padding[:, None, :]  # padding slots are seen by nobody...
    eye = torch.eye(total, dtype=torch.bool, device=device)
    return blocked & ~eye  # ...but themselves (no query has an empty row)


def make_denoising_queries(targets: list[dict], num_classes: int, num_matching: int, total: int,
                           label_noise: float, box_noise: float) -> DenoisingQueries | None:
    """The denoising part for a batch's ``targets`` (per image ``dict(boxes cxcywh, labels)``), about ``total``
    slots per image (at least one group); None when the batch has no box or ``total`` is 0."""
    counts = [int(t["labels"].numel()) for t in targets]
    most = max(counts, default=0)
    if most == 0 or total <= 0:
        return None
    device = targets[0]["labels"].device
    groups = group_count(total, most)
    size = groups * 2 * most
    slot = torch.arange(size, device=device)
    within = slot % (2 * most)
    negative = (within >= most)[None].expand(len(targets), -1)
    copied = within % most  # which target (of the padded list) each slot copies
    boxes, labels, present = _padded_targets(targets, most, device)
    valid = present[:, copied]
    return DenoisingQueries(
        labels=torch.where(valid, noised_labels(labels[:, copied], num_classes, label_noise), 0),
        boxes=noised_boxes(boxes[:, copied], negative, box_noise),
        target_index=torch.where(valid, copied[None], -1),
        positive=~negative & valid,
        groups=groups, per_group=most,
        attention_mask=attention_mask(groups, most, num_matching, ~valid))
