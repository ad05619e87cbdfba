"""What a run was trained on, recorded in every checkpoint so that a resume notices a change.

For each dataset: its records (image ids, splits, label names in order, label values with NaN and -1 kept
apart) and its prepared cache's fingerprint (each image file's size and mtime). For the config: the resolved
config itself and its sha256. Per-row digests (CRC-32 of each image id and of each label row, a split code per
row) are stored as small int tensors, so a refusal can say *how much* changed: "labels changed in 36 of 60
rows", "3 ids added, 1 removed"; a human-readable copy without them is written to ``RUN/datasets.json``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.records import SPLITS, Records

DATASETS_FILE = "datasets.json"
#: label values are compared after mapping NaN to this (a real label is 1, 0 or -1, or a one-hot value)
_NAN_CODE = np.float32(-9.0)


def _sha(values) -> str:
    h = hashlib.sha256()
    for v in values:
        h.update(str(v).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _label_matrix(records: Records) -> np.ndarray:
    labels = np.ascontiguousarray(records.labels, dtype=np.float32)
    return np.where(np.isnan(labels), _NAN_CODE, labels).astype(np.float32)


def _row_crcs(rows) -> torch.Tensor:
    crcs = np.fromiter((zlib.crc32(r) for r in rows), dtype=np.uint32, count=len(rows))
    return torch.from_numpy(crcs.view(np.int32).copy())


def dataset_identity(records: Records, cache_fingerprint: str) -> dict[str, Any]:
    """The identity of one dataset as stored in a checkpoint (plain values and int tensors only)."""
    ids = [str(x) for x in records.images["image_id"]]
    splits = records.images["split"].astype(str).tolist()
    labels = _label_matrix(records)
    return dict(
        type=str(records.dataset), root=str(records.root), n_images=len(ids),
        label_names=list(records.label_names), kind=records.task.kind if records.task else None,
        ids_sha256=_sha(ids), splits_sha256=_sha(splits), labels_sha256=hashlib.sha256(labels.tobytes()).hexdigest(),
        cache_fingerprint=cache_fingerprint,
        id_crc=_row_crcs([i.encode("utf-8") for i in ids]),
        label_crc=_row_crcs([row.tobytes() for row in labels]),
        split_code=torch.tensor([SPLITS.index(s) for s in splits], dtype=torch.int8),
    )


def readable(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity without its per-row tensors (for ``datasets.json``)."""
    return {k: v for k, v in identity.items() if not isinstance(v, torch.Tensor)}


def write_datasets_file(folder: Path, identities: dict[str, dict[str, Any]], extra: dict[str, dict] | None = None) -> None:
    data = {name: {**readable(ident), **(extra or {}).get(name, {})} for name, ident in identities.items()}
    path = Path(folder) / DATASETS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _list(names) -> str:
    return "[" + ", ".join(str(n) for n in names) + "]"


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two identities of one dataset, in words (empty when nothing does)."""
    changes: list[str] = []
    old_names, new_names = list(old.get("label_names", [])), list(new["label_names"])
    if old_names != new_names:
        if sorted(old_names) == sorted(new_names):
            changes.append(f"label columns reordered: old order {_list(old_names)} vs new {_list(new_names)}")
        else:
            added = [n for n in new_names if n not in old_names]
            removed = [n for n in old_names if n not in new_names]
            parts = ([f"added {_list(added)}"] if added else []) + ([f"removed {_list(removed)}"] if removed else [])
            changes.append("labels " + " and ".join(parts))
    old_ids, new_ids = old["id_crc"].numpy(), new["id_crc"].numpy()
    if old.get("ids_sha256") != new["ids_sha256"]:
        added = int(np.isin(new_ids, old_ids, invert=True).sum())
        removed = int(np.isin(old_ids, new_ids, invert=True).sum())
        if added or removed:
            changes.append(f"image ids changed: {added} added, {removed} removed ({len(old_ids)} -> {len(new_ids)} images)")
        else:
            changes.append("images listed in another order")
    # Rows present in both, matched by id: splits and label values (only comparable with the same label names)
    common_old, common_new = _match_rows(old_ids, new_ids)
    if old.get("splits_sha256") != new["splits_sha256"]:
        moved = int((old["split_code"].numpy()[common_old] != new["split_code"].numpy()[common_new]).sum())
        if moved:
            changes.append(f"split changed for {moved} image(s)")
    if old_names == new_names and old.get("labels_sha256") != new["labels_sha256"]:
        differ = int((old["label_crc"].numpy()[common_old] != new["label_crc"].numpy()[common_new]).sum())
        if differ:
            changes.append(f"labels changed in {differ} of {len(common_new)} rows")
    # (with other ids the fingerprint differs anyway: only same ids say that files changed)
    if old.get("cache_fingerprint") != new["cache_fingerprint"] and old.get("ids_sha256") == new["ids_sha256"]:
        changes.append("image files replaced or modified (a file's size or modification time changed)")
    return changes


def _match_rows(old_ids: np.ndarray, new_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the ids present in both (first occurrence of each id digest)."""
    first_old: dict[int, int] = {}
    for i, v in enumerate(old_ids.tolist()):
        first_old.setdefault(v, i)
    pairs = [(first_old[v], j) for j, v in enumerate(new_ids.tolist()) if v in first_old]
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a, b = zip(*pairs)
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


# ---------------------------------------------------------------------------- config
def config_identity(cfg) -> dict[str, Any]:
    resolved = cfg.model_dump(mode="json")
    text = json.dumps(resolved, sort_keys=True)
    return dict(sha256=hashlib.sha256(text.encode()).hexdigest(), resolved=resolved)


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, each as ``key (old -> new)``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in config_differences(a, b, f"{prefix}{i}.")]
    return [] if old == new else [f"{prefix.rstrip('.')} ({old!r} -> {new!r})"]
