"""Backbones: any timm model, built offline (``pretrained=False``), optionally from a local file.

Loading a local checkpoint understands the files our users have: timm/torchvision state dicts,
the authors' Ark/Ark+ checkpoints (teacher/student dicts, ``module.`` prefixes, timm-0.5.4 Swin
layout) and arkx's own files. timm's own ``checkpoint_filter_fn`` for the model family remaps old
layouts (e.g. Swin's ``layers.N.downsample`` -> ``layers.N+1.downsample``) and resizes relative
position tables, so we reuse it rather than re-implementing the remap.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch
import timm
from torch import nn

from .weights import load_state_dict_file

log = logging.getLogger("arkx.models")

#: keys under which checkpoints store the weights we want, most preferred first (the teacher is
#: the released Ark model; timm saves EMA weights as ``state_dict_ema``).
STATE_DICT_KEYS = ("state_dict_ema", "teacher", "model_ema", "state_dict", "model", "student")
#: module prefixes to strip (DataParallel/DDP, wrappers of common training codes)
STRIP_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
#: keys that belong to heads/projectors, never to the backbone
NON_BACKBONE_PREFIXES = ("head.", "heads.", "omni_heads.", "projector.", "fc.", "classifier.", "head_dist.")


def create_backbone(name: str, checkpoint: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """A timm backbone without classifier (``num_classes=0``: ``forward`` returns pooled features)."""
    if name not in timm.list_models() and not timm.is_model(name):
        raise ValueError(f"unknown timm backbone {name!r}")
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    if checkpoint is not None:
        load_backbone_weights(model, checkpoint)
    return model


def pick_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object (see :data:`STATE_DICT_KEYS`)."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if key in obj and isinstance(obj[key], dict):
                return pick_state_dict(obj[key], source)
    raise ValueError(f"{source}: no state dict found (looked for a tensor mapping or keys {STATE_DICT_KEYS})")


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


def backbone_state_from_file(model: nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """Backbone weights in ``model``'s key layout, read from any supported checkpoint file."""
    own = model.state_dict()
    state = _strip_prefixes(pick_state_dict(load_state_dict_file(path), str(path)))
    # Drop head/projector keys of the training code, but keep backbone keys that happen to share a
    # prefix (e.g. ConvNeXt's ``head.norm`` is part of the headless backbone).
    state = {k: v for k, v in state.items() if k in own or not k.startswith(NON_BACKBONE_PREFIXES)}
    if set(own) - _optional_keys(own) <= set(state):
        return state  # already in this timm version's layout
    filter_fn = _family_filter(model)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except (KeyError, RuntimeError, ValueError) as err:
            # A foreign checkpoint can break the family's remap; the key report below says why.
            log.debug("checkpoint filter of %s failed: %s", type(model).__name__, err)
    return state


def _optional_keys(own: dict) -> set[str]:
    """Buffers that timm recomputes (attention masks, relative position indices) need not be stored."""
    return {k for k in own if k.endswith(("attn_mask", "relative_position_index"))}


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load backbone weights; any key or shape mismatch is an error listing the mismatched keys."""
    state = backbone_state_from_file(model, path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state) - _optional_keys(own))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(format_key_mismatch(str(path), missing, unexpected, mismatched, own, state))
    model.load_state_dict(state, strict=False)
    log.info("loaded backbone weights from %s (%d tensors)", path, len(state))


def format_key_mismatch(source, missing, unexpected, mismatched, own, state, limit: int = 10) -> str:
    def show(keys):
        return ", ".join(keys[:limit]) + (f" … (+{len(keys) - limit} more)" if len(keys) > limit else "")

    lines = [f"{source} does not fit this architecture:"]
    if missing:
        lines.append(f"  missing in file ({len(missing)}): {show(missing)}")
    if unexpected:
        lines.append(f"  not in model ({len(unexpected)}): {show(unexpected)}")
    if mismatched:
        shapes = [f"{k} file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
        lines.append(f"  shape differs ({len(mismatched)}): {show(shapes)}")
    return "\n".join(lines)
