"""MIMIC-CXR-JPG 2.0.0 and 2.1.0 (PhysioNet), as downloaded (2.1.0 ships the same ``mimic-cxr-2.0.0-*``
files plus ``mimic-cxr-2.1.0-test-set-labeled.csv``, which is not read).

Expected folder::

    mimic-cxr-jpg/2.0.0/
        mimic-cxr-2.0.0-metadata.csv.gz   dicom_id,subject_id,study_id,...,ViewPosition,...,StudyDate,...
        mimic-cxr-2.0.0-split.csv.gz      dicom_id,study_id,subject_id,split   (train/validate/test)
        mimic-cxr-2.0.0-chexpert.csv.gz   subject_id,study_id,<14 labels in ALPHABETICAL order>
        mimic-cxr-2.0.0-negbio.csv.gz     same columns
        files/p10/p10000032/s50414267/<dicom_id>.jpg
    (uncompressed .csv copies are accepted too)

Labels are per study (joined on subject_id + study_id) and raw (1/0/-1/blank). The label files list
the observations alphabetically; the head uses the CheXpert order, and columns are picked BY NAME from
the file header (never by position), so the value under "Edema" is the head output named "Edema".
Studies without a label row keep all-NaN labels (counted in notes). ``ViewPosition`` and the patients
table's ``gender`` / ``anchor_age`` are metadata (missing: one warning, "unknown"); with no view known
at all the ``views`` filter cannot be applied and says so (set ``views: null``). Sex/age come from MIMIC-IV
``patients.csv.gz`` when ``patients_file`` is given (age = anchor_age + study year - anchor_year).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ._common import (filter_views, first_existing, images_frame, none_if_missing, normalise_sex, optional_column,
                      parse_label_columns, paths_in_base, read_csv)
from .chexpert import CHEXPERT_LABELS
from .registry import AdapterOptions, register

PREFIX = "mimic-cxr-2.0.0"
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
KEYS = ["subject_id", "study_id"]

LAYOUT = """\
mimic-cxr-jpg/2.0.0/
  mimic-cxr-2.0.0-metadata.csv.gz
  mimic-cxr-2.0.0-split.csv.gz      (train/validate/test)
  mimic-cxr-2.0.0-chexpert.csv.gz   (labels per study, alphabetical columns)
  mimic-cxr-2.0.0-negbio.csv.gz
  files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg"""


class MimicOptions(AdapterOptions):
    labeler: Literal["chexpert", "negbio"] = "chexpert"
    #: keep only these ViewPosition values (frontal by default, as for Ark pretraining); None keeps all
    views: list[str] | None = ["PA", "AP"]
    #: MIMIC-IV hosp/patients.csv(.gz) for sex and age; relative paths are resolved against the root
    patients_file: str | None = None


def _table(root: Path, kind: str, required: list[str]) -> tuple[Path, pd.DataFrame]:
    path = first_existing(root, [f"{PREFIX}-{kind}.csv.gz", f"{PREFIX}-{kind}.csv"], "mimic_cxr")
    return path, read_csv(path, "mimic_cxr", required=required, dtype={"dicom_id": str})


def parse_labels(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """A chexpert/negbio label file -> (subject_id/study_id keys, labels ``[n, 14]`` in CheXpert order)."""
    frame = read_csv(path, "mimic_cxr", required=KEYS)
    dup = frame.duplicated(KEYS)
    if dup.any():
        row = frame[dup].iloc[0]
        raise DatasetFormatError(
            f"mimic_cxr: {path}: study s{int(row['study_id'])} of p{int(row['subject_id'])} is labelled twice")
    return frame[KEYS].astype(int), parse_label_columns(frame, CHEXPERT_LABELS, path, "mimic_cxr")


def _sex_age(options: MimicOptions, root: Path, meta: pd.DataFrame) -> tuple[list, np.ndarray]:
    if options.patients_file is None:
        return [None] * len(meta), np.full(len(meta), np.nan)
    path = Path(options.patients_file).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise DatasetFormatError(f"mimic_cxr: patients_file {path} (MIMIC-IV patients.csv.gz) not found")
    pats = read_csv(path, "mimic_cxr", required=("subject_id",))
    pats = pats.drop_duplicates("subject_id").set_index("subject_id")
    joined = pats.reindex(meta["subject_id"].astype(int))
    n = len(meta)
    # sex / age are metadata: a column missing from the patients table -> one warning, unknown
    gender = optional_column(joined, ("gender",), path, "mimic_cxr", "sex")
    anchor_age = optional_column(joined, ("anchor_age",), path, "mimic_cxr", "age")
    age = pd.to_numeric(anchor_age, errors="coerce").to_numpy(dtype=float) if anchor_age is not None \
        else np.full(n, np.nan)
    if "StudyDate" in meta.columns and "anchor_year" in joined.columns:  # dates share the anchor_year frame
        year = pd.to_numeric(meta["StudyDate"], errors="coerce").to_numpy(dtype=float) // 10000
        anchor_year = pd.to_numeric(joined["anchor_year"], errors="coerce").to_numpy(dtype=float)
        age = np.where(np.isnan(year) | np.isnan(anchor_year), age, age + year - anchor_year)
    return (normalise_sex(gender) if gender is not None else [None] * n), age


@register("mimic_cxr", options=MimicOptions, layout=LAYOUT, default_uncertain="ones",  # METHOD.md
          summary="MIMIC-CXR-JPG 2.0.0: 14 CheXpert/NegBio labels per study (by name), official split")
def read(root: Path, options: MimicOptions) -> Records:
    meta_path, meta = _table(root, "metadata", ["dicom_id", *KEYS])
    split_path, split = _table(root, "split", ["dicom_id", *KEYS, "split"])
    label_name = f"{PREFIX}-{options.labeler}"
    label_path = first_existing(root, [f"{label_name}.csv.gz", f"{label_name}.csv"], "mimic_cxr")
    keys, values = parse_labels(label_path)
    if meta["dicom_id"].duplicated().any():
        first = meta["dicom_id"][meta["dicom_id"].duplicated()].iloc[0]
        raise DatasetFormatError(f"mimic_cxr: {meta_path}: dicom_id {first!r} appears twice")
    bad = ~split["split"].isin(list(SPLIT_NAMES))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetFormatError(
            f"mimic_cxr: {split_path} row {i + 2}: split {split['split'].iloc[i]!r} not in {list(SPLIT_NAMES)}")
    split_of = dict(zip(split["dicom_id"], split["split"].map(SPLIT_NAMES)))
    extra = set(split_of) - set(meta["dicom_id"])
    if extra:
        raise DatasetFormatError(
            f"mimic_cxr: {split_path} names dicom_id {sorted(extra)[0]!r}, absent from {meta_path.name}")
    unsplit = [d for d in meta["dicom_id"] if d not in split_of]
    if unsplit:
        raise DatasetFormatError(
            f"mimic_cxr: {len(unsplit)} images of {meta_path.name} are not in {split_path.name}, e.g. {unsplit[0]!r}")
    row_of = {k: i for i, k in enumerate(zip(keys["subject_id"], keys["study_id"]))}
    rows = np.array([row_of.get((int(s), int(t)), -1) for s, t in zip(meta["subject_id"], meta["study_id"])])
    labels = np.full((len(meta), len(CHEXPERT_LABELS)), np.nan, dtype=np.float32)
    labels[rows >= 0] = values[rows[rows >= 0]]
    subj, study = meta["subject_id"].astype(int).astype(str), meta["study_id"].astype(int).astype(str)
    # the ids become the image path: it must stay inside the dataset folder
    paths = paths_in_base(root, [f"files/p{s[:2]}/p{s}/s{t}/{d}.jpg" for s, t, d in zip(subj, study, meta["dicom_id"])],
                          dataset="mimic_cxr", source=meta_path, column="dicom_id")
    view_column = optional_column(meta, ("ViewPosition",), meta_path, "mimic_cxr", "view")
    views = none_if_missing(view_column) if view_column is not None else [None] * len(meta)
    sex, age = _sex_age(options, root, meta)
    images = images_frame(
        image_id=meta["dicom_id"],
        path=paths,
        patient_id=subj, split=[split_of[d] for d in meta["dicom_id"]],
        view=[v.upper() if isinstance(v, str) else v for v in views], sex=sex, age=age,
    )
    notes: dict[str, object] = {
        "labeler": options.labeler, "label_file": label_path.name,
        "label_order": "CheXpert order; columns matched by name from the alphabetical file header",
        "images_without_label_row": int((rows < 0).sum()),
        "sex_age": f"from {options.patients_file}" if options.patients_file else "not available (no patients_file)",
    }
    records = Records("mimic_cxr", root, images, Task("mimic_cxr", "multilabel", CHEXPERT_LABELS), labels, notes=notes)
    records = filter_views(records, options.views)
    return records
