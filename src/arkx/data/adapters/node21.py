"""NODE21 (nodule detection challenge, Sogancioglu et al. 2021), training data as downloaded.

Expected folder::

    node21/
        cxr_images/proccessed_data/images/<img_name>.mha    (sic: "proccessed"; 1024 x 1024 MetaImage)
        cxr_images/proccessed_data/metadata.csv             img_name,x,y,width,height,label

``metadata.csv`` has one row per nodule box (``label`` 1) and rows with ``label`` 0 for images
without a nodule (their coordinates, if any, are ignored); an extra leading index column is
tolerated. Boxes: ``x_min = x``, ``x_max = x + width`` in pixels of the ``.mha`` image. Task:
multilabel ``("Nodule",)``. No official split, no patient ids (the images come from JSRT, PadChest,
ChestX-ray14 and Open-I): seeded split with one patient per image.

The images are MetaImage files: ``arkx.data.mha.read_mha`` reads them (raw values) and
``arkx.data.io`` must dispatch ``.mha`` to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ._common import child, images_frame, paths_in_base, patient_split, read_csv
from .registry import AdapterOptions, register

DATA_DIRS = ("cxr_images/proccessed_data", "cxr_images/processed_data", "proccessed_data", "processed_data", ".")
COLUMNS = ("img_name", "x", "y", "width", "height", "label")
LABEL = "Nodule"

LAYOUT = """\
node21/
  cxr_images/proccessed_data/metadata.csv     img_name,x,y,width,height,label (one row per box; label 0 = none)
  cxr_images/proccessed_data/images/*.mha"""


class NODE21Options(AdapterOptions):
    #: folder (relative to root) holding metadata.csv and images/; default: searched in DATA_DIRS
    data_dir: str | None = None


@register("node21", options=NODE21Options, layout=LAYOUT,
          summary="NODE21: Nodule (image label) + nodule boxes; .mha images; seeded split")
def read(root: Path, options: NODE21Options) -> Records:
    candidates = (options.data_dir,) if options.data_dir is not None else DATA_DIRS
    folder = next((child(root, d) for d in candidates if child(root, f"{d}/metadata.csv").is_file()), None)
    if folder is None:
        raise DatasetFormatError(f"node21: expected metadata.csv in one of {[str(root / d) for d in candidates]}")
    csv_path = child(folder, "metadata.csv")
    frame = read_csv(csv_path, "node21", required=COLUMNS, dtype={"img_name": str})
    label = pd.to_numeric(frame["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetFormatError(f"node21: {csv_path} row {i + 2} column 'label': {frame['label'].iloc[i]!r} is not 0 or 1")
    coords = frame[["x", "y", "width", "height"]].apply(pd.to_numeric, errors="coerce")
    pos = (label == 1).to_numpy()
    wrong = pos & ~((coords["width"] > 0) & (coords["height"] > 0) & coords[["x", "y"]].notna().all(axis=1)).to_numpy()
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise DatasetFormatError(f"node21: {csv_path} row {i + 2} ({frame['img_name'].iloc[i]}): label 1 needs a box "
                                 f"with width and height > 0, got {coords.iloc[i].tolist()}")
    names = frame["img_name"].astype(str).str.strip()
    paths_in_base(folder / "images", names, dataset="node21", source=csv_path, column="img_name")  # stay inside
    order = list(dict.fromkeys(names))
    positive = set(names[pos])
    rel = folder.relative_to(root).as_posix()
    prefix = "" if rel == "." else rel + "/"
    boxes = pd.DataFrame({
        "image_id": names[pos].to_numpy(), "label": LABEL,
        "x_min": coords["x"][pos].to_numpy(float), "y_min": coords["y"][pos].to_numpy(float),
        "x_max": (coords["x"] + coords["width"])[pos].to_numpy(float),
        "y_max": (coords["y"] + coords["height"])[pos].to_numpy(float),
    })  # fmt: skip
    labels = np.array([[1.0 if n in positive else 0.0] for n in order], dtype=np.float32).reshape(len(order), 1)
    images = images_frame(image_id=order, path=[f"{prefix}images/{n}" for n in order], patient_id=order,
                          split=patient_split(order, options.split_seed), view=[None] * len(order),
                          sex=[None] * len(order), age=[np.nan] * len(order))
    notes = {"split": f"seeded 70/10/20 by image (no patient ids), seed {options.split_seed}",
             "image_format": ".mha (MetaImage): arkx.data.mha.read_mha", "boxes": int(pos.sum()),
             "rows_label0_with_box_ignored": int(((label == 0) & (coords["width"] > 0)).sum())}
    return Records("node21", root, images, Task("node21", "multilabel", (LABEL,)), labels, boxes=boxes,
                   split_source="seeded-patient", notes=notes, box_label_names=(LABEL,))
