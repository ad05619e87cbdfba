"""CheXpert (Stanford), as downloaded: ``train.csv`` and ``valid.csv`` next to ``train/`` and ``valid/``.

Expected folder (the root is the folder holding the CSVs)::

    CheXpert-v1.0-small/            (or CheXpert-v1.0/)
        train.csv                   Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...,Support Devices
        valid.csv                   same columns (radiologist consensus, 0/1 only)
        train/patient00001/study1/view1_frontal.jpg
        valid/patient64541/study1/view1_frontal.jpg

``Path`` values start with the shipped folder name (``CheXpert-v1.0-small/train/...``); that first
component is dropped when it is not a folder inside the root, so renaming the folder still works.

Only ``Path`` and the 14 label columns are required: ``Sex``, ``Age``, ``Frontal/Lateral`` and ``AP/PA``
are metadata (missing or empty: one warning, "unknown"; the CheXpert test CSVs on Stanford AIMI ship
without them). A ``Path`` must stay inside the root after the shipped prefix is dropped: an absolute
path elsewhere or a ``..`` that climbs out is refused with the row.

Splits follow Ark: the official ``valid.csv`` is the *test* split and a seeded patient-level
validation split is carved from ``train.csv``. Labels are raw: 1, 0, -1 (uncertain), blank (NaN).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ._common import (carve_validation, filter_views, images_frame, normalise_sex, optional_column, parse_age,
                      parse_label_columns, path_in_base, read_csv, require_file)
from .registry import AdapterOptions, register

#: the 14 observations in the order of train.csv's header (the head order)
CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)  # fmt: skip
META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")  # only Path is required (the rest: unknown)
_SPLIT_FOLDERS = {"train", "valid", "test"}

LAYOUT = """\
CheXpert-v1.0-small/   (or CheXpert-v1.0/; point at the folder holding the CSVs)
  train.csv            Path,Sex,Age,Frontal/Lateral,AP/PA,<14 labels>
  valid.csv            official validation = arkx test split
  train/patientNNNNN/studyN/viewN_frontal.jpg
  valid/patientNNNNN/studyN/viewN_frontal.jpg"""


class CheXpertOptions(AdapterOptions):
    #: keep only these views (``AP``, ``PA``, ``LATERAL``, ``LL``, ``RL``); None keeps every image
    views: list[str] | None = None
    #: fraction of train.csv patients carved out as the validation split
    val_fraction: float = 0.1


def parse_label_csv(path: Path, dataset: str = "chexpert") -> tuple[pd.DataFrame, np.ndarray]:
    """One CheXpert CSV: its frame and the raw labels ``[n, 14]`` in :data:`CHEXPERT_LABELS` order.

    Reads label files only (no image access), so it also works on the bare label CSVs.
    """
    frame = read_csv(path, dataset, required=("Path",) + CHEXPERT_LABELS, dtype={"Path": str})
    labels = parse_label_columns(frame, CHEXPERT_LABELS, path, dataset)
    return frame, labels


def _relative_paths(paths: pd.Series, root: Path, source: Path) -> list[str]:
    """Paths relative to ``root``: drop the shipped folder name when it is not a folder in ``root``.

    The result must stay inside ``root`` (:func:`path_in_base`): an absolute path elsewhere or a ``..``
    that climbs out is refused with the file and row."""
    keep: dict[str, bool] = {}
    out = []
    for row, raw in enumerate(paths, start=2):
        if not isinstance(raw, str) or not raw.strip():
            raise DatasetFormatError(f"chexpert: {source} row {row} column 'Path': empty image path")
        parts = PurePosixPath(raw.strip().replace("\\", "/")).parts
        head = parts[0]
        if head not in keep:
            keep[head] = head in _SPLIT_FOLDERS or (root / head).is_dir() or len(parts) < 2
        rel = str(PurePosixPath(*(parts if keep[head] else parts[1:])))
        out.append(path_in_base(root, rel, dataset="chexpert", source=source, where=f"row {row}", column="Path"))
    return out


def _views(frontal_lateral: pd.Series | None, ap_pa: pd.Series | None, n: int) -> list[str | None]:
    """LATERAL, or the AP/PA code of a frontal image; None where unknown (either column may be absent)."""
    if frontal_lateral is None and ap_pa is None:
        return [None] * n
    frontal_lateral = frontal_lateral if frontal_lateral is not None else [None] * n
    ap_pa = ap_pa if ap_pa is not None else [None] * n
    out: list[str | None] = []
    for fl, ap in zip(frontal_lateral, ap_pa):
        if str(fl).strip().lower() == "lateral":
            out.append("LATERAL")
        elif isinstance(ap, str) and ap.strip():
            out.append(ap.strip().upper())
        else:
            out.append(None)
    return out


def _patient_id(rel: str, path: Path, row: int) -> str:
    for part in PurePosixPath(rel).parts:
        if part.startswith("patient"):
            return part
    raise DatasetFormatError(f"chexpert: {path} row {row}: Path {rel!r} has no patientNNNNN folder")


@register("chexpert", options=CheXpertOptions, layout=LAYOUT, default_uncertain="lsr-ones",  # METHOD.md
          summary="CheXpert train/valid CSVs; 14 labels with uncertain (-1); valid.csv is the test split")
def read(root: Path, options: CheXpertOptions) -> Records:
    frames, label_blocks, trainval = [], [], []
    views: list[str | None] = []
    sexes: list[str | None] = []
    ages: list[float] = []
    for name, is_train in (("train.csv", True), ("valid.csv", False)):
        path = require_file(root, name, "chexpert")
        frame, labels = parse_label_csv(path)
        rel = _relative_paths(frame["Path"], root, path)
        frame = frame.assign(rel=rel, pid=[_patient_id(r, path, i + 2) for i, r in enumerate(rel)])
        # metadata training does not need: missing or empty -> one warning and "unknown" (the AIMI test
        # CSVs ship without Sex / Age, for instance)
        meta = {c: optional_column(frame, (c,), path, "chexpert", c) for c in META_COLUMNS[1:]}
        n = len(frame)
        views += _views(meta["Frontal/Lateral"], meta["AP/PA"], n)
        sexes += normalise_sex(meta["Sex"]) if meta["Sex"] is not None else [None] * n
        ages += [parse_age(a) for a in meta["Age"]] if meta["Age"] is not None else [np.nan] * n
        frames.append(frame)
        label_blocks.append(labels)
        trainval.append(np.full(len(frame), is_train))
    frame = pd.concat(frames, ignore_index=True)
    labels = np.concatenate(label_blocks)
    is_train = np.concatenate(trainval)
    split = carve_validation(frame["pid"].tolist(), is_train, options.split_seed, options.val_fraction)
    images = images_frame(
        image_id=[str(PurePosixPath(r).with_suffix("")) for r in frame["rel"]],
        path=frame["rel"], patient_id=frame["pid"], split=split,
        view=views, sex=sexes, age=ages,
    )
    notes: dict[str, object] = {
        "splits": "valid.csv = test; val carved from train.csv by patient "
                  f"(fraction {options.val_fraction}, seed {options.split_seed})",
    }
    records = Records("chexpert", root, images, Task("chexpert", "multilabel", CHEXPERT_LABELS), labels,
                      split_source="official", notes=notes)
    records = filter_views(records, options.views)
    return records
