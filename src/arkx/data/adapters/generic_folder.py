"""Generic class-folder adapter (``type: folder``): ImageNet-style folders, one folder per class.

Expected folder, either without splits::

    my_dataset/
        <class A>/0001.png  0002.jpg ...
        <class B>/0003.dcm ...

or with the official splits as the top level::

    my_dataset/
        train/<class>/*.png|jpg|jpeg|dcm
        val/<class>/...        (also valid/, validation/; optional: carved from train by patient if absent)
        test/<class>/...

Task: multiclass over the sorted class-folder names (the union over the split folders), or over
``classes`` in that order (a folder outside it is an error). The patient is the file stem unless
``patient_regex`` is given: its first group (or whole match) searched in the stem, e.g.
``"^(P\\d+)_"`` for ``P0001_2.png``; a file it does not match is an error. Without split folders a
seeded patient-level 70/10/20 split is made. DICOM files give sex / age / view from their headers.
Files with other extensions and hidden files are skipped (counted in notes); OS artefacts (macOS
``._*`` AppleDouble files, ``.DS_Store``, ``Thumbs.db``, ``__MACOSX/``) are ignored without counting.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..records import DatasetFormatError, Records, Task
from ._common import carve_validation, images_frame, list_dir, patient_split, read_dicom_metadata, walk_files
from .registry import AdapterOptions, register

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "validate": "val",
              "test": "test"}

LAYOUT = """\
my_dataset/
  <class>/*.png|jpg|jpeg|dcm            (no splits: seeded patient split)
  or train/<class>/..., val/<class>/..., test/<class>/..."""


class FolderOptions(AdapterOptions):
    #: class order of the head (None: sorted class-folder names)
    classes: list[str] | None = None
    #: regex searched in the file stem; group 1 (or the match) is the patient id (None: the stem)
    patient_regex: str | None = None
    #: fraction of train patients carved out as val when there is a train/ but no val/ folder
    val_fraction: float = 0.1


def _subdirs(folder: Path) -> list[Path]:
    return [p for p in list_dir(folder) if p.is_dir() and not p.name.startswith((".", "__"))]


def _patient(stem: str, pattern: re.Pattern | None, path: Path) -> str:
    if pattern is None:
        return stem
    m = pattern.search(stem)
    if m is None:
        raise DatasetFormatError(f"folder: {path}: patient_regex '{pattern.pattern}' does not match {stem!r}")
    return m.group(1) if m.groups() else m.group(0)


@register("folder", options=FolderOptions, layout=LAYOUT,
          summary="Generic class folders (root/<class>/ or root/{train,val,test}/<class>/), multiclass")
def read(root: Path, options: FolderOptions) -> Records:
    try:
        pattern = re.compile(options.patient_regex) if options.patient_regex is not None else None
    except re.error as err:
        raise DatasetFormatError(f"folder: patient_regex {options.patient_regex!r} is not a valid regex: {err}") \
            from None
    top = _subdirs(root)
    split_dirs = [d for d in top if d.name.lower() in SPLIT_DIRS]
    if split_dirs:
        others = [d.name for d in top if d.name.lower() not in SPLIT_DIRS]
        if others:
            raise DatasetFormatError(
                f"folder: {root} mixes split folders {[d.name for d in split_dirs]} with other folders {others}")
        parts = [(SPLIT_DIRS[d.name.lower()], d) for d in split_dirs]
        if len({s for s, _ in parts}) != len(parts):
            raise DatasetFormatError(
                f"folder: {root} has more than one folder for one split: {[d.name for d in split_dirs]}")
    else:
        parts = [(None, root)]
    rows = []  # (relative path, split or None, class, patient)
    skipped = 0
    for split, base in parts:
        for cls_dir in _subdirs(base):
            for path in walk_files(cls_dir):  # OS artefacts (macOS ._*, Thumbs.db) are not even counted
                if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                    skipped += 1
                    continue
                rows.append((path.relative_to(root).as_posix(), split, cls_dir.name,
                             _patient(path.stem, pattern, path)))
    if not rows:
        raise DatasetFormatError(
            f"folder: no images ({'/'.join(IMAGE_SUFFIXES)}) under {root}/<class>/ or {root}/<split>/<class>/")
    found = sorted({r[2] for r in rows})
    if options.classes is not None:
        unknown = [c for c in found if c not in options.classes]
        if unknown:
            raise DatasetFormatError(
                f"folder: class folder(s) {unknown} under {root} are not in the option classes {options.classes}")
        names = tuple(options.classes)
    else:
        names = tuple(found)
    if len(names) < 2:
        raise DatasetFormatError(f"folder: a multiclass task needs at least 2 class folders, found {list(names)}")
    index = {c: j for j, c in enumerate(names)}
    labels = np.zeros((len(rows), len(names)), dtype=np.float32)
    labels[np.arange(len(rows)), [index[r[2]] for r in rows]] = 1.0
    patients = [r[3] for r in rows]
    notes: dict[str, object] = {"classes": list(names), "non_image_files_skipped": skipped,
                                "patient_id": f"regex {options.patient_regex!r}" if pattern else "file stem"}
    split_source = "official"
    if parts[0][0] is None:
        split = patient_split(patients, options.split_seed)
        split_source = "seeded-patient"
        notes["split"] = f"seeded patient-level 70/10/20, seed {options.split_seed}"
    else:
        split = np.asarray([r[1] for r in rows], dtype=object)
        if not (split == "val").any():
            split = carve_validation(patients, split == "train", options.split_seed, options.val_fraction)
            notes["val"] = f"no val folder: carved from train by patient (fraction {options.val_fraction})"
        by = {s: {p for p, x in zip(patients, split) if x == s} for s in ("train", "val", "test")}
        notes["patients_in_more_than_one_split"] = len((by["train"] & by["val"]) | (by["train"] & by["test"])
                                                       | (by["val"] & by["test"]))
    sex, age, view = [None] * len(rows), [np.nan] * len(rows), [None] * len(rows)
    dicoms = [i for i, r in enumerate(rows) if r[0].lower().endswith(".dcm")]
    if dicoms:
        meta, unreadable = read_dicom_metadata([root / rows[i][0] for i in dicoms])
        for i, m in zip(dicoms, meta):
            sex[i], age[i], view[i] = m.get("sex"), m.get("age", np.nan), m.get("view")
        notes["dicom_headers_unreadable"] = unreadable
    images = images_frame(image_id=[r[0] for r in rows],
                          path=[r[0] for r in rows], patient_id=patients, split=split, view=view, sex=sex, age=age)
    return Records("folder", root, images, Task("folder", "multiclass", names), labels, split_source=split_source,
                   notes=notes)
