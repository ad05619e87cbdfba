"""Synthetic ChestX-Det (read by :mod:`arkx.data.adapters.chestx_det`): ``ChestX_Det_{train,test}.json``
(``file_name, syms, boxes [x1,y1,x2,y2], polygons [[x,y],...]``) and ``{train,test}/<file_name>.png``; each
finding's mask is the polygon of its largest 4-connected part. Masks and boxes come from the pixels the
finding changed (see :mod:`arkx.synth.annotations`); ``generate_chestx_det(rng, n, size)`` returns the
:class:`~arkx.synth.annotations.SynthImage` list the writer writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...data import masks as M
from ..anatomy import Case, Finding, Site
from ..annotations import SynthImage, draw_labelled
from ..files import save_gray
from ..sampling import (
    draw_seed,
)

#: ChestX-Det category -> finding concept(s) drawn (one chosen per case)
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis",), "Calcification": ("calcification",), "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation",), "Diffuse Nodule": ("nodule",), "Effusion": ("effusion",),
    "Emphysema": ("emphysema",), "Fibrosis": ("fibrosis",), "Fracture": ("rib_fracture",), "Mass": ("mass",),
    "Nodule": ("nodule",), "Pleural Thickening": ("pleural_thickening",), "Pneumothorax": ("pneumothorax",),
}  # fmt: skip
CHESTX_DET_CATEGORIES = tuple(CONCEPTS_BY_LABEL)
#: acquisition look of this dataset
SITE = Site("chestx_det", gamma=0.85, contrast=1.0, offset=0.0, noise=0.012, blur=0.9, border_top=0.03,
            marker="tl", marker_seed=2)


def _largest_polygon(mask: np.ndarray) -> list[float] | None:
    polys = M.mask_to_polygons(mask)
    if not polys:
        return None
    h, w = mask.shape
    return max(polys, key=lambda p: int(M.polygon_to_mask(p, h, w).sum()))


def generate_chestx_det(rng, n: int, size: int) -> list[SynthImage]:
    """0-2 ChestX-Det categories per image; each drawn component is one finding whose mask is the
    (hole-filled) polygon of its largest 4-connected part."""
    site = SITE
    out = []
    cats = list(CHESTX_DET_CATEGORIES)
    for k in range(n):
        m = int(rng.choice(3, p=[0.25, 0.5, 0.25]))
        chosen = [cats[(k + j * 5) % len(cats)] for j in range(m)] if k < len(cats) else \
            list(rng.permutation(cats)[:m])
        findings, owners = [], []
        for cat in chosen:
            concepts = CONCEPTS_BY_LABEL[cat]
            for _ in range(3 if cat == "Diffuse Nodule" else 1):
                findings.append(Finding(concepts[0], float(rng.uniform(0.8, 1.0))))
                owners.append(cat)
        case = Case("M" if rng.random() < 0.55 else "F", "PA", tuple(findings), draw_seed(rng), draw_seed(rng))
        image, drawn = draw_labelled(case, owners, (size, size), site)
        kept = []
        for label, _, mask in drawn:
            poly = _largest_polygon(mask)
            if poly is None:
                continue
            pm = M.polygon_to_mask(poly, size, size)
            kept.append((label, tuple(float(v) for v in M.mask_to_box(pm)), pm))
        im = SynthImage(f"{36000 + k}.png", image, case, kept)
        im.meta["polygons"] = [_largest_polygon(pm) for _, _, pm in kept]
        out.append(im)
    return out


def write_chestx_det(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``ChestX_Det_{train,test}.json`` (``file_name, syms, boxes [x1,y1,x2,y2], polygons [[x,y],...]``)
    and ``{train,test}/<file_name>.png``."""
    root = folder / "ChestX-Det"
    images = generate_chestx_det(rng, n, size)
    test = set(rng.permutation(n)[: max(2, int(0.25 * n))].tolist())
    docs = {"train": [], "test": []}
    for k, im in enumerate(images):
        part = "test" if k in test else "train"
        save_gray(root / part / im.image_id, im.image, "PNG")
        docs[part].append({
            "file_name": im.image_id, "syms": [lab for lab, _, _ in im.findings],
            "boxes": [list(b) for _, b, _ in im.findings],
            "polygons": [[[p[i], p[i + 1]] for i in range(0, len(p), 2)] for p in im.meta["polygons"]],
        })  # fmt: skip
    for part, entries in docs.items():
        (root / f"ChestX_Det_{part}.json").write_text(json.dumps(entries))
    return root
