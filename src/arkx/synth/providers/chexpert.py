"""Synthetic CheXpert-v1.0-small (read by :mod:`arkx.data.adapters.chexpert`): ``train.csv`` /
``valid.csv`` with the labeler's 1 / 0 / -1 / blank values, images under
``{train,valid}/patientNNNNN/studyK/viewJ_<frontal|lateral>.jpg``. The latent truth is drawn first;
what the labeler records is derived from it (the validation labels are the truth, as in the
radiologist-labelled validation set); an uncertain positive is drawn at half strength.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Site, draw_case
from ..files import fmt_label, save_gray, write_csv
from ..sampling import (
    draw_seed,
    ensure_observed,
    ensure_truth,
    findings_for,
    observe_labeler,
    sample_truth,
    sex_age,
)

CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)  # fmt: skip
CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA") + CHEXPERT_LABELS

#: dataset label -> finding concept(s) drawn for a positive (one of them, chosen per case)
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("wide_mediastinum",),
    "Cardiomegaly": ("cardiomegaly",),
    "Lung Opacity": ("opacity",),
    "Lung Lesion": ("nodule", "mass"),
    "Edema": ("edema",),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("opacity", "consolidation"),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion",),
    "Pleural Other": ("pleural_thickening",),
    "Fracture": ("rib_fracture", "clavicle_fracture"),
    "Support Devices": ("devices",),
}
#: latent prevalence of each label (fraction of studies/images)
PREVALENCE_BY_LABEL: dict[str, float] = {
    "Enlarged Cardiomediastinum": 0.10, "Cardiomegaly": 0.16, "Lung Opacity": 0.30, "Lung Lesion": 0.08,
    "Edema": 0.18, "Consolidation": 0.10, "Pneumonia": 0.08, "Atelectasis": 0.18, "Pneumothorax": 0.10,
    "Pleural Effusion": 0.28, "Pleural Other": 0.06, "Fracture": 0.07, "Support Devices": 0.30,
}
NORMAL_FRACTION = 0.22  # studies/images without any finding
#: acquisition look of this dataset
SITE = Site(
    "chexpert", gamma=1.15, contrast=0.95, offset=0.02, noise=0.02, blur=0.7, marker="tr", marker_seed=1
)


def write_chexpert(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``CheXpert-v1.0-small/{train,valid}.csv`` and
    ``{train,valid}/patientNNNNN/studyK/viewJ_<frontal|lateral>.jpg``."""
    name = "CheXpert-v1.0-small"
    root = folder / name
    labels = CHEXPERT_LABELS[1:]
    table, site = CONCEPTS_BY_LABEL, SITE
    n_valid = max(2, int(round(0.2 * n)))
    studies = []  # (split, patient no, study no, sex, age, anatomy seed, [(view no, kind, ap/pa)])
    pid = 0
    for split, target, p_lat in (("train", n - n_valid, 0.3), ("valid", n_valid, 0.15)):
        count = 0
        while count < target:
            pid += 1
            sex, age = sex_age(rng, 0.42)
            sex_word = {"M": "Male", "F": "Female"}[sex] if rng.random() > 0.01 else "Unknown"
            aseed = draw_seed(rng)
            k = 1 if split == "valid" else int(min(4, rng.geometric(0.55)))
            for s in range(1, k + 1):
                views = [(1, "frontal", "AP" if rng.random() < 0.72 else "PA")]
                if rng.random() < p_lat:
                    views.append((2, "lateral", ""))
                studies.append((split, pid, s, sex_word, min(90, age + s - 1), aseed, views))
                count += len(views)
    groups = np.array([s[0] for s in studies], dtype=object)
    prev = [PREVALENCE_BY_LABEL[lab] for lab in labels]
    T, normal = sample_truth(rng, len(studies), prev, NORMAL_FRACTION)
    ensure_truth(rng, T, normal, groups)
    obs = observe_labeler(rng, T, normal)
    valid = groups == "valid"
    obs[valid] = T[valid].astype(float)
    ensure_observed(rng, obs, T, groups)
    rows = {"train": [], "valid": []}
    for u, (split, pno, sno, sex_word, age, aseed, views) in enumerate(studies):
        pos = [(lab, 0.5 if obs[u, j] == -1.0 else 1.0) for j, lab in enumerate(labels) if T[u, j]]
        findings, _ = findings_for(rng, pos, table)
        sex = {"Male": "M", "Female": "F"}.get(sex_word, "O")
        nf = 1.0 if normal[u] else (0.0 if split == "valid" else float("nan"))
        for vno, kind, appa in views:
            rel = f"{split}/patient{pno:05d}/study{sno}/view{vno}_{kind}.jpg"
            case = Case(sex, "LATERAL" if kind == "lateral" else appa, findings, aseed, draw_seed(rng))
            save_gray(root / rel, draw_case(case, (size, size), site).image, "JPEG")
            rows[split].append(
                [f"{name}/{rel}", sex_word, str(age), kind.capitalize(), appa, fmt_label(nf)]
                + [fmt_label(obs[u, j]) for j in range(len(labels))]
            )
    write_csv(root / "train.csv", CHEXPERT_COLUMNS, rows["train"])
    write_csv(root / "valid.csv", CHEXPERT_COLUMNS, rows["valid"])
    return root
