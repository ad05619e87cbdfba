"""The initial model of a fine-tuning run: parsed from ``init``, loaded, its pretraining heads removed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import ArkxFileNotFoundError, ArkxValueError
from .settings import INIT_KINDS, FinetuneConfig

log = logging.getLogger("arkx.transfer")


# ---------------------------------------------------------------------------- the initial model
@dataclass(frozen=True)
class InitSpec:
    kind: str
    path: Path | None


def parse_init(text: str) -> InitSpec:
    """``run:DIR``, ``released:FILE``, ``timm:FILE`` or ``scratch``; a bad string is a one-line error."""
    text = str(text).strip()
    if text == "scratch":
        return InitSpec("scratch", None)
    kind, sep, path = text.partition(":")
    expected = "expected run:DIR, released:FILE, timm:FILE or scratch"
    if not sep or kind not in INIT_KINDS or kind == "scratch" or not path:
        raise ArkxValueError(f"init {text!r}: {expected}")
    if not Path(path).exists():
        raise ArkxFileNotFoundError(f"init {text!r}: {path} not found")
    return InitSpec(kind, Path(path))


@dataclass
class _Initial:
    model: Any  # ArkModel without heads
    image_size: int | None
    cache_size: int | None
    cache_dir: Path | None


def load_initial_model(spec: InitSpec, cfg: FinetuneConfig, variant="auto") -> _Initial:
    """The initial model, its heads removed, and the input / cache size it was trained at (if known).

    ``variant``: for ``released:`` inits, as :func:`arkx.load_released` takes it (``auto``: from the file)."""
    from ...models.ark import ArkModel
    from ...models.backbones import create_backbone

    if spec.kind == "run":
        from ...api import load_model
        from ..embed import model_sizes

        model = load_model(spec.path, "teacher")
        sizes = model_sizes(spec.path)
        initial = _Initial(model, sizes.image_size, sizes.cache_size, sizes.cache_dir)
    elif spec.kind == "released":
        from ...models.released import load_released

        model = load_released(spec.path, variant)
        initial = _Initial(model, int(model.arkx_source["image_size"]), None, None)
    else:
        checkpoint = spec.path if spec.kind == "timm" else None
        backbone = create_backbone(cfg.backbone, checkpoint, **cfg.backbone_kwargs)
        model = ArkModel(backbone, [], projector=cfg.projector, projector_dim=cfg.projector_dim)
        initial = _Initial(model, None, None, None)
    # the new head replaces the pretraining heads: they predict other datasets' labels (named, never silent)
    dropped = [f"{t.name} ({t.kind})" for t in initial.model.tasks()]
    if dropped:
        log.info("fine-tuning from %s: its pretraining heads are not used: %s", spec.path, ", ".join(dropped))
    initial.model.remove_heads()
    return initial


def with_new_head(model, task, features: str):
    """``model`` with one new head for ``task`` (its kind builds it: a linear layer on the projector or the
    backbone features for classification, a decoder on the feature pyramid for segmentation/detection)."""
    if features == "backbone" and task.is_classification:
        model.projector = nn.Identity()
        model.embed_dim = int(model.backbone.num_features)
    model.add_task(task)
    return model


def _input_size(model) -> int:
    """The side a timm backbone was built for (its patch embedding records it), else 224."""
    size = getattr(getattr(model.backbone, "patch_embed", None), "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[-1]
    return int(size) if size else 224
