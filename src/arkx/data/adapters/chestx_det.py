"""ChestX-Det (Deepwise AI Lab; 3,578 NIH ChestX-ray14 images re-annotated), as downloaded.

Expected folder::

    ChestX-Det/
        ChestX_Det_train.json   [{"file_name": "36199.png", "syms": [...], "boxes": [[x1, y1, x2, y2], ...],
        ChestX_Det_test.json      "polygons": [[[x, y], ...], ...]}, ...]
        train/*.png             (train_data.zip; also accepted: train_data/ or train_data/train/)
        test/*.png

One entry per image; ``syms[k]``, ``boxes[k]`` and ``polygons[k]`` describe the same finding. The 13
categories are the task (multilabel, in the provider's order); an image with no ``syms`` is negative
for all. Boxes as given (left-top, right-bottom corners). Masks: one ``kind="polygon"`` row per
finding (``[[x, y], ...]`` flattened); polygons with fewer than 3 points are skipped and counted.
Polygon masks need the image size: read from the PNG headers (``read_sizes``) or ``image_size``.
Splits: train / test as shipped; ``val_fraction`` of train (seeded by image; the renamed files carry
no NIH patient id) becomes val.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..masks import MASK_COLUMNS
from ..records import DatasetFormatError, Records, Task
from ..splits import in_carved_validation
from ._common import child, images_frame, path_in_base
from .generic_coco import BOX_COLUMNS
from .registry import AdapterOptions, register

CATEGORIES = (
    "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "Diffuse Nodule", "Effusion", "Emphysema",
    "Fibrosis", "Fracture", "Mass", "Nodule", "Pleural Thickening", "Pneumothorax",
)  # fmt: skip
JSON_FILES = {"train": "ChestX_Det_train.json", "test": "ChestX_Det_test.json"}

LAYOUT = """\
ChestX-Det/
  ChestX_Det_train.json, ChestX_Det_test.json   [{file_name, syms, boxes, polygons}, ...]
  train/*.png, test/*.png                       (or train_data/, test_data/)"""


class ChestXDetOptions(AdapterOptions):
    #: image sizes for polygon masks from the PNG headers (else ``image_size`` for all)
    read_sizes: bool = True
    image_size: int = 1024
    #: fraction of train images that become val (seeded by image)
    val_fraction: float = 0.1


def _image_dir(root: Path, split: str) -> str:
    for cand in (split, f"{split}_data/{split}", f"{split}_data"):
        if child(root, cand).is_dir():
            return child(root, cand).relative_to(root).as_posix()
    raise DatasetFormatError(f"chestx_det: expected image folder {root / split} (or {split}_data/) (not found)")


def _size(path: Path, default: int) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
        return int(h), int(w)
    except OSError:
        return default, default


@register("chestx_det", options=ChestXDetOptions, layout=LAYOUT,
          summary="ChestX-Det: 13 findings (multilabel), boxes and polygon masks; official train/test")
def read(root: Path, options: ChestXDetOptions) -> Records:
    images, box_rows, mask_rows, label_rows = [], [], [], []
    short_polygons = 0
    for split, name in JSON_FILES.items():
        path = child(root, name)
        if not path.is_file():
            raise DatasetFormatError(f"chestx_det: expected file {path} (not found)")
        try:
            entries = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is tolerated
        except ValueError as err:
            raise DatasetFormatError(f"chestx_det: cannot parse {path}: {err}") from None
        if not isinstance(entries, list):
            raise DatasetFormatError(f"chestx_det: {path} is not a list of image entries")
        folder = _image_dir(root, split)
        for k, e in enumerate(entries):
            where = f"{name} entry {k}"
            if not isinstance(e, dict) or "file_name" not in e:
                raise DatasetFormatError(f"chestx_det: {where} lacks 'file_name'")
            fid = str(e["file_name"])
            syms, boxes, polys = list(e.get("syms") or []), list(e.get("boxes") or []), list(e.get("polygons") or [])
            unknown = [s for s in syms if s not in CATEGORIES]
            if unknown:
                raise DatasetFormatError(f"chestx_det: {where} ({fid}): unknown categories {unknown}; "
                                         f"expected {CATEGORIES}")
            if len(boxes) != len(syms) or (polys and len(polys) != len(syms)):
                raise DatasetFormatError(f"chestx_det: {where} ({fid}): {len(syms)} syms but {len(boxes)} boxes "
                                         f"and {len(polys)} polygons")
            fid = path_in_base(root / folder, fid, dataset="chestx_det", source=path, where=f"entry {k}",
                               column="file_name")
            rel = f"{folder}/{fid}"
            images.append({"image_id": fid, "path": rel, "split": split})
            label_rows.append([1.0 if c in syms else 0.0 for c in CATEGORIES])
            h = w = options.image_size
            if polys and options.read_sizes:
                h, w = _size(root / rel, options.image_size)
            for j, sym in enumerate(syms):
                b = boxes[j]
                if len(b) != 4:
                    raise DatasetFormatError(f"chestx_det: {where} ({fid}): box {b!r} is not [x1, y1, x2, y2]")
                x1, y1, x2, y2 = (float(v) for v in b)
                box_rows.append({"image_id": fid, "label": sym, "x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2})
                if polys:
                    pts = polys[j] or []
                    if len(pts) < 3:
                        short_polygons += 1
                        continue
                    flat = [float(v) for pt in pts for v in pt[:2]]
                    mask_rows.append({"image_id": fid, "label": sym, "kind": "polygon", "path": None, "rle": None,
                                      "encoding": None, "polygon": flat, "height": h, "width": w})
    frame = pd.DataFrame(images, columns=["image_id", "path", "split"])
    dup = frame["image_id"].duplicated()
    if dup.any():
        raise DatasetFormatError(f"chestx_det: file_name {frame['image_id'][dup].iloc[0]!r} appears twice")
    split = frame["split"].to_numpy(dtype=object)
    for i, fid in enumerate(frame["image_id"]):
        if split[i] == "train" and in_carved_validation(fid, options.split_seed, options.val_fraction):
            split[i] = "val"
    ids = frame["image_id"].tolist()
    recs = images_frame(image_id=ids, path=frame["path"].tolist(), patient_id=ids, split=split,
                        view=[None] * len(ids), sex=[None] * len(ids), age=[np.nan] * len(ids))
    labels = np.asarray(label_rows, dtype=np.float32).reshape(len(ids), len(CATEGORIES))
    notes = {"split": f"official train/test; {options.val_fraction:.0%} of train -> val (seeded by image, "
                      f"seed {options.split_seed})", "polygons_with_fewer_than_3_points": short_polygons,
             "patient_id": "not provided: one patient per image"}
    return Records("chestx_det", root, recs, Task("chestx_det", "multilabel", CATEGORIES), labels,
                   boxes=pd.DataFrame(box_rows, columns=BOX_COLUMNS),
                   masks=pd.DataFrame(mask_rows, columns=list(MASK_COLUMNS)), split_source="official", notes=notes,
                   box_label_names=CATEGORIES, mask_label_names=CATEGORIES if mask_rows else None,
                   masks_exhaustive=True)  # every image was annotated: no polygon of a finding = none of it
