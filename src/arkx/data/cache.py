"""The prepared cache: decode every original once, then train from a memory-mapped uint8 array.

Full-size chest X-rays (2-3k px, often 12-16 bit DICOM) take tens of milliseconds each to decode;
training reads them dozens of times. :func:`prepare` converts one dataset's :class:`Records` into a
folder that training memory-maps (:class:`PreparedImages`); reading an image from it is one memory
copy and a CRC-32 check.

Folder layout (``FORMAT_VERSION`` 2)::

    images.u8      raw C-order uint8 array [n, size, size] (np.memmap; row i = records.images row i;
                   rows of unreadable images are all zeros); allocated in full before any row is written
    index.json     {"format": "arkx-prepared-cache", "version", "complete", "size", "n", "dataset",
                    "root", "fingerprint", "n_failed", "created",
                    "images": [{"image_id", "path" (relative to root), "ok", "crc32" (of the row),
                                "sha256" (of the source bytes: every file of source_files, e.g. a .mhd
                                header and its .raw; null when missing), "files" ([size, mtime_ns] per
                                source file, null for a missing one), "reason" (only when not ok)}, ...]}
    while running: done.npy (bool [n] progress bitmap), crc.npy (uint32 [n]), sha256.npy (32-byte
                   digests, uint8 [n, 32]), failures.jsonl (one {"i", "reason"} per unreadable image); removed once
                   index.json is complete. During an update in place: previous.json + previous.u8, the
                   version being replaced (rows of unchanged files are copied from it).
    .lock          a POSIX record lock (see :mod:`arkx.data.cache_lock`) so several processes (e.g. DDP
                   ranks) preparing the same folder wait for one another; it holds a note naming its holder.
    .last_used     touched whenever the cache is opened by :func:`prepare` (``clean_cache`` keeps the newest).

Guarantees:

* **Resumable.** Workers write their rows straight into ``images.u8`` and return only statuses, CRCs and
  content hashes; the main process records the chunk (``crc.npy``, ``sha256.npy``, ``failures.jsonl``)
  and last flips its bits in ``done.npy``. A process killed at any point leaves ``done`` true only for
  rows that are on disk, so a later :func:`prepare` with the same fingerprint decodes only the rest.
  Workers die with the process that started them (they never outlive a ``kill -9``), and the lock
  dies with its holder.
* **Never half-trusted.** ``index.json`` is written atomically (temp file + ``os.replace``) and says
  ``complete: true`` only after every row is done; :func:`open_cache` refuses anything else. Every row
  read for training is checked against its CRC-32 (:meth:`PreparedImages.read`): a damaged row stops the
  run with :class:`CorruptCacheRow` naming it, never trains; ``prepare(repair=True)`` re-decodes such rows.
* **Invalidated by change, updated incrementally.** The fingerprint is a sha256 over (format version,
  size, dataset, image ids, paths, and each source file's size and mtime_ns): a cheap test done on every
  open. A different fingerprint means a new version of the cache; rows of files whose (id, path and
  content hash) are unchanged are *copied* from the previous version (the same folder, or a sibling
  folder of the same dataset and size) instead of decoded. Content hashes also catch what size and mtime
  cannot: :meth:`PreparedImages.verify_sources` re-reads the sources and compares.
* **Bad files are skipped, not fatal** -- unless there are too many. Each unreadable or missing file
  is logged (``logging.getLogger("arkx.data")``) with its path and reason, stored as ``ok: false``
  with the reason, and counted; if more than ``fail_fraction`` of the images fail,
  :class:`TooManyBadImages` is raised (early, as soon as the outcome is certain; the work done so
  far is kept).
* **Disk space is checked, not discovered.** Free space is compared with the cache's size before
  anything is written, and the files are allocated in full (``posix_fallocate``), so a full disk is one
  :class:`CacheDiskFull` line, never a "Bus error" from a memory map that cannot be backed; rows already
  done are kept.
* **Read-only is enough to read.** A complete, current cache is opened without taking the lock or
  writing anything, so a shared read-only cache works.

The format, fingerprint and index live in :mod:`arkx.data.cache_index`, the read-only view in
:mod:`arkx.data.cache_reader`, removal in :mod:`arkx.data.cache_clean`; this module prepares, resumes,
updates and repairs (and re-exports their public names).

Workers: ``workers > 0`` runs chunks in a ``ProcessPoolExecutor``. The worker is a top-level function
of this module that only imports numpy/Pillow/pydicom, so any start method works: the default is
*fork* on Linux (what torch's DataLoader does; it needs no ``if __name__ == "__main__":`` guard in
user scripts and the workers never touch torch or CUDA) and *spawn* elsewhere; pass ``start_method``
to choose. Each chunk is a list of (row, path, reuse); the worker writes its rows into ``images.u8``
itself and returns only (row, ok, crc32, reason, sha256, copied), so no pixels cross process boundaries.
At most two chunks per worker are queued, so an early stop cancels little work. Results do not depend
on the number of workers: each row is a pure function of its file.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import math
import os
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArkxRuntimeError
from ..progress import Progress
from .cache_clean import CleanedFolder, _last_used, _touch_last_used, clean_cache
from .cache_index import (
    _FORMAT_NAME,
    _INDEX_BYTES_PER_IMAGE,
    _MAX_LOGGED_FAILURES,
    _NO_HASH,
    _PROGRESS_FILES,
    CRC_FILE,
    DONE_FILE,
    FAILURES_FILE,
    FORMAT_VERSION,
    HASH_FILE,
    IMAGES_FILE,
    INDEX_FILE,
    PREVIOUS_IMAGES,
    PREVIOUS_INDEX,
    CacheDiskFull,
    CacheNotReady,
    CacheNotWritable,
    CorruptCacheRow,
    TooManyBadImages,
    _fingerprint,
    _header,
    _json_id,
    _read_index,
    _safe_name,
    _stat_sources,
    _write_index,
    cache_key,
    content_hash,
    fingerprint,
    human_bytes,
)
from .cache_lock import LOCK_FILE, folder_lock, worker_initializer
from .cache_reader import PreparedImages, open_cache
from .io import ImageReadError, load_resized
from .records import Records

__all__ = ["FORMAT_VERSION", "PreparedImages", "TooManyBadImages", "CacheNotReady", "CacheNotWritable",
           "CacheDiskFull", "CorruptCacheRow", "prepare", "open_cache", "cache_key", "fingerprint",
           "content_hash", "clean_cache", "CleanedFolder", "human_bytes"]

log = logging.getLogger("arkx.data")


# ----------------------------------------------------------------------------------------------------
# worker


_ChunkResult = tuple[int, bool, int, "str | None", "str | None", bool]  # row, ok, crc32, reason, sha256, copied


def _prepare_chunk(images_file: str, n: int, size: int, items: list[tuple[int, str, tuple | None]],
                   previous: tuple[str, int] | None = None) -> list[_ChunkResult]:
    """Make the rows ``items`` (row, absolute path, reuse) of ``images_file``.

    ``reuse`` is None or ``(previous row, its sha256, its crc32, its ok, its reason)`` of the file in
    ``previous`` = (images file, rows) of an earlier version: when the file's content hash still matches
    and the old row still matches its CRC, the row is copied; otherwise it is decoded.
    Top-level (spawn-safe). Returns ``(row, ok, crc32, reason, sha256, copied)`` per item once all rows
    are flushed.
    """
    mm = np.memmap(images_file, dtype=np.uint8, mode="r+", shape=(n, size, size))
    prev = None
    if previous is not None and any(item[2] is not None for item in items):
        try:
            prev = np.memmap(previous[0], dtype=np.uint8, mode="r", shape=(previous[1], size, size))
        except (OSError, ValueError):  # the previous version was removed meanwhile: decode everything
            prev = None
    out = []
    try:
        for i, path, reuse in items:
            sha = content_hash(path)  # read first: the decoder then finds the file in the page cache
            if reuse is not None and prev is not None and sha is not None and sha == reuse[1]:
                j, _, old_crc, old_ok, old_reason = reuse
                if zlib.crc32(prev[j]) == old_crc:
                    mm[i] = prev[j]
                    out.append((i, old_ok, old_crc, old_reason, sha, True))
                    continue
            reason = None
            try:
                img = load_resized(path, size)
            except ImageReadError as e:
                reason = e.reason
            except Exception as e:  # noqa: BLE001  (a decoder bug on one file must not stop the run)
                reason = f"unexpected error while decoding: {type(e).__name__}: {e}"
            if reason is None:
                mm[i] = img
            else:
                mm[i] = 0
            out.append((i, reason is None, zlib.crc32(mm[i]), reason, sha, False))
        mm.flush()
    finally:
        del mm, prev
    return out


# ----------------------------------------------------------------------------------------------------
# prepare


def prepare(records: Records, cache_dir: str | os.PathLike, size: int, workers: int = 0, progress: bool = True,
            fail_fraction: float = 0.05, *, chunk_size: int | None = None,
            start_method: str | None = None, repair: bool = False) -> PreparedImages:
    """Decode every image of ``records`` once into ``cache_dir`` (see the module doc) and open it.

    Returns at once when ``cache_dir`` already holds a complete cache with the same fingerprint (without
    locking or writing: a read-only cache works); resumes an interrupted one; updates one whose records
    or files changed, copying the rows of unchanged files.

    Args:
        records: the dataset (row order = cache row order).
        cache_dir: the folder (created if needed); usually ``cache_root / cache_key(records, size)``.
        size: side of the square uint8 images.
        workers: decoding processes; 0 decodes in this process.
        progress: show progress (arkx.progress: a bar on a terminal, else a log line per ~10%).
        fail_fraction: the largest fraction of unreadable/missing images accepted.
        chunk_size: images per task (default: about 8 tasks per worker, at most 256 images each);
            ``done.npy`` is flushed after every chunk, so this is also the most work an interruption loses.
        start_method: multiprocessing start method for ``workers > 0`` (default: fork on Linux, else spawn).
        repair: also re-read every row and every source file, and re-decode the rows that fail their
            checksum or whose source content changed (listed in the result's ``repaired``).

    Raises:
        TooManyBadImages: more than ``fail_fraction`` of the images could not be read.
        CacheNotWritable: the cache must be written but its folder is read-only.
        CacheDiskFull: not enough free space (the rows done so far are kept).
    """
    size = int(size)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not 0.0 <= fail_fraction <= 1.0:
        raise ValueError(f"fail_fraction must be in [0, 1], got {fail_fraction}")
    cache_dir = Path(cache_dir)
    stats = _stat_sources(records.absolute_paths())
    fp = _fingerprint(records, size, stats)
    if not repair:
        current = _open_if_current(cache_dir, fp)
        if current is not None:
            log.debug("cache %s is complete and up to date", cache_dir)
            _touch_last_used(cache_dir)
            _check_failures(current.failures, len(records), fail_fraction, records.dataset)
            return current
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _writable_lock(cache_dir):
            prepared = _prepare_locked(records, cache_dir, size, int(workers), progress, float(fail_fraction),
                                       chunk_size, start_method, stats, fp)
            if repair:
                prepared = _repair(records, prepared, int(workers), progress, float(fail_fraction), chunk_size,
                                   start_method)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(cache_dir, len(records), size, e) from None
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise _not_writable(cache_dir, e) from None
        raise
    _touch_last_used(cache_dir)
    _check_failures(prepared.failures, len(records), fail_fraction, records.dataset)
    return prepared


def _open_if_current(cache_dir: Path, fp: str) -> PreparedImages | None:
    """The cache in ``cache_dir`` when it is complete and has fingerprint ``fp``; None otherwise."""
    index = _read_index(cache_dir)
    if index is None or index.get("fingerprint") != fp or index.get("version") != FORMAT_VERSION \
            or not index.get("complete"):
        return None
    try:
        return PreparedImages(cache_dir)
    except CacheNotReady as e:
        log.warning("cache %s cannot be used as it is: %s", cache_dir, e)
        return None


@contextlib.contextmanager
def _writable_lock(cache_dir: Path):
    try:
        with folder_lock(cache_dir) as held:
            yield held
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and e.filename and Path(e.filename).name == LOCK_FILE:
            raise _not_writable(cache_dir, e) from None
        raise


def _prepare_locked(records, cache_dir: Path, size: int, workers: int, progress: bool, fail_fraction: float,
                    chunk_size: int | None, start_method: str | None, stats: list, fp: str) -> PreparedImages:
    n = len(records)
    abs_paths = records.absolute_paths()
    ids = [_json_id(x) for x in records.images["image_id"]]
    rel_paths = [Path(p).as_posix() for p in records.images["path"]]

    old = _read_index(cache_dir)
    resume = False
    if old is not None and old.get("fingerprint") == fp and old.get("version") == FORMAT_VERSION:
        if old.get("complete"):  # another process finished it while we waited for the lock
            try:
                return PreparedImages(cache_dir)
            except CacheNotReady as e:
                log.warning("rebuilding cache %s: %s", cache_dir, e)
        else:
            resume = _can_resume(cache_dir, n, size)
            if not resume:
                log.info("restarting cache %s: its progress files are missing or damaged", cache_dir)
    elif old is not None:
        log.warning("rebuilding cache %s: %s", cache_dir, _why_stale(old, records, size, ids, rel_paths, stats))

    if not resume:
        _keep_as_previous(cache_dir, old, size)
        _start_fresh(cache_dir, n, size, records.dataset)
        _write_index(cache_dir, _header(records, size, fp, complete=False))
    else:
        log.info("resuming cache %s", cache_dir)

    done = np.load(cache_dir / DONE_FILE, mmap_mode="r+") if n else np.zeros(0, bool)
    crc = np.load(cache_dir / CRC_FILE, mmap_mode="r+") if n else np.zeros(0, np.uint32)
    hashes = np.load(cache_dir / HASH_FILE, mmap_mode="r+") if n else np.zeros((0, 32), np.uint8)
    failed: dict[int, str] = {}
    if resume:
        failed = {i: r for i, r in _read_failures(cache_dir / FAILURES_FILE).items() if done[i]}
    logged = [0]
    copied = [0]

    def fail_examples() -> list[tuple[str, str, str]]:
        return [(ids[i], str(abs_paths[i]), failed[i]) for i in sorted(failed)]

    def note_failure(i: int, reason: str) -> None:
        failed[i] = reason
        if logged[0] < _MAX_LOGGED_FAILURES:
            log.warning("%s: skipping unreadable image %s: %s", records.dataset, abs_paths[i], reason)
        elif logged[0] == _MAX_LOGGED_FAILURES:
            log.warning("%s: more unreadable images; further ones are not logged individually", records.dataset)
        logged[0] += 1

    limit = fail_fraction * n

    with open(cache_dir / FAILURES_FILE, "a", encoding="utf-8") as failures_log:

        def record(results) -> None:
            rows = [r[0] for r in results]
            for i, ok, c, reason, sha, was_copied in results:
                crc[i] = c
                hashes[i] = np.frombuffer(bytes.fromhex(sha) if sha else _NO_HASH, dtype=np.uint8)
                copied[0] += bool(was_copied)
                if not ok:
                    note_failure(i, reason or "unreadable")
                    failures_log.write(json.dumps({"i": i, "reason": failed[i]}) + "\n")
                else:
                    failed.pop(i, None)
            crc.flush()
            hashes.flush()
            failures_log.flush()
            done[rows] = True  # last: a row counts as done only once its bytes, crc, hash and reason are saved
            done.flush()

        # files missing on disk fail without a decode attempt (and fail fast when there are too many)
        missing = [i for i in range(n) if stats[i] is None and not done[i]]
        if missing:
            zero_crc = zlib.crc32(bytes(size * size))
            with _open_rows(cache_dir / IMAGES_FILE, n, size) as mm:
                for i in missing:
                    mm[i] = 0
            record([(i, False, zero_crc, "file not found", None, False) for i in missing])
        if len(failed) > limit:
            raise _too_many(fail_examples(), n, fail_fraction, records.dataset, early=len(failed) < n)

        todo = np.flatnonzero(~np.asarray(done)).tolist()
        if todo:
            previous = _find_previous(cache_dir, records.dataset, size)
            plan = _reuse_plan(previous, ids, rel_paths, todo) if previous else {}
            if plan:
                log.info("%s: %d of %d image(s) to do may be copied from %s if unchanged", records.dataset,
                         len(plan), len(todo), previous.folder)
            items = [(i, str(abs_paths[i]), plan.get(i)) for i in todo]
            source = (str(previous.images_file), previous.n) if plan else None
            _run(items, str(cache_dir / IMAGES_FILE), n, size, workers, chunk_size, progress, record,
                 lambda: len(failed) > limit, records.dataset, start_method, source)
        if len(failed) > limit:
            raise _too_many(fail_examples(), n, fail_fraction, records.dataset, early=not bool(np.all(done)))

    # complete: write the final index, then drop the progress files and the previous version
    entries = []
    for i in range(n):
        digest = hashes[i].tobytes()
        e = {"image_id": ids[i], "path": rel_paths[i], "ok": i not in failed, "crc32": int(crc[i]),
             "sha256": digest.hex() if digest != _NO_HASH else None, "files": stats[i]}
        if i in failed:
            e["reason"] = failed[i]
        entries.append(e)
    del done, crc, hashes
    header = _header(records, size, fp, complete=True)
    header["n_failed"] = len(failed)
    header["images"] = entries
    _write_index(cache_dir, header)
    for name in (*_PROGRESS_FILES, PREVIOUS_INDEX, PREVIOUS_IMAGES):
        with contextlib.suppress(OSError):
            (cache_dir / name).unlink()
    prepared = PreparedImages(cache_dir)
    if copied[0]:
        log.info("%s: %d row(s) copied from the previous version of the cache, %d decoded", records.dataset,
                 copied[0], len(todo) - copied[0])
    if failed:
        log.warning("%s: %d of %d image(s) could not be read and are skipped", records.dataset, len(failed), n)
    return prepared


def _run(items, images_file: str, n: int, size: int, workers: int, chunk_size: int | None, progress: bool,
         record, should_stop, dataset: str, start_method: str | None, previous: tuple[str, int] | None) -> None:
    if chunk_size is None:
        chunk_size = max(1, min(256, math.ceil(len(items) / (max(workers, 1) * 8))))
    chunks = [items[s: s + chunk_size] for s in range(0, len(items), chunk_size)]
    with Progress(len(items), f"preparing {dataset} ({size}px)", enabled=progress, unit="images",
                  logger=log) as bar:
        if workers <= 0:
            for chunk in chunks:
                results = _prepare_chunk(images_file, n, size, chunk, previous)
                record(results)
                bar.advance(len(results))
                if should_stop():
                    return
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        if start_method is None:
            start_method = "fork" if sys.platform.startswith("linux") else "spawn"
        ctx = multiprocessing.get_context(start_method)
        # the initializer ties each worker's life to this process: a `kill -9` here leaves no orphan
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx,
                                 initializer=worker_initializer, initargs=(os.getpid(),)) as pool:
            pending = set()
            try:
                it = iter(chunks)
                # keep the queue short so an early stop (too many failures, Ctrl-C) cancels little work
                for chunk in it:
                    pending.add(pool.submit(_prepare_chunk, images_file, n, size, chunk, previous))
                    if len(pending) >= 2 * workers:
                        break
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        try:
                            results = fut.result()
                        except BrokenProcessPool:
                            raise ArkxRuntimeError(_worker_died(dataset, images_file, start_method)) from None
                        record(results)
                        bar.advance(len(results))
                    if should_stop():
                        break
                    for chunk in it:
                        pending.add(pool.submit(_prepare_chunk, images_file, n, size, chunk, previous))
                        if len(pending) >= 2 * workers:
                            break
            finally:
                for fut in pending:
                    fut.cancel()


def _worker_died(dataset: str, images_file: str, start_method: str) -> str:
    folder = Path(images_file).parent
    free = _free_bytes(folder)
    disk = f"; only {human_bytes(free)} free on its disk" if free is not None and free < (64 << 20) else ""
    guard = (" (with the spawn start method, the calling script also needs an `if __name__ == '__main__':` guard)"
             if start_method == "spawn" else "")
    return (f"a decoding worker for {dataset} died abruptly (killed for memory? a disk error in {folder}?{disk})"
            f"{guard}; the work done so far is kept, run prepare again to resume")


# ----------------------------------------------------------------------------------------------------
# repair


def _repair(records, prepared: PreparedImages, workers: int, progress: bool, fail_fraction: float,
            chunk_size: int | None, start_method: str | None) -> PreparedImages:
    """Re-decode the rows of a complete cache that fail their CRC or whose sources changed (lock held)."""
    folder = prepared.folder
    bad_rows = set(prepared.verify())
    changed = set(prepared.verify_sources(workers, progress))
    rows = sorted(bad_rows | changed)
    if not rows:
        log.info("%s: repair found nothing to do in %s", records.dataset, folder)
        return prepared
    log.warning("%s: repairing %d row(s) of %s: %d failing their checksum%s, %d whose source changed%s",
                records.dataset, len(rows), folder, len(bad_rows), _rows_example(bad_rows), len(changed),
                _rows_example(changed))
    index = _read_index(folder)
    entries = index["images"]
    abs_paths = records.absolute_paths()
    results: dict[int, tuple] = {}

    def record(chunk_results) -> None:
        for r in chunk_results:
            results[r[0]] = r

    items = [(i, str(abs_paths[i]), None) for i in rows]
    n = len(entries)
    _run(items, str(folder / IMAGES_FILE), n, prepared.size, workers, chunk_size, progress, record,
         lambda: False, records.dataset, start_method, None)
    for i, ok, c, reason, sha, _ in results.values():
        e = entries[i]
        e.update(ok=bool(ok), crc32=int(c), sha256=sha)
        e.pop("reason", None)
        if not ok:
            e["reason"] = reason or "unreadable"
            log.warning("%s: skipping unreadable image %s: %s", records.dataset, abs_paths[i], e["reason"])
    index["n_failed"] = sum(not e["ok"] for e in entries)
    index["repaired"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _write_index(folder, index)
    repaired = PreparedImages(folder)
    repaired.repaired = rows
    return repaired


def _rows_example(rows) -> str:
    rows = sorted(rows)
    return "" if not rows else f" (rows {', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''})"


# ----------------------------------------------------------------------------------------------------
# an earlier version to copy unchanged rows from


@dataclass
class _Previous:
    folder: Path
    images_file: Path
    n: int
    entries: list


def _keep_as_previous(cache_dir: Path, old: dict | None, size: int) -> None:
    """Before rebuilding in place, move a complete version of this folder aside as ``previous.*``."""
    if old is None or not old.get("complete") or old.get("version") != FORMAT_VERSION or old.get("size") != size:
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
        if (index.get("format") != _FORMAT_NAME or index.get("version") != FORMAT_VERSION
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
    """Row -> (previous row, sha256, crc32, ok, reason) for rows whose (image id, path) the previous
    version holds with a content hash; the worker copies only if the file's hash still matches."""
    by_key = {}
    for j, e in enumerate(previous.entries):
        try:
            if e.get("sha256"):
                by_key[(e["image_id"], e["path"])] = (j, e["sha256"], int(e["crc32"]), bool(e["ok"]),
                                                      e.get("reason"))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    plan = {}
    for i in todo:
        hit = by_key.get((ids[i], rel_paths[i]))
        if hit is not None:
            plan[i] = hit
    return plan


# ----------------------------------------------------------------------------------------------------
# disk space


def _needed_bytes(n: int, size: int) -> int:
    """images.u8, the progress files and index.json of a cache of ``n`` images of ``size``."""
    return n * size * size + n * (1 + 4 + 32) + n * _INDEX_BYTES_PER_IMAGE + 3 * 4096


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(cache_dir: Path, n: int, size: int, err: OSError | None = None) -> CacheDiskFull:
    where = err.filename if err is not None and err.filename else cache_dir
    return CacheDiskFull(
        f"no space left for the cache in {where}: it needs about {human_bytes(_needed_bytes(n, size))} "
        f"({n} images of {size}x{size}), {human_bytes(_free_bytes(cache_dir))} are free; the rows done so far are "
        "kept: free some space (`arkx cache clean --keep-latest` removes old versions) or choose another "
        "data.cache_dir, then run prepare again")


def _not_writable(cache_dir: Path, err: OSError) -> CacheNotWritable:
    reason = err.strerror or str(err)
    return CacheNotWritable(
        f"cannot write the cache in {cache_dir} ({reason}): a complete, current cache is read without writing, "
        "but this one must be created, finished, updated or repaired; prepare it where it can be written, or "
        "choose another data.cache_dir")


def _check_space(cache_dir: Path, n: int, size: int) -> None:
    free = _free_bytes(cache_dir)
    if free is not None and free < _needed_bytes(n, size):
        raise _disk_full(cache_dir, n, size)


def _allocate(path: Path, nbytes: int) -> None:
    """Give ``path`` (created if needed) ``nbytes`` of real disk blocks: a later write into its memory map
    then cannot fail for lack of space (a sparse file would answer a full disk with SIGBUS)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if nbytes > 0 and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, nbytes)
                return
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise OSError(e.errno, e.strerror, str(path)) from None
                # EINVAL/EOPNOTSUPP: a file system without fallocate; a sparse file is the best we can do
        if os.fstat(fd).st_size < nbytes:
            os.ftruncate(fd, nbytes)
    finally:
        os.close(fd)


def _start_fresh(cache_dir: Path, n: int, size: int, dataset: str) -> None:
    for name in (INDEX_FILE, *_PROGRESS_FILES, IMAGES_FILE):
        with contextlib.suppress(FileNotFoundError):
            (cache_dir / name).unlink()
    free = _free_bytes(cache_dir)
    if free is not None and free < _needed_bytes(n, size) and (cache_dir / PREVIOUS_IMAGES).exists():
        log.warning("%s: not enough free space to keep the previous version of %s while updating it; "
                    "decoding every image instead", dataset, cache_dir)
        for name in (PREVIOUS_INDEX, PREVIOUS_IMAGES):
            with contextlib.suppress(FileNotFoundError):
                (cache_dir / name).unlink()
    _check_space(cache_dir, n, size)
    try:
        _allocate(cache_dir / IMAGES_FILE, n * size * size)
    except OSError:
        with contextlib.suppress(OSError):  # give back what a failed allocation took
            (cache_dir / IMAGES_FILE).unlink()
        raise
    if n:
        for name, dtype, shape in ((DONE_FILE, bool, (n,)), (CRC_FILE, np.uint32, (n,)),
                                   (HASH_FILE, np.uint8, (n, 32))):
            np.lib.format.open_memmap(cache_dir / name, mode="w+", dtype=dtype, shape=shape).flush()
            _allocate(cache_dir / name, (cache_dir / name).stat().st_size)
    (cache_dir / FAILURES_FILE).write_bytes(b"")


def _can_resume(cache_dir: Path, n: int, size: int) -> bool:
    try:
        if (cache_dir / IMAGES_FILE).stat().st_size != n * size * size:
            return False
        if n == 0:
            return True
        done = np.load(cache_dir / DONE_FILE, mmap_mode="r")
        crc = np.load(cache_dir / CRC_FILE, mmap_mode="r")
        hashes = np.load(cache_dir / HASH_FILE, mmap_mode="r")
        return (done.shape == (n,) and done.dtype == bool and crc.shape == (n,) and crc.dtype == np.uint32
                and hashes.shape == (n, 32) and hashes.dtype == np.uint8)
    except (OSError, ValueError):
        return False


def _read_failures(path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    out[int(rec["i"])] = str(rec["reason"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: its row is not marked done either
    except OSError:
        pass
    return out


@contextlib.contextmanager
def _open_rows(images_file: Path, n: int, size: int):
    mm = np.memmap(images_file, dtype=np.uint8, mode="r+", shape=(n, size, size))
    try:
        yield mm
        mm.flush()
    finally:
        del mm


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


def _too_many(failures: list[tuple[str, str, str]], n: int, fail_fraction: float, dataset: str,
              early: bool = False) -> TooManyBadImages:
    k = len(failures)
    shown = "; ".join(f"{p} ({r})" for _, p, r in failures[:5])
    more = f"; and {k - 5} more" if k > 5 else ""
    when = " (stopped early: the limit can no longer be met)" if early else ""
    msg = (f"{dataset}: {k} of {n} images ({k / max(n, 1):.1%}) could not be read, more than fail_fraction="
           f"{fail_fraction:g} allows{when}. First: {shown}{more}. Fix the files or the dataset root, or "
           "raise data.fail_fraction to skip them.")
    return TooManyBadImages(msg, failures, n)


def _check_failures(failures, n: int, fail_fraction: float, dataset: str) -> None:
    if len(failures) > fail_fraction * n:
        raise _too_many(list(failures), n, fail_fraction, dataset)
