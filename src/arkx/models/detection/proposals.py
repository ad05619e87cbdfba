"""Mixed query selection (DINO's two-stage): the encoder memory proposes where the decoder's queries start.

Every encoder position is an anchor box: its pixel centre on its level, sides ``anchor_side * 2**level``
(level 0 = the finest map; DINO's 0.05 is the default, a fraction of the image, so the anchors cover the
same part of the image at any input size; on tiny inputs a larger one helps, e.g. 0.1 at 32 px). A proposal head, one per dataset because
classes differ per dataset, reads the memory (Linear + LayerNorm, then a class head and a box MLP
predicting a correction of the anchor in inverse-sigmoid space). The ``k`` positions whose best class
logit is highest give the decoder its initial reference boxes, detached, so the decoder's losses do not
move the proposals; the decoder's content queries stay learned embeddings ("mixed": positional part
from the image, content part static). The selected proposals are trained by their own set loss (the
``enc`` output: Hungarian matching, focal + L1 + GIoU, all classes as in DINO).

Differences from the authors' DINO: no padding mask and no "valid proposal" filter (arkx inputs are
padding-free square crops; an anchor reaching past the image is clipped by the inverse sigmoid's clamp
instead of being excluded), and the head lives in the dataset's decoder (Foundation X's one decoder per
dataset) rather than in the shared transformer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from arkx.models.detection.boxes import inverse_sigmoid
from arkx.models.detection.encoder import MLP, pixel_centre_references

#: side of a finest-level anchor, as a fraction of the image (DINO's 0.05), doubled per coarser level
BASE_SIDE = 0.05


def anchor_boxes(spatial_shapes: torch.Tensor, base_side: float = BASE_SIDE, device=None) -> torch.Tensor:
    """Normalised cxcywh anchors ``[S, 4]`` of every position of every level, in the memory's order."""
    centres = pixel_centre_references(spatial_shapes, device=device)
    areas = (spatial_shapes[:, 0] * spatial_shapes[:, 1]).tolist()
    sides = torch.cat([torch.full((int(n), 2), base_side * 2.0 ** level, device=device)
                       for level, n in enumerate(areas)])
    return torch.cat([centres, sides], dim=-1)


class ProposalHead(nn.Module):
    """forward(memory [B, S, d], spatial_shapes [L, 2]) -> (class logits [B, S, C], box logits [B, S, 4]).

    Box logits are in inverse-sigmoid space (``sigmoid`` gives normalised cxcywh): anchor + correction.
    """

    def __init__(self, num_classes: int, d_model: int, prior_bias: float, anchor_side: float = BASE_SIDE):
        super().__init__()
        self.anchor_side = float(anchor_side)
        self.memory_proj = nn.Linear(d_model, d_model)
        self.memory_norm = nn.LayerNorm(d_model)
        self.class_head = nn.Linear(d_model, num_classes)
        self.box_head = MLP(d_model, d_model, 4, 3)
        nn.init.constant_(self.class_head.bias, prior_bias)
        # small, not zero: the projection before it gets gradient from the first step
        nn.init.normal_(self.box_head.layers[-1].weight, std=1e-3)
        nn.init.zeros_(self.box_head.layers[-1].bias)

    def forward(self, memory: torch.Tensor, spatial_shapes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.memory_norm(self.memory_proj(memory))
        anchors = inverse_sigmoid(anchor_boxes(spatial_shapes, self.anchor_side, device=memory.device)).to(x.dtype)
        return self.class_head(x), self.box_head(x) + anchors[None]


def select_proposals(class_logits: torch.Tensor, box_logits: torch.Tensor, k: int) -> dict:
    """The ``k`` (at most S) proposals with the highest best-class logit, per image, best first:
    dict(logits [B, k, C], boxes [B, k, 4] normalised cxcywh, with gradient)."""
    k = min(k, class_logits.shape[1])
    index = class_logits.max(dim=-1).values.topk(k, dim=1).indices  # [B, k]
    logits = torch.gather(class_logits, 1, index[..., None].expand(-1, -1, class_logits.shape[-1]))
    boxes = torch.gather(box_logits, 1, index[..., None].expand(-1, -1, 4)).sigmoid()
    return dict(logits=logits, boxes=boxes)


def prior_logit(probability: float) -> float:
    """Bias giving a sigmoid output of ``probability`` (focal-loss prior)."""
    return -math.log((1 - probability) / probability)
