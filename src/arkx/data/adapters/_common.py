"""Small helpers shared by adapters: required files and columns, label parsing, seeded splits."""

from __future__ import annotations

import hashlib
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
                f"{dataset}: {path} row {i + 2} column {col!r}: value {raw.iloc[i]!r} is not one of "
                f"{sorted(allowed_set)} or blank"
            )
        out[:, j] = values
    return out


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
