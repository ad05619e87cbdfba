"""VinDr-CXR (PhysioNet 1.0.0), as downloaded.

Expected folder::

    vindr-cxr/1.0.0/
        annotations/image_labels_train.csv   image_id,rad_id,<22 local labels>,<6 global labels>  (3 readers/image)
        annotations/image_labels_test.csv    image_id,<28 labels>   (consensus of 5 readers; "Other disease")
        annotations/annotations_train.csv    image_id,rad_id,class_name,x_min,y_min,x_max,y_max
        annotations/annotations_test.csv     image_id,class_name,x_min,y_min,x_max,y_max
        train/<image_id>.dicom
        test/<image_id>.dicom

Labels: ``global6`` (the 6 global diagnoses Ark uses) or ``all28``. Three radiologists label each
training image; ``reader_aggregation`` turns their 0/1 votes into one label (majority: more than half
of the image's readers; any; all). Splits: official test = test; train is split into train/val by
*image*: VinDr ships no patient ids, so the image id stands in for the patient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ._common import (carve_validation, child, images_frame, parse_label_columns, paths_in_base, read_csv,
                      read_dicom_metadata,
                      require_file, resolve_columns, validate_boxes)  # fmt: skip
from .registry import AdapterOptions, register

LOCAL_LABELS = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion",
)  # fmt: skip
GLOBAL_LABELS = ("COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")
ALL_LABELS = LOCAL_LABELS + GLOBAL_LABELS
#: accepted spellings of a label column (image_labels_test.csv writes "Other disease")
LABEL_ALIASES = {"Other diseases": ("Other disease",)}
READER_COLUMNS = ("rad_id", "rad_ID")
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")

LAYOUT = """\
vindr-cxr/1.0.0/
  annotations/image_labels_train.csv   image_id,rad_id,<28 labels>  (3 readers per image)
  annotations/image_labels_test.csv    image_id,<28 labels>         (consensus)
  annotations/annotations_train.csv    image_id,rad_id,class_name,x_min,y_min,x_max,y_max
  annotations/annotations_test.csv     image_id,class_name,x_min,y_min,x_max,y_max
  train/<image_id>.dicom
  test/<image_id>.dicom"""


class VinDrOptions(AdapterOptions):
    labels: Literal["global6", "all28"] = "global6"
    reader_aggregation: Literal["majority", "any", "all"] = "majority"
    read_dicom_metadata: bool = True
    #: fraction of training images carved out as the validation split
    val_fraction: float = 0.1


def aggregate_readers(image_ids: pd.Series, votes: np.ndarray, rule: str) -> tuple[list[str], np.ndarray]:
    """Per-reader 0/1 rows -> one row per image (first-appearance order) under ``rule``."""
    codes, uniques = pd.factorize(image_ids, sort=False)
    n = len(uniques)
    pos = np.zeros((n, votes.shape[1]))
    np.add.at(pos, codes, np.nan_to_num(votes) > 0.5)
    readers = np.bincount(codes, minlength=n)[:, None]
    if rule == "majority":
        out = pos * 2 > readers
    elif rule == "any":
        out = pos > 0
    elif rule == "all":
        out = pos == readers
    else:
        raise ValueError(f"unknown reader aggregation {rule!r}")
    return [str(u) for u in uniques], out.astype(np.float32)


def _boxes(path: Path, known: set[str], image_sizes: dict[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """Boxes of one annotations file; malformed boxes are errors naming the row (:func:`validate_boxes`)."""
    frame = read_csv(path, "vindr_cxr", required=("image_id", "class_name") + BOX_COLUMNS, dtype={"image_id": str})
    absent = ~frame["image_id"].isin(known)
    if absent.any():
        i = int(np.flatnonzero(absent.to_numpy())[0])
        raise DatasetFormatError(
            f"vindr_cxr: {path} row {i + 2}: image {frame['image_id'].iloc[i]!r} has no image labels")
    frame = frame.dropna(subset=list(BOX_COLUMNS), how="all")  # "No finding" rows carry no box
    out = pd.DataFrame({"image_id": frame["image_id"], "label": frame["class_name"]})
    for c in BOX_COLUMNS:
        out[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    out.attrs["outside_image"] = validate_boxes(out.assign(**{c: frame[c] for c in BOX_COLUMNS}), path,
                                                "vindr_cxr", image_sizes)  # index = file row - 2
    reader_col = next((c for c in READER_COLUMNS if c in frame.columns), None)
    if reader_col is not None:  # annotations_test.csv has no reader column
        out["reader"] = frame[reader_col].astype(str)
    return out


@register("vindr_cxr", options=VinDrOptions, layout=LAYOUT,
          summary="VinDr-CXR (PhysioNet 1.0.0): 6 global (or 28) labels, 3 readers aggregated, boxes")
def read(root: Path, options: VinDrOptions) -> Records:
    wanted = GLOBAL_LABELS if options.labels == "global6" else ALL_LABELS
    ids, blocks, trainval, box_frames = [], [], [], []
    for part in ("train", "test"):
        path = require_file(root, f"annotations/image_labels_{part}.csv", "vindr_cxr")
        frame = read_csv(path, "vindr_cxr", required=("image_id",), dtype={"image_id": str})
        # the image id becomes the path <part>/<id>.dicom: it must stay inside that folder
        paths_in_base(child(root, part), [f"{i}.dicom" for i in frame["image_id"]], dataset="vindr_cxr", source=path,
                      column="image_id")
        cols = resolve_columns(frame.columns, wanted, LABEL_ALIASES, path, "vindr_cxr")
        votes = parse_label_columns(frame, cols, path, "vindr_cxr", allowed=(0.0, 1.0))
        reader_col = next((c for c in READER_COLUMNS if c in frame.columns), None)
        if part == "train":
            if reader_col is None:
                raise DatasetFormatError(f"vindr_cxr: {path} lacks the reader column (one of {READER_COLUMNS})")
            if frame.duplicated(["image_id", reader_col]).any():
                row = frame[frame.duplicated(["image_id", reader_col])].iloc[0]
                raise DatasetFormatError(f"vindr_cxr: {path}: image {row['image_id']} read twice by {row[reader_col]}")
            part_ids, labels = aggregate_readers(frame["image_id"], votes, options.reader_aggregation)
        else:
            if frame["image_id"].duplicated().any():
                first = frame["image_id"][frame["image_id"].duplicated()].iloc[0]
                raise DatasetFormatError(f"vindr_cxr: {path}: image {first!r} listed twice")
            part_ids, labels = frame["image_id"].tolist(), votes
        ids += [(i, part) for i in part_ids]
        blocks.append(labels)
        trainval.append(np.full(len(part_ids), part == "train"))
        ann = child(root, f"annotations/annotations_{part}.csv")
        if ann.is_file():
            box_frames.append((ann, set(part_ids)))
    labels = np.concatenate(blocks)
    image_ids = [i for i, _ in ids]
    split = carve_validation(image_ids, np.concatenate(trainval), options.split_seed, options.val_fraction)
    folders = {part: child(root, part).name for part in ("train", "test")}  # "train/" or "Train/"
    paths = [f"{folders[part]}/{i}.dicom" for i, part in ids]
    notes: dict[str, object] = {
        "labels": options.labels,
        "reader_aggregation": f"{options.reader_aggregation} of the 3 training readers (test labels are the consensus)",
        "patient_id": "VinDr ships no patient ids; image_id is used as the patient id",
        "splits": "official test; val carved from train by image "
                  f"(fraction {options.val_fraction}, seed {options.split_seed})",
    }
    if options.read_dicom_metadata:
        meta, unreadable = read_dicom_metadata([root / p for p in paths])
        notes["dicom_headers_unreadable"] = unreadable
        sizes = {i: (m["height"], m["width"]) for i, m in zip(image_ids, meta) if "height" in m}
    else:
        meta = [{}] * len(paths)
        notes["dicom_metadata"] = "not read (read_dicom_metadata=False)"
        sizes = None
    box_frames = [_boxes(ann, known, sizes) for ann, known in box_frames]
    notes["boxes_outside_image"] = sum(f.attrs.get("outside_image", 0) for f in box_frames)
    images = images_frame(
        image_id=image_ids, path=paths, patient_id=image_ids, split=split,
        view=[m.get("view") for m in meta], sex=[m.get("sex") for m in meta], age=[m.get("age", np.nan) for m in meta],
    )
    boxes = pd.concat([f.reset_index(drop=True) for f in box_frames], ignore_index=True) if box_frames else None
    box_names = None
    if boxes is not None:
        # the 22 local labels in the provider's column order; a class_name outside them is kept (after them)
        extra = sorted(set(boxes["label"].astype(str)) - set(LOCAL_LABELS))
        if extra:
            notes["box_labels_not_local"] = extra
        box_names = LOCAL_LABELS + tuple(extra)
    return Records("vindr_cxr", root, images, Task("vindr_cxr", "multilabel", wanted), labels,
                   boxes=boxes, notes=notes, box_label_names=box_names)
