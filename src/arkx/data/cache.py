"""The prepared cache: decode every original once, then train from a memory-mapped uint8 array.

Full-size chest X-rays (2-3k px, often 12-16 bit DICOM) take tens of milliseconds each to decode;
training reads them dozens of times. :func:`prepare` converts one dataset's :class:`Records` into a
folder that training memory-maps (:class:`PreparedImages`); reading an image from it is one memory
copy.

Folder layout (``FORMAT_VERSION`` 1)::

    images.u8      raw C-order uint8 array [n, size, size] (np.memmap; row i = records.images row i;
                   rows of unreadable images are all zeros)
    index.json     {"format": "arkx-prepared-cache", "version", "complete", "size", "n", "dataset",
                    "root", "fingerprint", "n_failed", "created",
                    "images": [{"image_id", "path" (relative to root), "ok", "crc32", "file_size",
                                "mtime_ns", "reason" (only when not ok)}, ...]}
    while running: done.npy (bool [n] progress bitmap), crc.npy (uint32 [n]), failures.jsonl
                   (one {"i", "reason"} per unreadable image); removed once index.json is complete.
    .lock          advisory lock, so several processes (e.g. DDP ranks) preparing the same folder wait
                   for one another instead of writing the same rows twice.

Guarantees:

* **Resumable.** Workers write their rows straight into ``images.u8`` and return only statuses and
  CRCs; the main process then records the chunk (``crc.npy``, ``failures.jsonl``) and last flips its
  bits in ``done.npy``. A process killed at any point leaves ``done`` true only for rows that are on
  disk, so a later :func:`prepare` with the same fingerprint decodes only the rest.
* **Never half-trusted.** ``index.json`` is written atomically (temp file + ``os.replace``) and says
  ``complete: true`` only after every row is done; :func:`open_cache` refuses anything else.
* **Invalidated by change.** The fingerprint is a sha256 over (format version, size, dataset,
  image ids, paths, and each file's size and mtime_ns). A different fingerprint means the folder is
  rebuilt from scratch, with a log message saying what changed.
* **Bad files are skipped, not fatal** -- unless there are too many. Each unreadable or missing file
  is logged (``logging.getLogger("arkx.data")``) with its path and reason, stored as ``ok: false``
  with the reason, and counted; if more than ``fail_fraction`` of the images fail,
  :class:`TooManyBadImages` is raised (early, as soon as the outcome is certain; the work done so
  far is kept).

Workers: ``workers > 0`` runs chunks in a ``ProcessPoolExecutor``. The worker is a top-level function
of this module that only imports numpy/Pillow/pydicom, so any start method works: the default is
*fork* on Linux (what torch's DataLoader does; it needs no ``if __name__ == "__main__":`` guard in
user scripts and the workers never touch torch or CUDA) and *spawn* elsewhere; pass ``start_method``
to choose. Each chunk is a list of (row, path); the worker writes its rows into ``images.u8`` itself
and returns only (row, ok, crc32, reason), so no pixels cross process boundaries. At most two chunks
per worker are queued, so an early stop cancels little work. Results do not depend on the number of
workers: each row is a pure function of its file.
"""

from __future__ import annotations

from ..errors import ArkxRuntimeError

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from .io import ImageReadError, load_resized
from .records import Records

__all__ = ["FORMAT_VERSION", "PreparedImages", "TooManyBadImages", "CacheNotReady", "prepare", "open_cache",
           "cache_key", "fingerprint"]

log = logging.getLogger("arkx.data")

FORMAT_VERSION = 1
_FORMAT_NAME = "arkx-prepared-cache"
IMAGES_FILE = "images.u8"
INDEX_FILE = "index.json"
DONE_FILE = "done.npy"
CRC_FILE = "crc.npy"
FAILURES_FILE = "failures.jsonl"
LOCK_FILE = ".lock"
_MAX_LOGGED_FAILURES = 50


class TooManyBadImages(ArkxRuntimeError):
    """More than ``fail_fraction`` of a dataset's images could not be read."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]], n: int):
        super().__init__(message)
        self.failures = failures
        self.n = n


class CacheNotReady(ArkxRuntimeError):
    """A cache folder is missing, incomplete, of another format version, or damaged."""


# ----------------------------------------------------------------------------------------------------
# fingerprint


def _stat_files(paths: list[Path]) -> list[tuple[int, int] | None]:
    out: list[tuple[int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
        else:
            out.append((int(st.st_size), int(st.st_mtime_ns)))
    return out


def _fingerprint(records: Records, size: int, stats: list[tuple[int, int] | None]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([_FORMAT_NAME, FORMAT_VERSION, int(size), str(records.dataset), len(records)]).encode())
    for image_id, path, st in zip(records.images["image_id"], records.images["path"], stats):
        h.update(f"{image_id}\0{Path(path).as_posix()}\0".encode())
        h.update(b"missing\n" if st is None else f"{st[0]}\0{st[1]}\n".encode())
    return h.hexdigest()


def fingerprint(records: Records, size: int) -> str:
    """sha256 hex over (format version, size, dataset, image ids, paths, each file's size + mtime_ns)."""
    return _fingerprint(records, size, _stat_files(records.absolute_paths()))


def cache_key(records: Records, size: int) -> str:
    """A folder name for this dataset's cache: ``<dataset>-<size>-<first 12 hex of the fingerprint>``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(records.dataset)) or "dataset"
    return f"{safe}-{int(size)}-{fingerprint(records, size)[:12]}"


# ----------------------------------------------------------------------------------------------------
# the read-only view


class PreparedImages:
    """A complete cache folder, read-only. Cheap to open; picklable (the memmap is reopened lazily in
    each process, never pickled), so DataLoader workers can share it.

    Attributes:
        folder: the cache folder.
        size: side of every image.
        dataset, root, fingerprint: as recorded by :func:`prepare`.
        image_ids: list of image ids, in records order.
        paths: list of paths relative to ``root``.
        ok: bool array ``[n]``; False for images that could not be read (their rows are zeros).
        crc32: uint32 array ``[n]``, the CRC-32 of each row's bytes when it was written.
        failures: list of ``(image_id, absolute path, reason)`` of unreadable images.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index = _read_index(self.folder)
        if index is None:
            raise CacheNotReady(f"{self.folder} is not a prepared cache (no readable {INDEX_FILE}); run `arkx prepare`")
        if index.get("format") != _FORMAT_NAME or index.get("version") != FORMAT_VERSION:
            raise CacheNotReady(
                f"{self.folder}: cache format {index.get('format')!r} version {index.get('version')!r}, this arkx "
                f"reads version {FORMAT_VERSION}; prepare it again")
        if not index.get("complete"):
            raise CacheNotReady(f"{self.folder}: cache is incomplete (preparation was interrupted); "
                                "run prepare again to finish it")
        self.size = int(index["size"])
        self.dataset = str(index["dataset"])
        self.root = Path(index.get("root", ""))
        self.fingerprint = str(index["fingerprint"])
        entries = index["images"]
        n = int(index["n"])
        if len(entries) != n:
            raise CacheNotReady(f"{self.folder}: {INDEX_FILE} lists {len(entries)} images, expected {n}")
        self.image_ids = [e["image_id"] for e in entries]
        self.paths = [e["path"] for e in entries]
        self.ok = np.array([bool(e["ok"]) for e in entries], dtype=bool)
        self.crc32 = np.array([int(e["crc32"]) for e in entries], dtype=np.uint32)
        self.ok.flags.writeable = False
        self.crc32.flags.writeable = False
        self.failures = [(e["image_id"], str(self.root / e["path"]), e.get("reason", "unreadable"))
                         for e in entries if not e["ok"]]
        expected = n * self.size * self.size
        try:
            actual = (self.folder / IMAGES_FILE).stat().st_size
        except OSError:
            actual = -1
        if actual != expected:
            raise CacheNotReady(f"{self.folder}: {IMAGES_FILE} has {actual} bytes, expected {expected} "
                                f"({n} x {self.size} x {self.size}); prepare it again")
        self._array: np.ndarray | None = None

    # the memmap is per process: opened on first access, dropped when pickled
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def array(self) -> np.ndarray:
        """The read-only ``np.memmap`` uint8 ``[n, size, size]`` (opened lazily in this process)."""
        if self._array is None:
            n = len(self.image_ids)
            if n == 0:
                self._array = np.zeros((0, self.size, self.size), np.uint8)
            else:
                self._array = np.memmap(self.folder / IMAGES_FILE, dtype=np.uint8, mode="r",
                                        shape=(n, self.size, self.size))
        return self._array

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> np.ndarray:
        """Row ``i`` as uint8 ``[size, size]``: a read-only *view* into the memmap, not a copy (copy it
        with ``np.array(x)`` before modifying or handing it to torch)."""
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for a cache of {n} images")
        return self.array[i]

    def verify(self) -> list[int]:
        """Indices whose bytes no longer match the CRC-32 recorded when they were written."""
        arr = self.array
        return [i for i in range(len(self)) if zlib.crc32(arr[i]) != int(self.crc32[i])]

    def __repr__(self) -> str:
        return (f"PreparedImages({str(self.folder)!r}, dataset={self.dataset!r}, n={len(self)}, size={self.size}, "
                f"failed={len(self.failures)})")


def open_cache(cache_dir: str | os.PathLike) -> PreparedImages:
    """Open a complete cache folder; raises :class:`CacheNotReady` if it is incomplete, of another
    version, or its image file has the wrong size."""
    return PreparedImages(cache_dir)


# ----------------------------------------------------------------------------------------------------
# worker


def _prepare_chunk(images_file: str, n: int, size: int, items: list[tuple[int, str]]) -> list[tuple[int, bool, int, str | None]]:
    """Decode ``items`` (row, absolute path) into their rows of ``images_file``.

    Top-level (spawn-safe). Returns ``(row, ok, crc32, reason)`` per item once all rows are flushed.
    """
    mm = np.memmap(images_file, dtype=np.uint8, mode="r+", shape=(n, size, size))
    out = []
    try:
        for i, path in items:
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
            out.append((i, reason is None, zlib.crc32(mm[i]), reason))
        mm.flush()
    finally:
        del mm
    return out


# ----------------------------------------------------------------------------------------------------
# prepare


def prepare(records: Records, cache_dir: str | os.PathLike, size: int, workers: int = 0, progress: bool = True,
            fail_fraction: float = 0.05, *, chunk_size: int | None = None,
            start_method: str | None = None) -> PreparedImages:
    """Decode every image of ``records`` once into ``cache_dir`` (see the module doc) and open it.

    Returns at once when ``cache_dir`` already holds a complete cache with the same fingerprint;
    resumes an interrupted one; rebuilds one whose records or files changed.

    Args:
        records: the dataset (row order = cache row order).
        cache_dir: the folder (created if needed); usually ``cache_root / cache_key(records, size)``.
        size: side of the square uint8 images.
        workers: decoding processes; 0 decodes in this process.
        progress: show a progress bar (rich, when stderr is a terminal; otherwise a log line per ~10%).
        fail_fraction: the largest fraction of unreadable/missing images accepted.
        chunk_size: images per task (default: about 8 tasks per worker, at most 256 images each);
            ``done.npy`` is flushed after every chunk, so this is also the most work an interruption loses.
        start_method: multiprocessing start method for ``workers > 0`` (default: fork on Linux, else spawn).

    Raises:
        TooManyBadImages: more than ``fail_fraction`` of the images could not be read.
    """
    size = int(size)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not 0.0 <= fail_fraction <= 1.0:
        raise ValueError(f"fail_fraction must be in [0, 1], got {fail_fraction}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir):
        return _prepare_locked(records, cache_dir, size, int(workers), progress, float(fail_fraction), chunk_size,
                               start_method)


def _prepare_locked(records, cache_dir: Path, size: int, workers: int, progress: bool, fail_fraction: float,
                    chunk_size: int | None, start_method: str | None) -> PreparedImages:
    n = len(records)
    abs_paths = records.absolute_paths()
    stats = _stat_files(abs_paths)
    fp = _fingerprint(records, size, stats)
    ids = [_json_id(x) for x in records.images["image_id"]]
    rel_paths = [Path(p).as_posix() for p in records.images["path"]]

    old = _read_index(cache_dir)
    images_file = cache_dir / IMAGES_FILE
    resume = False
    if old is not None and old.get("fingerprint") == fp and old.get("version") == FORMAT_VERSION:
        if old.get("complete"):
            try:
                prepared = PreparedImages(cache_dir)
            except CacheNotReady as e:
                log.warning("rebuilding cache %s: %s", cache_dir, e)
            else:
                log.debug("cache %s is complete and up to date", cache_dir)
                _check_failures(prepared.failures, n, fail_fraction, records.dataset)
                return prepared
        else:
            resume = _can_resume(cache_dir, n, size)
            if not resume:
                log.info("restarting cache %s: its progress files are missing or damaged", cache_dir)
    elif old is not None:
        log.warning("rebuilding cache %s: %s", cache_dir, _why_stale(old, records, size, ids, rel_paths, stats))

    if not resume:
        _start_fresh(cache_dir, n, size)
        _write_index(cache_dir, _header(records, size, fp, complete=False))
    else:
        log.info("resuming cache %s", cache_dir)

    done = np.load(cache_dir / DONE_FILE, mmap_mode="r+") if n else np.zeros(0, bool)
    crc = np.load(cache_dir / CRC_FILE, mmap_mode="r+") if n else np.zeros(0, np.uint32)
    failed: dict[int, str] = {}
    if resume:
        failed = {i: r for i, r in _read_failures(cache_dir / FAILURES_FILE).items() if done[i]}
    logged = [0]

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

        def record(results: list[tuple[int, bool, int, str | None]]) -> None:
            rows = [r[0] for r in results]
            for i, ok, c, reason in results:
                crc[i] = c
                if not ok:
                    note_failure(i, reason or "unreadable")
                    failures_log.write(json.dumps({"i": i, "reason": failed[i]}) + "\n")
                else:
                    failed.pop(i, None)
            crc.flush()
            failures_log.flush()
            done[rows] = True  # last: a row counts as done only once its bytes, crc and reason are saved
            done.flush()

        # files missing on disk fail without a decode attempt (and fail fast when there are too many)
        missing = [i for i in range(n) if stats[i] is None and not done[i]]
        if missing:
            zero_crc = zlib.crc32(bytes(size * size))
            with _open_rows(images_file, n, size) as mm:
                for i in missing:
                    mm[i] = 0
            record([(i, False, zero_crc, "file not found") for i in missing])
        if len(failed) > limit:
            raise _too_many(fail_examples(), n, fail_fraction, records.dataset, early=len(failed) < n)

        todo = np.flatnonzero(~np.asarray(done)).tolist()
        if todo:
            _run(todo, abs_paths, str(images_file), n, size, workers, chunk_size, progress, record,
                 lambda: len(failed) > limit, records.dataset, start_method)
        if len(failed) > limit:
            raise _too_many(fail_examples(), n, fail_fraction, records.dataset, early=not bool(np.all(done)))

    # complete: write the final index, then drop the progress files
    entries = []
    for i in range(n):
        st = stats[i]
        e = {"image_id": ids[i], "path": rel_paths[i], "ok": i not in failed, "crc32": int(crc[i]),
             "file_size": st[0] if st else None, "mtime_ns": st[1] if st else None}
        if i in failed:
            e["reason"] = failed[i]
        entries.append(e)
    del done, crc
    header = _header(records, size, fp, complete=True)
    header["n_failed"] = len(failed)
    header["images"] = entries
    _write_index(cache_dir, header)
    for name in (DONE_FILE, CRC_FILE, FAILURES_FILE):
        with contextlib.suppress(OSError):
            (cache_dir / name).unlink()
    prepared = PreparedImages(cache_dir)
    if failed:
        log.warning("%s: %d of %d image(s) could not be read and are skipped", records.dataset, len(failed), n)
    return prepared


def _run(todo, abs_paths, images_file: str, n: int, size: int, workers: int, chunk_size: int | None,
         progress: bool, record, should_stop, dataset: str, start_method: str | None) -> None:
    if chunk_size is None:
        chunk_size = max(1, min(256, math.ceil(len(todo) / (max(workers, 1) * 8))))
    chunks = [[(i, str(abs_paths[i])) for i in todo[s: s + chunk_size]] for s in range(0, len(todo), chunk_size)]
    with _Progress(progress, len(todo), f"preparing {dataset} ({size}px)") as bar:
        if workers <= 0:
            for chunk in chunks:
                results = _prepare_chunk(images_file, n, size, chunk)
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
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as pool:
            pending = set()
            try:
                it = iter(chunks)
                # keep the queue short so an early stop (too many failures, Ctrl-C) cancels little work
                for chunk in it:
                    pending.add(pool.submit(_prepare_chunk, images_file, n, size, chunk))
                    if len(pending) >= 2 * workers:
                        break
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        try:
                            results = fut.result()
                        except BrokenProcessPool as e:
                            raise RuntimeError(
                                f"a decoding worker for {dataset} died (killed for memory? with the spawn start "
                                "method, the calling script also needs an `if __name__ == '__main__':` guard); "
                                "the work done so far is kept, run prepare again to resume") from e
                        record(results)
                        bar.advance(len(results))
                    if should_stop():
                        break
                    for chunk in it:
                        pending.add(pool.submit(_prepare_chunk, images_file, n, size, chunk))
                        if len(pending) >= 2 * workers:
                            break
            finally:
                for fut in pending:
                    fut.cancel()


# ----------------------------------------------------------------------------------------------------
# helpers


def _json_id(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (int, str)):
        return x
    return str(x)


def _header(records, size: int, fp: str, complete: bool) -> dict:
    return {"format": _FORMAT_NAME, "version": FORMAT_VERSION, "complete": complete, "size": size,
            "n": len(records), "dataset": str(records.dataset), "root": str(records.root), "fingerprint": fp,
            "dtype": "uint8", "layout": f"C-order [n, {size}, {size}] in {IMAGES_FILE}",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _read_index(folder: Path) -> dict | None:
    try:
        with open(folder / INDEX_FILE, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_index(folder: Path, data: dict) -> None:
    tmp = folder / f".{INDEX_FILE}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / INDEX_FILE)


def _start_fresh(cache_dir: Path, n: int, size: int) -> None:
    for name in (INDEX_FILE, DONE_FILE, CRC_FILE, FAILURES_FILE, IMAGES_FILE):
        with contextlib.suppress(FileNotFoundError):
            (cache_dir / name).unlink()
    with open(cache_dir / IMAGES_FILE, "wb") as f:
        f.truncate(n * size * size)  # sparse: rows are written by the workers
    if n:
        np.lib.format.open_memmap(cache_dir / DONE_FILE, mode="w+", dtype=bool, shape=(n,)).flush()
        np.lib.format.open_memmap(cache_dir / CRC_FILE, mode="w+", dtype=np.uint32, shape=(n,)).flush()
    (cache_dir / FAILURES_FILE).write_bytes(b"")


def _can_resume(cache_dir: Path, n: int, size: int) -> bool:
    try:
        if (cache_dir / IMAGES_FILE).stat().st_size != n * size * size:
            return False
        if n == 0:
            return True
        done = np.load(cache_dir / DONE_FILE, mmap_mode="r")
        crc = np.load(cache_dir / CRC_FILE, mmap_mode="r")
        return done.shape == (n,) and done.dtype == bool and crc.shape == (n,) and crc.dtype == np.uint32
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


@contextlib.contextmanager
def _locked(cache_dir: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(cache_dir / LOCK_FILE, "a+") as f:
        locked = True
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process preparing %s", cache_dir)
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:  # e.g. a file system without locks: go on unlocked
            log.debug("cannot lock %s (%s); preparing without a lock", cache_dir, e)
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(f, fcntl.LOCK_UN)


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
    changed = [i for i, (e, st) in enumerate(zip(entries, stats))
               if (e.get("file_size"), e.get("mtime_ns")) != ((st[0], st[1]) if st else (None, None))]
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


class _Progress:
    """A rich progress bar on an interactive stderr; a log line every ~10% otherwise; nothing if off."""

    def __init__(self, enabled: bool, total: int, description: str):
        self.enabled, self.total, self.description = enabled, total, description
        self.count = 0
        self._bar = None
        self._next_log = 0.1
        self._start = time.perf_counter()

    def __enter__(self):
        if self.enabled and sys.stderr is not None and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                                 transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def advance(self, k: int) -> None:
        self.count += k
        if self._bar is not None:
            self._bar.advance(self._task, k)
        elif self.enabled and self.total and self.count / self.total >= self._next_log:
            rate = self.count / max(time.perf_counter() - self._start, 1e-9)
            log.info("%s: %d/%d images (%.0f/s)", self.description, self.count, self.total, rate)
            while self._next_log <= self.count / self.total:
                self._next_log += 0.1

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
