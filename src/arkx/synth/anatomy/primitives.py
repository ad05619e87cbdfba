"""Drawing primitives in the drawer's normalised coordinates (``u`` left -> right, ``v`` top -> bottom,
both in [0, 1] over the central square of the image): the pixel grid, soft-edged ramps and ellipses,
distances to segments and polylines, and the box / region of what a finding changed."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .cases import Box


@lru_cache(maxsize=32)
def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(v [h, 1], u [1, w], pixel size)`` of an ``h x w`` image in normalised coordinates (read-only, cached)."""
    m = min(h, w)
    u = ((np.arange(w, dtype=np.float32) + 0.5 - (w - m) / 2) / m)[None, :]
    v = ((np.arange(h, dtype=np.float32) + 0.5 - (h - m) / 2) / m)[:, None]
    u.setflags(write=False)
    v.setflags(write=False)
    return v, u, 1.0 / m


def soft(d: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 ramp over ``width`` around ``d = 0`` (inside where ``d > 0``)."""
    return np.clip(0.5 + d / width, 0.0, 1.0)


def ellipse_r(v, u, cx, cy, rx, ry):
    return np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)


def disk(v, u, cx, cy, rx, ry, edge):
    """Soft-edged filled ellipse (edge in normalised units)."""
    return soft((1.0 - ellipse_r(v, u, cx, cy, rx, ry)) * min(rx, ry), edge)


def segment_dist(v, u, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.sqrt((u - x0 - t * dx) ** 2 + (v - y0 - t * dy) ** 2), t


def polyline_dist(v, u, pts):
    d = None
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        di, _ = segment_dist(v, u, x0, y0, x1, y1)
        d = di if d is None else np.minimum(d, di)
    return d


def bbox_of(mask: np.ndarray) -> Box | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def region_of(delta: np.ndarray, frac: float = 0.3) -> np.ndarray | None:
    """Where an additive finding changed the image (above ``frac`` of its peak), or None if nowhere."""
    a = np.abs(delta)
    peak = float(a.max()) if a.size else 0.0
    if peak <= 1e-6:
        return None
    return a > frac * peak
