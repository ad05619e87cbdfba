"""Pediatric pneumonia chest X-rays (Kermany et al. 2018, Guangzhou Women and Children's Medical
Center; Mendeley "ChestXRay2017" / Kaggle "Chest X-Ray Images (Pneumonia)"), as downloaded.

Expected folder (the root is ``chest_xray/``, or a folder that contains ``chest_xray/``)::

    chest_xray/
        train/NORMAL/IM-0115-0001.jpeg            NORMAL2-IM-0427-0001.jpeg
        train/PNEUMONIA/person1_bacteria_1.jpeg   person1_virus_6.jpeg
        test/NORMAL/...   test/PNEUMONIA/...
        val/NORMAL/...    val/PNEUMONIA/...       (Kaggle only: 16 images)

The Mendeley release names files ``NORMAL-<patient>-<n>.jpeg``, ``BACTERIA-<patient>-<n>.jpeg`` and
``VIRUS-<patient>-<n>.jpeg`` in the same folders; both naming schemes are accepted.

Labels: option ``task="2class"`` (default) -> multilabel ``("Pneumonia",)`` from the class folder;
``task="3class"`` -> multiclass ``("Normal", "Bacterial pneumonia", "Viral pneumonia")`` from the file
name (``bacteria`` / ``virus``). A file name whose kind contradicts its folder is an error.

Patient ids from the file name: ``person1``, ``IM-0115``, ``NORMAL2-IM-0427`` (Kaggle) or the number
(Mendeley). Splits: ``test/`` is the official test set; the tiny Kaggle ``val/`` is merged into train
and val is carved from train by patient (seeded). The provider does not state that the numbering is
shared between train and test, so the count of patient ids seen in both is only reported in notes.
Non-image files (``.DS_Store``, ``Thumbs.db``) are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np

from ..records import DatasetFormatError, Records, Task
from ._common import carve_validation, child, images_frame, list_dir
from .registry import AdapterOptions, register

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
CLASS_DIRS = ("NORMAL", "PNEUMONIA")
PARTS = ("train", "val", "test")
THREE_CLASSES = ("Normal", "Bacterial pneumonia", "Viral pneumonia")

_KAGGLE_PNEUMONIA = re.compile(r"^(person\d+)_(bacteria|virus)_\d+$", re.IGNORECASE)
_KAGGLE_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+$", re.IGNORECASE)
_MENDELEY = re.compile(r"^(NORMAL|BACTERIA|VIRUS)-(\d+)-\d+$", re.IGNORECASE)

LAYOUT = """\
chest_xray/
  train/NORMAL/IM-0115-0001.jpeg  train/PNEUMONIA/person1_bacteria_1.jpeg, person1_virus_6.jpeg
  test/NORMAL/...  test/PNEUMONIA/...
  val/...          (Kaggle: merged into train; val carved by patient)"""


class PediatricOptions(AdapterOptions):
    #: "2class": Pneumonia yes/no; "3class": normal / bacterial / viral (multiclass)
    task: Literal["2class", "3class"] = "2class"
    #: fraction of train patients carved out as val
    val_fraction: float = 0.1


def parse_name(stem: str) -> tuple[str, str] | None:
    """(patient id, kind in normal/bacteria/virus) from a file stem, or None if unrecognised."""
    m = _KAGGLE_PNEUMONIA.match(stem)
    if m:
        return m[1], m[2].lower()
    m = _KAGGLE_NORMAL.match(stem)
    if m:
        return m[1], "normal"
    m = _MENDELEY.match(stem)
    if m:
        return m[2], m[1].lower()
    return None


def _base(root: Path) -> Path:
    if child(root, "train").is_dir() or child(root, "test").is_dir():
        return root
    if child(root, "chest_xray/train").is_dir():
        return child(root, "chest_xray")
    raise DatasetFormatError(
        f"pediatric_pneumonia: expected {root / 'train'} and {root / 'test'} with NORMAL/ and PNEUMONIA/ "
        f"(or a chest_xray/ folder holding them); not found")


@register("pediatric_pneumonia", options=PediatricOptions, layout=LAYOUT,
          summary="Pediatric pneumonia (Kermany): normal/pneumonia or normal/bacterial/viral, official test")
def read(root: Path, options: PediatricOptions) -> Records:
    base = _base(root)
    for part in ("train", "test"):
        if not child(base, part).is_dir():
            raise DatasetFormatError(f"pediatric_pneumonia: expected folder {base / part} (not found)")
    rows = []  # (path relative to root, part, patient, kind, image id)
    skipped = 0
    for part in PARTS:
        if not child(base, part).is_dir():
            continue
        for cls in CLASS_DIRS:
            folder = child(base, f"{part}/{cls}")
            if not folder.is_dir():
                raise DatasetFormatError(f"pediatric_pneumonia: expected folder {folder} (not found)")
            for path in list_dir(folder):  # OS artefacts (macOS ._*, .DS_Store, Thumbs.db) are invisible
                if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped += 1
                    continue
                parsed = parse_name(path.stem)
                if parsed is None:
                    raise DatasetFormatError(
                        f"pediatric_pneumonia: {path}: unrecognised file name; expected person<N>_bacteria_<k>, "
                        f"person<N>_virus_<k>, IM-<P>-<k>, NORMAL2-IM-<P>-<k> or NORMAL|BACTERIA|VIRUS-<P>-<k>")
                patient, kind = parsed
                if (kind == "normal") != (cls == "NORMAL"):
                    raise DatasetFormatError(
                        f"pediatric_pneumonia: {path}: a {kind!r} file name in the {cls}/ folder")
                rows.append((path.relative_to(root).as_posix(), part, patient, kind,
                             path.relative_to(base).with_suffix("").as_posix()))
    if not rows:
        raise DatasetFormatError(f"pediatric_pneumonia: no images under {base}/{{train,test}}/{{NORMAL,PNEUMONIA}}")
    rel = [r[0] for r in rows]
    patients = [r[2] for r in rows]
    is_train = np.array([r[1] in ("train", "val") for r in rows])
    split = carve_validation(patients, is_train, options.split_seed, options.val_fraction)
    if options.task == "2class":
        task = Task("pediatric_pneumonia", "multilabel", ("Pneumonia",))
        labels = np.array([[0.0 if r[3] == "normal" else 1.0] for r in rows], dtype=np.float32)
    else:
        task = Task("pediatric_pneumonia", "multiclass", THREE_CLASSES)
        index = {"normal": 0, "bacteria": 1, "virus": 2}
        labels = np.zeros((len(rows), 3), dtype=np.float32)
        labels[np.arange(len(rows)), [index[r[3]] for r in rows]] = 1.0
    train_p = {p for p, r in zip(patients, rows) if r[1] != "test"}
    test_p = {p for p, r in zip(patients, rows) if r[1] == "test"}
    images = images_frame(
        image_id=[r[4] for r in rows], path=rel,
        patient_id=patients, split=split, view=[None] * len(rows), sex=[None] * len(rows),
        age=[np.nan] * len(rows),
    )
    notes = {
        "splits": "test/ = test; train/ (+ Kaggle val/) divided into train/val by patient "
                  f"(fraction {options.val_fraction}, seed {options.split_seed})",
        "kaggle_val_images_merged_into_train": sum(r[1] == "val" for r in rows),
        "patient_ids_in_train_and_test": len(train_p & test_p),
        "non_image_files_skipped": skipped,
        "view": "not recorded (frontal, children aged 1-5)",
    }
    return Records("pediatric_pneumonia", root, images, task, labels, notes=notes)
