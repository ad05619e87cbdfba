"""Synthetic Shenzhen tuberculosis set (read by :mod:`arkx.data.adapters.shenzhen`):
``ChinaSet_AllFiles/CXR_png/CHNCXR_NNNN_{0,1}.png`` and the clinical readings
``ClinicalReadings/CHNCXR_NNNN_{0,1}.txt`` (sex, age and the reading, in the provider's spellings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Finding, Site, draw_case
from ..files import save_gray
from ..sampling import (
    MIN_POSITIVES,
    draw_seed,
    sex_age,
)

#: dataset label -> finding concept(s) drawn for a positive (one of them, chosen per case)
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = {"Tuberculosis": ("tuberculosis",)}
#: acquisition look of this dataset
SITE = Site(
    "shenzhen",
    gamma=0.8,
    contrast=1.05,
    offset=-0.02,
    noise=0.02,
    blur=1.0,
    border=0.08,
    marker="bl",
    marker_seed=5,
)

_TB_READINGS = {
    "R": ("right PTB", "PTB in the right upper field", "right upper PTB", "right secondary PTB"),
    "L": ("left PTB", "PTB in the left upper field", "left upper PTB", "left secondary PTB"),
    "B": (
        "bilateral PTB",
        "bilateral secondary PTB",
        "PTB in the bilateral upper fields",
        "bilateral PTB with cavities",
    ),
}
_SIDE_WORD = {"R": "right", "L": "left"}


def write_shenzhen(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``ChinaSet_AllFiles/CXR_png/CHNCXR_NNNN_{0,1}.png`` and ``ClinicalReadings/CHNCXR_NNNN_{0,1}.txt``."""
    root = folder / "ChinaSet_AllFiles"
    site = SITE
    n_tb = int(np.clip(round(n * 0.5), min(MIN_POSITIVES, n // 2), n - min(MIN_POSITIVES, n // 2)))
    labels = [0] * (n - n_tb) + [1] * n_tb  # normals are numbered first, as shipped
    for i, tb in enumerate(labels, start=1):
        stem = f"CHNCXR_{i:04d}_{tb}"
        sex, age = sex_age(rng, 0.32, 8, 85)
        r = rng.random()
        word = ("male" if sex == "M" else "female") if r < 0.8 else ("Male" if sex == "M" else "Female")
        unit = "yrs" if r < 0.9 else ("yr" if r < 0.96 else " yrs")
        findings: tuple[Finding, ...] = ()
        reading = "normal"
        if tb:
            side = ("R", "L", "B")[int(rng.choice(3, p=[0.35, 0.25, 0.4]))]
            reading = _TB_READINGS[side][int(rng.integers(4))]
            findings = (Finding("tuberculosis", 1.0, side),)
            if rng.random() < 0.15:
                eff_side = "R" if rng.random() < 0.5 else "L"
                reading += f", {_SIDE_WORD[eff_side]} pleural effusion"
                findings += (Finding("effusion", 1.0, eff_side),)
        drawn = draw_case(Case(sex, "PA", findings, draw_seed(rng), draw_seed(rng)), (size, size), site)
        save_gray(root / "CXR_png" / f"{stem}.png", drawn.image, "PNG")
        sep = "\n\n" if rng.random() < 0.1 else "\n"
        path = root / "ClinicalReadings" / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{word} {age}{unit}{sep}{reading}\n".encode())
    return root
