"""The authors' released Foundation X checkpoints, loaded into an :class:`~arkx.models.ark.ArkModel`.

What their files are (github.com/jlianglab/Foundation_X, read at commit 5e0b473): ``save_model`` in
``utils_segmentation.py`` writes ``{'model': student, 'teacher_model': EMA teacher, 'optimizer', 'epoch'}``
(``save_model2``: two optimizers). Both models are the DINO detector of ``models/dino/dino_F6.py``, so
their keys are:

- ``backbone.0.*``: the Swin of ``models/dino/swin_transformer_CyclicSegmentation.py`` (the
  Swin-Transformer-Object-Detection Swin: patch merging at the END of a stage, as timm 0.5.4 stores it;
  no attention-mask buffers) and, inside that same module, what the other tasks use:
  ``norm`` (the classification path's final LayerNorm), ``classification_heads.<i>`` (one Linear per
  dataset on the pooled features; no projector), ``head`` (never used with a dataset index),
  ``Locnorm<i>`` (LayerNorms before the detector), ``Segnorm<i>`` (built, never applied),
  ``segmentation_PPN`` / ``segmentation_FPN`` (their UperNet: BatchNorm PSP + FPN fuse) and
  ``segmentation_heads.<i>`` (3x3 convs);
- ``backbone.1.*``: the position encoding of the ``Joiner`` (``models/dino/backbone.py``);
- ``transformer.*`` (``deformable_transformer_F6.py``: encoder, one decoder per dataset, two-stage
  heads), ``input_proj.*``, ``label_enc.*``, ``class_embed*``, ``bbox_embed*``, ``refpoint_embed*``
  (``dino_F6.py``): the localization branch.

What arkx loads, and what it reports:

- the Swin backbone always, through the same timm 0.5.4 layout mapping as the Ark checkpoints
  (:func:`arkx.models.backbones.to_model_layout`); every backbone weight must be there, else an error;
  the relative position indices are compared with timm's. Their Swin shifts windows in EVERY stage, even
  where a stage's map is no larger than the window (Swin-B at 224 px: the 7x7 last stage), where timm
  (0.5.4 and current) does not; arkx builds timm's Swin with ``always_partition=True`` so it computes
  what their model computed. Their Swin pads a map to whole windows before the cyclic shift, timm after:
  an image size that needs such padding is refused (both agree when every stage's map is a multiple of
  the window, e.g. 224 px with window 7).
- ``classification_heads.<i>`` -> ``heads[<name>]`` when the caller names the datasets (``heads=``): the
  file stores no label names and their order lives in their data loaders, so arkx does not guess them.
- everything else (the localization branch, their UperNet and its heads, the LayerNorms only their
  detector reads): their layouts are not arkx's (:mod:`arkx.models.detection`,
  :class:`arkx.models.segmentation.UperNetDecoder`), so they are reported by name, never dropped silently:
  :class:`FoundationXLoadReport` (on ``model.load_report``) and one log line per part.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ArkxValueError
from ..tasks import Task
from .weights import load_state_dict_file

log = logging.getLogger("arkx.models")

#: which model of their file: arkx's name -> their dict key
FILE_KEYS = {"teacher": "teacher_model", "student": "model"}
#: the Swin inside their Joiner (``backbone = Joiner(swin, position_encoding)``: an nn.Sequential)
BACKBONE_PREFIX = "backbone.0."
#: the keys of their Swin that are the backbone proper (the rest of that module serves the task branches)
SWIN_PARTS = ("patch_embed.", "layers.", "norm.", "absolute_pos_embed")
#: a key every Foundation X file has (how one is told from other checkpoints)
MARKER = BACKBONE_PREFIX + "patch_embed.proj.weight"
#: the timm architecture their Swin maps onto (every size is set from the file's tensors)
TIMM_SWIN = "swin_base_patch4_window7_224"
#: their pretraining input size (config swin_B_224_22k)
DEFAULT_IMAGE_SIZE = 224
#: the datasets their code comments name for ``classification_heads`` (swin_transformer_CyclicSegmentation.py)
AUTHORS_CLASSIFICATION_HEADS = ("TBX11k", "NODE21", "CANDID-PTX", "RSNAPneumonia", "ChestX-Det", "SIIM-ACR",
                                "CheXpert", "NIH ChestX-ray14", "VinDr-CXR", "NIH Shenzhen CXR", "MIMIC-II")

THEIR_UPERNET = "their UperNet (BatchNorm PSP + FPN fuse), another layout than arkx's UperNetDecoder"
#: (key prefix, why arkx does not load it), first match wins; keys matching none are "not an arkx part"
UNUSED_PARTS: tuple[tuple[str, str], ...] = (
    (BACKBONE_PREFIX + "classification_heads.", ("classification heads: the file has no label names; pass "
                                                "heads= to load them")),
    (BACKBONE_PREFIX + "head.", "the Swin's generic classifier (their forward reads classification_heads)"),
    (BACKBONE_PREFIX + "Locnorm", ("LayerNorms before their DINO encoder (arkx's detection encoder reads the "
                                   "un-normalised pyramid)")),
    (BACKBONE_PREFIX + "Segnorm", "LayerNorms their segmentation forward never applies"),
    (BACKBONE_PREFIX + "segmentation_PPN.", THEIR_UPERNET),
    (BACKBONE_PREFIX + "segmentation_FPN.", THEIR_UPERNET),
    (BACKBONE_PREFIX + "segmentation_heads.", "3x3 segmentation heads on their UperNet"),
    ("backbone.1.", "the Joiner's position encoding"),
    ("transformer.", "DINO localization branch (encoder, per-dataset decoders), another layout than arkx's detector"),
    ("input_proj.", "DINO localization branch (input projections), another layout than arkx's detector"),
    ("label_enc.", "DINO denoising label embedding, another layout than arkx's detector"),
    ("class_embed", "DINO class heads, another layout than arkx's detector"),
    ("bbox_embed", "DINO box heads, another layout than arkx's detector"),
    ("refpoint_embed", "DINO reference points, another layout than arkx's detector"),
)
NOT_AN_ARKX_PART = "no arkx counterpart"


@dataclass
class FoundationXLoadReport:
    """Where every tensor of a Foundation X file went.

    Attributes:
        source: the file; which: ``teacher`` or ``student``.
        loaded: file key -> arkx model key, for every tensor loaded.
        unused: file key -> why it was not loaded (see :data:`UNUSED_PARTS`).
        recomputed: file keys of buffers timm recomputes (checked equal, not loaded).
        missing: arkx model keys the file did not fill (none for a complete file: a missing backbone
            weight is an error; listed for the record).
    """

    source: str
    which: str
    loaded: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    recomputed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def unused_parts(self) -> dict[str, list[str]]:
        """Unused file keys grouped by the reason they were not loaded."""
        parts: dict[str, list[str]] = {}
        for key, reason in self.unused.items():
            parts.setdefault(reason, []).append(key)
        return parts

    def counts(self) -> dict[str, int]:
        """Tensor counts: loaded, unused, recomputed, missing."""
        return dict(loaded=len(self.loaded), unused=len(self.unused), recomputed=len(self.recomputed),
                    missing=len(self.missing))

    def lines(self) -> list[str]:
        """One line for what was loaded, one per unused part (prefix, tensor count, reason)."""
        loaded_parts: dict[str, int] = {}
        for target in self.loaded.values():
            part = target.split(".")[0] if not target.startswith("heads.") else ".".join(target.split(".")[:2])
            loaded_parts[part] = loaded_parts.get(part, 0) + 1
        out = [f"{self.source} ({self.which}): loaded {len(self.loaded)} tensors ("
               + ", ".join(f"{p}: {n}" for p, n in loaded_parts.items()) + ")"]
        for reason, keys in self.unused_parts().items():
            prefixes = sorted({_part_prefix(k) for k in keys})
            out.append(f"{self.source}: not loaded: {', '.join(p + '*' for p in prefixes)} ({len(keys)} tensors): "
                       f"{reason}")
        if self.missing:
            out.append(f"{self.source}: not in the file (fresh weights): {', '.join(self.missing)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return dict(source=self.source, which=self.which, counts=self.counts(),
                    unused={reason: sorted(keys) for reason, keys in self.unused_parts().items()},
                    missing=list(self.missing))


def _part_prefix(key: str) -> str:
    """``backbone.0.segmentation_heads.3.weight`` -> ``backbone.0.segmentation_heads.``; ``transformer.x.y`` ->
    ``transformer.``: the module a key belongs to, for grouped messages."""
    parts = key.split(".")
    depth = 3 if key.startswith(BACKBONE_PREFIX) else 1
    return ".".join(parts[:depth]) + "."


# ---------------------------------------------------------------------------- reading their file
def is_foundation_x_checkpoint(obj: Any) -> bool:
    """Whether a loaded checkpoint object is a Foundation X file: their ``model`` / ``teacher_model`` dicts,
    or one such state dict, with the Swin under ``backbone.0.`` (optionally ``module.``-prefixed)."""
    if not isinstance(obj, dict):
        return False
    candidates = [obj[k] for k in FILE_KEYS.values() if isinstance(obj.get(k), dict)] or [obj]
    return any(MARKER in state or "module." + MARKER in state for state in candidates)


def foundation_x_state(obj: Any, which: str = "teacher", source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """One model's tensors from a Foundation X file object, without ``module.`` prefixes.

    ``which``: ``teacher`` (their ``teacher_model``, the EMA model; the default, as for Ark) or
    ``student`` (their ``model``). A bare state dict (one model, as ``load_weights.py`` users may keep it) is
    returned whichever is asked for: the file does not say which model it was.
    """
    if which not in FILE_KEYS:
        raise ArkxValueError(f"which must be 'teacher' or 'student', got {which!r}")
    if not isinstance(obj, dict):
        raise ArkxValueError(f"{source}: not a checkpoint dict (a {type(obj).__name__})")
    key = FILE_KEYS[which]
    if isinstance(obj.get(key), dict):
        log.info("%s: using the %s weights stored under %r", source, which, key)
        state = obj[key]
    elif any(isinstance(obj.get(k), dict) for k in FILE_KEYS.values()):
        found = ", ".join(k for k in FILE_KEYS.values() if isinstance(obj.get(k), dict))
        raise ArkxValueError(f"{source}: no {key!r} weights in this Foundation X checkpoint (it holds: {found}); "
                             f"choose which={'student' if which == 'teacher' else 'teacher'}")
    else:
        state = obj
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ArkxValueError(f"{source}: the {key!r} entry is not a tensor mapping (e.g. {bad[0]!r})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def describe_swin(state: dict[str, torch.Tensor], prefix: str = BACKBONE_PREFIX) -> dict[str, Any]:
    """Their Swin's sizes, read from its tensors: embed_dim, patch_size, in_chans, depths, num_heads,
    window_size, mlp_ratio."""
    patch = state.get(prefix + "patch_embed.proj.weight")
    if patch is None:
        raise ArkxValueError(f"no {prefix}patch_embed.proj.weight: not a Foundation X Swin")
    depths, heads = [], []
    for stage in range(8):
        blocks = {int(m.group(1)) for k in state
                  for m in [re.match(rf"{re.escape(prefix)}layers\.{stage}\.blocks\.(\d+)\.", k)] if m}
        if not blocks:
            break
        depths.append(max(blocks) + 1)
        heads.append(int(state[f"{prefix}layers.{stage}.blocks.0.attn.relative_position_bias_table"].shape[1]))
    table = state[f"{prefix}layers.0.blocks.0.attn.relative_position_bias_table"]
    window = round((math.sqrt(table.shape[0]) + 1) / 2)
    dim = int(patch.shape[0])
    hidden = int(state[f"{prefix}layers.0.blocks.0.mlp.fc1.weight"].shape[0])
    return dict(embed_dim=dim, patch_size=int(patch.shape[-1]), in_chans=int(patch.shape[1]), depths=depths,
                num_heads=heads, window_size=window, mlp_ratio=hidden / dim)


def backbone_kwargs_for(state: dict[str, torch.Tensor], image_size: int) -> dict[str, Any]:
    """The timm ``SwinTransformer`` keywords that compute what their Swin computed at ``image_size``."""
    info = describe_swin(state)
    check_image_size(image_size, info["patch_size"], info["window_size"], len(info["depths"]))
    kwargs = {k: info[k] for k in ("embed_dim", "patch_size", "in_chans", "depths", "num_heads", "window_size",
                                   "mlp_ratio")}
    # their Swin shifts windows in every stage (see the module docstring)
    return dict(img_size=int(image_size), always_partition=True, **kwargs)


def check_image_size(image_size: int, patch_size: int, window_size: int, stages: int) -> None:
    """Refuse a size where some stage's map is not a multiple of the window: their Swin pads before the
    cyclic shift and timm after, so the outputs would differ there."""
    side = image_size
    if side % patch_size:
        raise ArkxValueError(f"image size {image_size}: not a multiple of the Foundation X Swin's patch size "
                             f"{patch_size}")
    side //= patch_size
    for stage in range(stages):
        if side % window_size:
            raise ArkxValueError(f"image size {image_size}: stage {stage}'s map ({side}x{side}) is not a multiple of "
                                 f"the window ({window_size}); their Swin pads it before shifting windows and timm "
                                 f"after, so the outputs would differ: use a size whose stage maps are multiples of "
                                 f"{window_size} (multiples of {patch_size * window_size * 2 ** (stages - 1)})")
        side = (side + 1) // 2


# ---------------------------------------------------------------------------- loading
def load_foundation_x(path: str | Path, which: str = "teacher", heads: Sequence[str | Task | None] | None = None,
                      image_size: int = DEFAULT_IMAGE_SIZE, strict_unused: bool = False):
    """An authors' Foundation X checkpoint as an :class:`ArkModel` in eval mode (see the module docstring).

    Args:
        path: their ``.pth`` file (``{'model', 'teacher_model', ...}``) or one state dict.
        which: ``teacher`` (their ``teacher_model``; default) or ``student`` (their ``model``).
        heads: the datasets of their ``classification_heads``, by index: a :class:`Task`, a dataset name
            arkx knows the authors' label order of (:data:`arkx.models.released.AUTHORS_DATASETS`), or None to
            leave that head out. Default: no classification heads (their label names are not in the file).
        image_size: the input size the backbone is built for (their pretraining: 224).
        strict_unused: raise instead of reporting when the file has tensors arkx does not load.

    The model has no projector (their heads read the pooled features) and the loaded heads; its
    ``load_report`` is a :class:`FoundationXLoadReport`, its ``arkx_source`` says where it came from.
    """
    path = Path(path)
    obj = load_state_dict_file(path)
    if not is_foundation_x_checkpoint(obj):
        raise ArkxValueError(f"{path}: not a Foundation X checkpoint (no {MARKER} in its model or teacher_model)")
    state = foundation_x_state(obj, which, str(path))
    return model_from_foundation_x_state(state, which=which, heads=heads, image_size=image_size, source=str(path),
                                         strict_unused=strict_unused)


def model_from_foundation_x_state(state: dict[str, torch.Tensor], *, which: str = "teacher",
                                  heads: Sequence[str | Task | None] | None = None,
                                  image_size: int = DEFAULT_IMAGE_SIZE, source: str = "checkpoint",
                                  strict_unused: bool = False):
    """:func:`load_foundation_x` from the (prefix-free) tensors of one model."""
    from .ark import ArkModel
    from .backbones import create_backbone

    head_tasks = _head_tasks(heads, state, source)
    backbone = create_backbone(TIMM_SWIN, **backbone_kwargs_for(state, image_size))
    model = ArkModel(backbone, [task for _, task in head_tasks], projector="none")
    report = FoundationXLoadReport(source=source, which=which)
    mapped = _map_backbone(model, state, report, source)
    for index, task in head_tasks:
        for name in ("weight", "bias"):
            file_key = f"{BACKBONE_PREFIX}classification_heads.{index}.{name}"
            mapped[f"heads.{task.name}.{name}"] = state[file_key]
            report.loaded[file_key] = f"heads.{task.name}.{name}"
    for key in state:
        if key not in report.loaded and key not in report.recomputed:
            report.unused[key] = _why_unused(key)
    own = model.state_dict()
    report.missing = sorted(set(own) - set(mapped))
    mismatched = sorted(k for k in set(own) & set(mapped) if own[k].shape != mapped[k].shape)
    if report.missing or mismatched:
        from .backbones import format_key_mismatch

        raise ArkxValueError(format_key_mismatch(source, report.missing, [], mismatched, own, mapped))
    if strict_unused and report.unused:
        raise ArkxValueError(f"{source}: {len(report.unused)} tensors not loaded: " + "; ".join(report.lines()[1:]))
    model.load_state_dict(mapped)
    first, *others = report.lines()
    log.info("%s", first)
    if report.unused:  # weights of the file that the model does not get: said loudly, each part's reason below
        parts: dict[str, int] = {}
        for key in report.unused:
            parts[_part_prefix(key)] = parts.get(_part_prefix(key), 0) + 1
        log.warning("%s: %d tensors not loaded (model.load_report): %s", source, len(report.unused),
                    ", ".join(f"{p}* ({n})" for p, n in parts.items()))
    for line in others:
        log.info("%s", line)
    model.load_report = report
    model.arkx_source = dict(format="authors-foundation-x", which=which, file=source, image_size=int(image_size),
                             datasets=[task.name for _, task in head_tasks])
    return model.eval()


def _map_backbone(model, state: dict[str, torch.Tensor], report: FoundationXLoadReport, source: str
                  ) -> dict[str, torch.Tensor]:
    """The Swin's tensors under ``model``'s keys (timm 0.5.4 layout -> current timm), recorded in ``report``."""
    from .backbones import to_model_layout
    from .released import RECOMPUTED, _check_recomputed_buffers

    swin = {key[len(BACKBONE_PREFIX):]: value for key, value in state.items()
            if key.startswith(BACKBONE_PREFIX) and key[len(BACKBONE_PREFIX):].startswith(SWIN_PARTS)}
    _check_recomputed_buffers(model.backbone, swin, Path(source))
    converted, _ = to_model_layout(model.backbone, swin)
    file_key = {id(v): BACKBONE_PREFIX + k for k, v in swin.items()}
    own = model.backbone.state_dict()
    out = {}
    for key, value in converted.items():
        if key.endswith(RECOMPUTED):
            continue
        if key not in own:
            raise ArkxValueError(f"{source}: {file_key.get(id(value), key)} has no place in the timm Swin")
        out[f"backbone.{key}"] = value
        report.loaded[file_key.get(id(value), BACKBONE_PREFIX + key)] = f"backbone.{key}"
    report.recomputed = sorted(BACKBONE_PREFIX + k for k in swin if k.endswith(RECOMPUTED))
    return out


def _why_unused(key: str) -> str:
    for prefix, reason in UNUSED_PARTS:
        if key.startswith(prefix):
            return reason
    return NOT_AN_ARKX_PART


def _head_tasks(heads, state: dict[str, torch.Tensor], source: str) -> list[tuple[int, Task]]:
    """``(index in classification_heads, task)`` for every named head, its size checked against the file."""
    if heads is None:
        return []
    from .released import authors_head

    out = []
    for index, head in enumerate(heads):
        if head is None:
            continue
        task = head if isinstance(head, Task) else authors_head(head)
        weight = state.get(f"{BACKBONE_PREFIX}classification_heads.{index}.weight")
        if weight is None:
            raise ArkxValueError(f"{source}: no classification_heads.{index} for head {task.name!r} (the file has "
                                 f"{_count_heads(state)} heads)")
        if weight.shape[0] != task.num_outputs:
            raise ArkxValueError(f"{source}: classification_heads.{index} has {weight.shape[0]} outputs, head "
                                 f"{task.name!r} needs {task.num_outputs} ({', '.join(task.label_names)})")
        out.append((index, task))
    return out


def _count_heads(state: dict[str, torch.Tensor]) -> int:
    return len({k.split(".")[3] for k in state if k.startswith(BACKBONE_PREFIX + "classification_heads.")})


def foundation_x_backbone_state(obj: Any, model, which: str = "teacher", source: str = "checkpoint", *,
                                resize: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """The backbone weights of a Foundation X file in ``model``'s (a timm Swin's) key layout, for
    ``model.checkpoint``: the other parts are reported by name. A Swin that does not shift windows where
    theirs did (built without ``always_partition=True`` while a stage's map fits in one window) would
    compute something else from the same weights, so it is refused."""
    from .backbones import to_model_layout

    state = foundation_x_state(obj, which, source)
    kwargs = getattr(model, "arkx_backbone", {}).get("kwargs", {})
    info = describe_swin(state)
    if not kwargs.get("always_partition", False):
        raise ArkxValueError(f"{source}: a Foundation X checkpoint: its Swin shifts windows in every stage; build the "
                             "backbone with model.backbone_kwargs: {always_partition: true} (and its sizes: "
                             f"{ {k: info[k] for k in ('embed_dim', 'depths', 'num_heads', 'window_size')} }), or load "
                             "the whole model with arkx.load_foundation_x")
    swin = {key[len(BACKBONE_PREFIX):]: value for key, value in state.items()
            if key.startswith(BACKBONE_PREFIX) and key[len(BACKBONE_PREFIX):].startswith(SWIN_PARTS)}
    parts: dict[str, int] = {}
    for key in sorted(k for k in state if not (k.startswith(BACKBONE_PREFIX) and k[len(BACKBONE_PREFIX):] in swin)):
        parts[_part_prefix(key)] = parts.get(_part_prefix(key), 0) + 1
    if parts:
        log.warning("%s: only the Foundation X backbone is loaded (model.checkpoint); not used: %s", source,
                    ", ".join(f"{p}* ({n} tensors)" for p, n in sorted(parts.items())))
    return to_model_layout(model, swin, resize=resize)


def foundation_x_info(path: Path, obj: Any) -> dict[str, Any]:
    """What ``arkx info`` says about a Foundation X file (read from its tensors, nothing built): the Swin's
    sizes, the stored models and epoch, the classification heads by index (their sizes, and the dataset
    their code's comment names; label names are not in the file) and the tensor count of each part."""
    stored = [name for name in FILE_KEYS.values() if isinstance(obj.get(name), dict)] or ["state dict"]
    state = foundation_x_state(obj, "teacher" if "teacher_model" in stored or stored == ["state dict"] else "student",
                               str(path))
    swin = describe_swin(state)
    count = _count_heads(state)
    heads = [dict(name=f"classification_heads.{i}", kind=(f"{AUTHORS_CLASSIFICATION_HEADS[i]}?"
                                                         if count == len(AUTHORS_CLASSIFICATION_HEADS) else "?"),
                  label_names=[f"output {j}" for j in range(int(state[
                      f"{BACKBONE_PREFIX}classification_heads.{i}.weight"].shape[0]))]) for i in range(count)]
    parts: dict[str, int] = {}
    for key in state:
        part = _part_prefix(key) if not key.startswith(BACKBONE_PREFIX) or not key[len(BACKBONE_PREFIX):].startswith(
            SWIN_PARTS) else BACKBONE_PREFIX + "<swin>"
        parts[part] = parts.get(part, 0) + 1
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    return dict(file=str(path), format=f"authors' Foundation X checkpoint ({', '.join(stored)}"
                + (f", epoch {epoch}" if isinstance(epoch, int) else "") + "): arkx.load_foundation_x",
                backbone=f"Swin (embed_dim {swin['embed_dim']}, depths {swin['depths']}, heads {swin['num_heads']}, "
                         f"window {swin['window_size']}; timm with always_partition=True)",
                projector="none (their heads read the pooled features)", input_size=DEFAULT_IMAGE_SIZE,
                mean=None, std=None, heads=heads, datasets=[h["kind"] for h in heads], arkx_version=None,
                tensors=len(state), parts=parts)
