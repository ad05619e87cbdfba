"""ChestDR of MedFMC (Wang et al., Scientific Data 2023; the NeurIPS 2023 MedFM challenge): chest digital
radiographs with 19 thoracic findings, multi-label, as distributed for the challenge.

Expected folder (``MedFMC/chest/``; also called ``ChestDR/``)::

    chest/
        images/5B91F7409CCCE2.png ...
        trainval.txt          "<image>.png 0,0,1,0,...,0"   (19 comma-separated 0/1 in CHESTDR_LABELS order)
        test_WithLabel.txt    same format: the official test split
        train_20.txt, val_20.txt, chest_N-shot_*_expK.txt, test_WithoutLabel.txt   (ignored: few-shot /
                              20%-subset splits of trainval.txt, and the unlabeled challenge set)

or, instead of the .txt files, a one-hot CSV ``chestdr_train.csv`` / ``chest_train.csv`` /
``ChestDR_train.csv`` with a header ``img_id,pleural_effusion,...,consolidation`` (the label columns
picked by name), plus optionally the same for ``_test``.

Labels (multilabel, head order = the release's column order)::

    pleural_effusion, nodule, pneumonia, cardiomegaly, hilar_enlargement, fracture_old, fibrosis,
    aortic_calcification, tortuous_aorta, thickened_pleura, TB, pneumothorax, emphysema, atelectasis,
    calcification, pulmonary_edema, increased_lung_markings, elevated_diaphragm, consolidation

Splits: the test list/CSV is ``test``; the trainval list (or train CSV) is divided into train / val
(seeded, ``val_fraction``). Without a test file, a seeded 70/10/20 split is made. ChestDR publishes no
patient ids, so every image is its own patient.

Uncertainty: the .txt format above is the one the MedFM challenge baseline distributes
(``data_backup/MedFMC/chest``) and is implemented with confidence; the CSV variant (file names and the
``img_id`` column) follows the figshare release as we understand it and may differ in details. An
all-zero row means "none of the 19 findings" (it is not treated as missing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import DatasetFormatError, Records, Task
from ._common import (carve_validation, child, images_frame, parse_label_columns, paths_in_base, patient_split,
                      read_csv, read_text_lines)
from .registry import AdapterOptions, register

CHESTDR_LABELS = (
    "pleural_effusion", "nodule", "pneumonia", "cardiomegaly", "hilar_enlargement", "fracture_old", "fibrosis",
    "aortic_calcification", "tortuous_aorta", "thickened_pleura", "TB", "pneumothorax", "emphysema", "atelectasis",
    "calcification", "pulmonary_edema", "increased_lung_markings", "elevated_diaphragm", "consolidation",
)  # fmt: skip
IMAGE_DIR = "images"
TXT_FILES = {"trainval": ("trainval.txt",), "test": ("test_WithLabel.txt", "test.txt")}
CSV_FILES = {
    "trainval": ("chestdr_train.csv", "chest_train.csv", "ChestDR_train.csv"),
    "test": ("chestdr_test.csv", "chest_test.csv", "ChestDR_test.csv"),
}
ID_COLUMNS = ("img_id", "image_id", "image", "filename")

LAYOUT = """\
chest/  (MedFMC ChestDR)
  images/<id>.png
  trainval.txt          "<id>.png 0,1,0,...  (19 values)"
  test_WithLabel.txt    same format (official test)
  (or chestdr_train.csv / chestdr_test.csv: img_id,<19 label columns>)"""


class ChestDROptions(AdapterOptions):
    #: fraction of trainval images carved out as val
    val_fraction: float = 0.1


def parse_list(path: Path) -> tuple[list[str], np.ndarray]:
    """A MedFMC list file -> (image file names, labels ``[n, 19]``)."""
    names, rows = [], []
    for line_no, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DatasetFormatError(
                f"chestdr: {path} line {line_no}: expected '<image>.png v1,v2,...,v19', got {line.strip()!r}")
        values = fields[1].split(",")
        if len(values) != len(CHESTDR_LABELS) or any(v not in ("0", "1") for v in values):
            raise DatasetFormatError(
                f"chestdr: {path} line {line_no}: expected {len(CHESTDR_LABELS)} comma-separated 0/1 values "
                f"(one per label), got {fields[1]!r}")
        names.append(fields[0])
        rows.append([float(v) for v in values])
    return names, np.asarray(rows, dtype=np.float32).reshape(-1, len(CHESTDR_LABELS))


def parse_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """A one-hot label CSV -> (image file names, labels ``[n, 19]`` picked by column name)."""
    frame = read_csv(path, "chestdr", required=(), dtype=str, keep_default_na=False)
    id_col = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if id_col is None:
        raise DatasetFormatError(
            f"chestdr: {path} lacks an image id column (one of {list(ID_COLUMNS)}); found {list(frame.columns)}")
    labels = parse_label_columns(frame, CHESTDR_LABELS, path, "chestdr", allowed=(0.0, 1.0))
    names = [n if Path(n).suffix else f"{n}.png" for n in frame[id_col].str.strip()]
    return names, labels


def _first(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


@register("chestdr", options=ChestDROptions, layout=LAYOUT,
          summary="MedFMC ChestDR: 19 thoracic findings (multilabel), official trainval/test lists")
def read(root: Path, options: ChestDROptions) -> Records:
    trainval = _first(root, TXT_FILES["trainval"])
    test = _first(root, TXT_FILES["test"])
    parse = parse_list
    if trainval is None:
        trainval, test, parse = _first(root, CSV_FILES["trainval"]), _first(root, CSV_FILES["test"]), parse_csv
    if trainval is None:
        raise DatasetFormatError(
            f"chestdr: expected {root / 'trainval.txt'} (MedFMC list) or one of {list(CSV_FILES['trainval'])} "
            f"in {root} (none found)")
    parts = [("trainval", trainval)] + ([("test", test)] if test is not None else [])
    names, labels, part_of, where = [], [], [], {}
    image_dir = child(root, IMAGE_DIR)
    for part, path in parts:
        n, lab = parse(path)
        # image names must stay inside images/ (entries numbered as the parser counts them)
        n = paths_in_base(image_dir, n, dataset="chestdr", source=path, column="image", first_row=1, unit="entry")
        for k, name in enumerate(n):
            if name in where:
                raise DatasetFormatError(f"chestdr: {path} entry {k + 1}: image {name!r} also listed in {where[name]}")
            where[name] = path.name
        names += n
        labels.append(lab)
        part_of += [part] * len(n)
    if not names:
        raise DatasetFormatError(f"chestdr: {trainval} lists no images")
    ids = [Path(n).stem for n in names]
    if test is not None:
        split = carve_validation(ids, np.array(part_of) == "trainval", options.split_seed, options.val_fraction)
        how = (f"{test.name} = test; {trainval.name} divided into train/val per image "
               f"(fraction {options.val_fraction}, seed {options.split_seed})")
        source = "official"
    else:
        split = patient_split(ids, options.split_seed)
        how = f"no test file: seeded 70/10/20 split per image, seed {options.split_seed}"
        source = "seeded-patient"
    images = images_frame(image_id=ids, path=[f"{image_dir.name}/{n}" for n in names], patient_id=ids, split=split,
                          view=[None] * len(ids), sex=[None] * len(ids), age=[np.nan] * len(ids))
    notes = {"label_files": [p.name for _, p in parts], "splits": how,
             "patient_id": "not published: one patient per image"}
    return Records("chestdr", root, images, Task("chestdr", "multilabel", CHESTDR_LABELS),
                   np.concatenate(labels, axis=0), split_source=source, notes=notes)
