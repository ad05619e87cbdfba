"""From a dataset entry of the config to batches: read records, prepare the cache, make loaders.

Training always reads the prepared cache (uint8 arrays, memory-mapped): originals are decoded once,
corrupt files are skipped there with a warning and counted, and every epoch after that costs a
memory copy and a CRC-32 check per image (a damaged row stops the run; it is never trained on).
Randomness lives in the main process (sampler order, augmentation, label smoothing), seeded per
schedule step, so DataLoader workers are pure readers and results do not depend on the number of
workers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ArkxValueError
from .adapters import default_uncertain, read_dataset
from .batch import collate
from .records import Records
from .sharding import ShardedBatches, shard_indices

log = logging.getLogger("arkx.data")


@dataclass
class PreparedDataset:
    """One dataset ready for training: its records, its cache, and which images are usable."""

    name: str  # head name
    records: Records
    images: "PreparedImages"  # noqa: F821  (arkx.data.cache; anything with ok/failures/__getitem__)
    uncertain: str = "ones"
    lsr_ones_range: tuple[float, float] = (0.55, 0.85)
    lsr_zeros_range: tuple[float, float] = (0.0, 0.3)
    train_cap: int | None = None
    cap_seed: int = 0
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (image_id, path, reason)

    @property
    def task(self):
        return self.records.task

    def tasks(self) -> list:
        """Every task this dataset can feed (:meth:`Records.tasks`, named with the head name): classification
        from its labels, detection from its boxes (or boxes derived from masks), segmentation from its masks."""
        return self.records.tasks(self.name)

    def indices(self, split: str) -> np.ndarray:
        """Row indices of usable images in ``split`` (train may be capped by a seeded subset)."""
        in_split = self.records.images["split"].to_numpy() == split
        idx = np.flatnonzero(in_split & self.images.ok)
        if split == "train" and self.train_cap is not None and len(idx) > self.train_cap:
            rng = np.random.default_rng(self.cap_seed)
            idx = np.sort(rng.choice(idx, size=self.train_cap, replace=False))
        return idx


#: the targets a loader can carry (``make_loader(targets=...)``)
TARGETS = ("labels", "masks", "boxes")


class CachedImages(Dataset):
    """One sample per chosen row of a prepared cache: a dict with ``image`` (uint8 ``[1, S, S]``), ``row``
    (the records row) and, per requested target, ``labels`` (float32 ``[L]``, when the dataset has
    image-level labels), ``masks`` (bool ``[M, S, S]``) with ``mask_present`` (bool ``[M]``), ``boxes``
    (float32 ``[n, 4]`` cache pixels) with ``box_labels`` (int64 ``[n]``) from the cache
    (:class:`~arkx.data.cache.PreparedImages`); the loader collates samples into a
    :class:`arkx.data.batch.Batch`."""

    def __init__(self, images: PreparedImages, labels: np.ndarray, indices: np.ndarray,  # noqa: F821
                 targets: tuple[str, ...] = ("labels",), masks_exhaustive: bool = False):
        self.images = images
        # Records.masks_exhaustive: an image without a mask row of a structure was annotated without it
        self.masks_exhaustive = bool(masks_exhaustive)
        self.labels = np.ascontiguousarray(labels, dtype=np.float32)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = _check_targets(targets)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        row = int(self.indices[i])
        sample = dict(image=torch.from_numpy(_read_row(self.images, row)).unsqueeze(0), row=row)
        if "labels" in self.targets and self.labels.shape[1]:
            sample["labels"] = torch.from_numpy(self.labels[row])
        if "masks" in self.targets:
            masks, present = self.images.masks(row)
            if self.masks_exhaustive:
                present = np.ones_like(present)
            sample["masks"], sample["mask_present"] = torch.from_numpy(masks), torch.from_numpy(present)
        if "boxes" in self.targets:
            boxes, labels = self.images.boxes(row)
            sample["boxes"], sample["box_labels"] = torch.from_numpy(boxes), torch.from_numpy(labels)
        return sample


def _check_targets(targets) -> tuple[str, ...]:
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ArkxValueError(f"unknown loader target(s) {unknown}; expected some of {list(TARGETS)}")
    return targets


def _cache_has(images, target: str) -> bool:
    if target == "masks":
        return bool(getattr(images, "mask_label_names", ()))
    return getattr(images, "boxes_source", None) is not None


def _read_row(images, row: int) -> np.ndarray:
    """A copy of one cache row, checked against its CRC-32 when the cache records one
    (:meth:`PreparedImages.read` raises ``CorruptCacheRow``: a damaged row is never trained on)."""
    read = getattr(images, "read", None)
    if read is not None:
        return read(row)
    return np.array(images[row], dtype=np.uint8, copy=True)


class SeededShuffle(Sampler[int]):
    """A permutation drawn from a seed that the engine sets before each epoch (resume-exact).

    ``fraction`` (set with the seed) keeps the first part of the permutation: a seeded random subset of the
    epoch's images (Foundation X's lock phase trains on half of them), still capped by ``limit``."""

    def __init__(self, length: int, limit: int | None = None):
        self.length = length
        self.limit = limit
        self.seed = 0
        self.fraction = 1.0

    def set_seed(self, seed: int, fraction: float = 1.0) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"sampler fraction must be in (0, 1], got {fraction}")
        self.seed = int(seed)
        self.fraction = float(fraction)

    def __len__(self) -> int:
        length = self.length if self.fraction == 1.0 else max(1, math.ceil(self.fraction * self.length))
        return length if self.limit is None else min(length, self.limit)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(self.length, generator=g).tolist()
        return iter(order[: len(self)])


def prepare_images(records: Records, cache_root: Path, size: int, workers: int = 0, fail_fraction: float = 0.05,
                   progress: bool = True, repair: bool = False):
    """Prepare (or reuse, or update) the cache of one dataset's images at ``size``; any layout, any task.

    ``repair=True`` also re-reads every row and source and re-decodes the rows that fail their checksum
    or whose source changed (see :func:`arkx.data.cache.prepare`).
    """
    from .cache import cache_key, prepare

    return prepare(records, Path(cache_root) / cache_key(records, size), size, workers=workers, progress=progress,
                   fail_fraction=fail_fraction, repair=repair)


def prepare_dataset(ds_cfg, data_cfg, cache_root: Path, seed: int = 0, progress: bool = True,
                    records: Records | None = None, *, require_labels: bool = True) -> PreparedDataset:
    """Read one configured dataset (unless its ``records`` were read already) and prepare (or reuse) its
    cache at the configured size (with its masks and boxes, when it has them).

    ``require_labels=False`` accepts a dataset without image-level labels (to train detection or
    segmentation on it); by default such a dataset is refused (pretraining needs a classification head)."""
    if records is None:
        records = read_dataset(ds_cfg.type, ds_cfg.root, **ds_cfg.options)
    if require_labels and records.task is None:
        raise ValueError(f"dataset {ds_cfg.head_name!r} ({ds_cfg.type}) has no image-level labels to pretrain a "
                         "classification head on")
    images = prepare_images(records, cache_root, data_cfg.resolved_cache_size, data_cfg.prepare_workers,
                            data_cfg.fail_fraction, progress)
    skipped = list(images.failures)
    if skipped:
        log.warning("%s: %d unreadable image(s) skipped, e.g. %s (%s)", ds_cfg.head_name, len(skipped),
                    skipped[0][1], skipped[0][2])
    # unset -> the adapter's declared default (DatasetConfig resolves it already; other callers may not)
    uncertain = ds_cfg.uncertain if ds_cfg.uncertain is not None else default_uncertain(ds_cfg.type)
    return PreparedDataset(
        name=ds_cfg.head_name, records=records, images=images, uncertain=uncertain,
        lsr_ones_range=tuple(ds_cfg.lsr_ones_range), lsr_zeros_range=tuple(ds_cfg.lsr_zeros_range),
        train_cap=ds_cfg.max_train_images, cap_seed=seed, skipped=skipped,
    )


def make_loader(dataset: PreparedDataset, split: str, batch_size: int, workers: int, *, train: bool,
                max_batches: int | None = None, pin_memory: bool = False,
                targets: tuple[str, ...] = ("labels",), shard: tuple[int, int] | None = None) -> DataLoader:
    """A loader over one split. Train loaders shuffle with a :class:`SeededShuffle` and drop a last
    partial batch (unless the split is smaller than one batch); eval loaders keep order and all rows.

    ``targets``: which of :data:`TARGETS` the batches carry (default: the labels only, as Ark trains);
    ``masks`` and ``boxes`` come from the cache, at its resolution.

    ``shard=(rank, world_size)`` (a multi-process job, :mod:`arkx.data.sharding`): a train loader yields this
    rank's slice of every global batch of ``batch_size``; an eval loader reads this rank's contiguous part of
    the split (possibly empty: then ``None`` is returned)."""
    targets = _check_targets(targets)
    missing = [t for t in targets if t != "labels" and not _cache_has(dataset.images, t)]
    if missing:
        raise ArkxValueError(f"dataset {dataset.name!r} has no {' or '.join(missing)} in its prepared cache "
                             f"({getattr(dataset.images, 'folder', '?')}); its tasks: "
                             f"{[t.kind for t in dataset.tasks()]}")
    indices = dataset.indices(split)
    if len(indices) == 0:
        raise ValueError(f"dataset {dataset.name!r} has no usable images in split {split!r}")
    if shard is not None and not train:
        indices = shard_indices(indices, *shard)
        if len(indices) == 0:
            return None
    data = CachedImages(dataset.images, dataset.records.labels, indices, targets,
                        masks_exhaustive=dataset.records.masks_exhaustive)
    # Workers live for one pass over the loader (one dataset epoch), never longer: a schedule visits its
    # datasets one at a time, so one pool of ``workers`` processes is alive at any moment instead of one idle
    # pool per dataset (Ark-6 with 8 workers kept 48 processes and their prefetched batches). Starting a pool
    # per epoch costs a fork per worker; the order comes from the sampler in the main process either way.
    kwargs = dict(batch_size=batch_size, num_workers=workers, pin_memory=pin_memory, collate_fn=collate,
                  persistent_workers=False)
    if workers > 0:
        kwargs["prefetch_factor"] = 4
    if not train:
        return DataLoader(data, shuffle=False, drop_last=False, **kwargs)
    drop_last = len(data) >= batch_size
    limit = max_batches * batch_size if max_batches else None
    sampler = SeededShuffle(len(data), limit)
    if shard is not None:
        kwargs.pop("batch_size")
        return DataLoader(data, batch_sampler=ShardedBatches(sampler, batch_size, drop_last, *shard), **kwargs)
    return DataLoader(data, sampler=sampler, drop_last=drop_last, **kwargs)


def shuffle_of(loader: DataLoader) -> SeededShuffle:
    """The seeded sampler of a train loader (also under a multi-process job's :class:`ShardedBatches`)."""
    batches = loader.batch_sampler
    return batches.sampler if isinstance(batches, ShardedBatches) else loader.sampler
