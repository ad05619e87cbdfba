"""Repairing a complete cache in place: ``prepare(repair=True)``.

Every row is checked against its CRC-32 and every source file re-hashed; the rows that fail, or whose
source changed, are made again by the same worker as a preparation (image, original size, masks and the
boxes derived from them), and ``index.json`` and the box files are rewritten. Called by
:func:`arkx.data.cache.prepare` with the lock held; ``run`` is its chunk runner (passed in, so this
module sits below :mod:`arkx.data.cache`).
"""

from __future__ import annotations

import datetime as _dt
import logging

import numpy as np

from .cache_index import IMAGES_FILE, _read_index, _write_index
from .cache_reader import PreparedImages
from .cache_targets import (
    MASK_PRESENT_FILE,
    MASKS_FILE,
    MaskJob,
    boxes_source,
    has_masks,
    mask_items,
    record_boxes,
    stored_boxes_by_row,
    write_boxes,
)

log = logging.getLogger("arkx.data")


def _repair(records, prepared: PreparedImages, workers: int, progress: bool, fail_fraction: float,
            chunk_size: int | None, start_method: str | None, run) -> PreparedImages:
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

    masks = mask_items(records)
    job = None
    if has_masks(records):
        job = MaskJob(str(folder / MASKS_FILE), len(records.mask_label_names), str(records.root),
                      boxes_source(records) == "masks")
    items = [(i, str(abs_paths[i]), None, masks.get(i, [])) for i in rows]
    n = len(entries)
    run(items, str(folder / IMAGES_FILE), n, prepared.size, workers, chunk_size, progress, record,
        lambda: False, records.dataset, start_method, None, job)
    derived = stored_boxes_by_row(folder) if job is not None and job.derive_boxes else {}
    present = np.load(folder / MASK_PRESENT_FILE) if job is not None else None
    for i, ok, c, reason, sha, _, size_hw, row_present, row_boxes in results.values():
        e = entries[i]
        e.update(ok=bool(ok), crc32=int(c), sha256=sha)
        for key in ("reason", "height", "width"):
            e.pop(key, None)
        if size_hw is not None:
            e["height"], e["width"] = int(size_hw[0]), int(size_hw[1])
        if not ok:
            e["reason"] = reason or "unreadable"
            log.warning("%s: skipping unreadable image %s: %s", records.dataset, abs_paths[i], e["reason"])
        if present is not None:
            present[i] = row_present if row_present is not None else False
        derived[i] = list(row_boxes or []) if ok else []
    if present is not None:
        np.save(folder / MASK_PRESENT_FILE, present)
    _rewrite_boxes(records, folder, entries, prepared.size, derived)
    index["n_failed"] = sum(not e["ok"] for e in entries)
    index["repaired"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _write_index(folder, index)
    repaired = PreparedImages(folder)
    repaired.repaired = rows
    return repaired


def _rewrite_boxes(records, folder, entries, size: int, derived: dict[int, list]) -> None:
    source = boxes_source(records)
    if source == "masks":
        write_boxes(folder, [[i, *b] for i in sorted(derived) for b in derived[i]], size)
    elif source == "records":
        sizes = np.array([[e.get("height") or -1, e.get("width") or -1] for e in entries], dtype=np.int64)
        ok = np.array([bool(e["ok"]) for e in entries])
        write_boxes(folder, record_boxes(records, sizes, ok, size), size)


def _rows_example(rows) -> str:
    rows = sorted(rows)
    return "" if not rows else f" (rows {', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''})"
