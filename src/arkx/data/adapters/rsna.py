"""RSNA Pneumonia Detection Challenge (Kaggle, stage 2 training data), as downloaded.

Expected folder::

    rsna-pneumonia-detection-challenge/
        stage_2_train_labels.csv          patientId,x,y,width,height,Target   (one row per box)
        stage_2_detailed_class_info.csv   patientId,class                     (one row per box too)
        stage_2_train_images/<patientId>.dcm

One image per patient; the per-box rows are collapsed to one record per ``patientId``. The class is
one of ``Normal``, ``No Lung Opacity / Not Normal``, ``Lung Opacity`` and must agree with ``Target``
(``Target == 1`` iff ``Lung Opacity``). Sex / age / view live only in the DICOM headers (read header
only). The provider ships no usable split (stage 2 test labels are not public): a seeded
patient-level train/val/test split is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ._common import (child, images_frame, paths_in_base, patient_split, read_csv, read_dicom_metadata, require_file,
                      show_value, validate_boxes)
from .registry import AdapterOptions, register

#: head order of the 3-class task (as Ark+ does)
RSNA_CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
LABELS_FILE = "stage_2_train_labels.csv"
CLASS_FILE = "stage_2_detailed_class_info.csv"
IMAGE_DIR = "stage_2_train_images"
BOX_COLUMNS = ("x", "y", "width", "height")

LAYOUT = """\
rsna-pneumonia-detection-challenge/
  stage_2_train_labels.csv          patientId,x,y,width,height,Target
  stage_2_detailed_class_info.csv   patientId,class
  stage_2_train_images/<patientId>.dcm"""


class RSNAOptions(AdapterOptions):
    task: Literal["3class", "opacity"] = "3class"
    #: read sex / age / view from the DICOM headers (header only, no pixels)
    read_dicom_metadata: bool = True


def parse_train_labels(path: Path, dataset: str = "rsna", image_sizes: dict[str, tuple[int, int]] | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``stage_2_train_labels.csv`` -> (one row per patient: patientId, Target; boxes of Target 1 rows).

    Errors name the file, row and patient when a patient's rows disagree or a box is malformed
    (negative width/height; see :func:`validate_boxes`, which also warns about boxes reaching outside
    ``image_sizes``: patientId -> (Rows, Columns)).
    """
    frame = read_csv(path, dataset, required=("patientId",) + BOX_COLUMNS + ("Target",), dtype={"patientId": str})
    target = pd.to_numeric(frame["Target"], errors="coerce")
    bad = ~target.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetFormatError(
            f"{dataset}: {path} row {i + 2} column 'Target': value {show_value(frame['Target'].iloc[i])} is not 0 or 1")
    coords = frame[list(BOX_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    has_box = coords.notna().all(axis=1)
    wrong = (target == 1) != has_box
    if wrong.any():
        i = int(np.flatnonzero(wrong.to_numpy())[0])
        raise DatasetFormatError(
            f"{dataset}: {path} row {i + 2} (patientId {frame['patientId'].iloc[i]}): Target "
            f"{int(target.iloc[i])} but box {coords.iloc[i].tolist()}; Target 1 rows need a box, Target 0 rows none"
        )
    per_patient = pd.DataFrame({"patientId": frame["patientId"], "Target": target.astype(int)})
    mixed = per_patient.groupby("patientId", sort=False)["Target"].nunique() > 1
    if mixed.any():
        raise DatasetFormatError(f"{dataset}: {path}: patientId {mixed[mixed].index[0]} has rows with Target 0 and 1")
    patients = per_patient.drop_duplicates("patientId").reset_index(drop=True)
    pos = frame[target == 1]
    boxes = pd.DataFrame({
        "image_id": pos["patientId"], "label": "Lung Opacity",
        "x_min": coords.loc[pos.index, "x"], "y_min": coords.loc[pos.index, "y"],
        "x_max": coords.loc[pos.index, "x"] + coords.loc[pos.index, "width"],
        "y_max": coords.loc[pos.index, "y"] + coords.loc[pos.index, "height"],
    })  # fmt: skip
    boxes.attrs["outside_image"] = validate_boxes(boxes, path, dataset, image_sizes)  # index = file row - 2
    return patients, boxes.reset_index(drop=True)


def parse_class_info(path: Path, dataset: str = "rsna") -> pd.Series:
    """``stage_2_detailed_class_info.csv`` -> class per patientId (rows repeat per box; must agree)."""
    frame = read_csv(path, dataset, required=("patientId", "class"), dtype={"patientId": str, "class": str})
    unknown = ~frame["class"].isin(RSNA_CLASSES)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DatasetFormatError(
            f"{dataset}: {path} row {i + 2} column 'class': {frame['class'].iloc[i]!r} is not one of {RSNA_CLASSES}")
    mixed = frame.groupby("patientId", sort=False)["class"].nunique() > 1
    if mixed.any():
        raise DatasetFormatError(
            f"{dataset}: {path}: patientId {mixed[mixed].index[0]} has rows with different classes")
    return frame.drop_duplicates("patientId").set_index("patientId")["class"]


@register("rsna", options=RSNAOptions, layout=LAYOUT,
          summary="RSNA Pneumonia (stage 2 train): 3-class or Lung Opacity; boxes; seeded patient split")
def read(root: Path, options: RSNAOptions) -> Records:
    labels_path = require_file(root, LABELS_FILE, "rsna")
    class_path = require_file(root, CLASS_FILE, "rsna")
    sizes = None
    image_dir = child(root, IMAGE_DIR).relative_to(root).as_posix()
    # the patientId becomes the image path: it must stay inside the image folder (checked on every row)
    pid_column = read_csv(labels_path, "rsna", required=("patientId",), dtype={"patientId": str})["patientId"]
    paths_in_base(root / image_dir, [f"{p}.dcm" for p in pid_column], dataset="rsna", source=labels_path,
                  column="patientId")
    if options.read_dicom_metadata:  # header only: sex / age / view, and Rows/Columns to check boxes against
        pids = list(dict.fromkeys(pid_column))
        meta_rows, unreadable = read_dicom_metadata([root / f"{image_dir}/{pid}.dcm" for pid in pids])
        meta_of = dict(zip(pids, meta_rows))
        sizes = {pid: (m["height"], m["width"]) for pid, m in meta_of.items() if "height" in m}
    patients, boxes = parse_train_labels(labels_path, image_sizes=sizes)
    classes = parse_class_info(class_path)
    ids = patients["patientId"].tolist()
    missing = [p for p in ids if p not in classes.index]
    extra = sorted(set(classes.index) - set(ids))
    if missing or extra:
        who = (f"patientId {missing[0]} has no row in {CLASS_FILE}" if missing
               else f"patientId {extra[0]} is not in {LABELS_FILE}")
        raise DatasetFormatError(f"rsna: {who}")
    cls = classes.loc[ids].to_numpy()
    for pid, c, t in zip(ids, cls, patients["Target"]):
        if (c == "Lung Opacity") != (t == 1):
            raise DatasetFormatError(
                f"rsna: patientId {pid}: Target {t} in {LABELS_FILE} but class {c!r} in {CLASS_FILE}")
    if options.task == "3class":
        task = Task("rsna", "multiclass", RSNA_CLASSES)
        labels = np.eye(len(RSNA_CLASSES), dtype=np.float32)[[RSNA_CLASSES.index(c) for c in cls]]
    else:
        task = Task("rsna", "multilabel", ("Lung Opacity",))
        labels = patients[["Target"]].to_numpy(dtype=np.float32)
    paths = [f"{image_dir}/{pid}.dcm" for pid in ids]
    notes: dict[str, object] = {"split": f"seeded patient-level 70/10/20, seed {options.split_seed}",
                                "task": options.task, "boxes": len(boxes)}
    notes["boxes_outside_image"] = boxes.attrs.get("outside_image", 0)
    if options.read_dicom_metadata:
        meta = [meta_of[pid] for pid in ids]
        notes["dicom_headers_unreadable"] = unreadable
    else:
        meta = [{}] * len(ids)
        notes["dicom_metadata"] = "not read (read_dicom_metadata=False)"
    images = images_frame(
        image_id=ids, path=paths, patient_id=ids, split=patient_split(ids, options.split_seed),
        view=[m.get("view") for m in meta], sex=[m.get("sex") for m in meta],
        age=[m.get("age", np.nan) for m in meta],
    )
    return Records("rsna", root, images, task, labels, boxes=boxes, split_source="seeded-patient", notes=notes,
                   box_label_names=("Lung Opacity",))
