"""Synthetic COVIDx CXR-4 (read by :mod:`arkx.data.adapters.covidx`): ``{train,val,test}.txt``
("patient_id filename class data_source") and the images in ``{train,val,test}/``; positives show
bilateral peripheral opacities, negatives are normal or show a unilateral process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Finding, Site, draw_case
from ..files import save_gray
from ..ids import random_hex
from ..sampling import (
    draw_seed,
    groups_for,
)

#: acquisition look of this dataset
SITE = Site("covidx", gamma=1.1, contrast=0.92, offset=0.04, noise=0.03, blur=0.8, border=0.03,
            marker="tr", marker_seed=11)

_COVIDX_SOURCES = ("rsna", "cohen", "ricord", "bimcv", "sirm", "actmed", "fig1")


def write_covidx(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """COVIDx CXR-4: ``{train,val,test}.txt`` ("patient_id filename class data_source", class
    positive/negative) and ``{train,val,test}/<filename>``."""
    root = folder
    site = SITE
    patients = []  # (patient id, source, sex, anatomy seed, n images)
    count = 0
    while count < n:
        source = _COVIDX_SOURCES[int(rng.integers(len(_COVIDX_SOURCES)))]
        pid = str(int(rng.integers(1, 99999))) if source in ("cohen", "sirm") else random_hex(rng, 12)
        if any(p[0] == pid and p[1] == source for p in patients):
            continue
        k = int(min(2, rng.geometric(0.75), n - count))
        patients.append((pid, source, "F" if rng.random() < 0.45 else "M", draw_seed(rng), k))
        count += k
    split_of, groups = groups_for([p[4] for p in patients], rng, {"train": 0.7, "val": 0.1, "test": 0.2})
    # class per patient: half of the patients of every split are positive
    positive = np.zeros(len(patients), dtype=bool)
    for s in ("train", "val", "test"):
        idx = rng.permutation(np.flatnonzero(split_of == s))
        positive[idx[: len(idx) // 2]] = True
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    names = set()
    for p, (pid, source, sex, aseed, k) in enumerate(patients):
        split = split_of[p]
        for _ in range(k):
            name = f"{random_hex(rng, 16)}.{'png' if rng.random() < 0.6 else 'jpg'}"
            while name in names:
                name = f"{random_hex(rng, 16)}.png"
            names.add(name)
            if positive[p]:  # bilateral peripheral ground-glass / consolidation
                findings = (Finding("opacity", 1.0, "B"),) + ((Finding("consolidation", 0.8),)
                                                              if rng.random() < 0.4 else ())
            else:  # negatives: normal or another (unilateral) process
                findings = () if rng.random() < 0.7 else (Finding("opacity", 0.8, "R" if rng.random() < 0.5 else "L"),)
            case = Case(sex, "AP" if rng.random() < 0.5 else "PA", findings, aseed, draw_seed(rng))
            img = draw_case(case, (size, size), site).image
            save_gray(root / split / name, img, "PNG" if name.endswith(".png") else "JPEG")
            lines[split].append(f"{pid} {name} {'positive' if positive[p] else 'negative'} {source}")
    for split, part in lines.items():
        (root / f"{split}.txt").write_text("\n".join(part) + "\n")
    return root
