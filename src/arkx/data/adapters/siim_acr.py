"""SIIM-ACR Pneumothorax Segmentation (Kaggle 2019), training data as downloaded.

Expected folder::

    siim-acr-pneumothorax/
        train-rle.csv            ImageId, EncodedPixels      (stage 1; or stage_2_train.csv)
        dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm

``EncodedPixels`` is a run-length encoding of the pneumothorax mask (``-1`` = none) in the SIIM
form: column-major pixel order, *relative* starts (``arkx.data.masks.rle_decode_kaggle``). An image
with several pneumothorax annotations has several rows; their masks are merged into one mask per
image (``Records.masks``, re-encoded in the file's own encoding). The shipped ``train-rle.csv``
header has a space before ``EncodedPixels``; column names are stripped. The stage-2 file was
announced in the standard (absolute, 1-based) Kaggle RLE: with ``rle="auto"`` the encoding is told
apart per file (relative offsets of a multi-run string never fit the absolute form and vice versa).

The DICOMs are found by walking the image folder once (the study/series folder names are not in the
CSV). Sex / age / view / patient id and the mask size (``Rows``/``Columns``, 1024 x 1024 in the
challenge data) come from the DICOM headers; without them ``mask_size`` is used. Task: multilabel
``("Pneumothorax",)``. Boxes (``boxes_from_masks``): one per 8-connected component of each image's
mask (scipy), or one per RLE row where scipy is absent. No official split with labels: seeded
patient-level split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from .. import masks as M
from ..records import DatasetFormatError, Records, Task
from ._common import child, first_existing, images_frame, normalise_sex, parse_age, patient_split, read_csv, walk_files
from .registry import AdapterOptions, register

LABEL_FILES = ("train-rle.csv", "stage_2_train.csv")
IMAGE_DIRS = ("dicom-images-train", "stage_2_images", "train")
LABEL = "Pneumothorax"
_UID = re.compile(r"[0-9]+(\.[0-9]+)+")

LAYOUT = """\
siim-acr-pneumothorax/
  train-rle.csv           ImageId, EncodedPixels   (or stage_2_train.csv; -1 = no pneumothorax)
  dicom-images-train/<study>/<series>/<ImageId>.dcm"""


class SIIMOptions(AdapterOptions):
    #: boxes from the connected components of the decoded masks
    boxes_from_masks: bool = True
    #: sex / age / view / patient id / mask size from the DICOM headers (header only)
    read_dicom_metadata: bool = True
    #: RLE form of the label file: SIIM relative offsets, absolute 1-based starts, or told apart per file
    rle: Literal["auto", "relative", "absolute"] = "auto"
    #: mask side when DICOM headers are not read (the challenge images are 1024 x 1024)
    mask_size: int = 1024
    #: folder (relative to root) walked for ``<ImageId>.dcm``; default: the first of IMAGE_DIRS that exists
    images_dir: str | None = None
    #: drop label rows whose DICOM is absent (counted in notes) instead of failing
    drop_missing_images: bool = False


def dicom_headers(paths: Sequence[Path]) -> tuple[list[dict[str, object]], int]:
    """Sex / age / view / PatientID / Rows / Columns from DICOM headers; ``({}, +1)`` for unreadable files."""
    import pydicom

    tags = ["PatientSex", "PatientAge", "ViewPosition", "PatientID", "Rows", "Columns"]
    rows: list[dict[str, object]] = []
    bad = 0
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError):
            bad += 1
            rows.append({})
            continue
        h, w = ds.get("Rows", None), ds.get("Columns", None)
        rows.append({
            "sex": normalise_sex([str(ds.get("PatientSex", "") or "")])[0],
            "age": parse_age(ds.get("PatientAge", None)),
            "view": str(ds.get("ViewPosition", "") or "").strip().upper() or None,
            "patient_id": str(ds.get("PatientID", "") or "").strip() or None,
            "height": int(h) if h else None, "width": int(w) if w else None,
        })  # fmt: skip
    return rows, bad


def index_files(root: Path, folder: Path, suffixes: Sequence[str], dataset: str,
                uid_names: bool = False) -> tuple[dict[str, str], int]:
    """Walk ``folder`` once: file name without its suffix -> path relative to ``root``.

    ``suffixes``: accepted suffixes (lower case, e.g. ``(".dcm",)``). ``uid_names``: also accept
    extension-less files named like a DICOM UID (digits and dots), keyed by the whole name. Returns
    the index and the number of duplicated names (the first in sorted walk order is kept).
    """
    index: dict[str, str] = {}
    dup = 0
    if not folder.is_dir():
        raise DatasetFormatError(f"{dataset}: expected image folder {folder} (not found)")
    for path in walk_files(folder):  # OS artefacts (macOS ._*.dcm, Thumbs.db) are not images
        name, low = path.name, path.name.lower()
        hit = next((s for s in suffixes if low.endswith(s)), None)
        if hit is not None:
            key = name[: len(name) - len(hit)]
        elif uid_names and _UID.fullmatch(name):
            key = name
        else:
            continue
        if key in index:
            dup += 1
            continue
        index[key] = path.relative_to(root).as_posix()
    return index, dup


def rle_records(
    *, dataset: str, root: Path, frame: pd.DataFrame, id_col: str, rle_col: str, csv_path: Path,
    index: dict[str, str], options, label: str = LABEL, patients: dict[str, str] | None = None,
    notes: dict[str, object] | None = None,
) -> Records:
    """Records of a SIIM-style table (one or more RLE rows per image; ``-1`` = none).

    Shared by the SIIM-ACR and CANDID-PTX adapters. ``patients``: image id -> patient id from the
    label file (else from the DICOM header, else the image id).
    """
    notes = dict(notes or {})
    ids_all = frame[id_col].astype(str).str.strip()
    rles_all = frame[rle_col].fillna("").astype(str).str.strip()
    blank = rles_all == ""
    if blank.any():
        i = int(np.flatnonzero(blank.to_numpy())[0])
        raise DatasetFormatError(f"{dataset}: {csv_path} row {i + 2} ({ids_all.iloc[i]}): empty {rle_col}; "
                                 f"expected an RLE string or -1")
    order = list(dict.fromkeys(ids_all))
    missing = [i for i in order if i not in index]
    if missing:
        if not options.drop_missing_images:
            listed = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
            raise DatasetFormatError(
                f"{dataset}: {len(missing)} of {len(order)} images in {csv_path.name} have no image file under "
                f"{root}: {listed} (set drop_missing_images=True to drop them)")
        notes["dropped_missing_images"] = len(missing)
        gone = set(missing)
        order = [i for i in order if i not in gone]
    paths = [index[i] for i in order]
    if options.read_dicom_metadata:
        meta, unreadable = dicom_headers([root / p for p in paths])
        notes["dicom_headers_unreadable"] = unreadable
    else:
        meta = [{}] * len(order)
        notes["dicom_metadata"] = f"not read (read_dicom_metadata=False); masks assumed {options.mask_size}^2"
    size = {i: (m.get("height") or options.mask_size, m.get("width") or options.mask_size) for i, m in zip(order, meta)}
    per_image: dict[str, list[tuple[int, str]]] = {i: [] for i in order}
    for row_no, (iid, rle) in enumerate(zip(ids_all, rles_all)):
        if iid in per_image and rle != "-1":
            per_image[iid].append((row_no, rle))
    negative_ids = set(ids_all[rles_all == "-1"])
    mixed = sum(1 for iid in order if per_image[iid] and iid in negative_ids)
    positives = [(iid, r) for iid in order for _, r in per_image[iid]]
    if options.rle == "auto":
        try:
            relative = M.guess_kaggle_relative([r for _, r in positives], [size[i][0] for i, _ in positives],
                                               [size[i][1] for i, _ in positives])
        except M.MaskDecodeError as err:
            raise DatasetFormatError(f"{dataset}: {csv_path}: {err}") from None
    else:
        relative = options.rle == "relative"
    encoding = "kaggle-siim" if relative else "kaggle"
    notes["rle_encoding"] = f"{encoding} ({'told apart from the file' if options.rle == 'auto' else 'option'})"
    mask_rows, box_rows = [], []
    merged = 0
    use_components = options.boxes_from_masks and M.HAVE_SCIPY
    for iid in order:
        rows = per_image[iid]
        if not rows:
            continue
        h, w = size[iid]
        decoded = []
        for row_no, rle in rows:
            try:
                decoded.append(M.rle_decode_kaggle(rle, h, w, relative=relative))
            except M.MaskDecodeError as err:
                raise DatasetFormatError(f"{dataset}: {csv_path} row {row_no + 2} ({iid}): {err}") from None
        union = np.logical_or.reduce(decoded)
        if len(rows) == 1:
            rle_out = rows[0][1]
        else:
            merged += 1
            rle_out = M.rle_encode_kaggle(union, relative=relative)
        mask_rows.append({"image_id": iid, "label": label, "kind": "rle", "path": None, "rle": rle_out,
                          "encoding": encoding, "polygon": None, "height": h, "width": w})
        if options.boxes_from_masks:
            boxes = M.component_boxes(union) if use_components else [M.mask_to_box(d) for d in decoded]
            for b in boxes:
                if b is not None:
                    box_rows.append({"image_id": iid, "label": label, "x_min": float(b[0]), "y_min": float(b[1]),
                                     "x_max": float(b[2]), "y_max": float(b[3])})
    notes["images_with_several_rle_rows"] = merged
    if mixed:
        notes["images_with_both_mask_and_-1_rows"] = mixed
    if options.boxes_from_masks:
        notes["boxes"] = ("one per 8-connected mask component" if use_components
                          else "one per RLE row (scipy not installed)")
    pids = []
    for iid, m in zip(order, meta):
        pid = (patients or {}).get(iid) or m.get("patient_id") or iid
        pids.append(str(pid))
    notes["split"] = f"seeded patient-level 70/10/20, seed {options.split_seed}"
    labels = np.array([[1.0 if per_image[i] else 0.0] for i in order], dtype=np.float32).reshape(len(order), 1)
    images = images_frame(
        image_id=order, path=paths, patient_id=pids, split=patient_split(pids, options.split_seed),
        view=[m.get("view") for m in meta], sex=[m.get("sex") for m in meta],
        age=[m.get("age", np.nan) for m in meta],
    )
    masks = pd.DataFrame(mask_rows, columns=list(M.MASK_COLUMNS))
    boxes = pd.DataFrame(box_rows, columns=["image_id", "label", "x_min", "y_min", "x_max", "y_max"]) \
        if options.boxes_from_masks else None
    # declared even when no image is positive: the dataset's segmentation / detection heads always exist
    return Records(dataset, root, images, Task(dataset, "multilabel", (label,)), labels, boxes=boxes, masks=masks,
                   split_source="seeded-patient", notes=notes, mask_label_names=(label,),
                   box_label_names=(label,) if boxes is not None else None,
                   masks_exhaustive=True)  # "-1" (and an image without rows) = annotated, no pneumothorax


def read_rle_table(path: Path, dataset: str, id_col: str, rle_col: str) -> pd.DataFrame:
    """A label CSV read as text with stripped column names (SIIM writes ``" EncodedPixels"``)."""
    frame = read_csv(path, dataset, dtype=str, keep_default_na=False)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in (id_col, rle_col) if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{dataset}: {path} lacks column(s) {missing}; found {list(frame.columns)}")
    return frame


@register("siim_acr", options=SIIMOptions, layout=LAYOUT,
          summary="SIIM-ACR Pneumothorax (Kaggle): Pneumothorax; RLE masks; boxes from masks; seeded split")
def read(root: Path, options: SIIMOptions) -> Records:
    csv_path = first_existing(root, LABEL_FILES, "siim_acr")
    frame = read_rle_table(csv_path, "siim_acr", "ImageId", "EncodedPixels")
    if options.images_dir is not None:
        folder = root / options.images_dir
    else:
        folder = next((child(root, d) for d in IMAGE_DIRS if child(root, d).is_dir()), root)
    index, dup = index_files(root, folder, (".dcm",), "siim_acr")
    notes: dict[str, object] = {"label_file": csv_path.name, "label_rows": len(frame),
                                "image_folder": folder.relative_to(root).as_posix() or "."}
    if dup:
        notes["duplicate_dicom_names"] = dup
    return rle_records(dataset="siim_acr", root=root, frame=frame, id_col="ImageId", rle_col="EncodedPixels",
                       csv_path=csv_path, index=index, options=options, notes=notes)
