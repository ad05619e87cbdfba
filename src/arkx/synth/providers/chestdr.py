"""Synthetic MedFMC ChestDR (read by :mod:`arkx.data.adapters.chestdr`): ``MedFMC/chest/images/<id>.png``,
``trainval.txt`` and ``test_WithLabel.txt`` ("<id>.png v1,...,v19"). Positives of every label are
placed in the validation images the adapter carves by default (the shared seeded split of
:mod:`arkx.data.splits`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.splits import carve_validation
from ..anatomy import Case, Site, draw_case
from ..files import save_gray
from ..ids import random_hex
from ..sampling import (
    draw_seed,
    ensure_truth,
    findings_for,
    sample_truth,
    sex_age,
)

CHESTDR_LABELS = (
    "pleural_effusion", "nodule", "pneumonia", "cardiomegaly", "hilar_enlargement", "fracture_old", "fibrosis",
    "aortic_calcification", "tortuous_aorta", "thickened_pleura", "TB", "pneumothorax", "emphysema", "atelectasis",
    "calcification", "pulmonary_edema", "increased_lung_markings", "elevated_diaphragm", "consolidation",
)  # fmt: skip

#: dataset label -> finding concept(s) drawn for a positive; labels without a drawable
#: equivalent borrow the nearest concept (noted per label)
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "pleural_effusion": ("effusion",),
    "nodule": ("nodule",),
    "pneumonia": ("opacity", "consolidation"),
    "cardiomegaly": ("cardiomegaly",),
    "hilar_enlargement": ("enlarged_pa",),
    "fracture_old": ("rib_fracture",),
    "fibrosis": ("fibrosis",),
    "aortic_calcification": ("calcification",),
    "tortuous_aorta": ("aortic_enlargement",),
    "thickened_pleura": ("pleural_thickening",),
    "TB": ("tuberculosis",),
    "pneumothorax": ("pneumothorax",),
    "emphysema": ("emphysema",),
    "atelectasis": ("atelectasis",),
    "calcification": ("calcification",),
    "pulmonary_edema": ("edema",),
    "increased_lung_markings": ("fibrosis",),  # nearest: reticular texture
    "elevated_diaphragm": ("atelectasis",),  # nearest: volume loss
    "consolidation": ("consolidation",),
}
#: acquisition look of this dataset
SITE = Site("chestdr", gamma=1.2, contrast=1.0, offset=0.0, noise=0.01, blur=0.4, marker="br",
            marker_seed=13)


def write_chestdr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """MedFMC ChestDR: ``MedFMC/chest/images/<id>.png``, ``trainval.txt`` and ``test_WithLabel.txt``
    ("<id>.png v1,...,v19")."""
    root = folder / "MedFMC" / "chest"
    table, site = CONCEPTS_BY_LABEL, SITE
    n_test = max(2, int(round(0.2 * n)))
    part = rng.permutation(np.array(["trainval"] * (n - n_test) + ["test"] * n_test, dtype=object))
    ids: list[str] = []
    while len(ids) < n:
        image_id = ("5" + random_hex(rng, 14)).upper()
        if image_id not in ids:
            ids.append(image_id)
    # the val images the adapter carves by default (seed 0), so every label has positives there too
    groups = carve_validation(ids, part == "trainval", 0, 0.1)
    prev = [0.25, 0.12, 0.15, 0.12, 0.06, 0.06, 0.15, 0.10, 0.06, 0.08, 0.05, 0.04, 0.05, 0.05, 0.08, 0.04, 0.06,
            0.04, 0.05]
    T, normal = sample_truth(rng, n, prev, 0.3)
    ensure_truth(rng, T, normal, groups)
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    for u, image_id in enumerate(ids):
        sex, _ = sex_age(rng, 0.45)
        findings, _ = findings_for(rng, [(lab, 1.0) for j, lab in enumerate(CHESTDR_LABELS) if T[u, j]], table)
        save_gray(root / "images" / f"{image_id}.png",
                  draw_case(Case(sex, "PA", findings, draw_seed(rng), draw_seed(rng)), (size, size), site).image, "PNG")
        lines[part[u]].append(f"{image_id}.png " + ",".join(str(int(x)) for x in T[u]))
    (root / "trainval.txt").write_text("\n".join(lines["trainval"]) + "\n")
    (root / "test_WithLabel.txt").write_text("\n".join(lines["test"]) + "\n")
    return root
