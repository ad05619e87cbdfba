"""VinDr-RibCXR (VinBigData): 245 chest X-rays with a polygon for each of 20 ribs.

Expected folder (as distributed)::

    <root>/Data/
        train/img/VinDr_RibCXR_train_000.png ...
        train/Vindr_RibCXR_train_mask.json      one JSON for the whole split (also accepted under
                                                train/Annotations/, or one JSON per image there)
        val/img/VinDr_RibCXR_val_000.png ...
        val/Vindr_RibCXR_val_mask.json
        [test/... the same, if present]

Format facts (from the authors' repository README; the JSON is ``pandas.DataFrame.to_json()`` output):
the split JSON is column-oriented, ``{"img": {"0": "data/train/img/VinDr_RibCXR_train_000.png", ...},
"R1": {"0": [{"x": 1027.8, "y": 470.7}, ...], ...}, ..., "L10": {...}}``: row keys are strings, ``img``
is a path whose first folder may be spelled ``data`` while the disk has ``Data`` (we match the file name
inside the split's ``img/``), and each rib is a list of ``{"x", "y"}`` points in pixels of the PNG.
``R1..R10`` are the patient's right ribs (image left) numbered from the top, ``L1..L10`` the left ones.
An absent rib is written as the string ``"None"`` (the authors' loader tests ``pts != 'None'``); it,
a null and an empty list all give no mask for that rib (counted). ``Data/`` or ``data/``, ``img/`` and the
JSON names are matched case-insensitively; OS artefacts (macOS ``._*``) are ignored.
Uncertain (not verified on the files): whether every image has all 20 ribs, whether points may come
as ``[x, y]`` pairs (accepted), and the name of the JSON
(any ``*.json`` in the split folder or its ``Annotations/`` is read; a per-image JSON holding the rib
keys, with an optional ``img``, is accepted too, its image named by ``img`` or by the JSON's stem).

Masks: one ``kind="polygon"`` row per (image, rib) with the flat ``x, y`` list and the PNG's height and
width. No image-level labels (``task=None``). Splits: the official ``train`` / ``val`` folders. The
release has no test folder, so then its ``val`` becomes our ``test`` and ``val`` is carved from train
by image (each image is its own patient; VinDr-RibCXR has no patient ids), so model selection never
sees test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..records import DatasetFormatError, Records
from ._common import carve_validation, child, images_frame, list_dir
from .registry import AdapterOptions, register

#: the provider's rib keys in its JSON order (R1..R10, then L1..L10): the mask head order
RIB_LABELS = tuple(f"R{i}" for i in range(1, 11)) + tuple(f"L{i}" for i in range(1, 11))
IMAGE_EXTS = (".png", ".jpg", ".jpeg")

LAYOUT = """\
<root>/Data/
  train/img/VinDr_RibCXR_train_000.png
  train/Vindr_RibCXR_train_mask.json   ({"img": {"0": ...}, "R1": {"0": [{"x":..,"y":..}, ...]}, ... "L10"})
  val/img/..., val/Vindr_RibCXR_val_mask.json"""


def _data_dir(root: Path) -> Path:
    data = child(root, "Data")  # "Data/" as distributed, "data/" in the JSON's paths: any case
    return data if data.is_dir() else root


def _points(value: object, where: str) -> list[float] | None:
    """A rib's point list -> flat [x0, y0, x1, y1, ...]; None for missing / empty.

    The provider marks an absent rib with the *string* ``"None"`` (their loader tests ``pts != 'None'``):
    that rib has no mask, like a null or an empty list."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "nan", ""):
        return None
    if not isinstance(value, list):
        raise DatasetFormatError(f"vindr_ribcxr: {where}: expected a list of points, got {type(value).__name__}")
    flat: list[float] = []
    for p in value:
        if isinstance(p, dict) and "x" in p and "y" in p:
            x, y = p["x"], p["y"]
        elif isinstance(p, (list, tuple)) and len(p) == 2:
            x, y = p
        else:
            raise DatasetFormatError(f"vindr_ribcxr: {where}: point {p!r} is neither {{'x','y'}} nor [x, y]")
        flat += [float(x), float(y)]
    return flat if len(flat) >= 6 else None


def _entries(path: Path) -> list[tuple[str | None, dict[str, object]]]:
    """(image reference or None, {rib: points}) for each image described by one JSON file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is tolerated
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"vindr_ribcxr: cannot parse {path}: {err}") from None
    if isinstance(data, list):  # records orientation
        return [(row.get("img"), {k: row.get(k) for k in RIB_LABELS}) for row in data if isinstance(row, dict)]
    if not isinstance(data, dict):
        raise DatasetFormatError(f"vindr_ribcxr: {path}: expected a JSON object")
    if isinstance(data.get("img"), dict):  # column orientation (DataFrame.to_json default)
        out = []
        for key, img in data["img"].items():
            out.append((img, {k: (data.get(k) or {}).get(key) for k in RIB_LABELS}))
        return out
    if any(k in data for k in RIB_LABELS):  # one image per file
        return [(data.get("img") or path.stem, {k: data.get(k) for k in RIB_LABELS})]
    raise DatasetFormatError(f"vindr_ribcxr: {path}: no 'img' column and no rib keys R1..R10 / L1..L10")


@register("vindr_ribcxr", options=AdapterOptions, layout=LAYOUT,
          summary="VinDr-RibCXR: 20 rib polygons (R1-R10, L1-L10) per image, official train/val")
def read(root: Path, options: AdapterOptions) -> Records:
    data = _data_dir(root)
    splits = [s for s in ("train", "val", "test") if child(data, s).is_dir()]
    if not splits:
        raise DatasetFormatError(f"vindr_ribcxr: expected folders {data / 'train'} and {data / 'val'} (not found)")
    rows: list[dict[str, object]] = []
    mask_rows: list[dict[str, object]] = []
    seen: set[str] = set()
    empty_ribs = unannotated = 0
    for split in splits:
        sdir = child(data, split)
        img_dir = child(sdir, "img") if child(sdir, "img").is_dir() else sdir
        # OS artefacts (macOS ._*.png / ._*.json, Thumbs.db) are neither images nor annotations
        by_name = {p.name: p for p in list_dir(img_dir) if p.suffix.lower() in IMAGE_EXTS}
        by_stem = {p.stem: p for p in by_name.values()}
        ann_dir = child(sdir, "Annotations")
        jsons = [p for folder in (sdir, ann_dir) if folder.is_dir()
                 for p in list_dir(folder) if p.suffix.lower() == ".json" and p.is_file()]
        if not jsons:
            raise DatasetFormatError(f"vindr_ribcxr: no annotation JSON in {sdir} or {sdir / 'Annotations'}")
        annotated: set[str] = set()
        for jpath in jsons:
            for ref, ribs in _entries(jpath):
                name = Path(str(ref)).name
                img = by_name.get(name) or by_stem.get(Path(name).stem) or by_stem.get(name)
                if img is None:
                    raise DatasetFormatError(
                        f"vindr_ribcxr: {jpath}: image {ref!r} not found in {img_dir}")
                image_id = img.stem
                if image_id in seen:
                    raise DatasetFormatError(f"vindr_ribcxr: image {image_id} is annotated twice ({jpath})")
                seen.add(image_id)
                annotated.add(image_id)
                with Image.open(img) as im:
                    width, height = im.size
                rows.append({"image_id": image_id, "path": img.relative_to(root).as_posix(), "split": split})
                for label in RIB_LABELS:
                    poly = _points(ribs.get(label), f"{jpath} image {image_id} rib {label}")
                    if poly is None:
                        empty_ribs += 1
                        continue
                    mask_rows.append({"image_id": image_id, "label": label, "kind": "polygon", "polygon": poly,
                                      "height": height, "width": width})
        unannotated += len(set(by_stem) - annotated)
    ids = [r["image_id"] for r in rows]
    official = np.array([r["split"] for r in rows], dtype=object)
    if "test" in splits:
        split = official
        split_note = "official train / val / test folders"
    else:
        split = carve_validation(ids, official == "train", options.split_seed)
        split_note = (f"no test folder: official val -> test; 10% of train images -> val "
                      f"(seed {options.split_seed})")
    n = len(rows)
    images = images_frame(image_id=ids, path=[r["path"] for r in rows], patient_id=ids, split=split,
                          view=[None] * n, sex=[None] * n, age=[np.nan] * n)
    masks = pd.DataFrame(mask_rows, columns=["image_id", "label", "kind", "polygon", "height", "width"])
    notes = {"split": split_note, "ribs_missing_or_empty": empty_ribs, "images_without_annotation": unannotated,
             "rib_labels": "R1..R10 patient's right (image left), L1..L10 patient's left, numbered from the top",
             "patients": "no patient ids in the release: one patient per image"}
    return Records("vindr_ribcxr", root, images, None, np.zeros((n, 0), np.float32), masks=masks,
                   split_source="official", notes=notes, mask_label_names=RIB_LABELS)
