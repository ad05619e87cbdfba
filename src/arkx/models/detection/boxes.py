"""Box conventions of the detector and the conversions at its borders.

Inside the detector a box is ``(cx, cy, w, h)`` normalised by the image size, in [0, 1]. Batches and
predictions use ``(x_min, y_min, x_max, y_max)`` in pixels of a square (or ``(height, width)``)
image, max exclusive, so a box covering the whole ``S x S`` image is ``(0, 0, S, S)``.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert

from arkx.errors import ArkxValueError


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x), clamped so that boxes touching 0 or 1 stay finite."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def image_height_width(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` from an int (square) or a pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        raise ArkxValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def _scale(image_size, like: torch.Tensor) -> torch.Tensor:
    height, width = image_height_width(image_size)
    return torch.tensor([width, height, width, height], dtype=like.dtype, device=like.device)


def pixels_to_normalised(boxes_xyxy: torch.Tensor, image_size: int | tuple[int, int]) -> torch.Tensor:
    """Pixel ``xyxy`` ``[n, 4]`` -> normalised ``cxcywh`` ``[n, 4]``."""
    return box_convert(boxes_xyxy.float() / _scale(image_size, boxes_xyxy.float()), "xyxy", "cxcywh")


def normalised_to_pixels(boxes_cxcywh: torch.Tensor, image_size: int | tuple[int, int]) -> torch.Tensor:
    """Normalised ``cxcywh`` ``[..., 4]`` -> pixel ``xyxy``, clipped to the image."""
    xyxy = box_convert(boxes_cxcywh.clamp(0, 1), "cxcywh", "xyxy") * _scale(image_size, boxes_cxcywh)
    return torch.minimum(xyxy.clamp(min=0), _scale(image_size, boxes_cxcywh))


def make_targets(boxes: list[torch.Tensor], labels: list[torch.Tensor],
                 image_size: int | tuple[int, int]) -> list[dict[str, torch.Tensor]]:
    """Per-image targets for :class:`~arkx.models.detection.losses.SetCriterion` from a batch's
    ragged pixel boxes (``Batch.boxes``, ``Batch.box_labels``): dict(boxes cxcywh normalised, labels)."""
    if len(boxes) != len(labels):
        raise ArkxValueError(f"make_targets: {len(boxes)} box lists but {len(labels)} label lists")
    targets = []
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        if b.shape[0] != lab.shape[0] or (b.numel() and b.shape[-1] != 4):
            raise ArkxValueError(f"make_targets: image {i} has boxes of shape {tuple(b.shape)} "
                                 f"and labels of shape {tuple(lab.shape)}; expected [n, 4] and [n]")
        targets.append(dict(boxes=pixels_to_normalised(b.reshape(-1, 4), image_size), labels=lab.long()))
    return targets
