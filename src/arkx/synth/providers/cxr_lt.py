"""Synthetic CXR-LT 2023 (read by :mod:`arkx.data.adapters.cxr_lt`): ``cxr-lt-2023/{train,development,test}.csv``
(dicom_id, subject_id, study_id, fpath and 26 long-tailed labels) and the MIMIC-CXR-JPG images they
name, drawn with MIMIC-CXR's acquisition look.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, draw_case
from ..files import save_gray, write_csv
from ..ids import mimic_dicom_id
from ..sampling import (
    draw_seed,
    ensure_truth,
    findings_for,
    sample_truth,
    sex_age,
    split_by_quota,
)
from . import chexpert, mimic_cxr

#: CXR-LT 2023 label columns, in file order (alphabetical; "No Finding" among them)
CXR_LT_LABELS = (
    "Atelectasis", "Calcification of the Aorta", "Cardiomegaly", "Consolidation", "Edema", "Emphysema",
    "Enlarged Cardiomediastinum", "Fibrosis", "Fracture", "Hernia", "Infiltration", "Lung Lesion", "Lung Opacity",
    "Mass", "No Finding", "Nodule", "Pleural Effusion", "Pleural Other", "Pleural Thickening", "Pneumomediastinum",
    "Pneumonia", "Pneumoperitoneum", "Pneumothorax", "Subcutaneous Emphysema", "Support Devices", "Tortuous Aorta",
)  # fmt: skip
CXR_LT_META = ("dicom_id", "subject_id", "study_id", "fpath")

#: dataset label -> finding concept(s) drawn for a positive; labels without a drawable
#: equivalent borrow the nearest concept (noted per label)
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = {
    **{k: v for k, v in chexpert.CONCEPTS_BY_LABEL.items()},
    "Calcification of the Aorta": ("calcification",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("fibrosis",),
    "Hernia": ("hernia",),
    "Infiltration": ("opacity",),
    "Mass": ("mass",),
    "Nodule": ("nodule",),
    "Pleural Thickening": ("pleural_thickening",),
    "Pneumomediastinum": ("wide_mediastinum",),  # nearest: mediastinal contour change
    "Pneumoperitoneum": ("cyst",),  # nearest: a dark air space
    "Subcutaneous Emphysema": ("emphysema",),  # nearest: hyperlucency
    "Tortuous Aorta": ("aortic_enlargement",),
}
#: CXR-LT images are MIMIC-CXR-JPG images
SITE = mimic_cxr.SITE


def write_cxr_lt(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``cxr-lt-2023/{train,development,test}.csv`` (dicom_id, subject_id, study_id, fpath, 26 classes 0/1)
    and the MIMIC-CXR-JPG images they name under ``cxr-lt-2023/files/pXX/pNNNNNNNN/sNNNNNNNN/``."""
    root = folder / "cxr-lt-2023"
    table, site = CONCEPTS_BY_LABEL, SITE
    labels = tuple(lab for lab in CXR_LT_LABELS if lab != "No Finding")
    subjects, studies = [], []  # studies: (subject index, study_id, views)
    used_s, used_t, count = set(), set(), 0
    while count < n:
        sid = int(rng.integers(10_000_000, 20_000_000))
        if sid in used_s:
            continue
        used_s.add(sid)
        sex, _ = sex_age(rng, 0.47)
        subjects.append((sid, sex, draw_seed(rng)))
        for _ in range(int(min(3, rng.geometric(0.55)))):
            st = int(rng.integers(50_000_000, 60_000_000))
            while st in used_t:
                st = int(rng.integers(50_000_000, 60_000_000))
            used_t.add(st)
            r = rng.random()
            views = ("PA", "LATERAL") if r < 0.35 else (("AP",) if r < 0.8 else ("PA",))
            studies.append((len(subjects) - 1, st, views))
            count += len(views)
    split_of_subject = split_by_quota(rng, len(subjects), {"train": 0.7, "development": 0.12, "test": 0.18})
    groups = np.array([split_of_subject[s] for s, _, _ in studies], dtype=object)
    # long-tailed prevalence: head labels ~30%, tail labels ~3%
    ranks = rng.permutation(len(labels))
    prev = [float(np.clip(0.32 * 0.86 ** r, 0.03, 0.32)) for r in ranks]
    T, normal = sample_truth(rng, len(studies), prev, 0.25)
    ensure_truth(rng, T, normal, groups)
    rows: dict[str, list] = {"train": [], "development": [], "test": []}
    for u, (si, st, views) in enumerate(studies):
        sid, sex, aseed = subjects[si]
        findings, _ = findings_for(rng, [(lab, 1.0) for j, lab in enumerate(labels) if T[u, j]], table)
        values = {lab: int(T[u, j]) for j, lab in enumerate(labels)} | {"No Finding": int(normal[u])}
        for view in views:
            did = mimic_dicom_id(rng)
            rel = f"files/p{str(sid)[:2]}/p{sid}/s{st}/{did}.jpg"
            save_gray(root / rel, draw_case(Case(sex, view, findings, aseed, draw_seed(rng)), (size, size), site).image,
                      "JPEG")
            rows[groups[u]].append([did, str(sid), str(st), rel] + [str(values[lab]) for lab in CXR_LT_LABELS])
    for name, part in rows.items():
        write_csv(root / f"{name}.csv", CXR_LT_META + CXR_LT_LABELS, part)
    return root
