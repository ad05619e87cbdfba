"""The files of a cache being prepared: free space, allocation, and the progress files.

:func:`_start_fresh` checks the free space and allocates every file a preparation writes into
(``images.u8``, ``masks.u1`` and the progress files: ``done.npy``, ``crc.npy``, ``sha256.npy``,
``sizes.npy``, ``mask_present.npy``, ``failures.jsonl``, ``derived_boxes.jsonl``) in full, so a full disk is
one :class:`CacheDiskFull` line and never a SIGBUS from a memory map; :func:`_can_resume` tells whether
the progress files of an interrupted preparation can be trusted. Used by :mod:`arkx.data.cache`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from .cache_index import (
    _INDEX_BYTES_PER_IMAGE,
    _PROGRESS_FILES,
    CRC_FILE,
    DONE_FILE,
    FAILURES_FILE,
    HASH_FILE,
    IMAGES_FILE,
    INDEX_FILE,
    PREVIOUS_IMAGES,
    PREVIOUS_INDEX,
    CacheDiskFull,
    CacheNotWritable,
    TooManyBadImages,
    human_bytes,
)
from .cache_targets import DERIVED_FILE, MASK_PRESENT_FILE, MASKS_FILE, SIZES_FILE, TARGET_FILES, packed_bytes

log = logging.getLogger("arkx.data")

#: every progress file of a preparation (removed once ``index.json`` is complete)
PROGRESS_FILES = (*_PROGRESS_FILES, SIZES_FILE, DERIVED_FILE)


def _needed_bytes(n: int, size: int, channels: int = 0) -> int:
    """images.u8, masks.u1 (``channels`` masks per image), the progress files and index.json of a cache of
    ``n`` images of ``size``."""
    masks = n * channels * (packed_bytes(size) + 1)
    return n * size * size + masks + n * (1 + 4 + 32 + 16) + n * _INDEX_BYTES_PER_IMAGE + 3 * 4096


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(cache_dir: Path, n: int, size: int, err: OSError | None = None,
               channels: int = 0) -> CacheDiskFull:
    where = err.filename if err is not None and err.filename else cache_dir
    return CacheDiskFull(
        f"no space left for the cache in {where}: it needs about {human_bytes(_needed_bytes(n, size, channels))} "
        f"({n} images of {size}x{size}), {human_bytes(_free_bytes(cache_dir))} are free; the rows done so far are "
        "kept: free some space (`arkx cache clean --keep-latest` removes old versions) or choose another "
        "data.cache_dir, then run prepare again")


def _not_writable(cache_dir: Path, err: OSError) -> CacheNotWritable:
    reason = err.strerror or str(err)
    return CacheNotWritable(
        f"cannot write the cache in {cache_dir} ({reason}): a complete, current cache is read without writing, "
        "but this one must be created, finished, updated or repaired; prepare it where it can be written, or "
        "choose another data.cache_dir")


def _check_space(cache_dir: Path, n: int, size: int, channels: int = 0) -> None:
    free = _free_bytes(cache_dir)
    if free is not None and free < _needed_bytes(n, size, channels):
        raise _disk_full(cache_dir, n, size, channels=channels)


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


def _start_fresh(cache_dir: Path, n: int, size: int, dataset: str, channels: int = 0) -> None:
    for name in (INDEX_FILE, *PROGRESS_FILES, IMAGES_FILE, *TARGET_FILES):
        with contextlib.suppress(FileNotFoundError):
            (cache_dir / name).unlink()
    free = _free_bytes(cache_dir)
    if free is not None and free < _needed_bytes(n, size, channels) and (cache_dir / PREVIOUS_IMAGES).exists():
        log.warning("%s: not enough free space to keep the previous version of %s while updating it; "
                    "decoding every image instead", dataset, cache_dir)
        for name in (PREVIOUS_INDEX, PREVIOUS_IMAGES):
            with contextlib.suppress(FileNotFoundError):
                (cache_dir / name).unlink()
    _check_space(cache_dir, n, size, channels)
    made = [IMAGES_FILE] + ([MASKS_FILE] if channels else [])
    try:
        _allocate(cache_dir / IMAGES_FILE, n * size * size)
        if channels:
            _allocate(cache_dir / MASKS_FILE, n * channels * packed_bytes(size))
    except OSError:
        for name in made:
            with contextlib.suppress(OSError):  # give back what a failed allocation took
                (cache_dir / name).unlink()
        raise
    if n:
        arrays = [(DONE_FILE, bool, (n,)), (CRC_FILE, np.uint32, (n,)), (HASH_FILE, np.uint8, (n, 32)),
                  (SIZES_FILE, np.int64, (n, 2))]
        if channels:
            arrays.append((MASK_PRESENT_FILE, bool, (n, channels)))
        for name, dtype, shape in arrays:
            np.lib.format.open_memmap(cache_dir / name, mode="w+", dtype=dtype, shape=shape).flush()
            _allocate(cache_dir / name, (cache_dir / name).stat().st_size)
    (cache_dir / FAILURES_FILE).write_bytes(b"")
    (cache_dir / DERIVED_FILE).write_bytes(b"")


def _can_resume(cache_dir: Path, n: int, size: int, channels: int = 0) -> bool:
    try:
        if (cache_dir / IMAGES_FILE).stat().st_size != n * size * size:
            return False
        if channels and (cache_dir / MASKS_FILE).stat().st_size != n * channels * packed_bytes(size):
            return False
        if n == 0:
            return True
        expected = [(DONE_FILE, (n,), bool), (CRC_FILE, (n,), np.uint32), (HASH_FILE, (n, 32), np.uint8),
                     (SIZES_FILE, (n, 2), np.int64)]
        if channels:
            expected.append((MASK_PRESENT_FILE, (n, channels), bool))
        for name, shape, dtype in expected:
            arr = np.load(cache_dir / name, mmap_mode="r")
            if arr.shape != shape or arr.dtype != dtype:
                return False
        return True
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


def _worker_died(dataset: str, images_file: str, start_method: str) -> str:
    folder = Path(images_file).parent
    free = _free_bytes(folder)
    disk = f"; only {human_bytes(free)} free on its disk" if free is not None and free < (64 << 20) else ""
    guard = (" (with the spawn start method, the calling script also needs an `if __name__ == '__main__':` guard)"
             if start_method == "spawn" else "")
    return (f"a decoding worker for {dataset} died abruptly (killed for memory? a disk error in {folder}?{disk})"
            f"{guard}; the work done so far is kept, run prepare again to resume")


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
