"""Removing prepared caches: :func:`clean_cache` (``arkx cache clean``) and the last-used bookkeeping.

A cache root holds one folder per (dataset, size, fingerprint); :func:`clean_cache` removes all of
them, or with ``keep_latest`` only superseded, incomplete and old-format ones, keeping the newest
complete folder of each (dataset, root, size) by when :func:`arkx.data.cache.prepare` last used it
(``.last_used``, touched by :func:`_touch_last_used`). Folders whose lock is held are never removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .cache_index import (
    _FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_FILE,
    LAST_USED,
    PREVIOUS_INDEX,
    CacheNotReady,
    _read_index,
    _read_index_file,
)
from .cache_lock import LockBusy, folder_lock, held_by_this_process


@dataclass
class CleanedFolder:
    """One folder that :func:`clean_cache` looked at."""

    folder: Path
    nbytes: int  # disk space it takes
    reason: str  # why it is removed, or kept
    remove: bool  # selected for removal
    removed: bool = False  # actually removed (False in a dry run)


def clean_cache(root: str | os.PathLike, *, keep_latest: bool = False, dry_run: bool = False) -> list[CleanedFolder]:
    """Remove cache folders under ``root`` (only folders with an arkx ``index.json``; anything else is left).

    Without ``keep_latest`` every cache folder goes (they are prepared again when needed). With it, the
    newest complete folder of each (dataset, root, size) stays -- newest by when :func:`prepare` last
    used it -- and superseded versions, incomplete folders (interrupted preparations) and folders of
    another format version go. A folder being prepared (its lock held) is always kept. A run still
    training from a removed folder may fail: clean between runs.
    """
    root = Path(root)
    if not root.is_dir():
        raise CacheNotReady(f"{root} is not a folder")
    found = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        index = _read_index(d)
        if index is None:
            index = _read_index_file(d / PREVIOUS_INDEX)  # killed between the renames of an update
        if index is None or index.get("format") != _FORMAT_NAME:
            continue
        found.append((d, index))
    newest: dict[tuple, Path] = {}
    for d, index in found:
        if index.get("version") == FORMAT_VERSION and index.get("complete"):
            key = (index.get("dataset"), index.get("root"), index.get("size"))
            if key not in newest or _last_used(d) > _last_used(newest[key]):
                newest[key] = d
    out = []
    for d, index in found:
        if index.get("version") != FORMAT_VERSION:
            reason, remove = f"format version {index.get('version')} (this arkx reads {FORMAT_VERSION})", True
        elif not index.get("complete"):
            reason, remove = "incomplete (an interrupted preparation)", True
        else:
            key = (index.get("dataset"), index.get("root"), index.get("size"))
            latest = newest.get(key) == d
            if keep_latest and latest:
                reason, remove = f"newest of {key[0]} at {key[2]}px", False
            elif latest:
                reason, remove = f"complete ({key[0]} at {key[2]}px)", True
            else:
                reason, remove = f"superseded by {newest[key].name}", True
        out.append(_clean_one(d, reason, remove, dry_run))
    return out


def _clean_one(folder: Path, reason: str, remove: bool, dry_run: bool) -> CleanedFolder:
    entry = CleanedFolder(folder, _disk_bytes(folder), reason, remove)
    if not remove:
        return entry
    if held_by_this_process(folder):
        entry.remove, entry.reason = False, "in use by this process"
        return entry
    try:
        with folder_lock(folder, blocking=False):
            if not dry_run:
                # the index first: a reader racing with the removal sees "not a cache", never half a cache
                with contextlib.suppress(FileNotFoundError):
                    (folder / INDEX_FILE).unlink()
                shutil.rmtree(folder)
                entry.removed = True
    except LockBusy as e:
        entry.remove, entry.reason = False, f"in use: {e}"
    except OSError as e:
        entry.remove, entry.reason = False, f"cannot remove it: {e.strerror or e}"
    return entry


def _disk_bytes(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def _last_used(folder: Path) -> int:
    times = []
    for name in (LAST_USED, INDEX_FILE):
        with contextlib.suppress(OSError):
            times.append((folder / name).stat().st_mtime_ns)
    return max(times, default=0)


def _touch_last_used(folder: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache cannot record it; nothing else depends on it
        (folder / LAST_USED).touch()
