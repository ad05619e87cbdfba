"""Boxes of masks, ``(x_min, y_min, x_max, y_max)`` with inclusive minimum and exclusive maximum in
pixels (:mod:`arkx.data.masks`): of one mask, of a stack (through torchvision), and one per connected
component (needs scipy)."""

from __future__ import annotations

import numpy as np

from . import common

# ------------------------------------------------------------------------------------ boxes


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x_min, y_min, x_max, y_max)`` of the True pixels, max exclusive; ``None`` for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Boxes of a stack of masks ``[n, h, w]`` -> float ``[n, 4]`` (max exclusive; NaN rows for empty masks).

    Uses ``torchvision.ops.masks_to_boxes`` (whose maxima are inclusive; 1 is added here).
    """
    import torch
    from torchvision.ops import masks_to_boxes as _tv_masks_to_boxes

    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [n, h, w], got shape {masks.shape}")
    out = np.full((masks.shape[0], 4), np.nan, dtype=np.float64)
    nonempty = masks.reshape(masks.shape[0], -1).any(axis=1)
    if nonempty.any():
        boxes = _tv_masks_to_boxes(torch.from_numpy(masks[nonempty])).double().numpy()
        boxes[:, 2:] += 1.0
        out[nonempty] = boxes
    return out


def connected_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """``(labels, n)``: 8- (default) or 4-connected components of a mask (needs scipy)."""
    if not common.HAVE_SCIPY:
        raise ImportError("connected components need scipy (scipy.ndimage)")
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    labels, n = common._ndimage.label(np.asarray(mask, dtype=bool), structure=structure)
    return labels, int(n)


def component_boxes(mask: np.ndarray, connectivity: int = 8, min_pixels: int = 1) -> list[tuple[int, int, int, int]]:
    """One box (max exclusive) per connected component with at least ``min_pixels`` pixels (needs scipy).

    Sorted by (y_min, x_min). The mask is cropped to its bounding box first, so large sparse masks
    are cheap.
    """
    box = mask_to_box(mask)
    if box is None:
        return []
    x0, y0, x1, y1 = box
    crop = np.asarray(mask, dtype=bool)[y0:y1, x0:x1]
    labels, n = connected_components(crop, connectivity)
    out = []
    sizes = np.bincount(labels.reshape(-1), minlength=n + 1)
    for k, sl in enumerate(common._ndimage.find_objects(labels), start=1):
        if sl is None or sizes[k] < min_pixels:
            continue
        out.append((x0 + sl[1].start, y0 + sl[0].start, x0 + sl[1].stop, y0 + sl[0].stop))
    return sorted(out, key=lambda b: (b[1], b[0], b[3], b[2]))

