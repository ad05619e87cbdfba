"""A generic segmentation folder: images plus one mask image per (image, structure) or per image.

Expected folder (either layout, optionally under ``train/``, ``val/``, ``test/`` split folders)::

    <root>/images/<name>.<png|jpg|jpeg|bmp|tif|tiff|dcm|dicom>
    <root>/masks/<label>/<name>.<png|gif|bmp|tif|tiff>    binary masks, nonzero = inside, one folder per label
  or
    <root>/masks/<name>.png                             one mask per image:
                                                        * with option ``label_values`` ({"Left Lung": 1, ...})
                                                          an index mask: pixel == value is inside that label
                                                        * without it a binary mask of label ``default_label``

Mask rows are ``kind="file"``; for index masks the row's ``value`` column holds the label's pixel value
(inside = ``pixel == value``), for binary masks ``value`` is empty (inside = nonzero). A mask is matched to
the image with the same file stem. Images without any mask are kept (counted in notes); masks without an
image are an error (usually a naming mismatch). With split folders the split is theirs (``official``),
otherwise a seeded split by image (each image its own patient, unless ``patient_regex`` extracts one
from the stem). No image-level labels.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..records import SPLITS, DatasetFormatError, Records
from ._common import images_frame, list_dir, patient_split
from .registry import AdapterOptions, register

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
MASK_EXTS = (".png", ".gif", ".bmp", ".tif", ".tiff")

LAYOUT = """\
<root>/[train|val|test/]images/<name>.png
<root>/[train|val|test/]masks/<label>/<name>.png    (nonzero = inside)
   or  [train|val|test/]masks/<name>.png            (index mask with option label_values, else binary)"""


class MaskFolderOptions(AdapterOptions):
    #: label -> pixel value of single-file index masks (``masks/<name>.png``)
    label_values: dict[str, int] | None = None
    #: label of single-file binary masks when ``label_values`` is not given
    default_label: str = "foreground"
    #: regex with one group extracting the patient id from an image stem (default: the stem itself)
    patient_regex: str | None = None
    image_dir: str = "images"
    mask_dir: str = "masks"


def _files(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in list_dir(folder):  # OS artefacts (macOS ._*, Thumbs.db) are neither images nor masks
        if p.is_file() and p.suffix.lower() in exts:
            if p.stem in out:
                raise DatasetFormatError(f"mask_folder: {out[p.stem].name} and {p.name} in {folder} share a stem")
            out[p.stem] = p
    return out


def _read_part(root: Path, base: Path, split: str | None, options: MaskFolderOptions,
               rows: list[dict], mask_rows: list[dict]) -> dict[str, int]:
    image_dir, mask_dir = base / options.image_dir, base / options.mask_dir
    if not image_dir.is_dir():
        raise DatasetFormatError(f"mask_folder: expected folder {image_dir} (not found)")
    if not mask_dir.is_dir():
        raise DatasetFormatError(f"mask_folder: expected folder {mask_dir} (not found)")
    images = _files(image_dir, IMAGE_EXTS)
    if not images:
        raise DatasetFormatError(f"mask_folder: {image_dir} holds no images ({', '.join(IMAGE_EXTS)})")
    prefix = f"{split}/" if split else ""
    for stem, p in images.items():
        rows.append({"image_id": f"{prefix}{stem}", "stem": stem, "path": p.relative_to(root).as_posix(),
                     "split": split})
    with_mask: set[str] = set()
    label_dirs = [d for d in list_dir(mask_dir) if d.is_dir()]
    flat = _files(mask_dir, MASK_EXTS)
    if label_dirs and flat:
        raise DatasetFormatError(f"mask_folder: {mask_dir} mixes label folders and mask files; use one layout")
    if label_dirs:
        if options.label_values:
            raise DatasetFormatError(
                f"mask_folder: option label_values is for single index masks, but {mask_dir} has label folders"
            )
        sources = [(d.name, _files(d, MASK_EXTS), None) for d in label_dirs]
    elif options.label_values:
        sources = [(label, flat, int(v)) for label, v in options.label_values.items()]
    else:
        sources = [(options.default_label, flat, None)]
    for label, files, value in sources:
        orphans = sorted(set(files) - set(images))
        if orphans:
            raise DatasetFormatError(
                f"mask_folder: {len(orphans)} mask(s) in {files[orphans[0]].parent} have no image in {image_dir}: "
                f"{', '.join(orphans[:5])}"
            )
        for stem, p in files.items():
            with_mask.add(stem)
            mask_rows.append({"image_id": f"{prefix}{stem}", "label": label, "kind": "file",
                              "path": p.relative_to(root).as_posix(), "value": value})
    return {"images": len(images), "without_mask": len(set(images) - with_mask)}


@register("mask_folder", options=MaskFolderOptions, layout=LAYOUT,
          summary="generic images/ + masks/<label>/ (or index masks) folder, optional train/val/test")
def read(root: Path, options: MaskFolderOptions) -> Records:
    if options.label_values is not None:
        values = list(options.label_values.values())
        if len(set(values)) != len(values) or any(int(v) <= 0 for v in values):
            raise DatasetFormatError(f"mask_folder: label_values {options.label_values} must be distinct and > 0")
    rows: list[dict] = []
    mask_rows: list[dict] = []
    parts = [s for s in SPLITS if (root / s / options.image_dir).is_dir()]
    stats = {}
    if parts:
        for s in parts:
            stats[s] = _read_part(root, root / s, s, options, rows, mask_rows)
    else:
        stats["all"] = _read_part(root, root, None, options, rows, mask_rows)
    stems = [r["stem"] for r in rows]
    if options.patient_regex:
        rx = re.compile(options.patient_regex)
        patients = []
        for s in stems:
            m = rx.search(s)
            if not m:
                raise DatasetFormatError(f"mask_folder: patient_regex {options.patient_regex!r} does not match {s!r}")
            patients.append(m.group(1) if m.groups() else m.group(0))
    else:
        patients = stems
    ids = [r["image_id"] for r in rows]
    if parts:
        split = np.array([r["split"] for r in rows], dtype=object)
        split_source, split_note = "official", f"split folders {parts}"
    else:
        split = patient_split(patients, options.split_seed)
        split_source = "seeded-patient"
        split_note = f"seeded patient-level 70/10/20, seed {options.split_seed}"
    n = len(rows)
    images = images_frame(image_id=ids, path=[r["path"] for r in rows], patient_id=patients, split=split,
                          view=[None] * n, sex=[None] * n, age=[np.nan] * n)
    masks = pd.DataFrame(mask_rows, columns=["image_id", "label", "kind", "path", "value"])
    # object column: None (binary, nonzero = inside) or the int pixel value, never pd.NA / float NaN
    masks["value"] = pd.Series([None if v is None else int(v) for v in masks["value"]], dtype=object)
    notes = {"split": split_note, "labels": sorted(set(masks["label"])),
             "images_without_mask": int(sum(v["without_mask"] for v in stats.values())),
             "mask_convention": ("index masks: inside = pixel == value" if options.label_values
                                 else "binary masks: nonzero = inside")}
    # index masks: the head follows the order the user gave label_values in; label folders: sorted names
    return Records("mask_folder", root, images, None, np.zeros((n, 0), np.float32), masks=masks,
                   split_source=split_source, notes=notes,
                   mask_label_names=tuple(options.label_values) if options.label_values else None)
