"""CheXmask (Gaggion et al., PhysioNet): lung and heart masks for six public chest X-ray datasets.

Expected folder (the PhysioNet release)::

    <root>/
        OriginalResolution/VinDr-CXR.csv     masks at each image's original size (what this adapter wants)
        OriginalResolution/CheXpert.csv, ChestX-Ray8.csv, MIMIC-CXR-JPG.csv, Padchest.csv, CANDID-PTX.csv
        Preprocessed/...                     masks of the 1024x1024 padded images the model saw

The images are not part of CheXmask: option ``images_root`` names the folder of the source dataset
(absolute, or relative to root; default: root itself), searched by the CSV's image reference (as a
relative path, then by file name, then by file stem, e.g. a VinDr ``image_id`` -> ``<id>.dicom``).
Unresolved images keep the reference as their path and are counted in ``notes``. A reference that is
an absolute path elsewhere or climbs out of ``images_root`` with ``..`` is refused with the row.

Columns (one row per image): an id column that depends on the source dataset (``image_id`` for VinDr-CXR,
``dicom_id`` for MIMIC-CXR-JPG, ``Path`` for CheXpert, ``Image Index`` for ChestX-Ray8, ``ImageID`` for
PadChest, ...), ``Dice RCA (Mean)``, ``Dice RCA (Max)`` (reverse-classification-accuracy quality
estimates), ``Landmarks`` (the HybridGNet contour points; not read), ``Left Lung``, ``Right Lung``,
``Heart`` (RLE strings), ``Height``, ``Width``.

RLE ("chexmask" encoding, from the authors' ``DataPostprocessing/utils.py``): space-separated
``start length`` pairs over the row-major (C-order) flattened ``Height x Width`` mask, starts 1-based
and absolute (not relative to the previous run) -- the Kaggle "carvana" convention, not the
column-major SIIM one. :func:`arkx.data.masks.rle_decode_chexmask` / ``rle_encode_chexmask`` implement it.
Uncertain: whether "Left"/"Right" are the patient's sides (we assume so, as in the SCR annotations the
model was trained on); whether empty masks occur (an empty or missing cell gives no mask row); whether
every CSV has Height/Width (without them the masks are taken as 1024x1024, the Preprocessed size).

Quality filter ``min_dice_rca`` (default 0.7, the threshold the CheXmask authors suggest) drops images
whose ``Dice RCA (Mean)`` is lower or missing. No image-level labels; seeded patient-level split
(patient from a patient column where the CSV has one, else from the id: ``patientNNNNN`` in CheXpert
paths, the ``NNNNNNNN`` prefix of ChestX-Ray8 names, else the image itself).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from ..records import DatasetFormatError, Records
from ._common import images_frame, list_dir, path_in_base, patient_split, read_csv, walk_files
from .registry import AdapterOptions, register

ENCODING = "chexmask"
#: the CSV's mask columns in the provider's order (also the mask head order)
STRUCTURES = ("Left Lung", "Right Lung", "Heart")
ID_COLUMNS = ("image_id", "dicom_id", "Path", "Image Index", "ImageID", "Image", "id")
PATIENT_COLUMNS = ("subject_id", "PatientID", "Patient ID", "patient_id")
DICE_COLUMN = "Dice RCA (Mean)"
_CHEXPERT_PATIENT = re.compile(r"(patient\d+)")
_NIH_PATIENT = re.compile(r"^(\d{8})_\d{3}\.png$")

LAYOUT = """\
<root>/OriginalResolution/<Dataset>.csv   (id column, Dice RCA (Mean), Dice RCA (Max), Landmarks,
                                           Left Lung, Right Lung, Heart [RLE], Height, Width)
images: option images_root (folder of the source dataset's images)"""


class ChexmaskOptions(AdapterOptions):
    #: which CSV: a name ("VinDr-CXR", "VinDr-CXR.csv") or a path relative to root; default: the only CSV
    csv: str | None = None
    #: folder of the matching images (absolute or relative to root); default: root
    images_root: str | None = None
    #: drop images whose "Dice RCA (Mean)" is below this (or missing); 0 keeps everything
    min_dice_rca: float = Field(0.7, ge=0.0, le=1.0)


# ------------------------------------------------------------------------------------------ RLE codec


# ------------------------------------------------------------------------------------------ adapter


def _pick_csv(root: Path, name: str | None) -> Path:
    if name is not None:
        base = name if name.lower().endswith(".csv") else f"{name}.csv"
        for cand in (root / name, root / base, root / "OriginalResolution" / base):
            if cand.is_file():
                return cand
        raise DatasetFormatError(
            f"chexmask: CSV {name!r} not found (tried {root / base} and {root / 'OriginalResolution' / base})"
        )
    for folder in (root / "OriginalResolution", root):
        found = [f for f in list_dir(folder) if f.suffix.lower() == ".csv" and f.is_file()] if folder.is_dir() else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DatasetFormatError(
                f"chexmask: {folder} holds several CSVs ({', '.join(p.name for p in found)}); choose one with "
                f"option csv"
            )
    raise DatasetFormatError(f"chexmask: expected {root / 'OriginalResolution'}/<Dataset>.csv (none found)")


def _patient(ref: str, id_col: str) -> str:
    if id_col == "Path":
        m = _CHEXPERT_PATIENT.search(ref)
        if m:
            return m[1]
    if id_col == "Image Index":
        m = _NIH_PATIENT.match(ref)
        if m:
            return m[1]
    return ref


class _ImageIndex:
    """Find an image under a folder by relative path, then by file name, then by stem (walked once, lazily)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._by_name: dict[str, Path] | None = None
        self._by_stem: dict[str, Path] = {}

    def _walk(self) -> None:
        self._by_name = {}
        if not self.folder.is_dir():
            return
        for p in walk_files(self.folder):  # OS artefacts (macOS ._*, Thumbs.db) are not images
            if p.suffix.lower() == ".csv":
                continue
            self._by_name.setdefault(p.name, p)
            self._by_stem.setdefault(p.stem, p)

    def find(self, ref: str) -> Path | None:
        rel = Path(ref)
        for cand in (self.folder / rel, self.folder / Path(*rel.parts[1:]) if len(rel.parts) > 1 else None):
            if cand is not None and cand.is_file():
                return cand
        if self._by_name is None:
            self._walk()
        return self._by_name.get(rel.name) or self._by_stem.get(rel.name) or self._by_stem.get(rel.stem)


@register("chexmask", options=ChexmaskOptions, layout=LAYOUT,
          summary="CheXmask lung / heart RLE masks for a source dataset, filtered by RCA Dice")
def read(root: Path, options: ChexmaskOptions) -> Records:
    csv_path = _pick_csv(root, options.csv)
    header = read_csv(csv_path, "chexmask", nrows=0).columns
    id_col = next((c for c in ID_COLUMNS if c in header), None)
    if id_col is None:
        raise DatasetFormatError(f"chexmask: {csv_path} has no image id column (one of {list(ID_COLUMNS)}); "
                                 f"found {list(header)}")
    structures = [s for s in STRUCTURES if s in header]
    if not structures:
        raise DatasetFormatError(f"chexmask: {csv_path} lacks the mask columns {list(STRUCTURES)}")
    frame = read_csv(csv_path, "chexmask", usecols=lambda c: c != "Landmarks", dtype={id_col: str})
    n_rows = len(frame)
    file_rows = np.arange(n_rows) + 2  # 1-based CSV rows, kept through the quality filter
    notes: dict[str, object] = {"csv": csv_path.relative_to(root).as_posix(), "id_column": id_col,
                                "rows_in_csv": n_rows, "encoding": "chexmask RLE: 1-based absolute starts, row-major"}
    if DICE_COLUMN in frame.columns:
        dice = pd.to_numeric(frame[DICE_COLUMN], errors="coerce").to_numpy(dtype=float)
        keep = (dice >= options.min_dice_rca) if options.min_dice_rca > 0 else np.ones(n_rows, bool)
        notes["dropped_low_dice_rca"] = int((~keep).sum())
        notes["quality_filter"] = f"{DICE_COLUMN} >= {options.min_dice_rca}"
        frame = frame.loc[keep].reset_index(drop=True)
        file_rows = file_rows[keep]
    else:
        notes["quality_filter"] = f"none ({DICE_COLUMN} column absent)"
    if frame.empty:
        raise DatasetFormatError(f"chexmask: no rows of {csv_path} pass the quality filter ({notes['quality_filter']})")
    refs = frame[id_col].astype(str).str.strip().tolist()
    if "Height" in frame.columns and "Width" in frame.columns:
        heights = pd.to_numeric(frame["Height"], errors="coerce").to_numpy()
        widths = pd.to_numeric(frame["Width"], errors="coerce").to_numpy()
        bad = ~(np.isfinite(heights) & np.isfinite(widths) & (heights > 0) & (widths > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetFormatError(f"chexmask: {csv_path} image {refs[i]!r}: Height/Width missing or not positive")
    else:
        heights = widths = np.full(len(frame), 1024.0)
        notes["mask_size"] = "no Height/Width columns: masks taken as 1024x1024 (Preprocessed CSV?)"
    pcol = next((c for c in PATIENT_COLUMNS if c in frame.columns), None)
    patients = (frame[pcol].astype(str).tolist() if pcol else [_patient(r, id_col) for r in refs])

    images_root = root if options.images_root is None else Path(options.images_root).expanduser()
    if not images_root.is_absolute():
        images_root = root / images_root
    index = _ImageIndex(images_root)
    paths, unresolved = [], 0
    for row, ref in zip(file_rows, refs):
        # an image reference must not lead outside the images folder (absolute elsewhere, or ``..``)
        ref_in = path_in_base(images_root, ref, dataset="chexmask", source=csv_path, where=f"row {int(row)}",
                              column=id_col)
        hit = index.find(ref_in)
        if hit is None:
            unresolved += 1
            paths.append(ref)
            continue
        try:
            paths.append(hit.relative_to(root).as_posix())
        except ValueError:
            paths.append(str(hit))
    notes["images_unresolved"] = unresolved
    notes["images_root"] = str(images_root)

    mask_rows = []
    empty = 0
    for i, ref in enumerate(refs):
        for s in structures:
            rle = frame[s].iat[i]
            if rle is None or (isinstance(rle, float) and np.isnan(rle)) or not str(rle).strip():
                empty += 1
                continue
            mask_rows.append({"image_id": ref, "label": s, "kind": "rle", "rle": str(rle).strip(),
                              "encoding": ENCODING, "height": int(heights[i]), "width": int(widths[i])})
    notes["empty_masks"] = empty
    n = len(refs)
    images = images_frame(image_id=refs, path=paths, patient_id=patients,
                          split=patient_split(patients, options.split_seed), view=[None] * n, sex=[None] * n,
                          age=[np.nan] * n)
    notes["split"] = f"seeded patient-level 70/10/20, seed {options.split_seed}"
    notes["mask_sides"] = "Left/Right Lung taken as the patient's sides"
    masks = pd.DataFrame(mask_rows, columns=["image_id", "label", "kind", "rle", "encoding", "height", "width"])
    return Records("chexmask", root, images, None, np.zeros((n, 0), np.float32), masks=masks,
                   split_source="seeded-patient", notes=notes, mask_label_names=tuple(structures))
