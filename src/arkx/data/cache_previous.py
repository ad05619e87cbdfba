"""Earlier versions of a cache: why a folder is stale, and which earlier version unchanged rows are copied from.

Before a folder is rebuilt in place, a complete earlier version is moved aside (``previous.json`` +
``previous.u8``); otherwise the newest complete sibling folder of the same dataset and size is used.
A row is copied from it when the file's (image id, path) match and its content hash still matches
(checked by the worker). Versions whose image rows have the same layout (:data:`ROW_COMPATIBLE_VERSIONS`:
format 2 and 3 rows are byte-identical) can be copied from, so a format upgrade re-reads every file
but decodes none. Used by :mod:`arkx.data.cache`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .cache_clean import _last_used
from .cache_index import (
    _FORMAT_NAME,
    FORMAT_VERSION,
    IMAGES_FILE,
    INDEX_FILE,
    PREVIOUS_IMAGES,
    PREVIOUS_INDEX,
    _safe_name,
)

#: format versions whose images.u8 rows are made exactly as this version makes them
ROW_COMPATIBLE_VERSIONS = (2, FORMAT_VERSION)


@dataclass
class _Previous:
    folder: Path
    images_file: Path
    n: int
    entries: list


def _keep_as_previous(cache_dir: Path, old: dict | None, size: int) -> None:
    """Before rebuilding in place, move a complete version of this folder aside as ``previous.*``."""
    if (old is None or not old.get("complete") or old.get("version") not in ROW_COMPATIBLE_VERSIONS
            or old.get("size") != size):
        return
    images = cache_dir / IMAGES_FILE
    try:
        n = int(old["n"])
        if images.stat().st_size != n * size * size:
            return
    except (OSError, KeyError, TypeError, ValueError):
        return
    # the index first: a kill between the two renames leaves no index that points at missing rows
    os.replace(cache_dir / INDEX_FILE, cache_dir / PREVIOUS_INDEX)
    os.replace(images, cache_dir / PREVIOUS_IMAGES)


def _find_previous(cache_dir: Path, dataset: str, size: int) -> _Previous | None:
    """The version to copy from: this folder's ``previous.*``, else the newest complete sibling folder
    of the same dataset and size (named ``<dataset>-<size>-*`` by :func:`cache_key`)."""
    own = _load_previous(cache_dir, cache_dir / PREVIOUS_INDEX, cache_dir / PREVIOUS_IMAGES, dataset, size)
    if own is not None:
        return own
    prefix = f"{_safe_name(dataset)}-{size}-"
    candidates = []
    with contextlib.suppress(OSError):
        for d in cache_dir.parent.iterdir():
            if d.name.startswith(prefix) and d.is_dir() and d.resolve() != cache_dir.resolve():
                candidates.append((_last_used(d), d))
    for _, d in sorted(candidates, reverse=True):
        found = _load_previous(d, d / INDEX_FILE, d / IMAGES_FILE, dataset, size)
        if found is not None:
            return found
    return None


def _load_previous(folder: Path, index_file: Path, images_file: Path, dataset: str, size: int) -> _Previous | None:
    try:
        with open(index_file, encoding="utf-8") as f:
            index = json.load(f)
        if (index.get("format") != _FORMAT_NAME or index.get("version") not in ROW_COMPATIBLE_VERSIONS
                or not index.get("complete") or index.get("size") != size or index.get("dataset") != str(dataset)):
            return None
        n = int(index["n"])
        entries = index["images"]
        if len(entries) != n or images_file.stat().st_size != n * size * size:
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return _Previous(folder, images_file, n, entries)


def _reuse_plan(previous: _Previous, ids: list, rel_paths: list[str], todo: list[int]) -> dict[int, tuple]:
    """Row -> (previous row, sha256, crc32, ok, reason, (height, width) or None) for rows whose (image id,
    path) the previous version holds with a content hash; the worker copies only if the file's hash still
    matches."""
    by_key = {}
    for j, e in enumerate(previous.entries):
        try:
            if e.get("sha256"):
                known = e.get("height") is not None and e.get("width") is not None
                by_key[(e["image_id"], e["path"])] = (j, e["sha256"], int(e["crc32"]), bool(e["ok"]),
                                                      e.get("reason"),
                                                      (int(e["height"]), int(e["width"])) if known else None)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    plan = {}
    for i in todo:
        hit = by_key.get((ids[i], rel_paths[i]))
        if hit is not None:
            plan[i] = hit
    return plan




def _why_stale(old: dict, records, size: int, ids, rel_paths, stats) -> str:
    if old.get("format") != _FORMAT_NAME or old.get("version") != FORMAT_VERSION:
        return f"it has format version {old.get('version')!r}, this arkx writes {FORMAT_VERSION}"
    if old.get("size") != size:
        return f"it was prepared at size {old.get('size')}, {size} is requested"
    if old.get("dataset") != str(records.dataset):
        return f"it holds dataset {old.get('dataset')!r}, not {records.dataset!r}"
    if old.get("n") != len(records):
        return f"the dataset now has {len(records)} images, the cache {old.get('n')}"
    entries = old.get("images")
    if not isinstance(entries, list) or len(entries) != len(ids):
        return "the image list, or the files' sizes or modification times, changed since it was started"
    if [e.get("image_id") for e in entries] != ids or [e.get("path") for e in entries] != rel_paths:
        return "the image ids or paths changed"
    changed = [i for i, (e, st) in enumerate(zip(entries, stats)) if e.get("files") != st]
    if changed:
        return (f"{len(changed)} file(s) changed on disk (size or modification time) since it was prepared, "
                f"e.g. {records.root / rel_paths[changed[0]]}")
    return "its fingerprint differs"

