"""Small helpers shared by adapters: required files and columns, label parsing, seeded splits."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..records import DatasetFormatError


def require_file(root: Path, relative: str, dataset: str) -> Path:
    """``root / relative``, or a DatasetFormatError that names the expected file."""
    path = root / relative
    if not path.is_file():
        raise DatasetFormatError(f"{dataset}: expected file {path} (not found)")
    return path


def read_csv(path: Path, dataset: str, required: Sequence[str] = (), **kwargs) -> pd.DataFrame:
    """Read a provider CSV and check that ``required`` columns exist (error names file and columns)."""
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{dataset}: cannot parse {path}: {err}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetFormatError(
            f"{dataset}: {path} lacks column(s) {missing}; found {list(frame.columns)}"
        )
    return frame


def parse_label_columns(
    frame: pd.DataFrame,
    columns: Sequence[str],
    path: Path,
    dataset: str,
    allowed: Iterable[float] = (1.0, 0.0, -1.0),
) -> np.ndarray:
    """Label columns as float32 ``[n, len(columns)]`` with NaN for blank cells.

    Any value outside ``allowed`` (or text that is not a number) is an error naming the file, the
    1-based data row and the column, so a shifted or mistyped CSV cannot train silently.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{dataset}: {path} lacks label column(s) {missing}")
    allowed_set = set(float(a) for a in allowed)
    out = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        raw = frame[col]
        not_number = np.isnan(values) & raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
        bad = not_number | (~np.isnan(values) & ~np.isin(values, list(allowed_set)))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetFormatError(
                f"{dataset}: {path} row {i + 2} column {col!r}: value {show_value(raw.iloc[i])} is not one of "
                f"{sorted(allowed_set)} or blank"
            )
        out[:, j] = values
    return out


def show_value(value: object) -> str:
    """A cell value as a user wrote it (``2.0``, ``'yes'``), not as numpy's repr (``np.float64(2.0)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _stable_unit_interval(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def patient_split(
    patient_ids: Sequence[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> np.ndarray:
    """Seeded patient-level split: every image of a patient gets the same split.

    The split of a patient depends only on (seed, patient id), not on row order or on which other
    patients are present, so adding images never moves an existing patient to another split.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {fractions} must sum to 1")
    cut_train, cut_val = fractions[0], fractions[0] + fractions[1]
    cache: dict[str, str] = {}
    out = []
    for pid in patient_ids:
        pid = str(pid)
        if pid not in cache:
            u = _stable_unit_interval(pid, seed)
            cache[pid] = "train" if u < cut_train else ("val" if u < cut_val else "test")
        out.append(cache[pid])
    return np.asarray(out, dtype=object)


def carve_validation(
    patient_ids: Sequence[str], is_trainval: np.ndarray, seed: int, val_fraction: float = 0.1
) -> np.ndarray:
    """Split an official train(+val) portion into train / val by patient; the rest is ``test``.

    Used where the provider ships only train/test (NIH14), so model selection never sees test.
    """
    out = np.where(np.asarray(is_trainval, dtype=bool), "train", "test").astype(object)
    for i, pid in enumerate(patient_ids):
        if out[i] == "train" and _stable_unit_interval(str(pid), seed + 7919) < val_fraction:
            out[i] = "val"
    return out


def normalise_sex(values: Iterable[object]) -> list[str | None]:
    """Map provider spellings (Male/Female, M/F, m/f, 0/1 where documented elsewhere) to M/F/None."""
    mapping = {"m": "M", "male": "M", "f": "F", "female": "F"}
    out: list[str | None] = []
    for v in values:
        key = str(v).strip().lower() if v is not None and not (isinstance(v, float) and np.isnan(v)) else ""
        out.append(mapping.get(key))
    return out


# ------------------------------------------------------------------------- added for the adapters


def first_existing(root: Path, candidates: Sequence[str], dataset: str) -> Path:
    """The first of ``candidates`` (relative to ``root``) that exists, or an error listing them all."""
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    raise DatasetFormatError(f"{dataset}: expected one of {[str(root / c) for c in candidates]} (none found)")


def resolve_columns(
    columns: Sequence[str], wanted: Sequence[str], aliases: dict[str, Sequence[str]], path: Path, dataset: str
) -> list[str]:
    """The file's column name for each ``wanted`` name (itself, or one of its declared ``aliases``)."""
    present = set(columns)
    out = []
    for name in wanted:
        options = [name, *aliases.get(name, ())]
        hit = next((c for c in options if c in present), None)
        if hit is None:
            raise DatasetFormatError(f"{dataset}: {path} lacks label column {name!r} (accepted spellings {options})")
        out.append(hit)
    return out


def images_frame(**columns) -> pd.DataFrame:
    """A ``Records.images`` frame; text columns stay ``object`` so missing values are ``None``, not NaN."""
    frame = pd.DataFrame({k: pd.Series(list(v), dtype=object) for k, v in columns.items() if k != "age"})
    frame["age"] = pd.to_numeric(pd.Series(list(columns["age"]), dtype=object), errors="coerce").astype(float)
    return frame[["image_id", "path", "patient_id", "split", "view", "sex", "age"]]


def none_if_missing(values: Iterable[object]) -> list[object]:
    """NaN / blank -> None, other values unchanged (for view columns read from CSVs)."""
    out: list[object] = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            out.append(None)
        else:
            out.append(v.strip() if isinstance(v, str) else v)
    return out


def parse_age(value: object) -> float:
    """An age in years from ``57``, ``"057Y"``, ``"8M"`` (months), ``"3W"``, ``"10D"``; NaN if unparseable."""
    if value is None:
        return float("nan")
    text = str(value).strip().upper()
    units = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}
    scale = 1.0
    if text and text[-1] in units:
        scale, text = units[text[-1]], text[:-1]
    try:
        years = float(text) / scale
    except ValueError:
        return float("nan")
    return years if np.isfinite(years) and years >= 0 else float("nan")


#: DICOM header tags adapters read (header only, never pixels)
DICOM_META_TAGS = ("PatientSex", "PatientAge", "ViewPosition")


def read_dicom_metadata(paths: Sequence[Path]) -> tuple[list[dict[str, object]], int]:
    """Sex / age / view (and ``height``/``width`` from Rows/Columns) from DICOM headers
    (``stop_before_pixels``); returns (rows, unreadable count).

    A file that is absent or not DICOM gives ``{}`` (its fields stay unknown) and is counted, so the
    adapter can report it; whether images exist is checked by :func:`check_images_exist`.
    """
    import pydicom  # imported lazily: only adapters of DICOM datasets need it

    rows: list[dict[str, object]] = []
    unreadable = 0
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=[*DICOM_META_TAGS, "Rows", "Columns"])
        except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError):
            unreadable += 1
            rows.append({})
            continue
        view = str(ds.get("ViewPosition", "") or "").strip().upper() or None
        row = {
            "sex": normalise_sex([str(ds.get("PatientSex", "") or "")])[0],
            "age": parse_age(ds.get("PatientAge", None)),
            "view": view,
        }
        height, width = ds.get("Rows", None), ds.get("Columns", None)
        if height and width:  # image size, for validate_boxes
            row["height"], row["width"] = int(height), int(width)
        rows.append(row)
    return rows, unreadable


def check_images_exist(records, max_listed: int = 5) -> None:
    """Raise one DatasetFormatError with the count of missing image files and the first few paths."""
    import os

    root = str(records.root)
    missing = [p for p in records.images["path"] if not os.path.exists(os.path.join(root, p))]
    if missing:
        listed = ", ".join(missing[:max_listed])
        more = f" (and {len(missing) - max_listed} more)" if len(missing) > max_listed else ""
        raise DatasetFormatError(
            f"{records.dataset}: {len(missing)} of {len(records.images)} image files are missing under "
            f"{records.root}: {listed}{more}"
        )


# ------------------------------------------------------------------------- box validation

BOX_COORDS = ("x_min", "y_min", "x_max", "y_max")
_log = logging.getLogger("arkx.data")


def validate_boxes(
    boxes: pd.DataFrame,
    path: Path,
    dataset: str,
    image_sizes: dict[str, tuple[int, int]] | None = None,
    rows: Sequence[int] | None = None,
) -> int:
    """Check boxes (``image_id``, ``x_min``, ``y_min``, ``x_max``, ``y_max`` in file pixels) read from ``path``.

    Policy (boxes stay as the provider wrote them, like labels):

    * a missing or non-numeric coordinate, or a negative width or height (``x_max < x_min`` or
      ``y_max < y_min``), is a :class:`DatasetFormatError` naming the file, the 1-based row of the file
      (``rows``; default ``boxes.index + 2``, i.e. the index of the frame read from ``path``), the image
      and the coordinates;
    * a box reaching outside the image -- a negative coordinate, or beyond ``image_sizes[image_id] =
      (height, width)`` where the size is known cheaply (DICOM Rows/Columns) -- is kept unchanged and
      reported by one warning per file (count and first row); the count is returned for ``notes``.
    """
    if boxes is None or len(boxes) == 0:
        return 0
    rows = np.asarray(boxes.index if rows is None else rows) + (2 if rows is None else 0)
    coords = boxes[list(BOX_COORDS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)

    def fail(i: int, what: str) -> None:
        box = ", ".join(f"{c}={boxes[c].iloc[i]}" for c in BOX_COORDS)
        raise DatasetFormatError(
            f"{dataset}: {path} row {int(rows[i])} (image {boxes['image_id'].iloc[i]}): {what} ({box})")

    bad = ~np.isfinite(coords)
    if bad.any():
        i, j = (int(v[0]) for v in np.nonzero(bad))
        fail(i, f"coordinate {BOX_COORDS[j]!r} is missing or not a finite number")
    negative = (coords[:, 2] < coords[:, 0]) | (coords[:, 3] < coords[:, 1])
    if negative.any():
        fail(int(np.flatnonzero(negative)[0]), "negative width or height (x_max < x_min or y_max < y_min)")
    outside = (coords < 0).any(axis=1)
    if image_sizes:
        sizes = np.array([image_sizes.get(str(i), (np.inf, np.inf)) for i in boxes["image_id"]], dtype=np.float64)
        outside |= (coords[:, 2] > sizes[:, 1]) | (coords[:, 3] > sizes[:, 0])
    count = int(outside.sum())
    if count:
        i = int(np.flatnonzero(outside)[0])
        size = image_sizes.get(str(boxes["image_id"].iloc[i])) if image_sizes else None
        _log.warning("%s: %s: %d box(es) reach outside their image (kept as written), first at row %d "
                     "(image %s, box %s, image size %s)", dataset, path, count, int(rows[i]),
                     boxes["image_id"].iloc[i], coords[i].tolist(), size or "unknown")
    return count


def scan_tb_images(image_dir: Path, name: "re.Pattern[str]", dataset: str, example: str) -> tuple[list[str], list[float]]:
    """The NLM tuberculosis sets (Shenzhen, Montgomery): ``<PREFIX>_NNNN_{0,1}.png`` files, label from the
    suffix. Returns (file stems, TB labels); other files (Thumbs.db, ...) are ignored."""
    if not image_dir.is_dir():
        raise DatasetFormatError(f"{dataset}: expected folder {image_dir} with {example}-style images (not found)")
    stems, tb = [], []
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() != ".png":
            continue
        match = name.match(path.stem)
        if not match:
            raise DatasetFormatError(f"{dataset}: {path}: expected a name like {example} (_0 normal, _1 TB)")
        stems.append(path.stem)
        tb.append(float(match[2]))
    if not stems:
        raise DatasetFormatError(f"{dataset}: {image_dir} holds no {example.split('_')[0]}_*.png images")
    return stems, tb


def read_clinical_readings(folder: Path, stems: list[str], parse) -> tuple[list, list, int, int]:
    """Sex and age from one ``<stem>.txt`` reading per image via ``parse(text) -> (sex, age)``.

    Returns (sexes, ages, readings missing, readings whose sex or age could not be parsed)."""
    sexes, ages, missing, unparsed = [], [], 0, 0
    for stem in stems:
        reading = folder / f"{stem}.txt"
        if not reading.is_file():
            missing += 1
            sexes.append(None)
            ages.append(np.nan)
            continue
        sex, age = parse(reading.read_text(errors="replace"))
        unparsed += sex is None or np.isnan(age)
        sexes.append(sex)
        ages.append(age)
    return sexes, ages, missing, int(unparsed)


def filter_views(records, views: list[str] | None):
    """Keep only images whose view is in ``views`` (None keeps all); the dropped count goes to notes."""
    if views is None:
        return records
    wanted = {v.upper() for v in views}
    keep = records.images["view"].isin(wanted).to_numpy()
    notes = dict(records.notes)
    kept = records.subset(keep)
    kept.notes = {**notes, "views_kept": sorted(wanted), "dropped_by_view": int((~keep).sum())}
    return kept
