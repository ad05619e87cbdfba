"""One geometry for image, masks and boxes: the student view's crop/rotation/shift applied to the targets.

:func:`arkx.data.transforms.student_view` samples the image through ``theta = affine_theta(params)``, a
map from OUTPUT to SOURCE coordinates in ``affine_grid``'s normalised frame (``align_corners=False``: the
left edge of the first pixel is -1, the right edge of the last is +1). This module moves the targets with
the very same ``theta``, so an image and its masks/boxes never disagree:

* masks (:func:`warp_masks`): ``grid_sample`` with ``mode="nearest"``, zeros outside the source -- the
  image's own sampling grid, with each output pixel taking the label of the source pixel its centre falls in.
* boxes (:func:`warp_boxes`): the four corners are mapped by the *inverse* of ``theta`` (source ->
  output), the axis-aligned hull is taken, clipped to ``[0, size]``, and a box is dropped when its clipped
  width or height is under one output pixel, or when less than :data:`MIN_VISIBLE` of its hull's area
  is left inside the view (it was mostly cropped away: what is left is a sliver the image hardly shows).

Coordinates are pixels with an exclusive maximum (:mod:`arkx.data.masks`): a continuous position ``x``
in a grid of ``n`` pixels is ``2 x / n - 1`` in the normalised frame. The evaluation view (the whole image
resized) has :func:`resize_masks` (area average ``>= 0.5``, the cache's rule) and :func:`resize_boxes`. Under a rotation the hull of the rotated
corners is the box of the rotated rectangle, but once the view clips it, the hull may be larger than the
box of what is still visible: an axis-aligned box cannot say more.

The image path itself (:func:`~arkx.data.transforms.student_view`, :func:`~arkx.data.transforms.eval_view`)
is untouched: this module only reads the parameters it was given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .transforms import affine_theta

#: a warped box is kept only if at least this fraction of its hull's area is inside the view
MIN_VISIBLE = 0.5
#: and only if its clipped width and height are at least this many output pixels
MIN_SIDE = 1.0


def _theta(params: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    return affine_theta({k: v.to(device=device, dtype=torch.float32) for k, v in params.items()})


def warp_masks(masks: torch.Tensor, params: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """bool ``[B, M, S, S]`` -> bool ``[B, M, size, size]`` through the view of ``params`` (nearest; zeros
    outside the source image)."""
    if masks.dim() != 4:
        raise ValueError(f"masks must be [B, M, S, S], got shape {tuple(masks.shape)}")
    b, m = masks.shape[:2]
    if m == 0 or b == 0:
        return torch.zeros((b, m, size, size), dtype=torch.bool, device=masks.device)
    theta = _theta(params, masks.device)
    grid = F.affine_grid(theta, [b, m, size, size], align_corners=False)
    warped = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return warped > 0.5


def _to_norm(x: torch.Tensor, n: int) -> torch.Tensor:
    return 2.0 * x / n - 1.0


def _from_norm(u: torch.Tensor, n: int) -> torch.Tensor:
    return (u + 1.0) * n / 2.0


def _corners(boxes: torch.Tensor) -> torch.Tensor:
    """``[n, 4]`` xyxy -> ``[n, 4, 2]`` corner points (x, y)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1),
                        torch.stack([x1, y1], -1), torch.stack([x0, y1], -1)], dim=1)


def _clip_and_keep(hull: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip ``[n, 4]`` boxes to the ``size`` grid; the mask of those worth keeping (see :data:`MIN_VISIBLE`)."""
    clipped = hull.clamp(0.0, float(size))
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    full = (hull[:, 2] - hull[:, 0]) * (hull[:, 3] - hull[:, 1])
    keep = (w >= MIN_SIDE) & (h >= MIN_SIDE) & (w * h >= MIN_VISIBLE * full)
    return clipped, keep


def warp_boxes(boxes: list[torch.Tensor], labels: list[torch.Tensor], params: dict[str, torch.Tensor],
               source_size: int, size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image float ``[n_i, 4]`` xyxy boxes on the ``source_size`` grid and their labels -> the boxes on
    the ``size`` output grid of the view of ``params``, and the labels of those kept (module doc: hull of
    the mapped corners, clipped, dropped when thinner than a pixel or mostly outside)."""
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} box lists but {len(labels)} label lists")
    theta = _theta(params, torch.device("cpu")).double()
    if theta.shape[0] != len(boxes):
        raise ValueError(f"params are for {theta.shape[0]} images, boxes for {len(boxes)}")
    counts = [int(b.shape[0]) for b in boxes]
    if sum(counts) == 0:
        return [b.reshape(0, 4).clone() for b in boxes], [lab.reshape(0) for lab in labels]
    # every box of the batch at once: its image's inverse map, u = A^-1 (x - t)
    owner = torch.repeat_interleave(torch.arange(len(boxes)), torch.tensor(counts))
    inverse = torch.linalg.inv(theta[:, :, :2])[owner]  # [K, 2, 2]
    shift = theta[:, :, 2][owner]  # [K, 2]
    flat = torch.cat([b.detach().to("cpu", torch.float64).reshape(-1, 4) for b in boxes])
    src = _to_norm(_corners(flat), source_size)  # [K, 4, 2]
    px = _from_norm(torch.einsum("kij,kcj->kci", inverse, src - shift[:, None, :]), size)
    hull = torch.cat([px.min(dim=1).values, px.max(dim=1).values], dim=1)
    clipped, keep = _clip_and_keep(hull, size)
    out_boxes, out_labels = [], []
    for b, lab, part, kept in zip(boxes, labels, clipped.split(counts), keep.split(counts)):
        dtype = b.dtype if b.is_floating_point() else torch.float32
        out_boxes.append(part[kept].to(device=b.device, dtype=dtype))
        out_labels.append(lab.reshape(-1)[kept.to(lab.device)])
    return out_boxes, out_labels


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation view of masks: bool ``[B, M, S, S]`` -> ``[B, M, size, size]``, the area average of the
    0/1 mask ``>= 0.5`` (the cache's rule, :mod:`arkx.data.cache_targets`: when shrinking, an output pixel is
    inside when at least half of it is covered, so a thin structure is kept where nearest sampling could
    drop it)."""
    if masks.dim() != 4:
        raise ValueError(f"masks must be [B, M, S, S], got shape {tuple(masks.shape)}")
    if masks.shape[-2:] == (size, size):
        return masks.clone()
    b, m = masks.shape[:2]
    if m == 0 or b == 0:
        return torch.zeros((b, m, size, size), dtype=torch.bool, device=masks.device)
    return F.interpolate(masks.float(), size=(size, size), mode="area") >= 0.5


def resize_boxes(boxes: list[torch.Tensor], source_size: int, size: int) -> list[torch.Tensor]:
    """The evaluation view of boxes: every coordinate scaled by ``size / source_size``."""
    scale = float(size) / float(source_size)
    return [b * scale for b in boxes]


def warp_batch(batch, params: dict[str, torch.Tensor], size: int):
    """A copy of ``batch`` (:class:`arkx.data.batch.Batch`) whose masks and boxes are on the ``size`` grid of
    the view of ``params``. The images are left as they are: the model input is
    ``student_view(batch.images, size, params)``, which samples them through the same ``theta``."""
    source = int(batch.images.shape[-1])
    changes = {}
    if batch.masks is not None:
        changes["masks"] = warp_masks(batch.masks, params, size)
    if batch.boxes is not None:
        changes["boxes"], changes["box_labels"] = warp_boxes(batch.boxes, batch.box_labels, params, source, size)
    return batch.replace(**changes)


def resize_batch(batch, size: int):
    """A copy of ``batch`` whose masks and boxes are on the ``size`` grid of the evaluation view (the images
    are left as they are: the model input is ``eval_view(batch.images, size)``)."""
    source = int(batch.images.shape[-1])
    changes = {}
    if batch.masks is not None:
        changes["masks"] = resize_masks(batch.masks, size)
    if batch.boxes is not None:
        changes["boxes"] = resize_boxes(batch.boxes, source, size)
    return batch.replace(**changes)
