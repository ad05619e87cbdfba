"""The prepared cache: decode every original once, then train from a memory-mapped uint8 array.

Full-size chest X-rays (2-3k px, often 12-16 bit DICOM) take tens of milliseconds each to decode;
training reads them dozens of times. :func:`prepare` converts one dataset's :class:`Records` into a
folder that training memory-maps (:class:`PreparedImages`); reading an image from it is one memory
copy and a CRC-32 check.

Folder layout (``FORMAT_VERSION`` 3; the image rows are byte-identical to format 2's)::

    images.u8      raw C-order uint8 array [n, size, size] (np.memmap; row i = records.images row i;
                   rows of unreadable images are all zeros); allocated in full before any row is written
    masks.u1, mask_present.npy, boxes.npy, box_image.npy, box_label.npy
                   datasets with masks / boxes only: see :mod:`arkx.data.cache_targets`
    index.json     {"format": "arkx-prepared-cache", "version", "complete", "size", "n", "dataset",
                    "root", "fingerprint", "n_failed", "created",
                    "images": [{"image_id", "path" (relative to root), "ok", "crc32" (of the row),
                                "sha256" (of the source bytes: every file of source_files, e.g. a .mhd
                                header and its .raw; null when missing), "files" ([size, mtime_ns] per
                                source file, null for a missing one), "height", "width" (the original's
                                size, when read), "reason" (only when not ok)}, ...],
                    "mask_label_names", "box_label_names", "boxes_source"}
    while running: done.npy (bool [n] progress bitmap), crc.npy (uint32 [n]), sha256.npy (32-byte
                   digests, uint8 [n, 32]), sizes.npy (int64 [n, 2]), failures.jsonl (one {"i", "reason"} per
                   unreadable image), derived_boxes.jsonl (boxes derived from masks, per row); removed once
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
* **Invalidated by change, updated incrementally.** The fingerprint is a sha256 over (image-row version,
  size, dataset, image ids, paths, and each source file's size and mtime_ns; plus the masks and boxes
  frames and each mask file's size and mtime_ns): a cheap test done on every open. A different fingerprint means a new version of the cache; rows of files whose (id, path and
  content hash) are unchanged are *copied* from the previous version (the same folder, or a sibling
  folder of the same dataset and size) instead of decoded. Content hashes also catch what size and mtime
  cannot: :meth:`PreparedImages.verify_sources` re-reads the sources and compares. A folder of an older
  format is rebuilt in place by :func:`prepare` (one log line says why; its rows are copied when the row
  layout is unchanged, as from format 2) and refused by :func:`open_cache` with one line naming it.
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
:mod:`arkx.data.cache_reader`, removal in :mod:`arkx.data.cache_clean`, masks / boxes / original sizes in
:mod:`arkx.data.cache_targets`, free space and progress files in :mod:`arkx.data.cache_files`, earlier
versions in :mod:`arkx.data.cache_previous`, repair in :mod:`arkx.data.cache_repair`; this module prepares,
resumes and updates (and re-exports their public names).

Workers: ``workers > 0`` runs chunks in a ``ProcessPoolExecutor``. The worker is a top-level function
of this module that only imports numpy/Pillow/pydicom, so any start method works: the default is
*fork* on Linux (what torch's DataLoader does; it needs no ``if __name__ == "__main__":`` guard in
user scripts and the workers never touch torch or CUDA) and *spawn* elsewhere; pass ``start_method``
to choose. Each chunk is a list of (row, path, reuse, mask rows); the worker writes its rows into
``images.u8`` (and ``masks.u1``) itself and returns only (row, ok, crc32, reason, sha256, copied, original
size, mask presence, derived boxes), so no pixels cross process boundaries.
At most two chunks per worker are queued, so an early stop cancels little work. Results do not depend
on the number of workers: each row is a pure function of its file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import sys
import zlib
from pathlib import Path

import numpy as np

from ..errors import ArkxRuntimeError, ArkxValueError
from ..progress import Progress
from .cache_clean import CleanedFolder, _touch_last_used, clean_cache
from .cache_files import (PROGRESS_FILES, _can_resume, _check_failures, _disk_full, _not_writable, _open_rows,
                          _read_failures, _start_fresh, _too_many, _worker_died)
from .cache_index import (_MAX_LOGGED_FAILURES, _NO_HASH, CRC_FILE, DONE_FILE, FAILURES_FILE, FORMAT_VERSION,
                          HASH_FILE, IMAGES_FILE, PREVIOUS_IMAGES, PREVIOUS_INDEX, CacheDiskFull, CacheNotReady,
                          CacheNotWritable, CorruptCacheRow, TooManyBadImages, _fingerprint, _header, _json_id,
                          _read_index, _stat_sources, _write_index, cache_key, content_hash, fingerprint,
                          human_bytes)
from .cache_lock import LOCK_FILE, folder_lock, worker_initializer
from .cache_previous import _find_previous, _keep_as_previous, _reuse_plan, _why_stale
from .cache_reader import PreparedImages, open_cache
from .cache_repair import _repair
from .cache_targets import (DERIVED_FILE, MASK_FAILURE, MASK_PRESENT_FILE, MASKS_FILE, SIZES_FILE, MaskJob,
                            boxes_source, has_masks, image_masks, image_size, mask_items, packed_bytes, read_derived,
                            write_targets)
from .io import ImageReadError, load_resized
from .records import Records

__all__ = ["FORMAT_VERSION", "PreparedImages", "TooManyBadImages", "CacheNotReady", "CacheNotWritable",
           "CacheDiskFull", "CorruptCacheRow", "prepare", "open_cache", "cache_key", "fingerprint",
           "content_hash", "clean_cache", "CleanedFolder", "human_bytes"]

log = logging.getLogger("arkx.data")


# ----------------------------------------------------------------------------------------------------
# worker


# row, ok, crc32, reason, sha256, copied, (height, width) or None, mask presence [M] or None, derived boxes
_ChunkResult = tuple[int, bool, int, "str | None", "str | None", bool, "tuple | None", "list | None", "list | None"]


def _prepare_chunk(images_file: str, n: int, size: int, items: list[tuple],
                   previous: tuple[str, int] | None = None, masks: MaskJob | None = None) -> list[_ChunkResult]:
    """Make the rows ``items`` (row, absolute path, reuse[, mask rows]) of ``images_file``.

    ``reuse`` is None or ``(previous row, its sha256, its crc32, its ok, its reason, its size)`` of the file
    in ``previous`` = (images file, rows) of an earlier version: when the file's content hash still matches
    and the old row still matches its CRC, the row is copied; otherwise it is decoded. With ``masks``, the
    image's mask rows are decoded into ``masks.u1`` too (a mask that fails makes the image unusable).
    Top-level (spawn-safe). Returns one :data:`_ChunkResult` per item once all rows are flushed.
    """
    mm = np.memmap(images_file, dtype=np.uint8, mode="r+", shape=(n, size, size))
    masks_mm = None
    if masks is not None and masks.channels:
        masks_mm = np.memmap(masks.masks_file, dtype=np.uint8, mode="r+", shape=(n, masks.channels, packed_bytes(size)))
    prev = None
    if previous is not None and any(item[2] is not None for item in items):
        try:
            prev = np.memmap(previous[0], dtype=np.uint8, mode="r", shape=(previous[1], size, size))
        except (OSError, ValueError):  # the previous version was removed meanwhile: decode everything
            prev = None
    out = []
    try:
        for item in items:
            i, path, reuse = item[:3]
            row = _image_row(mm, prev, i, path, reuse, size)
            ok, reason, original = row[1], row[3], row[6]
            if ok and original is None:
                original = image_size(path)
            present = derived = None
            if masks_mm is not None:
                masks_mm[i] = 0
                if ok:
                    try:
                        packed, present, derived = image_masks(item[3] if len(item) > 3 else [], masks, size)
                        masks_mm[i] = packed
                        present = present.tolist()
                    except Exception as e:  # noqa: BLE001  (an undecodable mask skips its image, never a run)
                        ok, reason, present, derived = False, f"{MASK_FAILURE} cannot be decoded: {e}", None, None
            out.append((i, ok, row[2], reason, row[4], row[5], original, present, derived))
        mm.flush()
        if masks_mm is not None:
            masks_mm.flush()
    finally:
        del mm, prev, masks_mm
    return out


def _image_row(mm, prev, i: int, path: str, reuse, size: int) -> tuple:
    """Copy (when ``reuse`` still holds) or decode row ``i``: ``(i, ok, crc32, reason, sha256, copied, size)``."""
    sha = content_hash(path)  # read first: the decoder then finds the file in the page cache
    if reuse is not None and prev is not None and sha is not None and sha == reuse[1]:
        j, _, old_crc, old_ok, old_reason, old_size = reuse
        if zlib.crc32(prev[j]) == old_crc:
            mm[i] = prev[j]
            if not old_ok and str(old_reason or "").startswith(MASK_FAILURE):
                old_ok, old_reason = True, None  # a good image whose mask failed: its masks are made again
            return i, old_ok, old_crc, old_reason, sha, True, old_size
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
    return i, reason is None, zlib.crc32(mm[i]), reason, sha, False, None


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
        raise ArkxValueError(f"cache size must be a positive number of pixels, got {size}")
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
                                   start_method, _run)
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
    channels = len(records.mask_label_names) if has_masks(records) else 0

    old = _read_index(cache_dir)
    resume = False
    if old is not None and old.get("fingerprint") == fp and old.get("version") == FORMAT_VERSION:
        if old.get("complete"):  # another process finished it while we waited for the lock
            try:
                return PreparedImages(cache_dir)
            except CacheNotReady as e:
                log.warning("rebuilding cache %s: %s", cache_dir, e)
        else:
            resume = _can_resume(cache_dir, n, size, channels)
            if not resume:
                log.info("restarting cache %s: its progress files are missing or damaged", cache_dir)
    elif old is not None:
        log.warning("rebuilding cache %s: %s", cache_dir, _why_stale(old, records, size, ids, rel_paths, stats))

    if not resume:
        _keep_as_previous(cache_dir, old, size)
        _start_fresh(cache_dir, n, size, records.dataset, channels)
        _write_index(cache_dir, _header(records, size, fp, complete=False))
    else:
        log.info("resuming cache %s", cache_dir)

    done = np.load(cache_dir / DONE_FILE, mmap_mode="r+") if n else np.zeros(0, bool)
    crc = np.load(cache_dir / CRC_FILE, mmap_mode="r+") if n else np.zeros(0, np.uint32)
    hashes = np.load(cache_dir / HASH_FILE, mmap_mode="r+") if n else np.zeros((0, 32), np.uint8)
    sizes = np.load(cache_dir / SIZES_FILE, mmap_mode="r+") if n else np.zeros((0, 2), np.int64)
    present = np.load(cache_dir / MASK_PRESENT_FILE, mmap_mode="r+") if n and channels else None
    failed: dict[int, str] = {}
    derived: dict[int, list] = {}
    if resume:
        failed = {i: r for i, r in _read_failures(cache_dir / FAILURES_FILE).items() if done[i]}
        derived = read_derived(cache_dir / DERIVED_FILE, np.asarray(done))
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

    with open(cache_dir / FAILURES_FILE, "a", encoding="utf-8") as failures_log, \
            open(cache_dir / DERIVED_FILE, "a", encoding="utf-8") as derived_log:

        def record(results) -> None:
            rows = [r[0] for r in results]
            for i, ok, c, reason, sha, was_copied, original, row_present, row_boxes in results:
                crc[i] = c
                hashes[i] = np.frombuffer(bytes.fromhex(sha) if sha else _NO_HASH, dtype=np.uint8)
                sizes[i] = original if original is not None else (-1, -1)
                if present is not None:
                    present[i] = row_present if row_present is not None else False
                if row_boxes:
                    derived[i] = row_boxes
                    derived_log.write(json.dumps({"i": i, "boxes": row_boxes}) + "\n")
                else:
                    derived.pop(i, None)
                copied[0] += bool(was_copied)
                if not ok:
                    note_failure(i, reason or "unreadable")
                    failures_log.write(json.dumps({"i": i, "reason": failed[i]}) + "\n")
                else:
                    failed.pop(i, None)
            for array in (crc, hashes, sizes) if present is None else (crc, hashes, sizes, present):
                array.flush()
            failures_log.flush()
            derived_log.flush()
            done[rows] = True  # last: a row counts as done only once its bytes, crc, hash and reason are saved
            done.flush()

        # files missing on disk fail without a decode attempt (and fail fast when there are too many)
        missing = [i for i in range(n) if stats[i] is None and not done[i]]
        if missing:
            zero_crc = zlib.crc32(bytes(size * size))
            with _open_rows(cache_dir / IMAGES_FILE, n, size) as mm:
                for i in missing:
                    mm[i] = 0
            record([(i, False, zero_crc, "file not found", None, False, None, None, None) for i in missing])
        if len(failed) > limit:
            raise _too_many(fail_examples(), n, fail_fraction, records.dataset, early=len(failed) < n)

        todo = np.flatnonzero(~np.asarray(done)).tolist()
        if todo:
            previous = _find_previous(cache_dir, records.dataset, size)
            plan = _reuse_plan(previous, ids, rel_paths, todo) if previous else {}
            if plan:
                log.info("%s: %d of %d image(s) to do may be copied from %s if unchanged", records.dataset,
                         len(plan), len(todo), previous.folder)
            masks = mask_items(records)
            items = [(i, str(abs_paths[i]), plan.get(i), masks.get(i, [])) for i in todo]
            source = (str(previous.images_file), previous.n) if plan else None
            job = MaskJob(str(cache_dir / MASKS_FILE), channels, str(records.root),
                          boxes_source(records) == "masks") if channels else None
            _run(items, str(cache_dir / IMAGES_FILE), n, size, workers, chunk_size, progress, record,
                 lambda: len(failed) > limit, records.dataset, start_method, source, job)
        if len(failed) > limit:
            raise _too_many(fail_examples(), n, fail_fraction, records.dataset, early=not bool(np.all(done)))

    # complete: write the targets and the final index, then drop the progress files and the previous version
    entries = []
    for i in range(n):
        digest = hashes[i].tobytes()
        e = {"image_id": ids[i], "path": rel_paths[i], "ok": i not in failed, "crc32": int(crc[i]),
             "sha256": digest.hex() if digest != _NO_HASH else None, "files": stats[i]}
        if sizes[i][0] > 0:
            e["height"], e["width"] = int(sizes[i][0]), int(sizes[i][1])
        if i in failed:
            e["reason"] = failed[i]
        entries.append(e)
    ok = np.array([i not in failed for i in range(n)], dtype=bool)
    n_boxes = write_targets(records, cache_dir, size, np.array(sizes), ok, derived)
    del done, crc, hashes, sizes, present
    header = _header(records, size, fp, complete=True)
    header["n_failed"] = len(failed)
    header["n_boxes"] = n_boxes
    header["images"] = entries
    _write_index(cache_dir, header)
    for name in (*PROGRESS_FILES, PREVIOUS_INDEX, PREVIOUS_IMAGES):
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
         record, should_stop, dataset: str, start_method: str | None, previous: tuple[str, int] | None,
         masks: MaskJob | None = None) -> None:
    if chunk_size is None:
        chunk_size = max(1, min(256, math.ceil(len(items) / (max(workers, 1) * 8))))
    chunks = [items[s: s + chunk_size] for s in range(0, len(items), chunk_size)]
    with Progress(len(items), f"preparing {dataset} ({size}px)", enabled=progress, unit="images",
                  logger=log) as bar:
        if workers <= 0:
            for chunk in chunks:
                results = _prepare_chunk(images_file, n, size, chunk, previous, masks)
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
                    pending.add(pool.submit(_prepare_chunk, images_file, n, size, chunk, previous, masks))
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
                        pending.add(pool.submit(_prepare_chunk, images_file, n, size, chunk, previous, masks))
                        if len(pending) >= 2 * workers:
                            break
            finally:
                for fut in pending:
                    fut.cancel()
