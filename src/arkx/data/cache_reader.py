"""The read-only view of a complete prepared cache: :class:`PreparedImages` and :func:`open_cache`.

Opening a cache validates its ``index.json`` (format, version, completeness, the image file's size)
and needs no write access; rows are memory-mapped lazily per process (the object pickles without the
memmap, so DataLoader workers share it), every :meth:`PreparedImages.read` checks a row's CRC-32, and
:meth:`PreparedImages.verify_sources` re-hashes the original files. See :mod:`arkx.data.cache` for the
format and how a cache is made.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import numpy as np

from ..progress import Progress
from .cache_index import (
    _FORMAT_NAME,
    FORMAT_VERSION,
    IMAGES_FILE,
    INDEX_FILE,
    CacheNotReady,
    CorruptCacheRow,
    _read_index,
    content_hash,
)
from .cache_targets import BOX_IMAGE_FILE, BOX_LABEL_FILE, BOXES_FILE, MASK_PRESENT_FILE, MASKS_FILE, packed_bytes

log = logging.getLogger("arkx.data")


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
        sha256: list ``[n]`` of the sources' content hashes at prepare (None for missing files).
        failures: list of ``(image_id, absolute path, reason)`` of unreadable images.
        repaired: rows that ``prepare(repair=True)`` re-decoded (empty otherwise).
        mask_label_names, box_label_names: the structures of :meth:`masks` and the classes of
            :meth:`boxes` (empty tuples when the dataset has none).
        boxes_source: ``"records"``, ``"masks"`` (derived from the masks) or None.

    Targets (:mod:`arkx.data.cache_targets`): :meth:`original_size`, :meth:`masks`, :meth:`boxes`.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index = _read_index(self.folder)
        if index is None:
            raise CacheNotReady(f"{self.folder} is not a prepared cache (no readable {INDEX_FILE}); run `arkx prepare`")
        if index.get("format") != _FORMAT_NAME or index.get("version") != FORMAT_VERSION:
            raise CacheNotReady(
                f"{self.folder}: cache format {index.get('format')!r} version {index.get('version')!r}, this arkx "
                f"reads version {FORMAT_VERSION}; prepare it again (`arkx prepare`; `arkx cache clean` removes "
                "old versions)")
        if not index.get("complete"):
            raise CacheNotReady(f"{self.folder}: cache is incomplete (preparation was interrupted); "
                                "run prepare again to finish it")
        try:
            self._load(index)
        except (KeyError, TypeError, ValueError) as e:
            raise CacheNotReady(f"{self.folder}: {INDEX_FILE} is damaged ({type(e).__name__}: {e}); "
                                "prepare it again") from None
        self.repaired: list[int] = []
        self._array: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def _load(self, index: dict) -> None:
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
        self.sha256 = [e.get("sha256") for e in entries]
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
        self._load_targets(index, entries, n)

    def _load_targets(self, index: dict, entries: list, n: int) -> None:
        self.heights = np.array([int(e.get("height") or -1) for e in entries], dtype=np.int64)
        self.widths = np.array([int(e.get("width") or -1) for e in entries], dtype=np.int64)
        self.mask_label_names = tuple(index.get("mask_label_names") or ())
        self.box_label_names = tuple(index.get("box_label_names") or ())
        self.boxes_source = index.get("boxes_source")
        channels = len(self.mask_label_names)
        self._present = np.zeros((n, channels), dtype=bool)
        if channels:
            expected = n * channels * packed_bytes(self.size)
            try:
                actual = (self.folder / MASKS_FILE).stat().st_size
                self._present = np.load(self.folder / MASK_PRESENT_FILE)
            except (OSError, ValueError):
                actual = -1
            if actual != expected or self._present.shape != (n, channels):
                raise CacheNotReady(f"{self.folder}: {MASKS_FILE} / {MASK_PRESENT_FILE} do not hold {n} x {channels} "
                                    f"masks of {self.size} x {self.size}; prepare it again")
        self._box_xyxy = np.zeros((0, 4), np.float32)
        self._box_label = np.zeros(0, np.int64)
        self._box_start = np.zeros(n + 1, np.int64)
        if self.boxes_source is not None:
            try:
                self._box_xyxy = np.load(self.folder / BOXES_FILE)
                image = np.load(self.folder / BOX_IMAGE_FILE)
                self._box_label = np.load(self.folder / BOX_LABEL_FILE)
            except (OSError, ValueError):
                raise CacheNotReady(f"{self.folder}: its box files are missing or damaged; prepare it again") from None
            if not (len(self._box_xyxy) == len(image) == len(self._box_label)) or np.any(np.diff(image) < 0):
                raise CacheNotReady(f"{self.folder}: its box files disagree; prepare it again")
            # rows are sorted: the boxes of row i are [start[i], start[i + 1])
            self._box_start = np.searchsorted(image, np.arange(n + 1), side="left").astype(np.int64)

    # the memmap is per process: opened on first access, dropped when pickled
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = None
        state["_masks"] = None
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

    def original_size(self, row: int) -> tuple[int, int] | None:
        """The ``(height, width)`` of row ``row``'s image file (None when it could not be read)."""
        h, w = int(self.heights[row]), int(self.widths[row])
        return (h, w) if h > 0 and w > 0 else None

    def masks(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(bool [M, S, S], present bool [M])`` of row ``row`` (``M = len(mask_label_names)``; a structure
        that is not present has an all-False mask)."""
        channels, size = len(self.mask_label_names), self.size
        if channels == 0:
            return np.zeros((0, size, size), dtype=bool), np.zeros(0, dtype=bool)
        if self._masks is None:
            self._masks = np.memmap(self.folder / MASKS_FILE, dtype=np.uint8, mode="r",
                                    shape=(len(self), channels, packed_bytes(size)))
        packed = np.asarray(self._masks[row])
        bits = np.unpackbits(packed, axis=-1, count=size * size)
        return bits.reshape(channels, size, size).astype(bool), self._present[row].copy()

    def boxes(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(float32 [n, 4], int64 [n])``: row ``row``'s boxes (xyxy cache pixels, max exclusive) and labels
        (indices into ``box_label_names``, or ``mask_label_names`` for boxes derived from masks)."""
        start, stop = int(self._box_start[row]), int(self._box_start[row + 1])
        return self._box_xyxy[start:stop].copy(), self._box_label[start:stop].copy()

    def __getitem__(self, i: int) -> np.ndarray:
        """Row ``i`` as uint8 ``[size, size]``: a read-only *view* into the memmap, not a copy (copy it
        with ``np.array(x)`` before modifying or handing it to torch). Not checked: see :meth:`read`."""
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for a cache of {n} images")
        return self.array[i]

    def read(self, i: int) -> np.ndarray:
        """A writable copy of row ``i``, checked against its CRC-32 (about 25 us for 256 x 256).

        Raises:
            CorruptCacheRow: the row's bytes changed since they were written.
        """
        row = np.array(self[i], dtype=np.uint8, copy=True)
        i = int(i) % max(len(self), 1)
        if zlib.crc32(row) != int(self.crc32[i]):
            raise CorruptCacheRow(
                f"cache row {i} of {self.folder} (image {self.image_ids[i]}, {self.paths[i]}) fails its checksum: "
                f"{IMAGES_FILE} was damaged after it was prepared; run `arkx prepare ... --repair` on this dataset "
                "(or delete the folder), then resume")
        return row

    def verify(self) -> list[int]:
        """Indices whose bytes no longer match the CRC-32 recorded when they were written (reads every row)."""
        arr = self.array
        return [i for i in range(len(self)) if zlib.crc32(arr[i]) != int(self.crc32[i])]

    def verify_sources(self, workers: int = 0, progress: bool = False) -> list[int]:
        """Indices whose source files' content changed since prepare (re-reads every original; a file
        replaced with the same size and mtime is caught, and both files of a .mhd pair count)."""
        paths = [self.root / p for p in self.paths]
        changed: list[int] = []
        with Progress(len(paths), f"verifying the sources of {self.dataset}", enabled=progress, unit="images",
                      logger=log) as bar:
            if workers > 0:
                from concurrent.futures import ThreadPoolExecutor  # reading and hashing release the GIL

                with ThreadPoolExecutor(max_workers=workers) as pool:
                    hashes = pool.map(content_hash, paths, chunksize=64)
                    for i, h in enumerate(hashes):
                        if h != self.sha256[i]:
                            changed.append(i)
                        bar.advance()
            else:
                for i, p in enumerate(paths):
                    if content_hash(p) != self.sha256[i]:
                        changed.append(i)
                    bar.advance()
        return changed

    def __repr__(self) -> str:
        return (f"PreparedImages({str(self.folder)!r}, dataset={self.dataset!r}, n={len(self)}, size={self.size}, "
                f"failed={len(self.failures)})")


def open_cache(cache_dir: str | os.PathLike) -> PreparedImages:
    """Open a complete cache folder; raises :class:`CacheNotReady` if it is incomplete, of another
    version, or its image file has the wrong size. Needs no write access."""
    return PreparedImages(cache_dir)
