"""Polygons <-> masks: pixel-centre rasterisation with the even-odd rule (COCO's pixel convention, see
:mod:`arkx.data.masks`) and the outer boundary of each 4-connected component traced along pixel
edges (needs scipy)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from . import common
from .common import MaskDecodeError

# ------------------------------------------------------------------------------------ polygons


def _as_points(polygon: Any) -> np.ndarray:
    arr = np.asarray(polygon, dtype=np.float64)
    if arr.ndim == 1:
        if arr.size % 2:
            raise MaskDecodeError(f"flat polygon has an odd number of coordinates ({arr.size})")
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise MaskDecodeError(f"polygon must be flat [x0, y0, x1, y1, ...] or [[x, y], ...], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MaskDecodeError("polygon has non-finite coordinates")
    return arr


def polygon_to_mask(polygon_xy: Any, height: int, width: int) -> np.ndarray:
    """Rasterise one polygon (flat ``[x0, y0, x1, y1, ...]`` or ``[[x, y], ...]``) to a bool mask.

    Pixel-centre sampling with the even-odd rule (see the module docstring); polygons with fewer than
    3 vertices give an empty mask. Parts outside the image are clipped.
    """
    pts = _as_points(polygon_xy)
    h, w = int(height), int(width)
    out = np.zeros((h, w), dtype=bool)
    if len(pts) < 3 or h == 0 or w == 0:
        return out
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    keep = y0 != y1
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    if x0.size == 0:
        return out
    yc = np.arange(h, dtype=np.float64)[:, None] + 0.5  # [h, 1]
    lo, hi = np.minimum(y0, y1)[None], np.maximum(y0, y1)[None]
    crosses = (yc >= lo) & (yc < hi)  # half-open: a vertex is counted once
    with np.errstate(invalid="ignore", divide="ignore"):
        xs = x0[None] + (yc - y0[None]) * ((x1 - x0) / (y1 - y0))[None]
    xs = np.where(crosses, xs, np.inf)
    xs.sort(axis=1)
    starts, ends = xs[:, 0::2], xs[:, 1::2]
    if ends.shape[1] < starts.shape[1]:
        starts = starts[:, : ends.shape[1]]
    valid = np.isfinite(starts) & np.isfinite(ends)
    rows = np.broadcast_to(np.arange(h)[:, None], starts.shape)[valid]
    cs = np.clip(np.ceil(starts[valid] - 0.5), 0, w).astype(np.int64)
    ce = np.clip(np.ceil(ends[valid] - 0.5), 0, w).astype(np.int64)
    diff = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(diff, (rows, cs), 1)
    np.add.at(diff, (rows, ce), -1)
    return np.cumsum(diff[:, :w], axis=1) > 0


def polygons_to_mask(polygons: Iterable[Any], height: int, width: int) -> np.ndarray:
    """Union of several polygons (each as accepted by :func:`polygon_to_mask`)."""
    out = np.zeros((int(height), int(width)), dtype=bool)
    for poly in polygons:
        out |= polygon_to_mask(poly, height, width)
    return out


def _trace_outer(filled: np.ndarray) -> list[float]:
    """Outer boundary of a hole-free 4-connected region along pixel edges, as a flat polygon."""
    p = np.pad(filled, 1)
    inside = p[1:-1, 1:-1]
    nxt: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(sides: np.ndarray, d0: tuple[int, int], d1: tuple[int, int]) -> None:
        ys, xs = np.nonzero(sides)
        for y, x in zip(ys.tolist(), xs.tolist()):
            nxt.setdefault((x + d0[0], y + d0[1]), []).append((x + d1[0], y + d1[1]))

    add(inside & ~p[:-2, 1:-1], (0, 0), (1, 0))  # top side, left -> right
    add(inside & ~p[1:-1, 2:], (1, 0), (1, 1))  # right side, top -> bottom
    add(inside & ~p[2:, 1:-1], (1, 1), (0, 1))  # bottom side, right -> left
    add(inside & ~p[1:-1, :-2], (0, 1), (0, 0))  # left side, bottom -> top
    if not nxt:
        return []
    start = min(nxt)  # top-left vertex: always on the outer boundary
    loop = [start]
    prev, cur = None, start
    while True:
        options = nxt[cur]
        if len(options) == 1:
            step = options.pop()
        else:  # a pinch vertex: turn right (keeps the region on the right of the walk)
            dx, dy = (cur[0] - prev[0], cur[1] - prev[1]) if prev else (1, 0)
            right = (-dy, dx)
            step = next((o for o in options if (o[0] - cur[0], o[1] - cur[1]) == right), options[0])
            options.remove(step)
        if not options:
            del nxt[cur]
        prev, cur = cur, step
        if cur == start:
            break
        loop.append(cur)
    pts = np.array(loop, dtype=np.float64)
    # drop vertices in the middle of straight runs
    before, after = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    cross = (pts[:, 0] - before[:, 0]) * (after[:, 1] - pts[:, 1]) - (pts[:, 1] - before[:, 1]) * (after[:, 0] - pts[:, 0])
    pts = pts[cross != 0]
    return pts.reshape(-1).tolist()


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """One flat polygon per 4-connected component: its outer boundary along pixel edges (needs scipy).

    Holes are not represented (a component is filled first), so
    ``polygon_to_mask(poly, h, w)`` gives back exactly the hole-filled component. Components come in
    the order of their first pixel in row-major order.
    """
    if not common.HAVE_SCIPY:
        raise ImportError("mask_to_polygons needs scipy (scipy.ndimage)")
    mask = np.asarray(mask, dtype=bool)
    labels, n = common._ndimage.label(mask)
    out = []
    for k, sl in enumerate(common._ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = common._ndimage.binary_fill_holes(labels[sl] == k)
        poly = _trace_outer(comp)
        oy, ox = sl[0].start, sl[1].start
        out.append([v + (ox if i % 2 == 0 else oy) for i, v in enumerate(poly)])
    return out

