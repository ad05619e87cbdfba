"""The prepared cache's on-disk format: file names, the format version, the errors, the fingerprint and
content hashes of the sources, and reading/writing ``index.json``.

This is the bottom layer of the cache (:mod:`arkx.data.cache` describes the folder layout and the
guarantees): it knows which files make up an image, how to stat and hash them, how a cache folder is
named (:func:`cache_key`), and how ``index.json`` is read and written atomically. The reader
(:mod:`arkx.data.cache_reader`), the cleaner (:mod:`arkx.data.cache_clean`) and the preparation
(:mod:`arkx.data.cache`) build on it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import ArkxRuntimeError
from .cache_targets import annotations_digest, boxes_source, has_masks
from .io import source_files
from .records import Records

#: 3: original sizes, masks and boxes (:mod:`arkx.data.cache_targets`); the image rows are as in 2
FORMAT_VERSION = 3
#: the version of how image rows are made, hashed into the fingerprint instead of FORMAT_VERSION: a dataset
#: without masks or boxes keeps its fingerprint (and its folder name, and its runs' identity) across format 3
_ROWS_VERSION = 2
_FORMAT_NAME = "arkx-prepared-cache"
IMAGES_FILE = "images.u8"
INDEX_FILE = "index.json"
DONE_FILE = "done.npy"
CRC_FILE = "crc.npy"
HASH_FILE = "sha256.npy"
FAILURES_FILE = "failures.jsonl"
PREVIOUS_INDEX = "previous.json"
PREVIOUS_IMAGES = "previous.u8"
LAST_USED = ".last_used"
_PROGRESS_FILES = (DONE_FILE, CRC_FILE, HASH_FILE, FAILURES_FILE)
_MAX_LOGGED_FAILURES = 50
_INDEX_BYTES_PER_IMAGE = 320  # a generous estimate of one index.json entry, for the free-space check
_NO_HASH = bytes(32)


class TooManyBadImages(ArkxRuntimeError):
    """More than ``fail_fraction`` of a dataset's images could not be read."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]], n: int):
        super().__init__(message)
        self.failures = failures
        self.n = n


class CacheNotReady(ArkxRuntimeError):
    """A cache folder is missing, incomplete, of another format version, or damaged."""


class CacheNotWritable(ArkxRuntimeError):
    """A cache must be written (prepared, finished, updated or repaired) in a folder that is read-only."""


class CacheDiskFull(ArkxRuntimeError):
    """Not enough free space for the cache; the message names the folder and the space needed."""


class CorruptCacheRow(ArkxRuntimeError):
    """A cache row no longer matches the CRC-32 recorded when it was written (``images.u8`` was damaged).

    Raised in DataLoader workers too: torch re-raises a worker's exception as ``type(msg)`` with the
    worker's whole traceback as the message, so the constructor keeps only our one line from it.
    """

    def __init__(self, message: str):
        lines = str(message).rstrip().splitlines()
        marker = f"{type(self).__name__}: "
        if len(lines) > 1 and str(message).startswith("Caught ") and marker in lines[-1]:
            message = lines[-1].split(marker, 1)[1]
        super().__init__(message)


# ----------------------------------------------------------------------------------------------------
# sources: which files make an image, their stat, their content hash


def _source_files(path: str | os.PathLike) -> list[Path]:
    """``io.source_files``, or just the file when its header cannot name the others (the decoder then
    reports the problem as the image's failure)."""
    try:
        return source_files(path)
    except Exception:  # noqa: BLE001  (a bad .mhd header is a decode failure, reported there)
        return [Path(path)]


def _stat_sources(paths: list[Path]) -> list[list | None]:
    """Per image: None when its file is missing, else ``[size, mtime_ns]`` (or None) per source file."""
    out: list[list | None] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
            continue
        files = [[int(st.st_size), int(st.st_mtime_ns)]]
        for extra in _source_files(p)[1:]:
            try:
                st = os.stat(extra)
            except OSError:
                files.append(None)
            else:
                files.append([int(st.st_size), int(st.st_mtime_ns)])
        out.append(files)
    return out


def content_hash(path: str | os.PathLike) -> str | None:
    """sha256 hex over the bytes of every source file of the image (a .mhd and its data file count
    both); None when the image file itself cannot be read."""
    h = hashlib.sha256()
    for k, f in enumerate(_source_files(path)):
        try:
            with open(f, "rb") as fh:
                h.update(f"{k}:{os.fstat(fh.fileno()).st_size}\0".encode())
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except OSError:
            if k == 0:
                return None
            h.update(f"{k}:missing\0".encode())
    return h.hexdigest()


def _fingerprint(records: Records, size: int, stats: list[list | None]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([_FORMAT_NAME, _ROWS_VERSION, int(size), str(records.dataset), len(records)]).encode())
    for image_id, path, st in zip(records.images["image_id"], records.images["path"], stats):
        h.update(f"{image_id}\0{Path(path).as_posix()}\0".encode())
        h.update(b"missing\n" if st is None else (json.dumps(st) + "\n").encode())
    annotations = annotations_digest(records)
    if annotations is not None:
        h.update(f"annotations\0{annotations}".encode())
    return h.hexdigest()


def fingerprint(records: Records, size: int) -> str:
    """sha256 hex over (the image-row version, size, dataset, image ids, paths, each source file's size +
    mtime_ns) and, for a dataset with masks or boxes, over their frames and each mask file's size + mtime_ns
    (:func:`arkx.data.cache_targets.annotations_digest`): changed annotations make a new version too."""
    return _fingerprint(records, size, _stat_sources(records.absolute_paths()))


def _safe_name(dataset) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(dataset)) or "dataset"


def cache_key(records: Records, size: int) -> str:
    """A folder name for this dataset's cache: ``<dataset>-<size>-<first 12 hex of the fingerprint>``."""
    return f"{_safe_name(records.dataset)}-{int(size)}-{fingerprint(records, size)[:12]}"


def human_bytes(nbytes: int | None) -> str:
    """A byte count for people: "12.3 MB"."""
    if nbytes is None:
        return "?"
    value = float(nbytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


# ----------------------------------------------------------------------------------------------------
# helpers


def _json_id(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (int, str)):
        return x
    return str(x)


def _header(records, size: int, fp: str, complete: bool) -> dict:
    masks = has_masks(records)
    return {"format": _FORMAT_NAME, "version": FORMAT_VERSION, "complete": complete, "size": size,
            "n": len(records), "dataset": str(records.dataset), "root": str(records.root), "fingerprint": fp,
            "dtype": "uint8", "layout": f"C-order [n, {size}, {size}] in {IMAGES_FILE}",
            "mask_label_names": list(records.mask_label_names) if masks else [],
            "box_label_names": _box_label_names(records),
            "boxes_source": boxes_source(records),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _box_label_names(records) -> list[str]:
    """What the box labels index: the box classes, or the mask structures for boxes derived from masks."""
    source = boxes_source(records)
    names = records.box_label_names if source == "records" else records.mask_label_names if source else None
    return list(names or ())


def _read_index(folder: Path) -> dict | None:
    return _read_index_file(folder / INDEX_FILE)


def _read_index_file(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_index(folder: Path, data: dict) -> None:
    tmp = folder / f".{INDEX_FILE}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / INDEX_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
