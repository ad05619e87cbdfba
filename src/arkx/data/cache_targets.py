"""Localisation and segmentation targets of the prepared cache: original sizes, masks and boxes.

Format 3 of the cache (:mod:`arkx.data.cache`) stores, next to each image row, what detection and
segmentation need on the same ``S x S`` grid:

* the image file's original ``(height, width)`` (``index.json``), read from the file's header by
  :func:`image_size` (the decoded pixels are untouched: rows stay byte-identical to format 2);
* masks, one channel per :attr:`Records.mask_label_names <arkx.data.records.Records>`: every
  ``Records.masks`` row is decoded (:func:`arkx.data.masks.decode_mask`); the rows of one
  (image, structure) are merged (union); the 0/1 mask is resized from its own grid to ``S x S`` by
  area averaging (Pillow's box filter) and a cache pixel is inside when the average is ``>= 0.5``: when
  shrinking, *at least half of the cache pixel is covered*, so a structure is neither shifted nor lost to
  nearest sampling's choice of one source pixel (a structure covering less than half of every cache
  pixel it crosses is below the cache's resolution and vanishes); when enlarging (a mask stored smaller
  than the cache), the source pixel under the cache pixel's centre decides. Stored packed
  (``np.packbits``, C order) in ``masks.u1`` ``[n, M, ceil(S*S/8)]``, with ``mask_present.npy`` bool
  ``[n, M]`` (False: no mask row for that structure, i.e. not annotated, which is not the same as empty);
* boxes in cache pixels (``x * S / width``, ``y * S / height``, max exclusive, clipped to ``[0, S]``;
  boxes with no area left are dropped): ``boxes.npy`` float32 ``[K, 4]``, ``box_image.npy`` int64 ``[K]``
  (row), ``box_label.npy`` int64 ``[K]``. From ``Records.boxes`` (labels index ``box_label_names``),
  mapped with the image's original size; or, for a dataset with masks and no boxes, derived from the
  masks: one box per 8-connected component of each structure's full-resolution mask (components under
  :data:`MIN_COMPONENT_FRACTION` of the mask's area dropped), mapped with the mask's own size, labelled
  with the structure's index in ``mask_label_names``.

A mask that cannot be decoded makes its image unusable, like an unreadable image (its reason starts
with :data:`MASK_FAILURE`); it is never silently an empty mask.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .records import Records

MASKS_FILE = "masks.u1"
MASK_PRESENT_FILE = "mask_present.npy"
BOXES_FILE = "boxes.npy"
BOX_IMAGE_FILE = "box_image.npy"
BOX_LABEL_FILE = "box_label.npy"
#: progress file while preparing: one {"i", "boxes": [[x0, y0, x1, y1, label], ...]} per row derived from masks
DERIVED_FILE = "derived_boxes.jsonl"
#: progress file while preparing: int64 [n, 2] original (height, width), -1 = unknown
SIZES_FILE = "sizes.npy"
TARGET_FILES = (MASKS_FILE, MASK_PRESENT_FILE, BOXES_FILE, BOX_IMAGE_FILE, BOX_LABEL_FILE)
#: connected components smaller than this fraction of the mask's area give no box (0.01 %)
MIN_COMPONENT_FRACTION = 1e-4
#: the reason of an image skipped because one of its masks cannot be decoded starts with this
MASK_FAILURE = "mask"

_BOX_COLUMNS = ["x_min", "y_min", "x_max", "y_max"]


def packed_bytes(size: int) -> int:
    """Bytes of one packed ``size x size`` mask."""
    return (int(size) * int(size) + 7) // 8


def has_masks(records: Records) -> bool:
    return records.masks is not None and len(records.masks) > 0 and bool(records.mask_label_names)


def has_boxes(records: Records) -> bool:
    return records.boxes is not None and len(records.boxes) > 0 and bool(records.box_label_names)


def boxes_source(records: Records) -> str | None:
    """``"records"`` (Records.boxes), ``"masks"`` (derived from the masks) or None (no boxes)."""
    if has_boxes(records):
        return "records"
    return "masks" if has_masks(records) else None


# ----------------------------------------------------------------------------------------------------
# fingerprint


def annotations_digest(records: Records) -> str | None:
    """sha256 hex over the masks and boxes frames (content, label names) and each mask file's size and
    mtime_ns; None when the dataset has neither (its fingerprint is then what format 2 computed)."""
    if not has_masks(records) and not has_boxes(records):
        return None
    h = hashlib.sha256()
    for what, frame, names in (("masks", records.masks, records.mask_label_names),
                               ("boxes", records.boxes, records.box_label_names)):
        if frame is None or len(frame) == 0:
            continue
        h.update(f"{what}\0{json.dumps(list(names or ()))}\0".encode())
        h.update(frame[sorted(frame.columns)].to_csv(index=False).encode())
    if has_masks(records) and "kind" in records.masks and "path" in records.masks:
        files = records.masks.loc[records.masks["kind"] == "file", "path"]
        for rel in files:
            try:
                st = os.stat(records.root / str(rel))
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{rel}\0missing\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------
# the worker's side: one image's size, masks and derived boxes


@dataclass(frozen=True)
class MaskJob:
    """What a decoding worker needs to make the mask rows (picklable)."""

    masks_file: str
    channels: int  # M
    root: str
    derive_boxes: bool


def mask_items(records: Records) -> dict[int, list[tuple[int, dict]]]:
    """Row -> ``[(structure index, Records.masks row as a dict), ...]`` (empty when there are no masks)."""
    if not has_masks(records):
        return {}
    row_of = {str(v): i for i, v in enumerate(records.images["image_id"])}
    index_of = {name: m for m, name in enumerate(records.mask_label_names)}
    out: dict[int, list[tuple[int, dict]]] = {}
    for rec in records.masks.to_dict("records"):
        row = row_of.get(str(rec["image_id"]))
        if row is not None:
            out.setdefault(row, []).append((index_of[str(rec["label"])], rec))
    return out


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """The ``(height, width)`` an image file declares (header only), by the dispatch of
    :func:`arkx.data.io.read_image`; None when it cannot be read."""
    from .io import is_dicom

    p = Path(path)
    try:
        if is_dicom(p):
            import pydicom

            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            return int(ds.Rows), int(ds.Columns)
        suffix = p.suffix.lower()
        if suffix in (".mha", ".mhd"):
            from .mha import declared_shape, read_mha_header

            dims, _ = declared_shape(read_mha_header(p), p)
            return int(dims[1]), int(dims[0])
        if suffix == ".img":
            from .raw_img import jsrt_side

            side = jsrt_side(p)
            return int(side), int(side)
        from PIL import Image

        with Image.open(p) as im:
            return int(im.size[1]), int(im.size[0])
    except Exception:  # noqa: BLE001  (the image was decoded already; a size we cannot read is unknown)
        return None


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """bool ``[h, w]`` -> bool ``[size, size]``: the area average (box filter) of the 0/1 mask, ``>= 0.5``."""
    from PIL import Image

    if mask.shape == (size, size):
        return mask.astype(bool, copy=True)
    resized = Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BOX)
    return np.asarray(resized) >= 0.5


def _components(mask: np.ndarray, size: int, label: int) -> list[list[float]]:
    from .masks import component_boxes

    h, w = mask.shape
    min_pixels = max(1, math.ceil(MIN_COMPONENT_FRACTION * h * w))
    out = []
    for x0, y0, x1, y1 in component_boxes(mask, connectivity=8, min_pixels=min_pixels):
        out.append([x0 * size / w, y0 * size / h, x1 * size / w, y1 * size / h, float(label)])
    return out


def image_masks(items: list[tuple[int, dict]], job: MaskJob, size: int) -> tuple[np.ndarray, np.ndarray, list]:
    """``(packed uint8 [M, packed_bytes], present bool [M], derived boxes)`` of one image.

    Raises whatever decoding raises (the caller turns it into the image's failure)."""
    from .masks import decode_mask

    by_structure: dict[int, list[np.ndarray]] = {}
    for m, rec in items:
        by_structure.setdefault(m, []).append(np.asarray(decode_mask(rec, job.root), dtype=bool))
    packed = np.zeros((job.channels, packed_bytes(size)), dtype=np.uint8)
    present = np.zeros(job.channels, dtype=bool)
    derived: list[list[float]] = []
    for m, masks in sorted(by_structure.items()):
        shapes = {x.shape for x in masks}
        # the rows of one structure are parts of one mask on one grid; on different grids each is taken alone
        groups = [np.logical_or.reduce(masks)] if len(shapes) == 1 else masks
        cache_mask = np.zeros((size, size), dtype=bool)
        for full in groups:
            cache_mask |= resize_mask(full, size)
            if job.derive_boxes:
                derived.extend(_components(full, size, m))
        packed[m] = np.packbits(cache_mask.reshape(-1))
        present[m] = True
    return packed, present, derived


# ----------------------------------------------------------------------------------------------------
# boxes: from the records (main process, once the sizes are known) or derived; written at the end


def record_boxes(records: Records, sizes: np.ndarray, ok: np.ndarray, size: int) -> list[list[float]]:
    """``[row, x0, y0, x1, y1, label]`` per box of ``Records.boxes`` in cache pixels (usable rows only)."""
    row_of = {str(v): i for i, v in enumerate(records.images["image_id"])}
    index_of = {name: k for k, name in enumerate(records.box_label_names)}
    frame = records.boxes
    coords = frame[_BOX_COLUMNS].to_numpy(dtype=np.float64)
    out = []
    for image_id, label, (x0, y0, x1, y1) in zip(frame["image_id"].astype(str), frame["label"].astype(str), coords):
        row = row_of.get(image_id)
        if row is None or not ok[row] or sizes[row][0] <= 0:
            continue
        h, w = sizes[row]
        out.append([row, x0 * size / w, y0 * size / h, x1 * size / w, y1 * size / h, index_of[label]])
    return out


def write_boxes(folder: Path, rows: list[list[float]], size: int) -> int:
    """Write ``boxes.npy`` / ``box_image.npy`` / ``box_label.npy`` from ``[row, x0, y0, x1, y1, label]``
    entries (clipped to the grid, empty ones dropped, sorted by row, stable); returns the count kept."""
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    boxes = np.clip(arr[:, 1:5], 0.0, float(size))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    image = arr[keep, 0].astype(np.int64)
    order = np.argsort(image, kind="stable")
    np.save(folder / BOXES_FILE, boxes[keep][order].astype(np.float32))
    np.save(folder / BOX_IMAGE_FILE, image[order])
    np.save(folder / BOX_LABEL_FILE, arr[keep, 5].astype(np.int64)[order])
    return int(keep.sum())


def read_derived(path: Path, done: np.ndarray) -> dict[int, list]:
    """The derived boxes recorded for rows marked done (the last line of a row wins)."""
    out: dict[int, list] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    i = int(rec["i"])
                    if 0 <= i < len(done) and done[i]:
                        out[i] = rec["boxes"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: its row is not marked done either
    except OSError:
        pass
    return out


def stored_boxes_by_row(folder: Path) -> dict[int, list]:
    """``{row: [[x0, y0, x1, y1, label], ...]}`` of a complete cache's box files (for a repair)."""
    try:
        boxes = np.load(folder / BOXES_FILE)
        image = np.load(folder / BOX_IMAGE_FILE)
        label = np.load(folder / BOX_LABEL_FILE)
    except OSError:
        return {}
    out: dict[int, list] = {}
    for b, i, lab in zip(boxes.tolist(), image.tolist(), label.tolist()):
        out.setdefault(int(i), []).append([*b, float(lab)])
    return out


def write_targets(records, cache_dir: Path, size: int, sizes: np.ndarray, ok: np.ndarray,
                   derived: dict[int, list]) -> int | None:
    """The box files of a dataset with boxes (from the records, or derived from its masks); the count."""
    source = boxes_source(records)
    if source == "records":
        return write_boxes(cache_dir, record_boxes(records, sizes, ok, size), size)
    if source == "masks":
        return write_boxes(cache_dir, [[i, *b] for i in sorted(derived) if ok[i] for b in derived[i]], size)
    return None
