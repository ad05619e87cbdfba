"""Synthetic VinDr-RibCXR (read by :mod:`arkx.data.adapters.vindr_ribcxr`):
``Data/{train,val}/img/VinDr_RibCXR_<split>_###.png`` and the column-oriented rib polygons
``Data/<split>/Vindr_RibCXR_<split>_mask.json`` (``img`` and ``R1..R10``, ``L1..L10``). Masks follow the
drawn anatomy (:mod:`arkx.synth.structures`); no burned-in marker (it could cover a structure).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..anatomy import Case, Site, draw_case
from ..files import save_png, write_text
from ..sampling import (
    draw_seed,
    sex_age_seg,
)
from ..structures import RIB_LABELS, rib_polygons

#: acquisition look of this dataset
SITE = Site("vindr_ribcxr", gamma=1.2, contrast=1.0, noise=0.006, blur=0.3, marker=None)


def write_vindr_ribcxr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``Data/{train,val}/img/VinDr_RibCXR_<split>_###.png`` and ``Data/<split>/Vindr_RibCXR_<split>_mask.json``
    (column-oriented: ``img`` and ``R1..R10``, ``L1..L10`` as ``{"x", "y"}`` point lists)."""
    root = folder
    site = SITE
    n_val = int(np.clip(round(n * 49 / 245), 1, n - 1))
    shapes = [(int(round(1.2 * size)), size), (size, size), (int(round(1.1 * size)), int(round(1.15 * size)))]
    for split, count in (("train", n - n_val), ("val", n_val)):
        table: dict[str, dict[str, object]] = {"img": {}} | {k: {} for k in RIB_LABELS}
        for j in range(count):
            name = f"VinDr_RibCXR_{split}_{j:03d}.png"
            sex, _ = sex_age_seg(rng)
            case = Case(sex, "PA", (), draw_seed(rng), draw_seed(rng))
            shape = shapes[int(rng.integers(len(shapes)))]
            save_png(root / "Data" / split / "img" / name, draw_case(case, shape, site).image)
            ribs = rib_polygons(case, shape)
            key = str(j)
            table["img"][key] = f"data/{split}/img/{name}"
            for label in RIB_LABELS:
                flat = ribs.get(label)
                table[label][key] = (None if flat is None else
                                     [{"x": flat[q], "y": flat[q + 1]} for q in range(0, len(flat), 2)])
        write_text(root / "Data" / split / f"Vindr_RibCXR_{split}_mask.json", json.dumps(table))
    return root
