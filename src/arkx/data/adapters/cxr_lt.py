"""CXR-LT (long-tailed multi-label chest X-ray classification on MIMIC-CXR-JPG; PhysioNet
``cxr-lt-iccv-workshop-cvamd``), as downloaded.

Expected folder (the CXR-LT 2023 label files; the root is the folder that holds them, e.g.
``cxr-lt-iccv-workshop-cvamd/1.1.0/`` or ``.../2.0.0/cxr-lt-2023/``)::

    <cxr-lt>/
        train.csv                  dicom_id,subject_id,study_id,...,<one 0/1 column per class>
        development.csv            the official validation split (also accepted: development_labeled.csv,
                                   valid.csv, validation.csv, val.csv); may carry no label columns
        test.csv                   the official test split (also accepted: test_labeled.csv); may carry
                                   no label columns
    <MIMIC-CXR-JPG 2.0.0>/files/p10/p10000032/s50414267/<dicom_id>.jpg    (option ``images_root``)

The 2023 release has 26 classes (Atelectasis, Calcification of the Aorta, Cardiomegaly, ...,
Tortuous Aorta); the label columns are not hard-coded: every column that is not a known metadata
column (:data:`META_COLUMNS`) is a label, in the file's order, named from the header, so the 2024
(40-class) files are read the same way. Values are 0/1 (-1/blank tolerated, as everywhere).

Splits come from the file names (train / development / test; without a development file, val is
carved from train by patient, seeded). A split file without label columns
(the unlabeled development/test releases) gives all-NaN labels for its rows (counted in ``notes``);
a split file whose label columns differ from ``train.csv`` is an error. Where both a ``*_labeled``
file and the plain one exist, the labeled one is read.

Images are MIMIC-CXR-JPG files: the path is the ``fpath`` (or ``path``) column when present (the part
from ``files/`` on), otherwise ``files/p<first 2 digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.
The path must stay inside ``images_root`` (refused with the file and row otherwise).
``images_root`` (default: the CXR-LT folder itself) is the MIMIC-CXR-JPG 2.0.0 folder; a relative
``images_root`` is resolved against the CXR-LT folder, and ``Records.root`` is that images folder.

Uncertainty about the real release: the exact metadata columns of each file (``fpath`` present in the
2024 files; the 2023 files may hold ``dicom_id, subject_id, study_id`` only, or more MIMIC metadata)
and the names of the labeled development/test files after the challenge; the adapter therefore
detects label columns by exclusion and accepts the file-name variants listed above.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ._common import (carve_validation, images_frame, none_if_missing, optional_column, parse_label_columns,
                      path_in_base, read_csv)
from .registry import AdapterOptions, register

#: the 26 classes of CXR-LT 2023, in the order of the released label files (alphabetical)
CXR_LT_2023_LABELS = (
    "Atelectasis", "Calcification of the Aorta", "Cardiomegaly", "Consolidation", "Edema", "Emphysema",
    "Enlarged Cardiomediastinum", "Fibrosis", "Fracture", "Hernia", "Infiltration", "Lung Lesion", "Lung Opacity",
    "Mass", "No Finding", "Nodule", "Pleural Effusion", "Pleural Other", "Pleural Thickening", "Pneumomediastinum",
    "Pneumonia", "Pneumoperitoneum", "Pneumothorax", "Subcutaneous Emphysema", "Support Devices", "Tortuous Aorta",
)  # fmt: skip

#: columns that are never labels (MIMIC-CXR metadata and path columns seen in CXR-LT releases)
META_COLUMNS = frozenset({
    "dicom_id", "subject_id", "study_id", "fpath", "path", "Path", "split", "ViewPosition", "view",
    "PerformedProcedureStepDescription", "Rows", "Columns", "StudyDate", "StudyTime",
    "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning",
    "gender", "sex", "anchor_age", "age", "Unnamed: 0",
})  # fmt: skip
KEY_COLUMNS = ("dicom_id", "subject_id", "study_id")

#: official split -> accepted file names, in order of preference
SPLIT_FILES = {
    "train": ("train_labeled.csv", "train.csv"),
    "val": ("development_labeled.csv", "development.csv", "valid.csv", "validation.csv", "val.csv"),
    "test": ("test_labeled.csv", "test.csv"),
}

LAYOUT = """\
cxr-lt/                       (CXR-LT 2023 label files)
  train.csv                   dicom_id,subject_id,study_id,[fpath,]<class columns, 0/1>
  development.csv             (or development_labeled.csv / valid.csv) -> val
  test.csv                    (or test_labeled.csv) -> test
MIMIC-CXR-JPG (option images_root; default: the cxr-lt folder)
  files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg"""


class CxrLtOptions(AdapterOptions):
    #: the MIMIC-CXR-JPG 2.0.0 folder holding files/; relative paths are resolved against the CXR-LT folder
    images_root: str | None = None
    #: fraction of train patients carved out as val, only when no development/validation file exists
    val_fraction: float = 0.1


def label_columns_of(frame: pd.DataFrame) -> list[str]:
    """Every column that is not metadata, in file order."""
    return [c for c in frame.columns if c not in META_COLUMNS]


def _image_path(row_fpath: object, subject: str, study: str, dicom_id: str) -> str:
    if isinstance(row_fpath, str) and row_fpath.strip():
        text = row_fpath.strip().replace("\\", "/")
        at = text.find("files/")
        return text[at:] if at >= 0 else text.lstrip("/")
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"


def _read_split(path: Path) -> pd.DataFrame:
    frame = read_csv(path, "cxr_lt", required=KEY_COLUMNS, dtype={"dicom_id": str})
    for col in ("subject_id", "study_id"):
        ids = pd.to_numeric(frame[col], errors="coerce")
        bad = ids.isna() | (ids != ids.round())
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetFormatError(
                f"cxr_lt: {path} row {i + 2} column {col!r}: value {frame[col].iloc[i]!r} is not an integer id")
        frame[col] = ids.astype("int64").astype(str)
    return frame


@register("cxr_lt", options=CxrLtOptions, layout=LAYOUT,
          summary="CXR-LT (MIMIC-CXR-JPG long-tailed): label columns from the header, official train/dev/test")
def read(root: Path, options: CxrLtOptions) -> Records:
    found: dict[str, Path] = {}
    for split, names in SPLIT_FILES.items():
        hit = next((root / n for n in names if (root / n).is_file()), None)
        if hit is not None:
            found[split] = hit
    if "train" not in found:
        raise DatasetFormatError(f"cxr_lt: expected {root / 'train.csv'} (CXR-LT label file; not found)")
    frames = {split: _read_split(path) for split, path in found.items()}
    label_names = label_columns_of(frames["train"])
    if not label_names:
        raise DatasetFormatError(
            f"cxr_lt: {found['train']} has no label columns (only metadata {list(frames['train'].columns)})")
    parts, unlabeled = [], {}
    for split, frame in frames.items():
        path = found[split]
        cols = label_columns_of(frame)
        if cols and set(cols) != set(label_names):
            missing = [c for c in label_names if c not in cols]
            extra = [c for c in cols if c not in label_names]
            raise DatasetFormatError(
                f"cxr_lt: {path} label columns differ from {found['train'].name}: missing {missing}, extra {extra}")
        if cols:
            values = parse_label_columns(frame, label_names, path, "cxr_lt")  # picked by name
        else:
            values = np.full((len(frame), len(label_names)), np.nan, dtype=np.float32)
            unlabeled[split] = path.name
        parts.append((split, path, frame, values))
    seen: dict[str, str] = {}
    for split, path, frame, _ in parts:
        for i, did in enumerate(frame["dicom_id"]):
            if did in seen:
                raise DatasetFormatError(
                    f"cxr_lt: {path} row {i + 2}: dicom_id {did!r} also appears in {seen[did]}")
            seen[did] = f"{path.name} row {i + 2}"
    images_root = root
    if options.images_root is not None:
        images_root = Path(options.images_root).expanduser()
        images_root = images_root if images_root.is_absolute() else root / images_root
        if not images_root.is_dir():
            raise DatasetFormatError(f"cxr_lt: images_root {images_root} (MIMIC-CXR-JPG folder) does not exist")
    image_ids, paths, patients, splits, views = [], [], [], [], []
    for split, path, frame, _ in parts:
        path_col = "fpath" if "fpath" in frame.columns else ("path" if "path" in frame.columns else None)
        fpaths = frame[path_col] if path_col else pd.Series([None] * len(frame))
        rows = zip(frame["dicom_id"], frame["subject_id"], frame["study_id"], fpaths)
        for row, (did, subj, study, fp) in enumerate(rows, start=2):
            image_ids.append(did)
            # the path (from fpath, or built from the ids) must stay inside the images folder
            paths.append(path_in_base(images_root, _image_path(fp, subj, study, did), dataset="cxr_lt", source=path,
                                      where=f"row {row}", column=path_col or "dicom_id"))
            patients.append(subj)
            splits.append(split)
        view_col = optional_column(frame, ("ViewPosition", "view"), path, "cxr_lt", "view") \
            if {"ViewPosition", "view"} & set(frame.columns) else None
        views += none_if_missing(view_col) if view_col is not None else [None] * len(frame)
    labels = np.concatenate([v for *_, v in parts], axis=0)
    if "val" not in found:
        splits = list(carve_validation(patients, np.asarray(splits) == "train", options.split_seed,
                                       options.val_fraction))
    images = images_frame(image_id=image_ids, path=paths, patient_id=patients, split=splits, view=views,
                          sex=[None] * len(image_ids), age=[np.nan] * len(image_ids))
    by_split = {s: set(p for p, sp in zip(patients, splits) if sp == s) for s in ("train", "val", "test")}
    overlap = sum(len(by_split[a] & by_split[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test")))
    notes = {
        "label_files": {s: p.name for s, p in found.items()},
        "labels_root": str(root),
        "splits_without_labels": unlabeled,
        "patients_in_more_than_one_split": int(overlap),
        "sex_age": "not in the CXR-LT files (MIMIC-IV patients table not read)",
    }
    if "val" not in found:
        notes["val"] = (f"no development/validation file: val carved from train by patient (fraction "
                        f"{options.val_fraction}, seed {options.split_seed})")
    return Records("cxr_lt", images_root, images, Task("cxr_lt", "multilabel", tuple(label_names)), labels,
                   notes=notes)
