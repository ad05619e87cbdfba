"""Masks of the drawn anatomy for the segmentation layouts, rasterised from the *same geometry* the
drawer uses (``anatomy.thorax.geometry_of`` from the case's ``anatomy_seed``), so they cover the drawn
structures:

* lungs: ``Lung.mask`` > 0.5 minus the heart (as in SCR, a lung field excludes the heart shadow);
* heart: the heart ellipse the drawer paints (``disk(*heart)`` > 0.5);
* clavicles: points within the drawn half-thickness (``0.011 * s``) of the clavicle segment;
* ribs: the drawn posterior rib bands (``|v - y_k(u)| < 0.0085 * s`` around the parabola
  ``y_k = ytop + 0.05 s k + 1.9 (u - cx)^2``) where the drawer shows them (beyond the spine, inside
  ``dmax``, above the diaphragm cut-off), as polygons.

Sides are the patient's: ``Right Lung`` / ``R1..R10`` are drawn on the image left. Only frontal cases
without structural findings (which move the anatomy with the per-image stream) are segmented;
:func:`structure_masks` refuses others.
"""

from __future__ import annotations

import numpy as np

from .anatomy import STRUCTURAL, Case
from .anatomy.primitives import disk, grid, segment_dist
from .anatomy.thorax import geometry_of

STRUCTURES = ("Left Lung", "Right Lung", "Heart", "Left Clavicle", "Right Clavicle")

RIB_LABELS = tuple(f"R{i}" for i in range(1, 11)) + tuple(f"L{i}" for i in range(1, 11))


def check_frontal_case(case: Case) -> None:
    if case.view == "LATERAL":
        raise ValueError("structure masks are defined for frontal (PA/AP) cases only")
    moved = [f.concept for f in case.findings if f.concept in STRUCTURAL]
    if moved:
        raise ValueError(f"structure masks cannot follow structural findings {moved} (they move the anatomy)")


def structure_masks(case: Case, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Bool masks ``[h, w]`` of the lungs, heart and clavicles that :func:`draw_case` draws for ``case``."""
    check_frontal_case(case)
    h, w = int(shape[0]), int(shape[1])
    v, u, px = grid(h, w)
    g = geometry_of(case, np.random.default_rng(case.anatomy_seed))
    heart = np.broadcast_to(disk(v, u, *g.heart, 2.5 * px) > 0.5, (h, w))
    out = {
        "Right Lung": np.broadcast_to(g.lungs["R"].mask(v, u, 1.5 * px) > 0.5, (h, w)) & ~heart,
        "Left Lung": np.broadcast_to(g.lungs["L"].mask(v, u, 1.5 * px) > 0.5, (h, w)) & ~heart,
        "Heart": heart.copy(),
    }
    for side, label in ((-1.0, "Right Clavicle"), (1.0, "Left Clavicle")):
        x0, y0 = g.cx + side * 0.03, g.cy - 0.265 * g.s
        x1, y1 = g.cx + side * 0.27 * g.s, g.cy - 0.33 * g.s
        dist, _ = segment_dist(v, u, x0, y0, x1, y1)
        out[label] = np.broadcast_to(dist < 0.011 * g.s, (h, w)).copy()
    return out


def rib_polygons(case: Case, shape: tuple[int, int], samples: int = 28) -> dict[str, list[float]]:
    """Flat ``[x0, y0, x1, y1, ...]`` polygons (pixel coordinates, pixel ``i`` spans ``[i, i+1)``) of the
    visible part of each drawn posterior rib; ribs hidden below the diaphragm are left out."""
    check_frontal_case(case)
    h, w = int(shape[0]), int(shape[1])
    m = min(h, w)
    g = geometry_of(case, np.random.default_rng(case.anatomy_seed))
    ytop = g.cy - 0.95 * g.lungs["R"].ry + 0.005
    dmax = g.lungs["R"].rx * 2 + 0.03
    t = 0.0085 * g.s
    d0, d1 = 0.035 + 2.0 / m, dmax - 3.0 / m  # where the drawer's soft ends are well above half
    d = np.linspace(d0, d1, samples)
    out: dict[str, list[float]] = {}
    for k in range(10):
        y = ytop + k * 0.05 * g.s + 1.9 * d**2
        for sgn, prefix, lung in ((-1.0, "R", g.lungs["R"]), (1.0, "L", g.lungs["L"])):
            x = g.cx + sgn * d
            dome = lung.dome_y(x) + 0.03 - 3.0 / m  # ribs fade out below the diaphragm line + 0.03
            visible = (y + t) < dome
            # longest run of visible samples
            best, start = (0, 0), None
            for i, ok in enumerate(np.append(visible, False)):
                if ok and start is None:
                    start = i
                elif not ok and start is not None:
                    if i - start > best[1] - best[0]:
                        best = (start, i)
                    start = None
            if best[1] - best[0] < 3:
                continue
            xs, ys = x[best[0]:best[1]], y[best[0]:best[1]]
            top = np.stack([xs, ys - t], axis=1)
            bottom = np.stack([xs, ys + t], axis=1)[::-1]
            pts = np.concatenate([top, bottom])  # normalised (u, v)
            px_x = pts[:, 0] * m + (w - m) / 2.0
            px_y = pts[:, 1] * m + (h - m) / 2.0
            out[f"{prefix}{k + 1}"] = [round(float(c), 3) for xy in zip(px_x, px_y) for c in xy]
    return out
