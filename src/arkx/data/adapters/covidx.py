"""COVIDx CXR (COVID-Net; Kaggle "COVIDx CXR-3" / "COVIDx CXR-4", and the older COVIDx releases), as
downloaded.

Expected folder::

    covidx/
        train.txt      one image per line: "patient_id filename class data_source"
        val.txt        (CXR-4 only) same format
        test.txt       same format
        train/<filename>   val/<filename>   test/<filename>

``class`` is ``positive`` / ``negative`` (COVIDx CXR-2, -3, -4) or ``COVID-19`` / ``normal`` /
``pneumonia`` (the older COVIDx releases). The task follows the classes found in the files:

* three classes (``normal``, ``pneumonia``, ``COVID-19``): multiclass ``("normal", "pneumonia",
  "COVID-19")`` (COVID-Net's order);
* otherwise multilabel with one label ``("COVID-19",)``: ``positive`` / ``COVID-19`` = 1, ``negative``
  / ``normal`` / ``pneumonia`` = 0.

Lines are split on whitespace: the first field is the patient id, the last two the class and the
source, everything between is the file name (a few historical file names contain spaces); a line with
only three fields has no source. The patient id is qualified by the source (``"<source>:<id>"``) since
numeric ids of different sources would otherwise collide. A file name must stay inside its split folder
(an absolute path elsewhere or a ``..`` that climbs out is refused with the line). Without ``val.txt``
(CXR-3 and older), val is carved from ``train.txt`` by patient (seeded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import DatasetFormatError, Records, Task
from ._common import carve_validation, child, images_frame, path_in_base, read_text_lines, require_file
from .registry import AdapterOptions, register

BINARY_CLASSES = {"positive": 1.0, "negative": 0.0}
LEGACY_CLASSES = {"covid-19": "COVID-19", "normal": "normal", "pneumonia": "pneumonia"}
MULTICLASS_ORDER = ("normal", "pneumonia", "COVID-19")
SPLIT_FILES = (("train", "train.txt"), ("val", "val.txt"), ("test", "test.txt"))

LAYOUT = """\
covidx/
  train.txt   "patient_id filename class data_source" (class positive/negative, or COVID-19/normal/pneumonia)
  val.txt     (CXR-4; else val is carved from train by patient)
  test.txt
  train/<filename>  val/<filename>  test/<filename>"""


class CovidxOptions(AdapterOptions):
    #: fraction of train patients carved out as val when the folder has no val.txt
    val_fraction: float = 0.1


def _known(token: str) -> bool:
    key = token.lower()
    return key in BINARY_CLASSES or key in LEGACY_CLASSES


def parse_line(line: str, path: Path, line_no: int) -> tuple[str, str, str, str | None]:
    """(patient_id, filename, class as written, source or None) of one list line."""
    fields = line.split()
    if len(fields) >= 4 and _known(fields[-2]):
        return fields[0], " ".join(fields[1:-2]), fields[-2], fields[-1]
    if len(fields) >= 3 and _known(fields[-1]):
        return fields[0], " ".join(fields[1:-1]), fields[-1], None
    raise DatasetFormatError(
        f"covidx: {path} line {line_no}: expected 'patient_id filename class data_source' with class one of "
        f"positive/negative/COVID-19/normal/pneumonia, got {line.strip()!r}")


@register("covidx", options=CovidxOptions, layout=LAYOUT,
          summary="COVIDx CXR-2/3/4 (and older): COVID-19 positive/negative or normal/pneumonia/COVID-19")
def read(root: Path, options: CovidxOptions) -> Records:
    rows = []  # (split, patient, filename, class, source, list file, line, image folder)
    lists = {}
    for split, name in SPLIT_FILES:
        if split == "val" and not (root / name).is_file():
            continue
        path = require_file(root, name, "covidx")
        lists[split] = name
        folder = child(root, split)
        for line_no, line in enumerate(read_text_lines(path), start=1):
            if not line.strip():
                continue
            pid, fname, cls, source = parse_line(line, path, line_no)
            fname = path_in_base(folder, fname, dataset="covidx", source=path, where=f"line {line_no}",
                                 column="filename")
            rows.append((split, pid, fname, cls, source, name, line_no, folder.name))
    if not rows:
        raise DatasetFormatError(f"covidx: the list files in {root} hold no images")
    classes = {r[3].lower() for r in rows}
    binary = classes & set(BINARY_CLASSES)
    legacy = classes & set(LEGACY_CLASSES)
    if binary and legacy:
        raise DatasetFormatError(
            f"covidx: the list files mix positive/negative with COVID-19/normal/pneumonia classes: {sorted(classes)}")
    multiclass = legacy == set(LEGACY_CLASSES)
    if multiclass:
        task = Task("covidx", "multiclass", MULTICLASS_ORDER)
        labels = np.zeros((len(rows), 3), dtype=np.float32)
        for i, r in enumerate(rows):
            labels[i, MULTICLASS_ORDER.index(LEGACY_CLASSES[r[3].lower()])] = 1.0
    else:
        task = Task("covidx", "multilabel", ("COVID-19",))
        labels = np.array([[BINARY_CLASSES.get(r[3].lower(), 1.0 if r[3].lower() == "covid-19" else 0.0)]
                           for r in rows], dtype=np.float32)
    seen: dict[str, str] = {}
    image_ids = []
    for _, _, fname, _, _, name, line_no, _ in rows:
        if fname in seen:
            raise DatasetFormatError(
                f"covidx: {root / name} line {line_no}: image {fname!r} already listed in {seen[fname]}")
        seen[fname] = f"{name} line {line_no}"
        image_ids.append(fname)
    patients = [f"{r[4]}:{r[1]}" if r[4] else r[1] for r in rows]
    split = np.array([r[0] for r in rows], dtype=object)
    if "val" not in lists:
        split = carve_validation(patients, split == "train", options.split_seed, options.val_fraction)
    images = images_frame(
        image_id=image_ids, path=[f"{r[7]}/{r[2]}" for r in rows], patient_id=patients, split=split,
        view=[None] * len(rows), sex=[None] * len(rows), age=[np.nan] * len(rows),
    )
    notes = {
        "lists": lists,
        "classes_found": sorted({r[3] for r in rows}),
        "task": "multiclass normal/pneumonia/COVID-19" if multiclass else "multilabel COVID-19 (positive = 1)",
        "sources": sorted({r[4] for r in rows if r[4]}),
        "patient_id": "<data_source>:<patient_id> (ids of different sources may collide)",
    }
    if "val" not in lists:
        notes["val"] = f"carved from train.txt by patient (fraction {options.val_fraction}, seed {options.split_seed})"
    return Records("covidx", root, images, task, labels, notes=notes)
