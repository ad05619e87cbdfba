"""Embeddings of a whole dataset from a trained model, read exactly as training reads its images.

``embed`` prepares (or reuses) the image cache at the model's cache size, then runs the evaluation
view (the whole image resized to the model's input size, normalised) through the model in batches
under ``torch.inference_mode``. The result is an :class:`EmbeddingTable`: one row per usable image,
with its id, split, patient, sex, age and raw labels (NaN = not labelled, -1 = uncertain, kept as the
provider wrote them) beside the embedding. Images the cache could not read are left out and listed in
``meta["excluded"]``; they are never embedded as the zero rows the cache holds in their place.

Files are ``.npz`` (numpy only, no pickle): :func:`save_embeddings` writes atomically,
:func:`load_embeddings` reads them back.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArkxFileNotFoundError, ArkxValueError

log = logging.getLogger("arkx.transfer")

FORMAT = "arkx-embeddings/1"
WHICH = ("teacher", "student")
FEATURES = ("projector", "backbone")


@dataclass
class EmbeddingTable:
    """Embeddings of one dataset with the columns needed to probe and to audit them.

    Attributes:
        ids, split, patient_id, sex: string arrays ``[N]`` (sex ``""`` when unknown).
        age: float array ``[N]`` (NaN when unknown).
        label_names: the dataset's label names, in the order of ``labels`` columns.
        labels: float32 ``[N, L]``, raw (1, 0, -1 uncertain, NaN not labelled).
        embeddings: float32 ``[N, D]``.
        meta: where they came from (model path, which, features, image and cache size, task kind,
            dataset, arkx version, excluded images).
    """

    ids: np.ndarray
    split: np.ndarray
    patient_id: np.ndarray
    sex: np.ndarray
    age: np.ndarray
    label_names: tuple[str, ...]
    labels: np.ndarray
    embeddings: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def task_kind(self) -> str:
        """``multilabel`` or ``multiclass`` (how :func:`arkx.probe` reads ``labels``)."""
        return str(self.meta.get("task_kind", "multilabel"))

    def rows(self, split: str) -> np.ndarray:
        """Indices of the rows in ``split``."""
        return np.flatnonzero(self.split == split)


# ---------------------------------------------------------------------------- model resolution
@dataclass(frozen=True)
class _Sizes:
    image_size: int
    cache_size: int
    cache_dir: Path | None  # the run's cache root, when the model comes from a run


def _run_sizes(run_dir: Path) -> _Sizes | None:
    """Image and cache size (and cache root) from a run folder's config.yaml, if there is one."""
    from ..config import load_config, with_absolute_paths

    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        return None
    cfg = with_absolute_paths(load_config(cfg_file), cwd=run_dir.parent)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / "cache"
    return _Sizes(cfg.data.image_size, cfg.data.resolved_cache_size, cache_dir)


def _export_image_size(path: Path) -> int | None:
    """The input size recorded in an arkx ``.safetensors`` export."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("arkx", "null") or "null")
    return int(meta["image_size"]) if meta and "image_size" in meta else None


def model_sizes(path: Path) -> _Sizes:
    """Where a model file's image size, cache size and cache come from: its run's config when the file
    sits in a run folder (``RUN``, ``RUN/teacher.safetensors``, ``RUN/checkpoints/last.pt``), else the
    export's metadata with the default cache size (image size x 8/7, as the config resolves it)."""
    path = Path(path)
    if path.is_dir():
        run_dir = path
    else:  # RUN/checkpoints/last.pt or RUN/teacher.safetensors
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    exported = _export_image_size(path) if path.suffix == ".safetensors" else None
    sizes = _run_sizes(run_dir)
    # a config.yaml of another input size beside an export is not its run's: the export's own record wins
    if sizes is not None and exported in (None, sizes.image_size):
        return sizes
    if exported is not None:
        return _Sizes(exported, max(exported, round(exported * 8 / 7)), None)
    raise ArkxValueError(f"{path}: cannot tell the model's image size (no run config.yaml beside it and no arkx "
                         "export metadata); pass image_size= (and cache_size=)")


# ---------------------------------------------------------------------------- embedding
def embed(model_or_path, dataset_type: str, root: str | Path, *, options: dict | None = None,
          which: str = "teacher", features: str = "projector", splits: list[str] | tuple[str, ...] | None = None,
          batch_size: int = 64, device: str = "auto", cache_dir: str | Path | None = None,
          image_size: int | None = None, cache_size: int | None = None, out: str | Path | None = None,
          progress: bool = True, workers: int = 0, fail_fraction: float = 0.05) -> EmbeddingTable:
    """Embed every usable image of a dataset with a trained model.

    Args:
        model_or_path: anything :func:`arkx.load_model` accepts (run folder, ``.safetensors`` export,
            ``checkpoints/last.pt``) or an :class:`arkx.ArkModel` (then ``image_size`` is required).
        dataset_type, root, options: the dataset, as for :func:`arkx.read_dataset`.
        which: ``teacher`` (the released model) or ``student``.
        features: ``projector`` (the embedding heads read) or ``backbone`` (pooled backbone features).
        splits: keep only these splits (default: all).
        cache_dir: cache root (default: the run's cache when the model comes from a run folder, else a
            ``cache`` folder beside ``out``).
        image_size, cache_size: override the model's sizes (default: from its run config / export).
        out: also write the table there (``.npz``).
    """
    if which not in WHICH:
        raise ArkxValueError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    if features not in FEATURES:
        raise ArkxValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
    if batch_size < 1:
        raise ArkxValueError(f"batch_size must be >= 1, got {batch_size}")
    if out is not None:
        _check_suffix(Path(out))  # before any image is read
    model, source, sizes = _resolve_model(model_or_path, which, image_size, cache_size)
    cache_root = _cache_root(cache_dir, sizes, out)
    records = _read_records(dataset_type, root, options or {})
    from ..data.loaders import prepare_images

    images = prepare_images(records, cache_root, sizes.cache_size, workers, fail_fraction, progress)
    rows, excluded = _usable_rows(records, images, splits)
    torch_device = _device(device)
    vectors = _embed_rows(model, images, rows, sizes.image_size, features, batch_size, torch_device, progress,
                          f"embedding {records.dataset}")
    table = _table(records, rows, vectors, dict(
        format=FORMAT, model=source, which=which, features=features, image_size=sizes.image_size,
        cache_size=sizes.cache_size, dataset=records.dataset, dataset_type=dataset_type, root=str(root),
        options=options or {}, task_kind=records.task.kind, arkx_version=_version(), excluded=excluded,
        cache=str(getattr(images, "folder", ""))))
    if out is not None:
        save_embeddings(table, out)
    return table


def _resolve_model(model_or_path, which: str, image_size: int | None, cache_size: int | None):
    """``(model in eval mode, its source as text, sizes)``."""
    from ..models.ark import ArkModel

    if isinstance(model_or_path, ArkModel):
        if image_size is None:
            raise ArkxValueError("embedding with a model object needs image_size= (the model's input size)")
        model, source, found = model_or_path, "<in-memory model>", None
    else:
        from ..models.released import load_any_model

        path = Path(model_or_path)
        if not path.exists():
            raise ArkxFileNotFoundError(f"no model at {path}")
        # an arkx model, or an authors' Ark / Foundation X file (which records the size it was built for)
        model, source = load_any_model(path, which, image_size=image_size), str(path.resolve())
        authors_size = getattr(model, "arkx_source", {}).get("image_size")
        if authors_size is not None:
            found = _Sizes(int(authors_size), max(int(authors_size), round(int(authors_size) * 8 / 7)), None)
        else:
            found = model_sizes(path) if image_size is None or cache_size is None else None
    image = int(image_size if image_size is not None else found.image_size)
    if cache_size is not None:
        cache = int(cache_size)
    elif found is not None and found.image_size == image:
        cache = found.cache_size
    else:
        cache = max(image, round(image * 8 / 7))
    if cache < image:
        raise ArkxValueError(f"cache_size ({cache}) must be >= image_size ({image})")
    return model.eval(), source, _Sizes(image, cache, found.cache_dir if found else None)


def _cache_root(cache_dir, sizes: _Sizes, out) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if sizes.cache_dir is not None:
        return sizes.cache_dir
    if out is not None:
        return Path(out).resolve().parent / "cache"
    raise ArkxValueError("no cache folder: pass cache_dir= (--cache-dir), or out= to keep the cache beside it")


def _read_records(dataset_type: str, root, options: dict):
    from ..data.adapters import read_dataset

    records = read_dataset(dataset_type, root, **options)
    if records.task is None:
        raise ArkxValueError(f"{root} ({dataset_type}): the dataset has no image-level labels to put beside the "
                             "embeddings")
    return records


def _usable_rows(records, images, splits) -> tuple[np.ndarray, list[dict]]:
    """Rows to embed (in records order) and the images left out because the cache could not read them."""
    frame = records.images
    keep = np.ones(len(frame), dtype=bool)
    if splits:
        unknown = sorted(set(splits) - {"train", "val", "test"})
        if unknown:
            raise ArkxValueError(f"unknown split(s) {unknown}; expected train, val or test")
        keep &= frame["split"].isin(list(splits)).to_numpy()
    ok = np.asarray(images.ok, dtype=bool)
    reasons = {str(image_id): reason for image_id, _, reason in getattr(images, "failures", [])}
    excluded = [dict(image_id=str(frame["image_id"].iloc[i]), reason=reasons.get(str(frame["image_id"].iloc[i]),
                                                                                  "unreadable"))
                for i in np.flatnonzero(keep & ~ok)]
    if excluded:
        log.warning("%s: %d unreadable image(s) left out of the embeddings, e.g. %s (%s)", records.dataset,
                    len(excluded), excluded[0]["image_id"], excluded[0]["reason"])
    return np.flatnonzero(keep & ok), excluded


def _device(name: str) -> torch.device:
    from ..training.engine import resolve_device

    try:
        return resolve_device(name)
    except RuntimeError as err:
        raise ArkxValueError(f"device {name!r}: {err}") from None
    except (ValueError, TypeError):
        raise ArkxValueError(f"device must be auto, cpu or cuda, got {name!r}") from None


def _embed_rows(model, images, rows: np.ndarray, image_size: int, features: str, batch_size: int,
                device: torch.device, progress: bool, description: str) -> np.ndarray:
    from ..data.loaders import _read_row
    from ..data.transforms import eval_view
    from ..progress import Progress

    model = model.to(device)
    forward = model.features if features == "backbone" else model.embed
    out = []
    with Progress(len(rows), description, enabled=progress, unit="images") as bar, torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = torch.from_numpy(np.stack([_read_row(images, int(r)) for r in chunk])).unsqueeze(1)
            x = eval_view(batch.to(device), image_size)
            out.append(forward(x).float().cpu().numpy())
            bar.advance(len(chunk))
    if not out:
        return np.zeros((0, _output_dim(model, features)), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def _output_dim(model, features: str) -> int:
    return int(model.backbone.num_features) if features == "backbone" else int(model.embed_dim)


def _table(records, rows: np.ndarray, vectors: np.ndarray, meta: dict) -> EmbeddingTable:
    frame = records.images.iloc[rows]
    return EmbeddingTable(
        ids=frame["image_id"].astype(str).to_numpy(),
        split=frame["split"].astype(str).to_numpy(),
        patient_id=frame["patient_id"].astype(str).to_numpy(),
        sex=frame["sex"].map(lambda s: "" if s is None or (isinstance(s, float) and np.isnan(s)) else str(s))
        .to_numpy().astype(str),
        age=_float_column(frame["age"]),
        label_names=tuple(records.task.label_names),
        labels=np.asarray(records.labels[rows], dtype=np.float32),
        embeddings=vectors,
        meta=meta,
    )


def _float_column(series) -> np.ndarray:
    """A column as float64, unknown values as NaN."""
    import pandas as pd

    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


def _version() -> str:
    from .. import __version__

    return __version__


# ---------------------------------------------------------------------------- files
_STRING_ARRAYS = ("ids", "split", "patient_id", "sex")


def _check_suffix(path: Path) -> None:
    if path.suffix != ".npz":
        raise ArkxValueError(f"{path}: embeddings are written as .npz (give a file name ending in .npz)")


def save_embeddings(table: EmbeddingTable, path: str | Path) -> Path:
    """Write ``table`` as ``.npz`` (no pickled objects), atomically: a reader never sees half a file."""
    path = Path(path)
    _check_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(getattr(table, name)).astype(str) for name in _STRING_ARRAYS}
    arrays.update(age=np.asarray(table.age, dtype=np.float64), labels=np.asarray(table.labels, dtype=np.float32),
                  embeddings=np.asarray(table.embeddings, dtype=np.float32),
                  label_names=np.asarray(list(table.label_names), dtype=str),
                  meta=np.asarray(json.dumps({**table.meta, "format": FORMAT}, default=str)))
    from ..training.state import space_checked

    needed = sum(a.nbytes for a in arrays.values()) + 1024 * 1024
    with space_checked(path, needed):  # a full disk is one DiskFull line naming the file
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def load_embeddings(path: str | Path) -> EmbeddingTable:
    """Read a table written by :func:`save_embeddings` (``arkx embed --out``)."""
    path = Path(path)
    if not path.is_file():
        raise ArkxFileNotFoundError(f"no embeddings file {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise ArkxValueError(f"{path}: not a readable .npz file ({err})") from None
    needed = set(_STRING_ARRAYS) | {"age", "labels", "embeddings", "label_names", "meta"}
    missing = sorted(needed - set(arrays))
    if missing:
        raise ArkxValueError(f"{path}: not an arkx embeddings file (missing arrays {', '.join(missing)})")
    meta = json.loads(str(arrays["meta"]))
    if meta.get("format") != FORMAT:
        raise ArkxValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT}")
    return EmbeddingTable(**{name: arrays[name] for name in _STRING_ARRAYS}, age=arrays["age"],
                          label_names=tuple(str(n) for n in arrays["label_names"]), labels=arrays["labels"],
                          embeddings=arrays["embeddings"], meta=meta)
