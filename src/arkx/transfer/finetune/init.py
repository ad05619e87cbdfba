"""The initial model of a fine-tuning run: parsed from ``init``, loaded, its pretraining heads removed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import ArkxFileNotFoundError, ArkxValueError
from .settings import INIT_KINDS, REUSABLE_HEAD_KINDS, FinetuneConfig

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
    # the segmentation / detection heads the initial model had, by (head dict, name): kept aside so a
    # fine-tuning on the same dataset and labels can start from them (:func:`reusable_head`)
    pretrained_heads: dict[tuple[str, str], tuple[Any, nn.Module]] = field(default_factory=dict)


def load_initial_model(spec: InitSpec, cfg: FinetuneConfig, variant="auto") -> _Initial:
    """The initial model, its heads removed, and the input / cache size it was trained at (if known).

    ``variant``: for ``released:`` inits, as :func:`arkx.load_released` takes it (``auto``: from the file)."""
    from ...models.ark import ArkModel
    from ...models.backbones import create_backbone

    if spec.kind == "run":
        from ...api import load_model
        from ..embed import model_sizes

        model = load_model(spec.path, cfg.which)
        sizes = model_sizes(spec.path)
        initial = _Initial(model, sizes.image_size, sizes.cache_size, sizes.cache_dir)
    elif spec.kind == "released":
        model = _load_released(spec.path, cfg, variant)
        initial = _Initial(model, int(model.arkx_source["image_size"]), None, None)
    else:
        checkpoint = spec.path if spec.kind == "timm" else None
        backbone = create_backbone(cfg.backbone, checkpoint, **cfg.backbone_kwargs)
        model = ArkModel(backbone, [], projector=cfg.projector, projector_dim=cfg.projector_dim)
        initial = _Initial(model, None, None, None)
    # the new head replaces the pretraining heads: they predict other datasets' labels (named, never silent);
    # segmentation / detection heads are kept aside, for a fine-tuning on the same dataset and labels
    from ...tasks import get_kind

    for task in initial.model.tasks():
        if task.kind in REUSABLE_HEAD_KINDS and cfg.reuse_head:
            attr = get_kind(task.kind).head_attr
            initial.pretrained_heads[(attr, task.name)] = (task, getattr(initial.model, attr)[task.name])
    dropped = [f"{t.name} ({t.kind})" for t in initial.model.tasks() if t.kind not in REUSABLE_HEAD_KINDS
               or not cfg.reuse_head]
    if dropped:
        log.info("fine-tuning from %s: its pretraining heads are not used: %s", spec.path, ", ".join(dropped))
    if initial.pretrained_heads:
        log.info("fine-tuning from %s: its pretrained heads %s are reused if the target is the same dataset, task "
                 "and labels", spec.path, ", ".join(f"{n} ({t.kind})" for (_, n), (t, _) in
                                                    initial.pretrained_heads.items()))
    branches = initial.model.branches()
    if branches:
        log.info("fine-tuning from %s: its pretrained shared branches are reused: %s", spec.path, ", ".join(branches))
    initial.model.remove_heads()
    return initial


def _load_released(path: Path, cfg: FinetuneConfig, variant):
    """An authors' file: Foundation X (``{'model', 'teacher_model'}``, built at ``cfg.image_size`` or their
    224 px) or Ark / Ark+ (``variant``)."""
    from ...models.foundation_x_checkpoint import DEFAULT_IMAGE_SIZE, is_foundation_x_checkpoint, load_foundation_x
    from ...models.released import load_released
    from ...models.weights import load_state_dict_file

    if is_foundation_x_checkpoint(load_state_dict_file(path)):
        return load_foundation_x(path, cfg.which, image_size=cfg.image_size or DEFAULT_IMAGE_SIZE)
    return load_released(path, variant, which=cfg.which)


def reusable_head(initial: _Initial, task) -> nn.Module | None:
    """The initial model's head of ``task``'s dataset, if it was pretrained for the same kind and labels."""
    from ...tasks import get_kind

    found = initial.pretrained_heads.get((get_kind(task.kind).head_attr, task.name))
    if found is None:
        return None
    pretrained, head = found
    if tuple(pretrained.label_names) != tuple(task.label_names):
        log.info("the pretrained %s head %r is not reused: its labels %s are not the target's %s", task.kind,
                 task.name, list(pretrained.label_names), list(task.label_names))
        return None
    return head


def with_new_head(model, task, features: str):
    """``model`` with one new head for ``task`` (its kind builds it: a linear layer on the projector or the
    backbone features for classification, a decoder on the feature pyramid for segmentation/detection)."""
    if features == "backbone" and task.is_classification:
        model.projector = nn.Identity()
        model.embed_dim = int(model.backbone.num_features)
    model.add_task(task)
    return model


def start_from_pretrained_head(model, task, pretrained: nn.Module | None):
    """The new head of ``task`` starts from ``pretrained`` (:func:`reusable_head`; None: nothing to do); a head
    whose shapes differ (built with other options) is an error naming the tensors."""
    if pretrained is None:
        return model
    from ...tasks import get_kind

    head = getattr(model, get_kind(task.kind).head_attr)[task.name]
    own, theirs = head.state_dict(), pretrained.state_dict()
    differ = sorted(k for k in set(own) | set(theirs) if k not in own or k not in theirs
                    or own[k].shape != theirs[k].shape)
    if differ:
        raise ArkxValueError(f"the pretrained {task.kind} head {task.name!r} does not fit the new one "
                             f"({', '.join(differ[:5])}); set reuse_head: false to start it afresh")
    head.load_state_dict(theirs)
    log.info("the %s head %r starts from the initial model's (same dataset and labels)", task.kind, task.name)
    return model


def _input_size(model) -> int:
    """The side a timm backbone was built for (its patch embedding records it), else 224."""
    size = getattr(getattr(model.backbone, "patch_embed", None), "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[-1]
    return int(size) if size else 224
