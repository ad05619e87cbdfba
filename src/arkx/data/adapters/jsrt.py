"""JSRT chest radiographs with the SCR (Segmentation in Chest Radiographs) masks.

Expected folder (the JSRT download next to the SCR masks, as commonly unpacked)::

    <root>/
        All247images/JPCLN001.IMG ... JPCLN154.IMG   154 images with a lung nodule
        All247images/JPCNN001.IMG ... JPCNN093.IMG   93 images without
        scratch/fold1/masks/<structure>/JPCLN001.gif SCR masks, <structure> one of "left lung",
        scratch/fold2/masks/<structure>/JPCLN002.gif "right lung", "heart", "left clavicle", "right clavicle"
        CLNDAT_EN.txt, CNNDAT_EN.txt                 optional JSRT clinical data (anywhere under root)

Format facts:

* ``.IMG``: raw, no header, 2048 x 2048, 12-bit values in big-endian 16-bit words, film density (high =
  dark); decoded by :func:`arkx.data.raw_img.read_jsrt_img` (inverted so bone is bright). Pixel 0.175 mm.
* SCR masks: GIF, 1024 x 1024 (half the image resolution: decode, then resize nearest to the image),
  nonzero = inside. "left"/"right" are the *patient's* sides (the left lung is on the image right).
  SCR splits the 247 images into two folds (odd / even numbered); ``test_fold`` (default 2) is the test
  split and the other fold is carved into train / val by patient (one image per patient in JSRT).
  ``fold1|fold2`` may also sit directly under root or under ``scr/``.
* Clinical data, tab-separated, one line per image (the JSRT user's guide lists the columns in a
  different order than the files really have; we parse around the sex field, which is robust to both):
  ``CLNDAT_EN.txt``: file, subtlety (1-5), nodule size mm, age, sex, x, y (pixels of the 2048 image),
  benign/malignant, location, diagnosis; ``CNNDAT_EN.txt``: file, age, sex, "non-nodule". Ages may be
  ``?``. Absent files leave sex/age unknown; the nodule centre and size give a ``Nodule`` box
  (side = nodule size in pixels), scaled to the file's real side.

Task ``("Nodule",)`` from the file name (``JPCLN`` = nodule, ``JPCNN`` = none).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from ..raw_img import JSRT_PIXEL_MM, JSRT_SIDE, RawImageError, jsrt_side
from ..records import DatasetFormatError, Records, Task
from ._common import carve_validation, child, images_frame, list_dir, normalise_sex, read_text_lines, walk_files
from .registry import AdapterOptions, register

IMAGE_DIR = "All247images"
#: SCR structure folder -> mask label (patient's sides)
SCR_STRUCTURES = {
    "left lung": "Left Lung",
    "right lung": "Right Lung",
    "heart": "Heart",
    "left clavicle": "Left Clavicle",
    "right clavicle": "Right Clavicle",
}
#: mask head order: the SCR description's order (both lungs, the heart, both clavicles), right before left
SCR_LABELS = ("Right Lung", "Left Lung", "Heart", "Right Clavicle", "Left Clavicle")
#: box head: the JSRT nodule (one per JPCLN image, from CLNDAT_EN.txt)
BOX_LABELS = ("Nodule",)
_NAME = re.compile(r"^(JPC[LN]N\d{3})$", re.IGNORECASE)
_FOLD_PARENTS = ("scratch", "", "scr", "SCR")

LAYOUT = """\
<root>/
  All247images/JPCLN001.IMG, JPCNN001.IMG ...          (raw 2048x2048 12-bit big-endian)
  scratch/fold1|fold2/masks/<left lung|right lung|heart|left clavicle|right clavicle>/JPCLN001.gif
  CLNDAT_EN.txt, CNNDAT_EN.txt                         (optional clinical data)"""


class JsrtOptions(AdapterOptions):
    #: SCR fold used as the test split; the other fold is carved into train / val
    test_fold: int = Field(2, ge=1, le=2)
    #: fraction of the training fold's patients moved to val
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)


def _fold_dirs(root: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for k in (1, 2):
        for parent in _FOLD_PARENTS:
            cand = child(root, f"{parent}/fold{k}/masks" if parent else f"fold{k}/masks")
            if cand.is_dir():
                out[k] = cand
                break
    return out


def parse_clinical_line(line: str) -> dict[str, object] | None:
    """One line of CLNDAT_EN / CNNDAT_EN -> fields, or None if it names no JSRT file.

    Keys: ``image_id``, ``sex`` (M/F/None), ``age`` (float or NaN), and for nodule lines ``size_mm``,
    ``x``, ``y`` (2048-pixel coordinates), ``malignancy``, ``subtlety``.
    """
    fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
    fields = [f for f in fields if f]
    if len(fields) < 3:
        fields = line.split()
    if not fields:
        return None
    match = re.match(r"^(JPC[LN]N\d{3})(?:\.IMG)?$", fields[0], re.IGNORECASE)
    if not match:
        return None
    out: dict[str, object] = {"image_id": match[1].upper(), "sex": None, "age": float("nan")}
    sex_at = next((i for i, f in enumerate(fields) if f.lower() in ("male", "female", "m", "f")), None)
    if sex_at is None:
        return out
    out["sex"] = normalise_sex([fields[sex_at]])[0]

    def number(i: int) -> float:
        try:
            return float(fields[i]) if 0 <= i < len(fields) else float("nan")
        except ValueError:
            return float("nan")

    out["age"] = number(sex_at - 1)
    if out["image_id"].startswith("JPCLN"):
        out["size_mm"] = number(sex_at - 2)
        out["subtlety"] = number(sex_at - 3)
        out["x"], out["y"] = number(sex_at + 1), number(sex_at + 2)
        out["malignancy"] = fields[sex_at + 3].lower() if sex_at + 3 < len(fields) else None
    return out


def _find_clinical(root: Path) -> list[Path]:
    wanted = {"clndat_en.txt", "cnndat_en.txt"}
    found = []
    for path in walk_files(root):
        if path.name.lower() in wanted:
            found.append(path)
    return found


@register("jsrt", options=JsrtOptions, layout=LAYOUT,
          summary="JSRT raw radiographs with SCR lung / heart / clavicle masks; Nodule from the file name")
def read(root: Path, options: JsrtOptions) -> Records:
    image_dir = child(root, IMAGE_DIR)
    if not image_dir.is_dir():
        image_dir = root
    stems, rel_paths = [], []
    for path in list_dir(image_dir):  # OS artefacts (macOS ._JPCLN001.IMG) are not images
        if path.suffix.upper() != ".IMG":
            continue
        if not _NAME.match(path.stem):
            raise DatasetFormatError(f"jsrt: {path}: expected a name like JPCLN001.IMG or JPCNN001.IMG")
        stems.append(path.stem.upper())
        rel_paths.append(path.relative_to(root).as_posix())
    if not stems:
        raise DatasetFormatError(f"jsrt: expected folder {root / IMAGE_DIR} with JPCLN###.IMG / JPCNN###.IMG (none found)")
    if len(set(stems)) != len(stems):
        raise DatasetFormatError(f"jsrt: {image_dir} holds the same image twice (case-insensitive names)")

    folds = _fold_dirs(root)
    if not folds:
        raise DatasetFormatError(
            f"jsrt: expected SCR masks in {root / 'scratch' / 'fold1' / 'masks'} and fold2 (not found)"
        )
    index = {s: i for i, s in enumerate(stems)}
    fold_of: dict[str, int] = {}
    mask_rows: list[dict[str, object]] = []
    orphan_masks = 0
    for k, mask_root in sorted(folds.items()):
        for folder in list_dir(mask_root):
            if not folder.is_dir():
                continue
            label = SCR_STRUCTURES.get(folder.name.lower())
            if label is None:
                raise DatasetFormatError(
                    f"jsrt: {folder}: unknown SCR structure folder; expected one of {sorted(SCR_STRUCTURES)}"
                )
            for mask in list_dir(folder):
                if mask.suffix.lower() not in (".gif", ".png", ".bmp"):
                    continue
                stem = mask.stem.upper()
                if stem not in index:
                    orphan_masks += 1
                    continue
                if fold_of.setdefault(stem, k) != k:
                    raise DatasetFormatError(f"jsrt: {stem} has masks in both fold1 and fold2 ({mask})")
                mask_rows.append({"image_id": stem, "label": label, "kind": "file",
                                  "path": mask.relative_to(root).as_posix()})

    # clinical data (optional)
    clinical: dict[str, dict[str, object]] = {}
    clinical_files = _find_clinical(root)
    for path in clinical_files:
        for line in read_text_lines(path):
            parsed = parse_clinical_line(line)
            if parsed is not None:
                clinical[parsed["image_id"]] = parsed

    sexes = [clinical.get(s, {}).get("sex") for s in stems]
    ages = [clinical.get(s, {}).get("age", np.nan) for s in stems]
    box_rows = []
    bad_side = 0
    for s, rel in zip(stems, rel_paths):
        info = clinical.get(s, {})
        if not s.startswith("JPCLN") or not np.isfinite(info.get("x", np.nan)) or not np.isfinite(info.get("y", np.nan)):
            continue
        try:
            side = jsrt_side(root / rel)
        except RawImageError:
            bad_side += 1
            continue
        scale = side / JSRT_SIDE
        size_mm = info.get("size_mm", np.nan)
        half = (size_mm / JSRT_PIXEL_MM / 2.0) if np.isfinite(size_mm) and size_mm > 0 else 40.0
        x, y = float(info["x"]) * scale, float(info["y"]) * scale
        half *= scale
        box_rows.append({"image_id": s, "label": "Nodule", "x_min": max(0.0, x - half), "y_min": max(0.0, y - half),
                         "x_max": min(float(side), x + half), "y_max": min(float(side), y + half)})

    test = np.array([fold_of.get(s) == options.test_fold for s in stems])
    split = carve_validation(stems, ~test, options.split_seed, options.val_fraction)
    images = images_frame(image_id=stems, path=rel_paths, patient_id=stems, split=split,
                          view=["PA"] * len(stems), sex=sexes, age=ages)
    labels = np.array([[1.0 if s.startswith("JPCLN") else 0.0] for s in stems], dtype=np.float32)
    masks = pd.DataFrame(mask_rows, columns=["image_id", "label", "kind", "path"])
    boxes = pd.DataFrame(box_rows, columns=["image_id", "label", "x_min", "y_min", "x_max", "y_max"])
    notes = {
        "split": f"SCR fold{options.test_fold} = test; fold{3 - options.test_fold} carved into train/val by "
                 f"patient ({options.val_fraction:.0%} val, seed {options.split_seed})",
        "folds_found": sorted(folds),
        "images_without_masks": int(sum(s not in fold_of for s in stems)),
        "orphan_masks": orphan_masks,
        "mask_resolution": "SCR masks are half the image resolution (1024 for 2048 images): resize nearest",
        "mask_sides": "left/right are the patient's sides (left lung on the image right)",
        "clinical_files": [p.relative_to(root).as_posix() for p in clinical_files],
        "clinical_missing": int(sum(s not in clinical for s in stems)),
        "nodule_boxes": "centre from CLNDAT x,y; side = nodule size (mm) / 0.175 mm, scaled to the file side",
        "view": "all JSRT images are PA chest films",
    }
    if bad_side:
        notes["unreadable_image_sizes"] = bad_side
    return Records("jsrt", root, images, Task("jsrt", "multilabel", ("Nodule",)), labels, boxes=boxes,
                   masks=masks, split_source="official", notes=notes,
                   box_label_names=BOX_LABELS if box_rows else None, mask_label_names=SCR_LABELS)
