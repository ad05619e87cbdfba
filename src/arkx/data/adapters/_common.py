"""Small helpers shared by adapters: required files and columns, label parsing (the seeded splits live in
:mod:`arkx.data.splits`, the folder scans and label-file paths in :mod:`._paths`; both re-exported here).

Also the tolerant reading every adapter shares (providers' files as they are shipped, across releases):

* :func:`read_csv`: UTF-8 byte-order mark, CRLF line ends, spaces around header names, empty trailing
  columns (``Unnamed: N`` from trailing commas) are all accepted; a row with *more* non-empty fields
  than the header is an error (a shifted row must not train).
* :func:`optional_column`: metadata training does not need (sex, age, view, ...) may be missing,
  renamed or empty: one warning per file and column, values "unknown", never a refusal.
* :func:`read_text_lines`: list files with BOM / CRLF.
* :func:`child`: a fixed folder or file name matched case-insensitively (``Data/`` vs ``data/``).
* :func:`is_os_junk` / :func:`list_dir` / :func:`walk_files`: macOS AppleDouble ``._*`` files,
  ``__MACOSX/``, ``.DS_Store``, ``Thumbs.db`` and ``desktop.ini`` are invisible to every folder scan.
* :func:`path_in_base` / :func:`paths_in_base`: a path read from a label file must stay inside the
  dataset folder (or the images folder the user named); absolute paths and ``..`` that climb out are
  refused with the file, row and path.
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..records import DatasetFormatError
from ..splits import carve_validation, patient_split  # noqa: F401  (re-exported: the adapters import them here)
from ._paths import (  # noqa: F401  (re-exported: the adapters import them here)
    OS_JUNK_DIRS,
    OS_JUNK_FILES,
    child,
    is_os_junk,
    list_dir,
    path_in_base,
    paths_in_base,
    walk_files,
)

_log = logging.getLogger("arkx.data")


def require_file(root: Path, relative: str, dataset: str) -> Path:
    """``root / relative`` (names matched case-insensitively), or a DatasetFormatError naming the file."""
    path = child(root, relative)
    if not path.is_file():
        raise DatasetFormatError(f"{dataset}: expected file {path} (not found)")
    return path


def read_csv(path: Path, dataset: str, required: Sequence[str] = (), **kwargs) -> pd.DataFrame:
    """Read a provider CSV tolerantly and check that ``required`` columns exist (error names file and columns).

    Tolerated, because providers ship them: a UTF-8 byte-order mark, CRLF line ends, spaces around
    header names (SIIM's ``" EncodedPixels"``), empty ``Unnamed: N`` columns from trailing commas in the
    header (NIH's ``Data_Entry_2017.csv``, ``BBox_List_2017.csv``) and a trailing comma on data rows
    only. ``dtype`` keys name the cleaned header. A row with more non-empty fields than the header is a
    DatasetFormatError naming the row: its values cannot be matched to columns.
    """
    kwargs.setdefault("encoding", "utf-8-sig")
    kwargs.setdefault("index_col", False)  # never move a column into the index when rows end with a comma
    try:
        if isinstance(kwargs.get("dtype"), dict):
            raw = pd.read_csv(path, nrows=0, encoding=kwargs["encoding"]).columns
            wanted = kwargs["dtype"]
            kwargs["dtype"] = {r: wanted[_clean_name(r)] for r in raw if _clean_name(r) in wanted}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(path, **kwargs)
        except (pd.errors.ParserWarning, pd.errors.ParserError) as err:
            # rows longer than the header: harmless when the extra fields are blank (trailing commas on
            # some or all rows), so read the header's columns only; otherwise name the first such row
            long_row = _long_row(path, kwargs["encoding"])
            if long_row is not None:
                raise DatasetFormatError(f"{dataset}: {path}: {long_row}") from None
            if isinstance(err, pd.errors.ParserError) and "usecols" in kwargs:
                raise
            width = len(pd.read_csv(path, nrows=0, encoding=kwargs["encoding"]).columns)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", pd.errors.ParserWarning)
                frame = pd.read_csv(path, **{"usecols": list(range(width)), **kwargs})
    except DatasetFormatError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise DatasetFormatError(f"{dataset}: cannot parse {path}: {err}") from None
    frame = clean_header(frame)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetFormatError(
            f"{dataset}: {path} lacks column(s) {missing}; found {list(frame.columns)}"
        )
    return frame


def _clean_name(name: object) -> str:
    return str(name).replace("\ufeff", "").strip()


def clean_header(frame: pd.DataFrame) -> pd.DataFrame:
    """Strip header names and drop the empty columns that trailing commas make (``Unnamed: N``, all blank)."""
    frame.columns = [_clean_name(c) for c in frame.columns]
    empty_unnamed = [c for c in frame.columns if (c.startswith("Unnamed: ") or c == "") and _blank(frame[c]).all()]
    if empty_unnamed:
        frame = frame.drop(columns=empty_unnamed)
    return frame


def _blank(column: pd.Series) -> pd.Series:
    """NaN or whitespace-only cells (``keep_default_na=False`` reads blanks as ``""``)."""
    return column.isna() | (column.astype(str).str.strip() == "")


def _open_text(path: Path, encoding: str = "utf-8-sig"):
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    return opener(path, "rt", encoding=encoding, errors="replace", newline="")


def _long_row(path: Path, encoding: str) -> str | None:
    """The first row with more non-empty fields than the header, described; None if every extra is blank.

    Read only when pandas reported rows longer than the header."""
    with _open_text(path, encoding) as handle:
        rows = csv.reader(handle)
        header = next(rows, [])
        for number, row in enumerate(rows, start=2):
            if len(row) > len(header) and any(v.strip() for v in row[len(header):]):
                return (f"row {number} has {len(row)} fields but the header has {len(header)} "
                        f"(extra values {row[len(header):][:3]}); its values cannot be matched to columns")
    return None


#: (dataset, file, column) already warned about in this process: one warning each, not one per read
_WARNED: set[tuple[str, str, str]] = set()


def warn_once(dataset: str, path: Path | str, column: str, message: str) -> None:
    """Log ``message`` on ``arkx.data`` once per (dataset, file, column) in this process."""
    key = (dataset, str(path), column)
    if key in _WARNED:
        return
    _WARNED.add(key)
    _log.warning("%s: %s: %s", dataset, path, message)


def optional_column(frame: pd.DataFrame, spellings: Sequence[str], path: Path, dataset: str,
                    what: str) -> pd.Series | None:
    """A metadata column training does not need (sex, age, view, ...): the first of ``spellings`` present.

    Missing (under every spelling) or entirely empty: one warning naming the file and the column, and
    None, so the adapter records "unknown" instead of refusing the dataset.
    """
    hit = next((c for c in spellings if c in frame.columns), None)
    if hit is None:
        warn_once(dataset, path, spellings[0], f"no {what} column (looked for {list(spellings)}); "
                  f"{what} recorded as unknown")
        return None
    column = frame[hit]
    if len(column) and bool(_blank(column).all()):
        warn_once(dataset, path, hit, f"column {hit!r} ({what}) is empty; {what} recorded as unknown")
        return None
    return column


def read_text_lines(path: Path) -> list[str]:
    """Lines of a provider's text file (split lists, readings), without a UTF-8 BOM or CR line ends."""
    return path.read_text(encoding="utf-8-sig", errors="replace").splitlines()


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
        if child(root, rel).is_file():
            return child(root, rel)
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


def scan_tb_images(image_dir: Path, name: "re.Pattern[str]", dataset: str, example: str
                   ) -> tuple[list[str], list[float], list[str]]:
    """The NLM tuberculosis sets (Shenzhen, Montgomery): ``<PREFIX>_NNNN_{0,1}.png`` files, label from the
    suffix. Returns (file stems, TB labels, file names as on disk: ``.png`` or ``.PNG``); other files
    and OS artefacts (``Thumbs.db``, macOS ``._*``) are ignored."""
    if not image_dir.is_dir():
        raise DatasetFormatError(f"{dataset}: expected folder {image_dir} with {example}-style images (not found)")
    stems, tb, names = [], [], []
    for path in list_dir(image_dir):
        if path.suffix.lower() != ".png":
            continue
        match = name.match(path.stem)
        if not match:
            raise DatasetFormatError(f"{dataset}: {path}: expected a name like {example} (_0 normal, _1 TB)")
        stems.append(path.stem)
        tb.append(float(match[2]))
        names.append(path.name)
    if not stems:
        raise DatasetFormatError(f"{dataset}: {image_dir} holds no {example.split('_')[0]}_*.png images")
    return stems, tb, names


def read_clinical_readings(folder: Path, stems: list[str], parse) -> tuple[list, list, int, int]:
    """Sex and age from one ``<stem>.txt`` reading per image via ``parse(text) -> (sex, age)``.

    File names are matched case-insensitively (``.txt`` / ``.TXT``); a BOM is dropped. Returns (sexes,
    ages, readings missing, readings whose sex or age could not be parsed)."""
    by_name = {p.name.lower(): p for p in list_dir(folder)} if folder.is_dir() else {}
    sexes, ages, missing, unparsed = [], [], 0, 0
    for stem in stems:
        reading = by_name.get(f"{stem}.txt".lower())
        if reading is None or not reading.is_file():
            missing += 1
            sexes.append(None)
            ages.append(np.nan)
            continue
        sex, age = parse(reading.read_text(encoding="utf-8-sig", errors="replace"))
        unparsed += sex is None or np.isnan(age)
        sexes.append(sex)
        ages.append(age)
    return sexes, ages, missing, int(unparsed)


def filter_views(records, views: list[str] | None):
    """Keep only images whose view is in ``views`` (None keeps all); the dropped count goes to notes."""
    if views is None:
        return records
    if len(records) and records.images["view"].isna().all():
        # the view column is missing or empty: filtering would silently drop every image
        raise DatasetFormatError(f"{records.dataset}: the option views={views} cannot be applied: no image has "
                                 f"a known view in {records.root}; set views to null to keep every image")
    wanted = {v.upper() for v in views}
    keep = records.images["view"].isin(wanted).to_numpy()
    notes = dict(records.notes)
    kept = records.subset(keep)
    kept.notes = {**notes, "views_kept": sorted(wanted), "dropped_by_view": int((~keep).sum())}
    return kept
