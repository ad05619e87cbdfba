"""Model files for other tools: a backbone that plain timm loads, and ``arkx info`` for any model file.

:func:`export_timm` writes the backbone of an :class:`~arkx.models.ark.ArkModel` as a ``.safetensors``
file in the current timm layout (the keys of ``timm.create_model(name, num_classes=0)``), so

    timm.create_model(name, num_classes=0, pretrained=False, checkpoint_path=FILE, **model_args)

loads it strictly and returns arkx's pooled backbone features. The file is already in the new Swin
layout (patch merging at the start of a stage), so timm's Swin ``checkpoint_filter_fn``, which remaps
only files that have ``layers.0.downsample`` (the old layout), leaves it unchanged too.

Beside the weights, the config (architecture, ``model_args``, input size, mean/std, the heads with
label names in order, the datasets, arkx version) goes into the safetensors metadata (key ``arkx``)
and into a sidecar ``<stem>.json`` shaped like timm's hub ``config.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArkxFileNotFoundError, ArkxValueError
from .weights import load_state_dict_file

TIMM_EXPORT_FORMAT = "arkx-timm-backbone/1"
ARKX_EXPORT_FORMAT = "arkx-model/1"  # written by arkx.api.export_model
ARKX_CHECKPOINT_FORMAT = "arkx-checkpoint/1"  # written by arkx.training.state.save_checkpoint
#: ImageNet statistics: what arkx's transforms and the authors' training use
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def export_timm(model: nn.Module, path: str | Path, *, image_size: int | None = None) -> Path:
    """Write ``model``'s backbone for plain timm (see the module docstring); returns ``path``.

    ``model`` is an ArkModel (or a backbone) built by arkx (``create_backbone`` records the timm name
    and arguments). ``image_size`` defaults to the model's (released model or Swin ``img_size``).
    """
    from safetensors.torch import save_file

    from .. import __version__
    from ..data.transforms import MEAN, STD

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ArkxValueError(f"{path}: a timm export is a .safetensors file")
    backbone = getattr(model, "backbone", model)
    built = getattr(backbone, "arkx_backbone", None)
    if built is None:
        raise ArkxValueError("export_timm: this backbone was not built by arkx (no recorded timm name/arguments); "
                             "build it with arkx.models.backbones.create_backbone")
    heads = model.head_config() if hasattr(model, "head_config") else []
    size = image_size or _image_size(model, backbone)
    config = {
        "format": TIMM_EXPORT_FORMAT, "architecture": built["name"], "model_args": _jsonable(built["kwargs"]),
        "num_classes": 0, "num_features": int(backbone.num_features),
        "pretrained_cfg": {"input_size": [3, size, size] if size else None, "mean": list(MEAN), "std": list(STD),
                           "num_classes": 0},
        "heads": heads, "datasets": _dataset_names(heads), "arkx_version": __version__,
        "source": getattr(model, "arkx_source", {}).get("format", "arkx"),
        "note": "backbone only: heads/projector are not in this file (arkx.load_model reads a whole arkx export)",
    }
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"arkx": json.dumps(config)})
    path.with_suffix(".json").write_text(json.dumps(config, indent=1) + "\n")
    return path


def _image_size(model: nn.Module, backbone: nn.Module) -> int | None:
    source = getattr(model, "arkx_source", {})
    if source.get("image_size"):
        return int(source["image_size"])
    img_size = getattr(getattr(backbone, "patch_embed", None), "img_size", None)
    if img_size:
        return int(img_size[0] if isinstance(img_size, (tuple, list)) else img_size)
    input_size = getattr(backbone, "pretrained_cfg", {}).get("input_size")
    return int(input_size[-1]) if input_size else None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


# ------------------------------------------------------------------------------------ arkx info
def model_info(path: str | Path) -> dict[str, Any]:
    """What a model file or run folder is: format, backbone, input size, normalisation, heads (label
    names in order), datasets, arkx version. Reads arkx exports (whole model or timm backbone), run
    folders (their ``teacher.safetensors`` or ``checkpoints/last.pt``) and the authors' Ark/Ark+ files."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "teacher.safetensors", path / "checkpoints" / "last.pt"):
            if candidate.is_file():
                return dict(model_info(candidate), run_folder=str(path))
        raise ArkxFileNotFoundError(f"{path}: a folder without teacher.safetensors or checkpoints/last.pt "
                                    "(not an arkx run folder)")
    if not path.is_file():
        raise ArkxFileNotFoundError(f"no model file at {path}")
    if path.suffix == ".safetensors":
        return _safetensors_info(path)
    return _torch_file_info(path)


def _safetensors_info(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("arkx", "null") or "null")
            keys = list(handle.keys())
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        raise ArkxValueError(f"{path}: not a readable .safetensors file ({type(err).__name__})") from None
    if isinstance(meta, dict) and meta.get("format") == TIMM_EXPORT_FORMAT:
        cfg = meta["pretrained_cfg"]
        return dict(file=str(path), format=f"{TIMM_EXPORT_FORMAT} (backbone for plain timm)",
                    backbone=meta["architecture"], backbone_args=meta["model_args"],
                    input_size=cfg["input_size"][-1] if cfg.get("input_size") else None,
                    mean=cfg["mean"], std=cfg["std"], heads=meta["heads"], datasets=meta["datasets"],
                    arkx_version=meta.get("arkx_version"), tensors=len(keys))
    if isinstance(meta, dict) and meta.get("format") == ARKX_EXPORT_FORMAT:
        model, norm = meta["model"], meta.get("normalization", {})
        return dict(file=str(path), format=f"{ARKX_EXPORT_FORMAT} (whole arkx model: arkx.load_model)",
                    backbone=model["backbone"], backbone_args=model.get("backbone_kwargs", {}),
                    projector=f"{model.get('projector')} {model.get('projector_dim')}",
                    input_size=meta.get("image_size"), mean=norm.get("mean"), std=norm.get("std"),
                    heads=meta["heads"], datasets=_dataset_names(meta["heads"]),
                    arkx_version=meta.get("arkx_version"), tensors=len(keys))
    from safetensors.torch import load_file

    return _plain_state_info(path, load_file(str(path)), "safetensors state dict without arkx metadata")


def _torch_file_info(path: Path) -> dict[str, Any]:
    obj = load_state_dict_file(path)
    if isinstance(obj, dict) and obj.get("format") == ARKX_CHECKPOINT_FORMAT:
        return _arkx_checkpoint_info(path, obj)
    from .foundation_x_checkpoint import foundation_x_info, is_foundation_x_checkpoint

    if is_foundation_x_checkpoint(obj):
        return foundation_x_info(path, obj)
    from .released import authors_state, describe_authors_state, detect_variant, is_authors_layout

    try:
        state = authors_state(path)
    except ArkxValueError:
        state = None
    if state is not None and is_authors_layout(state):
        found = describe_authors_state(state)
        variant = detect_variant(state)
        heads = _authors_heads(variant, found["head_sizes"])
        stored = "teacher" if isinstance(obj, dict) and "teacher" in obj else "state dict"
        return dict(file=str(path), format=f"authors' Ark checkpoint ({stored}"
                    f"{', timm 0.5.4 layout' if found['timm_054_layout'] else ''}); "
                    + (f"matches released variant {variant.name!r}: arkx.load_released" if variant else
                       "no released variant matches: arkx.load_released with variant= and heads="),
                    backbone=(variant.backbone if variant else "Swin") + f" (embed_dim {found['embed_dim']}, depths "
                    f"{found['depths']}, window {found['window_size']})",
                    projector=f"{found['projector']} {found['projector_dim']}", input_size=found.get("image_size"),
                    mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), heads=heads,
                    datasets=[h["name"].split(" ")[0] for h in heads], arkx_version=None, tensors=len(state))
    return _plain_state_info(path, state if state is not None else obj, "torch state dict")


def _authors_heads(variant, sizes: list[int]) -> list[dict]:
    """The heads of an authors' file: the variant's; else the Ark-6 (+COVIDx) order when the head sizes
    are those datasets' label counts (marked as read from the sizes); else numbered outputs."""
    from .released import ARK6_ORDER, authors_head

    def as_dict(spec, note=""):
        return dict(name=spec.name + note, kind=spec.kind, label_names=list(spec.label_names))

    if variant is not None:
        return [as_dict(h) for h in variant.heads()]
    for order in (ARK6_ORDER, ARK6_ORDER + ("COVIDx",)):
        specs = [authors_head(d) for d in order]
        if [len(h.label_names) for h in specs] == sizes:
            return [as_dict(h, f" (omni_heads.{i}, by its size)") for i, h in enumerate(specs)]
    return [dict(name=f"omni_heads.{i}", kind="?", label_names=[f"output {j}" for j in range(n)])
            for i, n in enumerate(sizes)]


def _arkx_checkpoint_info(path: Path, state: dict) -> dict[str, Any]:
    extra = state.get("extra", {})
    heads = extra.get("heads", [])
    info = dict(file=str(path), format=f"{ARKX_CHECKPOINT_FORMAT} (arkx run checkpoint, step {state.get('step_done')})",
                heads=heads, datasets=_dataset_names(heads), arkx_version=extra.get("arkx_version"),
                tensors=len(state.get("teacher", {})))
    config_file = path.parent.parent / "config.yaml"
    if config_file.is_file():
        from ..config import load_config

        cfg = load_config(config_file)
        info.update(backbone=cfg.model.backbone, backbone_args=cfg.model.backbone_kwargs,
                    projector=f"{cfg.model.projector} {cfg.model.projector_dim}", input_size=cfg.data.image_size,
                    mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    return info


def _plain_state_info(path: Path, obj: Any, kind: str) -> dict[str, Any]:
    tensors = obj if isinstance(obj, dict) else {}
    tensors = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ArkxValueError(f"{path}: not a model file arkx recognises (no tensors, no arkx or Ark layout)")
    prefixes = sorted({re.sub(r"^module\.", "", k).split(".")[0] for k in tensors})
    return dict(file=str(path), format=f"{kind} ({len(tensors)} tensors; top-level modules: {', '.join(prefixes[:8])}"
                f"{' …' if len(prefixes) > 8 else ''}); loads as a backbone with model.checkpoint",
                tensors=len(tensors))


INFO_FIELDS = (("format", "format"), ("backbone", "backbone"), ("backbone_args", "backbone args"),
               ("projector", "projector"), ("input_size", "input size"), ("mean", "mean"), ("std", "std"),
               ("datasets", "datasets"), ("arkx_version", "arkx version"), ("tensors", "tensors"),
               ("run_folder", "run folder"), ("file", "file"))


def format_info(info: dict[str, Any]) -> str:
    """``model_info`` as the text ``arkx info`` prints: one field a line, then one line per head."""
    lines = []
    for key, label in INFO_FIELDS:
        if key not in info:
            continue
        value = info[key]
        if value is None:
            value = "not recorded"
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "none"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
        lines.append(f"{label + ':':<15}{value}")
    if "heads" in info:
        lines.append(f"{'heads:':<15}{len(info['heads'])}")
        for head in info["heads"]:
            lines.append(f"  {head['name']} ({head['kind']}, {len(head['label_names'])}): "
                         + ", ".join(head["label_names"]))
    return "\n".join(lines)


def _dataset_names(heads: list[dict]) -> list[str]:
    """The datasets of a model's heads, each once, in head order (a dataset may have several kinds of head)."""
    return list(dict.fromkeys(h["name"] for h in heads))
