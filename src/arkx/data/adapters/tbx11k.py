"""TBX11K (Liu et al., CVPR 2020, "Rethinking computer-aided tuberculosis diagnosis"), as downloaded.

Expected folder::

    TBX11K/
        imgs/{health,sick,tb,test}/*.png           512 x 512; imgs/extra/... (DA, DB, Montgomery, Shenzhen)
        annotations/json/TBX11K_{train,val}.json   COCO; file_name relative to imgs/ ("tb/tb0003.png")
        annotations/json/all_{train,val}.json      the same plus the extra images
        annotations/json/all_test.json             test images only (labels withheld by the authors)
        lists/*.txt                                image lists (only all_test.txt is read, as a fallback)

Image-level task (multiclass): ``Healthy`` / ``Sick but non-TB`` / ``Tuberculosis`` from the image
folder (``health``, ``sick``, ``tb``); images of other folders (``extra/...``) are ``Tuberculosis``
when they have a TB box and unlabelled (NaN) otherwise. Boxes: COCO ``bbox`` ``[x, y, w, h]`` with
the category name as label (``ActiveTuberculosis``, ``ObsoletePulmonaryTuberculosis`` = latent TB,
``PulmonaryTuberculosis`` = TB of unknown activity). A ``health``/``sick`` image with a TB box is an
error.

Splits: the test labels are not public, so by default (``split="val_as_test"``) the official val set
is the test split and ``val_fraction`` of the train images (seeded; no patient ids, one patient per
image) form val. ``split="official"``: train / val as shipped, plus the test images (all_test.json or
lists/all_test.txt) with missing labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ..splits import in_carved_validation
from ._common import child, images_frame, paths_in_base, read_text_lines
from .generic_coco import BOX_COLUMNS, coco_parts, load_coco
from .registry import AdapterOptions, register

CLASSES = ("Healthy", "Sick but non-TB", "Tuberculosis")
FOLDER_CLASS = {"health": "Healthy", "sick": "Sick but non-TB", "tb": "Tuberculosis"}
#: the COCO categories of the official JSONs in category-id order (1, 2, 3): the box head order
TB_CATEGORIES = ("ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis")
IMAGE_DIR = "imgs"
JSON_DIR = "annotations/json"

LAYOUT = """\
TBX11K/
  imgs/{health,sick,tb,test,extra}/*.png
  annotations/json/{TBX11K,all}_{train,val}.json   COCO, file_name relative to imgs/
  annotations/json/all_test.json  or  lists/all_test.txt   (test images, labels withheld)"""


class TBX11KOptions(AdapterOptions):
    #: JSON family: TBX11K_* (TBX11K images only) or all_* (plus the extra TB sets)
    annotations: Literal["TBX11K", "all"] = "TBX11K"
    split: Literal["val_as_test", "official"] = "val_as_test"
    #: fraction of train images that become val with split="val_as_test"
    val_fraction: float = 0.1


def _test_images(root: Path) -> list[str]:
    """The official test images (file names relative to imgs/, checked to stay inside it)."""
    js = root / JSON_DIR / "all_test.json"
    if js.is_file():
        return paths_in_base(root / IMAGE_DIR, [str(im["file_name"]) for im in load_coco(js, "tbx11k")["images"]],
                             dataset="tbx11k", source=js, column="file_name", first_row=0, unit="images[]")
    lst = root / "lists" / "all_test.txt"
    if lst.is_file():
        names = [line.split()[0] for line in read_text_lines(lst) if line.strip()]
        return paths_in_base(root / IMAGE_DIR, names, dataset="tbx11k", source=lst, column="file name",
                             first_row=1, unit="entry")
    return []


@register("tbx11k", options=TBX11KOptions, layout=LAYOUT,
          summary="TBX11K: healthy / sick non-TB / TB (multiclass) + TB boxes; official val used as test")
def read(root: Path, options: TBX11KOptions) -> Records:
    parts = {}
    for part in ("train", "val"):
        path = child(root, f"{JSON_DIR}/{options.annotations}_{part}.json")
        if not path.is_file():
            raise DatasetFormatError(f"tbx11k: expected file {path} (not found)")
        parts[part] = path
    target = {"train": "train", "val": "test"} if options.split == "val_as_test" else {"train": "train", "val": "val"}
    images, boxes, cats = [], [], {}
    for part, path in parts.items():
        data = load_coco(path, "tbx11k")
        unknown = {c["name"] for c in data["categories"]} - set(TB_CATEGORIES)
        if unknown:
            raise DatasetFormatError(f"tbx11k: {path} has categories {sorted(unknown)}; expected {TB_CATEGORIES}")
        im, bx, _, ct = coco_parts(data, path, "tbx11k", target[part], IMAGE_DIR, masks=False, root=root)
        images += im
        boxes += bx
        cats.update(ct)
    notes: dict[str, object] = {"annotations": f"{options.annotations}_{{train,val}}.json",
                                "patient_id": "not provided: one patient per image"}
    if options.split == "official":
        test = _test_images(root)
        images += [{"image_id": f, "path": f"{IMAGE_DIR}/{f}", "split": "test"} for f in test]
        notes["test"] = f"{len(test)} official test images, labels withheld (missing)"
    frame = pd.DataFrame(images, columns=["image_id", "path", "split"])
    dup = frame["image_id"].duplicated()
    if dup.any():
        raise DatasetFormatError(f"tbx11k: image {frame['image_id'][dup].iloc[0]!r} is listed twice")
    split = frame["split"].to_numpy(dtype=object)
    if options.split == "val_as_test":
        for i, fid in enumerate(frame["image_id"]):
            if split[i] == "train" and in_carved_validation(fid, options.split_seed, options.val_fraction):
                split[i] = "val"
        notes["split"] = (f"official val -> test; {options.val_fraction:.0%} of official train -> val "
                          f"(seeded by image, seed {options.split_seed})")
    labels = np.full((len(frame), len(CLASSES)), np.nan, dtype=np.float32)
    tb_without_box, unlabelled = 0, 0
    for i, (fid, sp) in enumerate(zip(frame["image_id"], frame["split"])):
        if sp == "test" and fid not in cats:
            continue  # official test image: labels withheld
        folder = fid.split("/", 1)[0]
        has_tb = bool(cats.get(fid))
        cls = FOLDER_CLASS.get(folder)
        if cls is None:
            cls = "Tuberculosis" if has_tb else None
            unlabelled += cls is None
        elif has_tb and cls != "Tuberculosis":
            raise DatasetFormatError(f"tbx11k: {fid} is in imgs/{folder}/ ({cls}) but has TB boxes")
        elif cls == "Tuberculosis" and not has_tb:
            tb_without_box += 1
        if cls is not None:
            labels[i] = 0.0
            labels[i, CLASSES.index(cls)] = 1.0
    notes["tb_images_without_box"] = tb_without_box
    if unlabelled:
        notes["extra_images_without_label"] = unlabelled
    ids = frame["image_id"].tolist()
    recs = images_frame(image_id=ids, path=frame["path"].tolist(), patient_id=ids, split=split,
                        view=[None] * len(ids), sex=[None] * len(ids), age=[np.nan] * len(ids))
    return Records("tbx11k", root, recs, Task("tbx11k", "multiclass", CLASSES), labels,
                   boxes=pd.DataFrame(boxes, columns=BOX_COLUMNS), box_label_names=TB_CATEGORIES,
                   split_source="seeded-patient" if options.split == "val_as_test" else "official", notes=notes)
