"""Synthetic TBX11K (read by :mod:`arkx.data.adapters.tbx11k`): ``TBX11K/imgs/{health,sick,tb,test}/*.png``,
COCO annotations ``annotations/json/{TBX11K,all}_{train,val}.json`` and ``all_test.json``, and
``lists/*.txt``; tuberculosis areas per lung side. Masks and boxes come from the pixels the finding changed
(see :mod:`arkx.synth.annotations`); ``generate_tbx11k(rng, n, size)`` returns the
:class:`~arkx.synth.annotations.SynthImage` list the writer writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..anatomy import Case, Finding, Site
from ..annotations import SynthImage, draw_labelled
from ..files import save_gray
from ..pneumothorax import INCIDENTAL
from ..sampling import (
    draw_seed,
)

TBX11K_CATEGORIES = ("ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis")
#: acquisition look of this dataset
SITE = Site("tbx11k", gamma=0.9, contrast=1.05, offset=0.0, noise=0.015, blur=0.8, border=0.04, marker=None)


def generate_tbx11k(rng, n: int, size: int) -> list[SynthImage]:
    """Healthy / sick / TB images in train, val and (unlabelled) test; TB areas per lung side."""
    site = SITE
    parts = np.array(["train"] * n, dtype=object)
    parts[rng.permutation(n)[: max(2, int(0.2 * n))]] = "val"
    rest = np.flatnonzero(parts == "train")
    parts[rng.permutation(rest)[: max(2, int(0.15 * n))]] = "test"
    classes = rng.choice(3, size=n, p=[0.4, 0.32, 0.28])
    for part in ("train", "val"):  # >= 3 TB (or half) of every labelled split
        idx = np.flatnonzero(parts == part)
        need = min(3, len(idx) // 2) - int((classes[idx] == 2).sum())
        if need > 0:
            classes[rng.permutation(idx[classes[idx] != 2])[:need]] = 2
    counters = {"health": 0, "sick": 0, "tb": 0, "test": 0}
    out = []
    for k in range(n):
        cls = ("health", "sick", "tb")[int(classes[k])]
        findings: tuple[Finding, ...] = ()
        owners: list[str | None] = []
        if cls == "sick":
            findings, owners = (Finding(INCIDENTAL[int(rng.integers(len(INCIDENTAL)))]),), [None]
        elif cls == "tb":
            side = ("R", "L", "B")[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
            cat = TBX11K_CATEGORIES[int(rng.choice(3, p=[0.7, 0.25, 0.05]))] if parts[k] != "test" else "tb"
            findings, owners = (Finding("tuberculosis", float(rng.uniform(0.8, 1.0)), side),), [cat]
        folder = "test" if parts[k] == "test" else cls
        counters[folder] += 1
        prefix = {"health": "h", "sick": "s", "tb": "tb", "test": "t"}[folder]
        case = Case("M" if rng.random() < 0.6 else "F", "PA", findings, draw_seed(rng), draw_seed(rng))
        image, drawn = draw_labelled(case, owners, (size, size), site)
        out.append(SynthImage(f"{folder}/{prefix}{counters[folder]:04d}.png", image, case, drawn,
                              {"part": parts[k], "class": cls}))
    return out


def write_tbx11k(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``TBX11K/imgs/{health,sick,tb,test}/*.png``, ``annotations/json/{TBX11K,all}_{train,val}.json``
    (COCO), ``annotations/json/all_test.json`` and ``lists/*.txt``."""
    root = folder / "TBX11K"
    cats = [{"id": i + 1, "name": name, "supercategory": "Tuberculosis"} for i, name in enumerate(TBX11K_CATEGORIES)]
    docs = {p: {"images": [], "annotations": [], "categories": cats} for p in ("train", "val", "test")}
    ann_id = 0
    for k, im in enumerate(generate_tbx11k(rng, n, size)):
        save_gray(root / "imgs" / im.image_id, im.image, "PNG")
        part = im.meta["part"]
        docs[part]["images"].append({"id": k, "file_name": im.image_id, "height": size, "width": size})
        if part == "test":
            continue
        for label, (x0, y0, x1, y1), m in im.findings:
            ann_id += 1
            docs[part]["annotations"].append({
                "id": ann_id, "image_id": k, "category_id": TBX11K_CATEGORIES.index(label) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0,
                "segmentation": [],
            })  # fmt: skip
    jdir = root / "annotations" / "json"
    jdir.mkdir(parents=True, exist_ok=True)
    for part in ("train", "val"):
        text = json.dumps(docs[part])
        (jdir / f"TBX11K_{part}.json").write_text(text)
        (jdir / f"all_{part}.json").write_text(text)
    (jdir / "all_test.json").write_text(json.dumps({**docs["test"], "annotations": []}))
    lists = root / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    for part, names in (("TBX11K_train", "train"), ("TBX11K_val", "val"), ("all_test", "test")):
        (lists / f"{part}.txt").write_text("".join(f"{im['file_name']}\n" for im in docs[names]["images"]))
    return root
