"""Any COCO-format detection / instance-segmentation dataset (one JSON per split, or one JSON).

Expected folder (names are options)::

    my-dataset/
        annotations/instances_train.json   {"images": [{"id", "file_name", "height", "width"}, ...],
        annotations/instances_val.json      "annotations": [{"image_id", "category_id", "bbox": [x, y, w, h],
        annotations/instances_test.json                      "segmentation": polygons | RLE, "iscrowd"}, ...],
        images/<file_name>                  "categories": [{"id", "name"}, ...]}

Which JSONs: ``annotations`` (one file; all its images get split ``split``), or
``train_json`` / ``val_json`` / ``test_json``; with none of these, ``annotations/instances_*.json``
files whose names contain train / val / test are used. Without a val JSON, ``val_fraction`` of the
train images (seeded, by image) become ``val``.

A ``file_name`` must stay inside ``images_dir`` (an absolute path elsewhere or a ``..`` that climbs
out is refused with the JSON and the ``images[k]`` entry).

Records: ``image_id`` is the ``file_name`` (unique across splits; COCO ids are per file), path
``images_dir/file_name``; no patient ids (patient = image). Task: multilabel over the category names
in category-id order (1 when the image has an annotation of that category, else 0). Boxes from
``bbox`` (``x_max = x + w``). Masks from ``segmentation``: polygons -> ``kind="polygon"`` (several
parts: a list of flat lists), RLE with list counts -> ``encoding="coco"`` (counts as space-separated
text), RLE with string counts -> ``encoding="coco-compressed"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..masks import MASK_COLUMNS
from ..records import SPLITS, DatasetFormatError, Records, Task
from ..splits import in_carved_validation
from ._common import images_frame, path_in_base
from .registry import AdapterOptions, register

LAYOUT = """\
<root>/
  annotations/instances_{train,val,test}.json   COCO (or the files named by the options)
  <images_dir>/<file_name>"""

BOX_COLUMNS = ["image_id", "label", "x_min", "y_min", "x_max", "y_max"]


class COCOOptions(AdapterOptions):
    #: one COCO JSON (relative to root) whose images all get split ``split``
    annotations: str | None = None
    split: Literal["train", "val", "test"] = "train"
    train_json: str | None = None
    val_json: str | None = None
    test_json: str | None = None
    #: folder (relative to root) the ``file_name`` entries are relative to
    images_dir: str = "images"
    #: fraction of train images moved to val when no val JSON is given (0 disables)
    val_fraction: float = 0.1


def load_coco(path: Path, dataset: str) -> dict:
    """A COCO JSON with its three lists checked (errors name the file and the entry)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is tolerated
    except (OSError, ValueError) as err:
        raise DatasetFormatError(f"{dataset}: cannot read COCO JSON {path}: {err}") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{dataset}: {path} is not a COCO JSON object")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetFormatError(f"{dataset}: {path} lacks the {key!r} list")
    data.setdefault("annotations", [])
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DatasetFormatError(f"{dataset}: {path} images[{i}] lacks 'id' or 'file_name'")
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetFormatError(f"{dataset}: {path} categories[{i}] lacks 'id' or 'name'")
    return data


def _segmentation_row(seg: Any, image_id: str, label: str, h: Any, w: Any, where: str, dataset: str) -> dict | None:
    base = {"image_id": image_id, "label": label, "path": None, "rle": None, "encoding": None, "polygon": None,
            "height": h, "width": w}
    if seg is None or (isinstance(seg, list) and not seg):
        return None
    if isinstance(seg, list):
        parts = seg if isinstance(seg[0], list) else [seg]
        parts = [[float(v) for v in part] for part in parts if len(part) >= 6]
        if not parts:
            return None
        if h is None or w is None:
            raise DatasetFormatError(f"{dataset}: {where}: polygon segmentation but the image has no height/width")
        return {**base, "kind": "polygon", "polygon": parts[0] if len(parts) == 1 else parts}
    if isinstance(seg, dict) and "counts" in seg:
        size = seg.get("size") or [h, w]
        if size[0] is None or size[1] is None:
            raise DatasetFormatError(f"{dataset}: {where}: RLE segmentation without a size")
        counts = seg["counts"]
        if isinstance(counts, list):
            return {**base, "kind": "rle", "rle": " ".join(str(int(c)) for c in counts), "encoding": "coco",
                    "height": int(size[0]), "width": int(size[1])}
        return {**base, "kind": "rle", "rle": str(counts), "encoding": "coco-compressed",
                "height": int(size[0]), "width": int(size[1])}
    raise DatasetFormatError(f"{dataset}: {where}: segmentation is neither polygons nor RLE")


def coco_parts(data: dict, path: Path, dataset: str, split: str, prefix: str = "",
               masks: bool = True, root: Path | None = None
               ) -> tuple[list[dict], list[dict], list[dict], dict[str, set]]:
    """(image rows, box rows, mask rows, categories per image) of one COCO JSON.

    ``image_id`` = ``file_name``; ``path`` = ``prefix/file_name``. Annotation labels are category names.
    With ``root``, every ``file_name`` must stay inside ``root/prefix`` (:func:`path_in_base`).
    """
    names = {c["id"]: str(c["name"]) for c in data["categories"]}
    images, by_id = [], {}
    base = None if root is None else (root / prefix if prefix else root)
    for k, im in enumerate(data["images"]):
        fid = str(im["file_name"])
        if base is not None:
            fid = path_in_base(base, fid, dataset=dataset, source=path, where=f"images[{k}]", column="file_name")
        by_id[im["id"]] = (fid, im.get("height"), im.get("width"))
        images.append({"image_id": fid, "path": f"{prefix}/{fid}" if prefix else fid, "split": split})
    boxes, mask_rows = [], []
    cats: dict[str, set] = {row["image_id"]: set() for row in images}
    for k, ann in enumerate(data["annotations"]):
        where = f"{path.name} annotations[{k}]"
        if ann.get("image_id") not in by_id:
            raise DatasetFormatError(f"{dataset}: {where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in names:
            raise DatasetFormatError(f"{dataset}: {where}: category_id {ann.get('category_id')!r} is not in "
                                     f"'categories'")
        fid, h, w = by_id[ann["image_id"]]
        label = names[ann["category_id"]]
        cats[fid].add(label)
        bbox = ann.get("bbox")
        if bbox is not None:
            if len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox) or bbox[2] < 0 or bbox[3] < 0:
                raise DatasetFormatError(f"{dataset}: {where}: bbox {bbox!r} is not [x, y, width, height]")
            x, y, bw, bh = (float(v) for v in bbox)
            boxes.append({"image_id": fid, "label": label, "x_min": x, "y_min": y, "x_max": x + bw, "y_max": y + bh})
        if masks:
            row = _segmentation_row(ann.get("segmentation"), fid, label, h, w, where, dataset)
            if row is not None:
                mask_rows.append(row)
    return images, boxes, mask_rows, cats


def _discover(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    folder = root / "annotations"
    for path in sorted(folder.glob("instances_*.json")) if folder.is_dir() else []:
        stem = path.stem.lower()
        for split, keys in (("train", ("train",)), ("val", ("val", "valid")), ("test", ("test",))):
            if any(k in stem for k in keys) and split not in found:
                found[split] = path
                break
    return found


@register("coco", options=COCOOptions, layout=LAYOUT,
          summary="any COCO detection/segmentation JSON(s): category labels, boxes, polygon/RLE masks")
def read(root: Path, options: COCOOptions) -> Records:
    if options.annotations is not None:
        if any(x is not None for x in (options.train_json, options.val_json, options.test_json)):
            raise DatasetFormatError("coco: give either 'annotations' or the per-split '*_json' options, not both")
        files = {options.split: root / options.annotations}
    elif any(x is not None for x in (options.train_json, options.val_json, options.test_json)):
        files = {s: root / f for s, f in (("train", options.train_json), ("val", options.val_json),
                                          ("test", options.test_json)) if f is not None}
    else:
        files = _discover(root)
        if not files:
            raise DatasetFormatError(f"coco: no annotations option given and no annotations/instances_*.json "
                                     f"with train/val/test in its name under {root}")
    images, boxes, mask_rows, cats, categories = [], [], [], {}, []
    for split in SPLITS:
        if split not in files:
            continue
        path = files[split]
        if not path.is_file():
            raise DatasetFormatError(f"coco: expected file {path} (not found)")
        data = load_coco(path, "coco")
        for c in sorted(data["categories"], key=lambda c: c["id"]):
            if c["name"] not in categories:
                categories.append(str(c["name"]))
        im, bx, mk, ct = coco_parts(data, path, "coco", split, options.images_dir.strip("/"), root=root)
        images += im
        boxes += bx
        mask_rows += mk
        for k, v in ct.items():
            cats.setdefault(k, set()).update(v)
    frame = pd.DataFrame(images, columns=["image_id", "path", "split"])
    dup = frame["image_id"].duplicated()
    if dup.any():
        raise DatasetFormatError(f"coco: file_name {frame['image_id'][dup].iloc[0]!r} appears in more than one "
                                 f"image entry / split")
    notes: dict[str, object] = {"files": {s: p.relative_to(root).as_posix() for s, p in files.items()},
                                "patient_id": "not provided: one patient per image"}
    split = frame["split"].to_numpy(dtype=object)
    if "val" not in files and "train" in files and options.val_fraction > 0:
        for i, fid in enumerate(frame["image_id"]):
            if split[i] == "train" and in_carved_validation(fid, options.split_seed, options.val_fraction):
                split[i] = "val"
        notes["val"] = (f"{options.val_fraction:.0%} of the train JSON's images (seeded by image = patient, "
                        f"seed {options.split_seed}); train/test from the JSONs")
    ids = frame["image_id"].tolist()
    labels = np.array([[1.0 if c in cats.get(i, ()) else 0.0 for c in categories] for i in ids],
                      dtype=np.float32).reshape(len(ids), len(categories))
    recs = images_frame(image_id=ids, path=frame["path"].tolist(), patient_id=ids, split=split,
                        view=[None] * len(ids), sex=[None] * len(ids), age=[np.nan] * len(ids))
    task = Task("coco", "multilabel", tuple(categories)) if categories else None
    # the head order is the categories' (by id, first file first); a kind without any annotation has no head
    return Records("coco", root, recs, task, labels, boxes=pd.DataFrame(boxes, columns=BOX_COLUMNS),
                   masks=pd.DataFrame(mask_rows, columns=list(MASK_COLUMNS)),
                   split_source="seeded-patient" if "val" in notes else "official", notes=notes,
                   box_label_names=tuple(categories) if boxes else None,
                   mask_label_names=tuple(categories) if mask_rows else None,
                   masks_exhaustive=True)  # COCO: an image listed without a category's annotation has none
