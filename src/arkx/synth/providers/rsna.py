"""Synthetic RSNA Pneumonia Detection (read by :mod:`arkx.data.adapters.rsna`):
``stage_2_train_labels.csv`` (one row per opacity box, or one empty row), ``stage_2_detailed_class_info.csv``
(three classes) and 8-bit DICOMs in ``stage_2_{train,test}_images/<patientId>.dcm``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Finding, Site, draw_case, to_uint8
from ..dicom import write_dicom
from ..files import fmt_num, write_csv
from ..ids import uuid_like
from ..sampling import (
    MIN_POSITIVES,
    draw_seed,
    sex_age,
)

RSNA_CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
RSNA_LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
RSNA_CLASS_COLUMNS = ("patientId", "class")

#: dataset label -> finding concept(s) drawn for a positive (one of them, chosen per case)
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = {"Lung Opacity": ("opacity",)}
#: acquisition look of this dataset
SITE = Site("rsna", gamma=1.0, contrast=0.9, offset=0.06, noise=0.03, blur=0.5, marker="tr", marker_seed=3)

_RSNA_NOT_NORMAL = ("effusion", "nodule", "mass", "atelectasis", "cardiomegaly", "fibrosis", "pleural_thickening",
                    "devices", "pneumothorax", "emphysema")  # fmt: skip


def _rsna_case(rng, cls: str):
    if cls == "Lung Opacity":
        side = ("R", "L", "B")[int(rng.choice(3, p=[0.3, 0.25, 0.45]))]
        findings = [Finding("opacity", 1.0, side)]
        if rng.random() < 0.25:
            findings.append(Finding(_RSNA_NOT_NORMAL[int(rng.integers(len(_RSNA_NOT_NORMAL)))]))
        return tuple(findings)
    if cls == "No Lung Opacity / Not Normal":
        k = 1 if rng.random() < 0.7 else 2
        return tuple(Finding(c) for c in rng.permutation(_RSNA_NOT_NORMAL)[:k])
    return ()


def _rsna_dicom(path: Path, img, pid: str, sex: str, age: int, view: str, idx: int) -> None:
    tags = dict(
        Modality="CR", ConversionType="WSD", BodyPartExamined="CHEST", PatientName=pid, PatientID=pid,
        PatientSex=sex, PatientAge=str(age), PatientBirthDate="", PatientOrientation="", ViewPosition=view,
        SeriesDescription=f"view: {view}", StudyDescription="", StudyDate="19010101", StudyTime="000000.00",
        AccessionNumber="", ReferringPhysicianName="", StudyID="", SeriesNumber=1, InstanceNumber=1,
        PixelSpacing=[0.168, 0.168] if idx % 2 else [0.143, 0.143], LossyImageCompression="01",
    )  # fmt: skip
    write_dicom(path, to_uint8(img), sop_class="1.2.840.10008.5.1.4.1.1.7", uid_key=("rsna", pid),
                photometric="MONOCHROME2", bits_stored=8, tags=tags)  # fmt: skip


def write_rsna(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``stage_2_train_labels.csv``, ``stage_2_detailed_class_info.csv`` and
    ``stage_2_{train,test}_images/<patientId>.dcm``."""
    root, site = folder, SITE
    classes = rng.choice(3, size=n, p=[0.32, 0.38, 0.30])
    for c in range(3):  # every class present
        need = MIN_POSITIVES - int((classes == c).sum())
        if need > 0:
            donors = rng.permutation(np.flatnonzero(classes == np.bincount(classes, minlength=3).argmax()))
            classes[donors[:need]] = c
    patients = []
    for i in range(n):
        pid = uuid_like(rng)
        sex, age = sex_age(rng, 0.43, 1, 92)
        cls = RSNA_CLASSES[int(classes[i])]
        view = "AP" if rng.random() < (0.65 if cls == "Lung Opacity" else 0.4) else "PA"
        aseed = draw_seed(rng)
        findings = _rsna_case(rng, cls)
        for _ in range(4):
            drawn = draw_case(Case(sex, view, findings, aseed, draw_seed(rng)), (size, size), site)
            boxes = drawn.boxes.get(0, []) if cls == "Lung Opacity" else []
            if cls != "Lung Opacity" or boxes:
                break
        _rsna_dicom(root / "stage_2_train_images" / f"{pid}.dcm", drawn.image, pid, sex, age, view, i)
        patients.append((pid, cls, boxes))
    label_rows, class_rows = [], []
    for pid, cls, boxes in sorted(patients):
        if boxes:
            for x0, y0, x1, y1 in boxes:
                label_rows.append([pid, fmt_num(x0), fmt_num(y0), fmt_num(x1 - x0), fmt_num(y1 - y0), "1"])
                class_rows.append([pid, cls])
        else:
            label_rows.append([pid, "", "", "", "", "0"])
            class_rows.append([pid, cls])
    write_csv(root / "stage_2_train_labels.csv", RSNA_LABEL_COLUMNS, label_rows)
    write_csv(root / "stage_2_detailed_class_info.csv", RSNA_CLASS_COLUMNS, class_rows)
    for i in range(max(2, n // 20)):
        pid = uuid_like(rng)
        sex, age = sex_age(rng, 0.43, 1, 92)
        view = "AP" if rng.random() < 0.5 else "PA"
        cls = RSNA_CLASSES[int(rng.integers(3))]
        drawn = draw_case(Case(sex, view, _rsna_case(rng, cls), draw_seed(rng), draw_seed(rng)), (size, size), site)
        _rsna_dicom(root / "stage_2_test_images" / f"{pid}.dcm", drawn.image, pid, sex, age, view, i)
    return root
