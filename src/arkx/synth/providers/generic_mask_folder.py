"""A small example for the generic ``mask_folder`` adapter (:mod:`arkx.data.adapters.generic_mask_folder`):
``{train,val,test}/images/case_####.png`` and ``{train,val,test}/masks/<structure>/case_####.png``. Masks
follow the drawn anatomy (:mod:`arkx.synth.structures`); no burned-in marker (it could cover a structure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Site, draw_case
from ..files import save_mask, save_png
from ..sampling import (
    draw_seed,
    sex_age_seg,
)
from ..structures import structure_masks

#: acquisition look of this dataset
SITE = Site("mask_folder", gamma=1.0, contrast=1.0, noise=0.015, blur=0.5, marker=None)


def write_mask_folder(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``{train,val,test}/images/case_####.png`` and ``{train,val,test}/masks/<label>/case_####.png``."""
    root = folder
    site = SITE
    splits = np.array(["train"] * n, dtype=object)
    n_val, n_test = max(1, round(0.1 * n)), max(1, round(0.2 * n))
    splits[n - n_val - n_test:n - n_test] = "val"
    splits[n - n_test:] = "test"
    splits = rng.permutation(splits)
    for i, split in enumerate(splits):
        name = f"case_{i:04d}.png"
        sex, _ = sex_age_seg(rng)
        case = Case(sex, "PA", (), draw_seed(rng), draw_seed(rng))
        shape = (size, size)
        save_png(root / split / "images" / name, draw_case(case, shape, site).image)
        for label, mask in structure_masks(case, shape).items():
            save_mask(root / split / "masks" / label / name, mask)
    return root
