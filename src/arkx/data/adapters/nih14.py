"""NIH ChestX-ray14 (NIH Clinical Center), as downloaded from the NIH box folder / Kaggle.

Expected folder::

    ChestX-ray14/
        Data_Entry_2017_v2020.csv     (or the older Data_Entry_2017.csv with its trailing empty column)
        train_val_list.txt            one image file name per line (official train+val)
        test_list.txt                 one image file name per line (official test)
        BBox_List_2017.csv            optional: Image Index,Finding Label,Bbox [x,y,w,h]
        images_001/images/00000001_000.png ... images_012/images/...   (or a flat images/)

The sex column is ``Patient Sex`` in the file NIH distributes and ``Patient Gender`` in older copies
(Kaggle, the TorchXRayVision wheel): both are read. Sex, age and view are metadata: a missing or empty
column is one warning and "unknown". ``Image Index``, ``Finding Labels`` and ``Patient ID`` are required.
Image folders and file names are matched case-insensitively (``Images_001/``, ``.PNG``).

Labels: the 14 findings of ``Finding Labels`` (``|``-separated; ``No Finding`` = all 0), multilabel,
never uncertain. Splits: ``test_list.txt`` = test; ``train_val_list.txt`` is divided into train/val by
patient (seeded). Every metadata image must be in exactly one list and every listed image must be in
the metadata (otherwise a DatasetFormatError names it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ._common import (carve_validation, first_existing, images_frame, list_dir, none_if_missing, normalise_sex,
                      optional_column, parse_age, paths_in_base, read_csv, read_text_lines, require_file,
                      validate_boxes, walk_files)  # fmt: skip
from .registry import AdapterOptions, register

NIH14_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip
NO_FINDING = "No Finding"
META_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
#: required (labels, ids); the metadata below is optional (missing -> warning, unknown)
META_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
#: the file NIH distributes names the sex column "Patient Sex"; older copies (Kaggle, TorchXRayVision) "Patient Gender"
SEX_COLUMNS = ("Patient Sex", "Patient Gender")
AGE_COLUMNS = ("Patient Age",)
VIEW_COLUMNS = ("View Position",)
#: BBox_List_2017.csv writes "Infiltrate" where Data_Entry writes "Infiltration"; boxes use the head's name
BBOX_LABEL_TO_HEAD = {"Infiltrate": "Infiltration"}
BBOX_COLUMNS = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]")
#: the 8 findings NIH boxed (Wang et al. 2017's order; the box head), named as the classification head names them
NIH_BOX_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                  "Pneumothorax")

LAYOUT = """\
ChestX-ray14/
  Data_Entry_2017_v2020.csv   (or Data_Entry_2017.csv)
  train_val_list.txt
  test_list.txt
  BBox_List_2017.csv          (optional)
  images_001/images/00000001_000.png ...  (or images/00000001_000.png)"""


class NIH14Options(AdapterOptions):
    #: fraction of train_val_list patients carved out as the validation split
    val_fraction: float = 0.1


def parse_data_entry(path: Path, dataset: str = "nih14") -> tuple[pd.DataFrame, np.ndarray]:
    """The metadata frame and labels ``[n, 14]`` (0/1) of Data_Entry_2017*.csv; no image access."""
    frame = read_csv(path, dataset, required=META_COLUMNS, dtype={"Image Index": str, "Finding Labels": str})
    index = {name: j for j, name in enumerate(NIH14_LABELS)}
    labels = np.zeros((len(frame), len(NIH14_LABELS)), dtype=np.float32)
    for i, text in enumerate(frame["Finding Labels"]):
        names = [t.strip() for t in str(text).split("|")] if isinstance(text, str) else []
        if names == [NO_FINDING]:
            continue
        unknown = [n for n in names if n not in index]
        if unknown or not names:
            raise DatasetFormatError(
                f"{dataset}: {path} row {i + 2} ({frame['Image Index'].iloc[i]}): unknown finding(s) "
                f"{unknown or [text]} in 'Finding Labels'; expected {NO_FINDING!r} or names from {NIH14_LABELS}"
            )
        labels[i, [index[n] for n in names]] = 1.0
    dup = frame["Image Index"].duplicated()
    if dup.any():
        raise DatasetFormatError(f"{dataset}: {path}: image {frame['Image Index'][dup].iloc[0]!r} listed twice")
    return frame, labels


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in read_text_lines(path) if line.strip()]


def _index_images(root: Path) -> dict[str, str]:
    """Lower-cased file name -> path relative to root, for every file under the ``images*`` folders
    (``Images_001/`` and ``.PNG`` match too; one walk; OS artefacts such as macOS ``._*`` ignored)."""
    found: dict[str, str] = {}
    for top in (p for p in list_dir(root) if p.is_dir() and p.name.lower().startswith("images")):
        for path in walk_files(top):
            found.setdefault(path.name.lower(), path.relative_to(root).as_posix())
    return found


def parse_bbox_list(path: Path, known: set[str]) -> pd.DataFrame:
    """BBox_List_2017.csv -> boxes (x,y,w,h -> x_min..y_max); every image must be in ``known``.

    A missing/non-numeric value or a negative w/h is an error naming the row (:func:`validate_boxes`;
    the image size is not checked: Data_Entry's OriginalImage size is not the PNG's)."""
    frame = read_csv(path, "nih14", required=BBOX_COLUMNS, dtype={"Image Index": str})
    absent = ~frame["Image Index"].isin(known)
    if absent.any():
        i = int(np.flatnonzero(absent.to_numpy())[0])
        raise DatasetFormatError(
            f"nih14: {path} row {i + 2}: image {frame['Image Index'].iloc[i]!r} is not in Data_Entry")
    x, y, w, h = (pd.to_numeric(frame[c], errors="coerce").astype(float) for c in BBOX_COLUMNS[2:])
    boxes = pd.DataFrame({
        "image_id": frame["Image Index"].str.replace(r"\.png$", "", regex=True),
        "label": frame["Finding Label"].map(lambda s: BBOX_LABEL_TO_HEAD.get(s, s)),
        "x_min": x, "y_min": y, "x_max": x + w, "y_max": y + h,
    })  # fmt: skip
    validate_boxes(boxes, path, "nih14")  # index = file row - 2
    return boxes


@register("nih14", options=NIH14Options, layout=LAYOUT,
          summary="NIH ChestX-ray14: 14 findings, official train_val/test lists, optional boxes")
def read(root: Path, options: NIH14Options) -> Records:
    meta_path = first_existing(root, META_FILES, "nih14")
    frame, labels = parse_data_entry(meta_path)
    names = frame["Image Index"].tolist()
    known = set(names)
    membership: dict[str, str] = {}
    for list_name, part in (("train_val_list.txt", "trainval"), ("test_list.txt", "test")):
        list_path = require_file(root, list_name, "nih14")
        for line_no, name in enumerate(_read_list(list_path), start=1):
            if name not in known:
                raise DatasetFormatError(
                    f"nih14: {list_path} line {line_no}: image {name!r} is not in {meta_path.name}")
            if name in membership:
                raise DatasetFormatError(f"nih14: image {name!r} is listed in both split lists (or twice)")
            membership[name] = part
    unlisted = [n for n in names if n not in membership]
    if unlisted:
        raise DatasetFormatError(
            f"nih14: {len(unlisted)} images of {meta_path.name} are in neither train_val_list.txt nor "
            f"test_list.txt, e.g. {unlisted[:3]}"
        )
    patients = [str(p) for p in frame["Patient ID"]]
    is_trainval = np.array([membership[n] == "trainval" for n in names])
    split = carve_validation(patients, is_trainval, options.split_seed, options.val_fraction)
    found = _index_images(root)
    names_in = paths_in_base(root, names, dataset="nih14", source=meta_path, column="Image Index")
    paths = [found.get(n.lower(), f"images/{n}") for n in names_in]
    n_rows = len(frame)
    views = optional_column(frame, VIEW_COLUMNS, meta_path, "nih14", "view")
    sexes = optional_column(frame, SEX_COLUMNS, meta_path, "nih14", "sex")
    ages = optional_column(frame, AGE_COLUMNS, meta_path, "nih14", "age")
    images = images_frame(
        image_id=[n.removesuffix(".png") for n in names], path=paths, patient_id=patients, split=split,
        view=none_if_missing(views.astype(object).str.upper()) if views is not None else [None] * n_rows,
        sex=normalise_sex(sexes) if sexes is not None else [None] * n_rows,
        age=[parse_age(a) for a in ages] if ages is not None else [np.nan] * n_rows,
    )
    bbox_path = root / "BBox_List_2017.csv"
    boxes = parse_bbox_list(bbox_path, known) if bbox_path.is_file() else None
    notes = {
        "metadata_file": meta_path.name,
        "splits": "test_list.txt = test; val carved from train_val_list.txt by patient "
                  f"(fraction {options.val_fraction}, seed {options.split_seed})",
        "images_not_found_under_images_folders": sum(n not in found for n in names),
    }
    if boxes is not None:
        notes["bbox_label_renamed"] = "Infiltrate -> Infiltration"
    return Records("nih14", root, images, Task("nih14", "multilabel", NIH14_LABELS), labels,
                   boxes=boxes, notes=notes, box_label_names=NIH_BOX_LABELS if boxes is not None else None)
