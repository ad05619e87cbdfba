"""Generic CSV adapter (``type: csv``): a private dataset described by one CSV, without writing code.

Expected folder::

    my_dataset/
        labels.csv          path,patient,split,sex,age,view,Cardiomegaly,Effusion,...   (option ``csv``)
        images/0001.png     paths in the CSV are relative to ``image_root`` (default: the folder itself)

Options:

* ``csv`` (required): the CSV file, relative to the dataset folder.
* ``path_column`` (``"path"``): image path column; the path (as written) is also the image id.
* ``kind``: ``multilabel`` (default) or ``multiclass``.
* multilabel: ``label_columns`` (default: every column not used for something else, in file order);
  values 1 / 0 / -1 (uncertain) / blank (not labelled), ``1.0``-style spellings accepted.
* multiclass: ``label_column`` holds the class name of each row (blank = not labelled); the head is
  one-hot over ``classes`` (in that order; a value outside it is an error) or, by default, over the
  sorted class names found.
* ``patient_column`` (default: the image path, i.e. one patient per image), ``split_column`` (values
  ``train`` / ``val`` (also ``valid``, ``validate``, ``validation``) / ``test``, case-insensitive),
  ``sex_column``, ``age_column``, ``view_column``: optional metadata columns.
* ``image_root`` (``"."``): folder the paths are relative to: relative to the dataset folder, or
  absolute for images kept elsewhere. A path in the CSV must stay inside that folder: an absolute path
  elsewhere or a ``..`` that climbs out is refused with the row (set ``image_root`` to the folder that
  really holds the images, e.g. ``/data/hospital`` for absolute paths ``/data/hospital/...``).
* ``sex_column`` / ``age_column`` / ``view_column`` that are missing or empty: a warning, values unknown.

Without ``split_column``: seeded patient-level 70/10/20 split. With a split column that has no val
rows: val is carved from train by patient. Errors name the file, the 1-based row and the column; an
unknown column name lists the file's real columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ._common import (
    carve_validation,
    images_frame,
    none_if_missing,
    normalise_sex,
    parse_age,
    optional_column,
    parse_label_columns,
    path_in_base,
    patient_split,
    read_csv,
    require_file,
)
from .registry import AdapterOptions, register

SPLIT_VALUES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val",
                "test": "test"}

LAYOUT = """\
my_dataset/
  labels.csv        path,[patient],[split],[sex],[age],[view],<label columns>   (option csv)
  images/...        paths relative to image_root (default: this folder)"""


class CsvOptions(AdapterOptions):
    csv: str
    path_column: str = "path"
    kind: Literal["multilabel", "multiclass"] = "multilabel"
    #: multilabel: the label columns in head order (None: every column not used otherwise)
    label_columns: list[str] | None = None
    #: multiclass: the column holding each row's class name
    label_column: str | None = None
    #: multiclass: class order of the head (None: sorted class names found)
    classes: list[str] | None = None
    patient_column: str | None = None
    split_column: str | None = None
    sex_column: str | None = None
    age_column: str | None = None
    view_column: str | None = None
    image_root: str = "."
    #: fraction of train patients carved out as val when the split column has no val rows
    val_fraction: float = 0.1


def _image_base(root: Path, image_root: str) -> Path:
    """The folder the CSV's paths are relative to: ``image_root`` (absolute, or relative to ``root``)."""
    base = Path(image_root).expanduser()
    base = base if base.is_absolute() else root / base
    if not base.is_dir():
        raise DatasetFormatError(f"csv: image_root {image_root!r} ({base}) is not a folder")
    return base


def _check_columns(frame: pd.DataFrame, wanted: dict[str, str | None], path: Path) -> None:
    for option, col in wanted.items():
        if col is not None and col not in frame.columns:
            raise DatasetFormatError(
                f"csv: {path} has no column {col!r} (option {option}); its columns are {list(frame.columns)}")


def _multiclass(frame: pd.DataFrame, column: str, classes: list[str] | None, path: Path):
    raw = frame[column]
    values = [None if v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip() else str(v).strip()
              for v in raw]
    names = list(classes) if classes is not None else sorted({v for v in values if v is not None})
    if len(names) < 2:
        raise DatasetFormatError(
            f"csv: {path} column {column!r}: a multiclass task needs at least 2 classes, found {names}")
    index = {n: j for j, n in enumerate(names)}
    labels = np.full((len(frame), len(names)), np.nan, dtype=np.float32)
    for i, v in enumerate(values):
        if v is None:
            continue
        if v not in index:
            raise DatasetFormatError(
                f"csv: {path} row {i + 2} column {column!r}: class {v!r} is not one of the classes {names}")
        labels[i] = 0.0
        labels[i, index[v]] = 1.0
    return tuple(names), labels


@register("csv", options=CsvOptions, layout=LAYOUT,
          summary="Generic CSV: image path + label columns (multilabel) or one class column (multiclass)")
def read(root: Path, options: CsvOptions) -> Records:
    path = require_file(root, options.csv, "csv")
    frame = read_csv(path, "csv", dtype=str, keep_default_na=False, na_values=[""])
    # paths, patients and splits are strict; sex / age / view are metadata: a named column that is
    # missing or empty gives one warning and "unknown" (optional_column below)
    meta = {"path_column": options.path_column, "patient_column": options.patient_column,
            "split_column": options.split_column}
    _check_columns(frame, meta, path)
    optional = {"sex": options.sex_column, "age": options.age_column, "view": options.view_column}
    used = {c for c in [*meta.values(), *optional.values()] if c is not None}
    if options.kind == "multiclass":
        if options.label_column is None:
            raise DatasetFormatError("csv: kind 'multiclass' needs the option label_column (the class-name column)")
        _check_columns(frame, {"label_column": options.label_column}, path)
        names, labels = _multiclass(frame, options.label_column, options.classes, path)
    else:
        if options.label_column is not None or options.classes is not None:
            raise DatasetFormatError("csv: options label_column / classes are for kind 'multiclass'; "
                                     "use label_columns for a multilabel task")
        if options.label_columns is None:
            names = tuple(c for c in frame.columns if c not in used)
        else:
            unknown = [c for c in options.label_columns if c not in frame.columns]
            if unknown:
                raise DatasetFormatError(
                    f"csv: {path} has no label column(s) {unknown} (option label_columns); "
                    f"its columns are {list(frame.columns)}")
            names = tuple(options.label_columns)
        if not names:
            raise DatasetFormatError(f"csv: {path}: no label columns left (columns {list(frame.columns)})")
        labels = parse_label_columns(frame, names, path, "csv")
    image_base = _image_base(root, options.image_root)
    rel_paths = []
    for i, p in enumerate(frame[options.path_column]):
        if not isinstance(p, str) or not p.strip():
            raise DatasetFormatError(f"csv: {path} row {i + 2} column {options.path_column!r}: empty image path")
        rel_paths.append(path_in_base(image_base, p.strip(), dataset="csv", source=path, where=f"row {i + 2}",
                                      column=options.path_column))
    dup = pd.Series(rel_paths).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DatasetFormatError(
            f"csv: {path} row {i + 2} column {options.path_column!r}: image {rel_paths[i]!r} is listed twice")
    if options.patient_column is not None:
        patients = []
        for i, p in enumerate(frame[options.patient_column]):
            if not isinstance(p, str) or not p.strip():
                raise DatasetFormatError(
                    f"csv: {path} row {i + 2} column {options.patient_column!r}: empty patient id")
            patients.append(p.strip())
    else:
        patients = list(rel_paths)
    notes: dict[str, object] = {"csv": options.csv, "kind": options.kind}
    split_source = "official"
    if options.split_column is not None:
        split = []
        for i, v in enumerate(frame[options.split_column]):
            key = str(v).strip().lower() if isinstance(v, str) else ""
            if key not in SPLIT_VALUES:
                raise DatasetFormatError(
                    f"csv: {path} row {i + 2} column {options.split_column!r}: split {v!r} is not one of "
                    f"train/val/test (or valid/validate/validation)")
            split.append(SPLIT_VALUES[key])
        split = np.asarray(split, dtype=object)
        if not (split == "val").any():
            split = carve_validation(patients, split == "train", options.split_seed, options.val_fraction)
            notes["val"] = (f"no val rows in column {options.split_column!r}: carved from train by patient "
                            f"(fraction {options.val_fraction}, seed {options.split_seed})")
        by = {s: {p for p, x in zip(patients, split) if x == s} for s in ("train", "val", "test")}
        notes["patients_in_more_than_one_split"] = len((by["train"] & by["val"]) | (by["train"] & by["test"])
                                                       | (by["val"] & by["test"]))
    else:
        split = patient_split(patients, options.split_seed)
        split_source = "seeded-patient"
        notes["split"] = f"seeded patient-level 70/10/20, seed {options.split_seed}"
    prefix = Path(options.image_root).expanduser().as_posix()
    full = [p if prefix in ("", ".") else f"{prefix}/{p}" for p in rel_paths]
    if Path(prefix).is_absolute():
        notes["image_root"] = prefix  # images outside the dataset folder, as the option says
    n = len(frame)
    columns = {k: optional_column(frame, (c,), path, "csv", k) if c is not None else None for k, c in optional.items()}
    images = images_frame(
        image_id=rel_paths, path=full, patient_id=patients, split=split,
        view=none_if_missing(columns["view"]) if columns["view"] is not None else [None] * n,
        sex=normalise_sex(columns["sex"]) if columns["sex"] is not None else [None] * n,
        age=[parse_age(a) if isinstance(a, str) else np.nan for a in columns["age"]]
        if columns["age"] is not None else [np.nan] * n,
    )
    return Records("csv", root, images, Task("csv", options.kind, names), labels, split_source=split_source,
                   notes=notes)
