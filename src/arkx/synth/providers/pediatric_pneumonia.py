"""Synthetic pediatric pneumonia set (Kaggle "chest_xray", read by
:mod:`arkx.data.adapters.pediatric_pneumonia`): ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``
with the provider's file names; bacterial pneumonia as a lobar consolidation, viral as bilateral opacity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Finding, Site, draw_case
from ..files import save_gray
from ..sampling import (
    draw_seed,
    split_by_quota,
)

#: acquisition look of this dataset
SITE = Site("pediatric_pneumonia", gamma=0.9, contrast=1.1, offset=-0.03, noise=0.018,
            blur=0.6, border=0.06, border_top=0.04, marker="tl", marker_seed=12)


def write_pediatric_pneumonia(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """Kaggle "chest_xray": ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` with the provider's
    file names (``IM-0001-0001.jpeg``, ``NORMAL2-IM-0001-0001.jpeg``, ``person1_bacteria_1.jpeg``,
    ``person1_virus_2.jpeg``)."""
    root = folder / "chest_xray"
    site = SITE
    sizes, count = [], 0
    while count < n:
        k = int(min(2, rng.geometric(0.7), n - count))
        sizes.append(k)
        count += k
    n_val = max(3, int(round(0.02 * len(sizes))))
    split_of = split_by_quota(rng, len(sizes), {"train": 1.0 - 0.2 - n_val / len(sizes), "test": 0.2,
                                                "val": n_val / len(sizes)})
    kinds = np.empty(len(sizes), dtype=object)
    for s in ("train", "val", "test"):  # every split holds normal, bacterial and viral patients
        idx = rng.permutation(np.flatnonzero(split_of == s))
        for i, p in enumerate(idx):
            kinds[p] = ("normal", "bacteria", "virus")[i] if i < 3 else \
                ("normal", "bacteria", "virus")[int(rng.choice(3, p=[0.3, 0.45, 0.25]))]
    next_person, next_im, next_im2, image_no = 1, 1, 1, 0
    for p, k in enumerate(sizes):
        kind = kinds[p]
        if kind != "normal":
            name, next_person = f"person{next_person}", next_person + 1
        elif rng.random() < 0.7:
            name, next_im = f"IM-{next_im:04d}", next_im + 1
        else:
            name, next_im2 = f"NORMAL2-IM-{next_im2:04d}", next_im2 + 1
        sex, aseed = ("F" if rng.random() < 0.5 else "M"), draw_seed(rng)
        for j in range(1, k + 1):
            image_no += 1
            if kind == "normal":
                fname, cls, findings = f"{name}-{j:04d}.jpeg", "NORMAL", ()
            else:
                fname, cls = f"{name}_{kind}_{image_no}.jpeg", "PNEUMONIA"
                side = "R" if rng.random() < 0.5 else "L"
                findings = ((Finding("consolidation", 1.0, side),) if kind == "bacteria"
                            else (Finding("opacity", 0.8, "B"),))
            img = draw_case(Case(sex, "AP", findings, aseed, draw_seed(rng)), (size, size), site).image
            save_gray(root / split_of[p] / cls / fname, img, "JPEG")
    return root
