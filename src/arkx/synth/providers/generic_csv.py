"""A small example for the generic ``csv`` adapter (:mod:`arkx.data.adapters.generic_csv`):
``my_csv_dataset/labels.csv`` (path, patient, split, sex, age, view and four labels as 1/0/-1/blank) and
``my_csv_dataset/images/<patient>_<k>.png``. Options to read it::

    {type: csv, root: OUT/csv/my_csv_dataset, options: {csv: labels.csv, patient_column: patient,
     split_column: split, sex_column: sex, age_column: age, view_column: view}}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Site, draw_case
from ..files import save_gray, write_csv
from ..sampling import (
    draw_seed,
    ensure_truth,
    findings_for,
    groups_for,
    sample_truth,
    sex_age,
)

GENERIC_CSV_LABELS = ("Cardiomegaly", "Effusion", "Nodule", "Pneumothorax")

#: dataset label -> finding concept(s) drawn for a positive (one of them, chosen per case)
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("cardiomegaly",), "Effusion": ("effusion",), "Nodule": ("nodule",),
    "Pneumothorax": ("pneumothorax",),
}  # fmt: skip
#: acquisition look of this dataset
SITE = Site("csv", gamma=1.0, contrast=1.0, offset=0.01, noise=0.02, blur=0.5, marker=None)


def write_generic_csv(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``my_csv_dataset/labels.csv`` (path,patient,split,sex,age,view,Cardiomegaly,Effusion,Nodule,Pneumothorax;
    values 1/0/-1/blank) and ``my_csv_dataset/images/<patient>_<k>.png``."""
    root = folder / "my_csv_dataset"
    table, site = CONCEPTS_BY_LABEL, SITE
    patients, count = [], 0
    while count < n:
        k = int(min(3, rng.geometric(0.6), n - count))
        sex, age = sex_age(rng)
        patients.append((f"P{len(patients) + 1:04d}", sex, age, draw_seed(rng), k))
        count += k
    split_of, groups = groups_for([p[4] for p in patients], rng, {"train": 0.7, "val": 0.1, "test": 0.2})
    T, normal = sample_truth(rng, count, [0.2, 0.25, 0.15, 0.1], 0.3)
    ensure_truth(rng, T, normal, groups)
    rows, u = [], 0
    for p, (pid, sex, age, aseed, k) in enumerate(patients):
        for j in range(1, k + 1):
            view = "PA" if rng.random() < 0.6 else "AP"
            findings, _ = findings_for(rng, [(lab, 1.0) for c, lab in enumerate(GENERIC_CSV_LABELS) if T[u, c]], table)
            rel = f"images/{pid}_{j}.png"
            save_gray(root / rel, draw_case(Case(sex, view, findings, aseed, draw_seed(rng)), (size, size), site).image,
                      "PNG")
            r = rng.random(len(GENERIC_CSV_LABELS))
            recorded = ["1" if t else ("" if x < 0.05 else "0") for t, x in zip(T[u], r)]
            recorded = ["-1" if t and x > 0.9 else v for v, t, x in zip(recorded, T[u], r)]
            rows.append([rel, pid, str(split_of[p]), sex, str(age + (j - 1)), view] + recorded)
            u += 1
    write_csv(root / "labels.csv", ("path", "patient", "split", "sex", "age", "view") + GENERIC_CSV_LABELS, rows)
    return root
