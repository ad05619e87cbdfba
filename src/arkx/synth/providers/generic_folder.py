"""A small example for the generic ``folder`` adapter (:mod:`arkx.data.adapters.generic_folder`):
``my_folder_dataset/{train,val,test}/<class>/<patient>_<k>.png``. Options to read it::

    {type: folder, root: OUT/folder/my_folder_dataset, options: {patient_regex: "^(P\\d+)_"}}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Finding, Site, draw_case
from ..files import save_gray
from ..sampling import (
    draw_seed,
    groups_for,
)

GENERIC_FOLDER_CLASSES = ("Cardiomegaly", "Effusion", "Normal", "Pneumothorax")

#: acquisition look of this dataset
SITE = Site("folder", gamma=0.95, contrast=1.05, offset=0.0, noise=0.02, blur=0.5, marker="bl",
            marker_seed=14)


def write_generic_folder(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``my_folder_dataset/{train,val,test}/<class>/<patient>_<k>.png`` with classes Cardiomegaly, Effusion,
    Normal, Pneumothorax (read with ``patient_regex: "^(P\\d+)_"``)."""
    root = folder / "my_folder_dataset"
    site = SITE
    concept = {"Cardiomegaly": "cardiomegaly", "Effusion": "effusion", "Pneumothorax": "pneumothorax"}
    patients, count = [], 0
    while count < n:
        k = int(min(2, rng.geometric(0.7), n - count))
        patients.append((f"P{len(patients) + 1:04d}", "F" if rng.random() < 0.5 else "M", draw_seed(rng), k))
        count += k
    split_of, _ = groups_for([p[3] for p in patients], rng, {"train": 0.7, "val": 0.1, "test": 0.2})
    cls_of = np.empty(len(patients), dtype=object)
    for s in ("train", "val", "test"):  # every class in every split (round robin over a shuffled order)
        idx = rng.permutation(np.flatnonzero(split_of == s))
        for i, p in enumerate(idx):
            cls_of[p] = GENERIC_FOLDER_CLASSES[i % len(GENERIC_FOLDER_CLASSES)]
    for p, (pid, sex, aseed, k) in enumerate(patients):
        cls = cls_of[p]
        findings = () if cls == "Normal" else (Finding(concept[cls], 1.0),)
        for j in range(1, k + 1):
            img = draw_case(Case(sex, "PA", findings, aseed, draw_seed(rng)), (size, size), site).image
            save_gray(root / split_of[p] / cls / f"{pid}_{j}.png", img, "PNG")
    return root
