"""Procedural chest radiographs: one image drawn from one :class:`Case`.

The drawing works on an *attenuation* map ``A`` (bright = dense), in normalised coordinates: the
thorax lives in the central ``m x m`` square of an ``h x w`` image (``m = min(h, w)``), ``u`` runs
left -> right and ``v`` top -> bottom, both in [0, 1] over that square. Image left is the patient's
right, as on a PA film: lung side ``"R"`` is drawn on the image left.

Order of drawing: anatomy parameters (from ``Case.anatomy_seed``, so follow-up images of one patient
share a body), structural findings that change the anatomy (big heart, shifted mediastinum, flat
diaphragm, broken rib ...), additive findings (blobs, bands, fluid, lines), then the anatomy is
rendered under them, and finally :func:`apply_site` puts the acquisition look of a site on top
(gamma, contrast, blur, noise, collimation border, burned-in marker block).

Every finding of a concept is drawn by the same function whichever dataset asks for it, so that a
model that learns "effusion" on NIH recognises "Pleural effusion" on VinDr-CXR. Every drawn finding
reports its bounding box (pixels of the written image, ``x0, y0, x1, y1`` with exclusive ends) from
where its pixels really changed.

Modules: :mod:`.cases` (what is drawn: concepts, findings, cases, sites), :mod:`.primitives` (soft
shapes in normalised coordinates), :mod:`.thorax` (the body and the structural findings),
:mod:`.findings` (the additive finding drawers), :mod:`.acquisition` (the site look); this module
puts them together in :func:`draw_case`.
"""

from __future__ import annotations

import numpy as np

from .acquisition import apply_site, to_uint8
from .cases import CONCEPTS, STRUCTURAL, Box, Case, Drawn, Finding, Site, demo_case
from .findings import ADDITIVE
from .primitives import bbox_of, grid, region_of
from .thorax import (
    DrawContext,
    apply_structural,
    geometry_of,
    render_anatomy,
    structural_masks,
)


def draw_case(case: Case, shape: tuple[int, int], site: Site | None = None) -> Drawn:
    """Draw ``case`` at ``shape = (rows, cols)``; returns the image in [0, 1] and each finding's boxes."""
    h, w = int(shape[0]), int(shape[1])
    v, u, px = grid(h, w)
    g = geometry_of(case, np.random.default_rng(case.anatomy_seed))
    rng = np.random.default_rng(case.seed)
    for f in case.findings:
        if f.concept in STRUCTURAL and not (
            case.view == "LATERAL" and f.concept in ("rib_fracture", "clavicle_fracture")
        ):
            apply_structural(g, f.concept, f.strength, rng)
    c = DrawContext(v, u, px, g, rng)
    deltas: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    for i, f in enumerate(case.findings):
        if f.concept in ADDITIVE:
            for delta, mask in ADDITIVE[f.concept](c, f.strength, f.side):
                deltas.append((i, delta.astype(np.float32, copy=False), mask))
    A = render_anatomy(c)
    comps: dict[int, list[tuple[Box, np.ndarray]]] = {}
    for i, delta, mask in deltas:
        A = A + delta
        if mask is None:
            mask = region_of(delta)
        b = bbox_of(mask) if mask is not None else None
        if b is not None:
            comps.setdefault(i, []).append((b, np.asarray(mask, dtype=bool)))
    seen: dict[str, list[tuple[Box, np.ndarray]]] = {}
    for i, f in enumerate(case.findings):
        if f.concept in STRUCTURAL:
            if f.concept not in seen:
                seen[f.concept] = [(b, m) for m in structural_masks(c, f.concept) if (b := bbox_of(m)) is not None]
            if seen[f.concept]:
                comps[i] = list(seen[f.concept])
    img = np.clip(A, 0.0, 1.0).astype(np.float32)
    if site is not None:
        img = apply_site(img, site, rng)
    return Drawn(image=img, components=comps, female=g.female)


__all__ = [
    "CONCEPTS",
    "STRUCTURAL",
    "Box",
    "Case",
    "Drawn",
    "Finding",
    "Site",
    "apply_site",
    "demo_case",
    "draw_case",
    "to_uint8",
]
