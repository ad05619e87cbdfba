"""Synthetic Montgomery County set (read by :mod:`arkx.data.adapters.montgomery`):
``MontgomerySet/CXR_png/MCUCXR_####_{0,1}.png`` (4020x4892 aspect, either orientation), lung masks
``ManualMask/{left,right}Mask/*.png`` and ``ClinicalReadings/*.txt``. Masks follow the drawn anatomy
(:mod:`arkx.synth.structures`); no burned-in marker (it could cover a structure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Finding, Site, draw_case
from ..files import save_mask, save_png, write_text
from ..sampling import (
    draw_seed,
    sex_age_seg,
)
from ..structures import structure_masks

#: acquisition look of this dataset
SITE = Site("montgomery", gamma=0.9, contrast=1.0, offset=0.02, noise=0.012, blur=0.6, marker=None)


def write_montgomery(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``MontgomerySet/CXR_png/MCUCXR_####_{0,1}.png`` (4020x4892 aspect, either orientation),
    ``ManualMask/{left,right}Mask/*.png`` (full resolution, 0/255) and ``ClinicalReadings/*.txt``."""
    root = folder / "MontgomerySet"
    site = SITE
    n_tb = int(np.clip(round(n * 58 / 138), 2, n - 2))
    long_side = int(round(size * 4892 / 4020))
    tb_flags = rng.permutation([1] * n_tb + [0] * (n - n_tb))
    for i, tb in enumerate(tb_flags, start=1):
        stem = f"MCUCXR_{i:04d}_{int(tb)}"
        sex, age = sex_age_seg(rng, 0.55, 17, 89)
        side = ("R", "L", "B")[int(rng.integers(3))]
        findings = (Finding("tuberculosis", 1.0, side),) if tb else ()
        case = Case(sex, "PA", findings, draw_seed(rng), draw_seed(rng))
        shape = (long_side, size) if rng.random() < 0.5 else (size, long_side)
        save_png(root / "CXR_png" / f"{stem}.png", draw_case(case, shape, site).image)
        masks = structure_masks(case, shape)
        save_mask(root / "ManualMask" / "leftMask" / f"{stem}.png", masks["Left Lung"])
        save_mask(root / "ManualMask" / "rightMask" / f"{stem}.png", masks["Right Lung"])
        reading = "normal" if not tb else {"R": "right upper TB", "L": "left upper TB", "B": "bilateral TB"}[side]
        write_text(root / "ClinicalReadings" / f"{stem}.txt",
                   f"Patient's Sex: {sex}\nPatient's Age: {age:03d}Y\n{reading}\n")
    return root
