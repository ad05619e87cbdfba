"""Hungarian matching of queries to target boxes (one-to-one), as in DETR-family detectors.

The cost of assigning query ``q`` to target ``t`` is
``w_class * focal_cost(q, class_t) + w_l1 * |box_q - box_t|_1 + w_giou * (-GIoU(box_q, box_t))``,
and ``scipy.optimize.linear_sum_assignment`` picks the assignment of least total cost per image.
The class cost is the focal loss of calling ``q`` positive for ``class_t`` minus that of calling it
negative, so it matches the sigmoid focal classification loss the criterion trains with.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
                     gamma: float = 2.0) -> torch.Tensor:
    """``[Q, n]`` cost of labelling each query with each target's class (lower = better)."""
    prob = logits.sigmoid()[:, labels]
    eps = 1e-8
    positive = alpha * (1 - prob) ** gamma * -(prob + eps).log()
    negative = (1 - alpha) * prob ** gamma * -(1 - prob + eps).log()
    return positive - negative


class HungarianMatcher:
    """__call__(outputs, targets) -> list over images of (query_index int64 [k], target_index int64 [k]).

    outputs: dict(logits [B, Q, C], boxes [B, Q, 4] cxcywh normalised); targets: list of
    dict(labels int64 [n_i], boxes [n_i, 4] cxcywh normalised). ``k = min(Q, n_i)``; an image
    without targets gives two empty index tensors.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor, target: dict) -> torch.Tensor:
        """``[Q, n]`` total matching cost for one image."""
        class_cost = focal_class_cost(logits, target["labels"], self.focal_alpha, self.focal_gamma)
        l1_cost = torch.cdist(boxes, target["boxes"].to(boxes.dtype), p=1)
        giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"),
                                   box_convert(target["boxes"].to(boxes.dtype), "cxcywh", "xyxy"))
        return self.cost_class * class_cost + self.cost_bbox * l1_cost - self.cost_giou * giou

    @torch.no_grad()
    def __call__(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        matches = []
        for logits, boxes, target in zip(outputs["logits"], outputs["boxes"], targets):
            if target["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.long)
                matches.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(logits.float(), boxes.float(), target).cpu()
            query_index, target_index = linear_sum_assignment(cost.numpy())
            matches.append((torch.as_tensor(query_index, dtype=torch.long),
                            torch.as_tensor(target_index, dtype=torch.long)))
        return matches
