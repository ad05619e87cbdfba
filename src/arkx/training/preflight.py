"""Pre-run checks: what the config schema cannot know but must fail (or be said) before work is done.

:func:`_check_before_work` runs before the run folder or a cache is made: the device exists, the
backbone checkpoint is a non-empty file, ``run.out``/``data.cache_dir`` are not files, and the model
builds and takes an image of the configured size (:func:`_check_model_fits`, on the meta device: no
memory, no time). :func:`_make_folder` creates a folder the run writes into with one-line errors. Once
the datasets are prepared, :func:`_check_trainable` refuses a dataset with fewer than 2 training images
and :func:`_warn_degenerate_labels` says which labels cannot learn or cannot be scored.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..config import ArkConfig, ConfigError
from ..errors import ArkxValueError
from ..evaluation.metrics import excluded_labels
from ..models.ark import build_model
from ..tasks import Task

log = logging.getLogger("arkx")


def _make_folder(path: Path, key: str) -> None:
    """Create a folder the run writes into; a file in its place or no permission is a one-line error."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}: {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{key}: cannot create the folder {path} ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: the folder {path} is not writable")


def _check_trainable(datasets: dict) -> None:
    for name, ds in datasets.items():
        n = len(ds.indices("train"))
        if n < 2:
            raise ArkxValueError(f"dataset {name!r} ({ds.records.root}) has {n} usable training image(s); training "
                                 "needs at least 2 (batch statistics such as BatchNorm's need more than one image)")


def _warn_degenerate_labels(datasets: dict, cfg: ArkConfig) -> None:
    """Say once, at the start, which labels cannot learn or cannot be scored (they would otherwise show up
    only as ``nan`` or as a mean over fewer labels)."""
    splits = list(dict.fromkeys(list(cfg.eval.splits) + (["test"] if cfg.eval.test_at_end else [])))
    for name, ds in datasets.items():
        if ds.task is None:  # a localization / segmentation-only dataset (Foundation X): no labels to check
            continue
        names, labels = ds.task.label_names, ds.records.labels
        train = labels[ds.indices("train")]
        known = ~np.isnan(train)
        if ds.uncertain == "ignore":
            known &= train != -1
        unknown = [n for n, k in zip(names, known.any(axis=0)) if not k]
        if len(unknown) == len(names):
            log.warning("dataset %r: no training image has a known label (%s): its head learns from the "
                        "consistency loss alone and its AUC is undefined", name, ", ".join(names))
        elif unknown:
            log.warning("dataset %r: label(s) %s have no known value in the train split: nothing trains "
                        "their outputs", name, ", ".join(unknown))
        for split in splits:
            idx = ds.indices(split)
            if len(idx) == 0:
                continue
            excluded = excluded_labels(ds.task.kind, labels[idx], names)
            if len(excluded) == len(names):
                log.warning("dataset %r, split %s: no label has both classes, so its AUC is undefined (nan)",
                            name, split)
            elif excluded:
                listed = "; ".join(f"{k}: {v}" for k, v in excluded.items())
                log.warning("dataset %r, split %s: %d of %d label(s) left out of the mean AUC (%s)", name, split,
                            len(excluded), len(names), listed)


def _check_before_work(cfg: ArkConfig) -> None:
    """What the config schema cannot know but must fail before the run folder or a cache is made."""
    from .engine import resolve_device

    try:
        resolve_device(cfg.run.device)
    except RuntimeError as err:
        raise ConfigError(f"invalid config:\n  run.device: {err}") from None
    ckpt = cfg.model.checkpoint
    if ckpt is not None:
        if not Path(ckpt).is_file():
            raise ConfigError(f"invalid config:\n  model.checkpoint: file {ckpt} not found")
        if Path(ckpt).stat().st_size == 0:
            raise ConfigError(f"invalid config: model.checkpoint: {ckpt} is empty (0 bytes)")
    for key, path in (("run.out", cfg.run.out), ("data.cache_dir", cfg.data.cache_dir)):
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise ConfigError(f"invalid config: {key}: {path} is a file, not a folder")
    _check_model_fits(cfg)


def _check_model_fits(cfg: ArkConfig) -> None:
    """Build the model once without weights (on the meta device: no memory, no time) and run an image of the
    configured size through it, so a typo in ``model.backbone_kwargs`` or an image size the backbone cannot
    take is found before any cache is prepared."""
    model_cfg = cfg.model.model_copy(update={"checkpoint": None})
    size = cfg.data.image_size
    heads = [Task("check", "multilabel", ("x",))]
    for device in ("meta", "cpu"):  # a backbone that cannot be built on meta is built for real, once
        try:
            with torch.device(device):
                model = build_model(model_cfg, heads).eval()
        except Exception as err:  # noqa: BLE001 - anything timm raises on these kwargs is the user's to fix
            if device == "meta" and "meta" in str(err):
                continue
            raise ConfigError(f"invalid config: model.backbone_kwargs: {cfg.model.backbone} cannot be built with "
                              f"{cfg.model.backbone_kwargs}: {_one_line(err)}") from None
        try:
            with torch.no_grad():
                model(torch.zeros(2, 3, size, size, device=device), "check")
        except Exception as err:  # noqa: BLE001
            if device == "meta" and "meta" in str(err):
                continue
            raise ConfigError(f"invalid config: data.image_size={size} does not fit model.backbone "
                              f"{cfg.model.backbone}: {_one_line(err)}") from None
        return


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]
