"""A small example for the generic ``coco`` adapter (:mod:`arkx.data.adapters.generic_coco`):
``my_coco_dataset/images/*.png`` and ``annotations/instances_{train,val,test}.json`` with nodules as
polygons, pneumothorax as uncompressed RLE and effusion as compressed RLE. Masks and boxes come from the
pixels the finding changed (see :mod:`arkx.synth.annotations`); ``generate_coco(rng, n, size)`` returns the
:class:`~arkx.synth.annotations.SynthImage` list the writer writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...data import masks as M
from ..anatomy import Case, Finding, Site
from ..annotations import SynthImage, draw_labelled
from ..files import save_gray
from ..sampling import (
    draw_seed,
)

COCO_CATEGORIES = ("Nodule", "Pneumothorax", "Effusion")
_COCO_CONCEPT = {"Nodule": "nodule", "Pneumothorax": "pneumothorax", "Effusion": "effusion"}
#: acquisition look of this dataset
SITE = Site("coco", gamma=1.0, contrast=1.0, offset=0.0, noise=0.02, blur=0.5, marker=None)


def generate_coco(rng, n: int, size: int) -> list[SynthImage]:
    site = SITE
    out = []
    for k in range(n):
        chosen = [c for c in COCO_CATEGORIES if rng.random() < 0.35] or ([] if rng.random() < 0.3 else
                                                                         [COCO_CATEGORIES[k % 3]])
        findings = tuple(Finding(_COCO_CONCEPT[c], 1.0, "R" if c == "Pneumothorax" else None) for c in chosen)
        case = Case("M", "PA", findings, draw_seed(rng), draw_seed(rng))
        image, drawn = draw_labelled(case, list(chosen), (size, size), site)
        part = "test" if k % 5 == 4 else ("val" if k % 5 == 3 else "train")
        out.append(SynthImage(f"img_{k:05d}.png", image, case, drawn, {"part": part}))
    return out


def write_coco(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``images/*.png`` and ``annotations/instances_{train,val,test}.json``: nodules as polygons,
    pneumothorax as uncompressed RLE, effusion as compressed RLE (``iscrowd`` 1 for RLE)."""
    root = folder / "my_coco_dataset"
    cats = [{"id": i + 1, "name": c, "supercategory": "finding"} for i, c in enumerate(COCO_CATEGORIES)]
    docs = {p: {"images": [], "annotations": [], "categories": cats} for p in ("train", "val", "test")}
    ann_id = 0
    for k, im in enumerate(generate_coco(rng, n, size)):
        save_gray(root / "images" / im.image_id, im.image, "PNG")
        part = im.meta["part"]
        docs[part]["images"].append({"id": k + 1, "file_name": im.image_id, "height": size, "width": size})
        for label, _, mask in im.findings:
            if label == "Nodule":
                polys = M.mask_to_polygons(mask)
                seg, crowd = polys, 0
                mask = M.polygons_to_mask(polys, size, size)
            else:
                seg, crowd = M.rle_encode_coco(mask, compressed=label == "Effusion"), 1
            x0, y0, x1, y1 = M.mask_to_box(mask)
            ann_id += 1
            docs[part]["annotations"].append({
                "id": ann_id, "image_id": k + 1, "category_id": COCO_CATEGORIES.index(label) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(mask.sum()), "iscrowd": crowd, "segmentation": seg,
            })  # fmt: skip
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for part, doc in docs.items():
        (root / "annotations" / f"instances_{part}.json").write_text(json.dumps(doc))
    return root
