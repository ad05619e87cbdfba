"""Backbones: any timm model, built offline (``pretrained=False``), optionally from a local file.

Loading a local checkpoint understands the files our users have: timm/torchvision state dicts,
the authors' Ark/Ark+ checkpoints (teacher/student dicts, ``module.`` prefixes, timm-0.5.4 Swin
layout) and arkx's own files. timm's own ``checkpoint_filter_fn`` for the model family remaps old
layouts (e.g. Swin's ``layers.N.downsample`` -> ``layers.N+1.downsample``), so we reuse it rather
than re-implementing the remap.

Nothing is dropped or reshaped silently:

- the parts of a checkpoint that a backbone has no place for (an Ark projector and heads, a
  classifier) are named in a log record; a projector or heads dropped is a WARNING, because
  ``model.embed()`` then starts from a random projection, not the checkpoint's;
- the same family filter also *interpolates* tensors whose shape differs (Swin's relative position
  tables of another window size, a patch embedding of another patch size). That changes what the
  weights compute, so it is refused unless the caller allows it (``model.checkpoint_resize``), and
  then each interpolated tensor is logged. Every other shape difference is an error.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
import timm
from torch import nn

from ..errors import ArkxValueError
from .weights import load_state_dict_file

log = logging.getLogger("arkx.models")

#: keys under which checkpoints store the weights we want, most preferred first (the teacher is
#: the released Ark model; timm saves EMA weights as ``state_dict_ema``; an arkx ``last.pt`` has both, and
#: its ``teacher`` holds the projector and heads too, so reading it keeps the warning that they are not loaded).
STATE_DICT_KEYS = ("teacher", "state_dict_ema", "model_ema", "state_dict", "model", "student")
#: module prefixes to strip (DataParallel/DDP, wrappers of common training codes)
STRIP_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
#: keys that belong to heads/projectors, never to the backbone
NON_BACKBONE_PREFIXES = ("head.", "heads.", "omni_heads.", "projector.", "fc.", "classifier.", "head_dist.")
#: the parts of an Ark model (ours: ``heads.<name>``; the authors': ``omni_heads.<index>``) whose loss
#: changes what ``ArkModel.embed`` and the heads return; the other prefixes are classifiers.
ARK_PARTS = ("projector", "heads", "omni_heads")
#: hint appended to a shape error when timm could interpolate (some of) the differing tensors
RESIZE_HINT = ("{n} marked (resizable) can be interpolated by timm (the checkpoint was trained with another window, "
               "image or patch size): set model.checkpoint_resize: true to load them interpolated (each is logged)")


def create_backbone(name: str, checkpoint: str | Path | None = None, *, checkpoint_resize: bool = False,
                    **kwargs: Any) -> nn.Module:
    """A timm backbone without classifier (``num_classes=0``: ``forward`` returns pooled features).

    ``checkpoint_resize`` allows the checkpoint's position tables / patch embedding to be
    interpolated to this backbone's window / patch size (see :func:`load_backbone_weights`).
    ``kwargs`` go to timm unchanged: a Swin accepts only its ``img_size`` unless built with
    ``strict_img_size=False`` (then any multiple of its patch size; see :mod:`arkx.models.features`).
    """
    if name not in timm.list_models() and not timm.is_model(name):
        raise ArkxValueError(f"unknown timm backbone {name!r}")
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    # What rebuilds this backbone in plain timm; an export (models.export) writes it beside the weights.
    model.arkx_backbone = dict(name=name, kwargs=dict(kwargs))
    if checkpoint is not None:
        load_backbone_weights(model, checkpoint, resize=checkpoint_resize)
    return model


def pick_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object (see :data:`STATE_DICT_KEYS`)."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if key in obj and isinstance(obj[key], dict):
                log.info("%s: using the weights stored under %r", source, key)
                return pick_state_dict(obj[key], source)
    raise ArkxValueError(f"{source}: no state dict found (looked for a tensor mapping or keys {STATE_DICT_KEYS})")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _family_filter(model: nn.Module):
    """timm's checkpoint filter for the model's family, if the family module has one."""
    module = importlib.import_module(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def describe_unused(keys: Iterable[str]) -> list[str]:
    """Checkpoint keys grouped by part, e.g. ``projector.* (2 tensors)``, ``heads.* for 'nih', 'vindr' (4 tensors)``."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        groups.setdefault(key.split(".")[0], []).append(key)
    out = []
    for part, members in groups.items():
        text = f"{part}.*"
        if part in ("heads", "omni_heads"):
            names = sorted({k.split(".")[1] for k in members if k.count(".") >= 2},
                           key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
            text += " for " + ", ".join(n if n.isdigit() else repr(n) for n in names)
        out.append(f"{text} ({len(members)} tensor{'s' if len(members) != 1 else ''})")
    return out


def _report_unused(source: str, unused: Iterable[str]) -> None:
    """Say which parts of the file are not loaded; loudly when they are an Ark projector or heads."""
    unused = sorted(unused)
    if not unused:
        return
    groups = ", ".join(describe_unused(unused))
    if any(k.split(".")[0] in ARK_PARTS for k in unused):
        log.warning("%s: only the backbone is loaded; not used: %s. The projector and heads start from random "
                    "weights, so model.embed() is not this checkpoint's embedding (model.checkpoint loads a "
                    "backbone only; an arkx export loads whole with arkx.load_model, an authors' Ark/Ark+ file with "
                    "arkx.load_released).", source, groups)
    else:
        log.info("%s: not used (a backbone has no classifier): %s", source, groups)


def backbone_state_from_file(model: nn.Module, path: str | Path, *, resize: bool = False
                             ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[tuple, tuple]]]:
    """Backbone weights in ``model``'s key layout, read from any supported checkpoint file, and the
    tensors that timm's family filter interpolated (``key -> (file shape, new shape)``).

    Without ``resize`` the interpolated tensors are put back as the file has them, so the caller's
    shape check reports them; with it they stay interpolated.
    """
    own = model.state_dict()
    obj = load_state_dict_file(path)
    from .foundation_x_checkpoint import foundation_x_backbone_state, is_foundation_x_checkpoint

    if is_foundation_x_checkpoint(obj):  # its Swin sits under backbone.0. beside the task branches
        return foundation_x_backbone_state(obj, model, source=str(path), resize=resize)
    state = _strip_prefixes(pick_state_dict(obj, str(path)))
    # Drop head/projector keys of the training code, but keep backbone keys that happen to share a
    # prefix (e.g. ConvNeXt's ``head.norm`` is part of the headless backbone).
    _report_unused(str(path), [k for k in state if k not in own and k.startswith(NON_BACKBONE_PREFIXES)])
    state = {k: v for k, v in state.items() if k in own or not k.startswith(NON_BACKBONE_PREFIXES)}
    return to_model_layout(model, state, resize=resize)


def to_model_layout(model: nn.Module, state: dict[str, torch.Tensor], *, resize: bool = False
                    ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[tuple, tuple]]]:
    """Backbone weights (already without wrapper prefixes and heads) in ``model``'s key layout, through
    timm's family filter when they are not in it yet (e.g. timm 0.5.4's Swin), and the interpolated
    tensors (see :func:`backbone_state_from_file`)."""
    own = model.state_dict()
    in_layout = set(own) - _optional_keys(own) <= set(state)
    if in_layout and not _shape_differences(own, state):
        return state, {}
    filter_fn = _family_filter(model)
    if filter_fn is None:
        return state, {}
    try:
        with warnings.catch_warnings():
            # torch's notes on timm's interpolation internals (non-contiguous input, indexing deprecation)
            # say nothing to a user; what was interpolated is logged below instead.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"timm\.")
            filtered = filter_fn(dict(state), model)
    except Exception as err:  # noqa: BLE001 - timm's filters fail in many ways on a foreign file
        # A foreign checkpoint (another depth, another family) can break the family's remap; the key
        # report of the caller then says what does not fit, which is the useful message.
        log.debug("checkpoint filter of %s failed: %s", type(model).__name__, err)
        return state, {}
    resized = _interpolated(state, filtered)
    if not resize:
        filtered.update({k: state[k] for k in resized})
    return filtered, resized


def _shape_differences(own: dict, state: dict) -> list[str]:
    return [k for k in own if k in state and own[k].shape != state[k].shape]


def _interpolated(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, tuple[tuple, tuple]]:
    """Keys whose tensor the filter replaced by one with another number of elements.

    A renamed tensor is the same object (the filter moves it), so identity tells a remap from a
    new tensor; a new tensor with the same element count is a layout change (e.g. a linear patch
    embedding stored as a convolution), not an interpolation.
    """
    originals = {id(v) for v in before.values()}
    return {k: (tuple(before[k].shape), tuple(v.shape)) for k, v in after.items()
            if id(v) not in originals and k in before and before[k].numel() != v.numel()}


def _optional_keys(own: dict) -> set[str]:
    """Buffers that timm recomputes (attention masks, relative position indices) need not be stored."""
    return {k for k in own if k.endswith(("attn_mask", "relative_position_index"))}


def load_backbone_weights(model: nn.Module, path: str | Path, *, resize: bool = False) -> None:
    """Load backbone weights; any key or shape mismatch is an error listing the mismatched keys.

    A shape difference that timm knows how to interpolate (Swin's relative position tables, a patch
    embedding) is loaded interpolated only with ``resize=True``, and each such tensor is logged.
    """
    state, resized = backbone_state_from_file(model, path, resize=resize)
    own = model.state_dict()
    missing = sorted(set(own) - set(state) - _optional_keys(own))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ArkxValueError(format_key_mismatch(str(path), missing, unexpected, mismatched, own, state,
                                                 resizable=set(resized)))
    model.load_state_dict(state, strict=False)
    for key, (file_shape, new_shape) in resized.items():
        log.warning("%s: %s interpolated from %s to %s (model.checkpoint_resize)", path, key, file_shape, new_shape)
    log.info("loaded backbone weights from %s (%d tensors)", path, len(state))


def format_key_mismatch(source, missing, unexpected, mismatched, own, state, limit: int = 10,
                        resizable: set[str] = frozenset()) -> str:
    """One message listing the missing, unexpected and differently shaped keys (``limit`` of each)."""
    def show(keys):
        return ", ".join(keys[:limit]) + (f" … (+{len(keys) - limit} more)" if len(keys) > limit else "")

    lines = [f"{source} does not fit this architecture:"]
    if missing:
        lines.append(f"  missing in file ({len(missing)}): {show(missing)}")
    if unexpected:
        lines.append(f"  not in model ({len(unexpected)}): {show(unexpected)}")
    if mismatched:
        shapes = [f"{k} file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  + (" (resizable)" if k in resizable else "") for k in mismatched]
        lines.append(f"  shape differs ({len(mismatched)}): {show(shapes)}")
        if resizable & set(mismatched):
            lines.append("  " + RESIZE_HINT.format(n=len(resizable & set(mismatched))))
    return "\n".join(lines)
