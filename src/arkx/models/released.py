"""The authors' released Ark / Ark+ checkpoints, loaded whole: backbone, projector and every head.

Their training code (timm 0.5.4) subclasses timm's ``SwinTransformer`` and adds ``projector`` (a Linear,
or Linear-ReLU-Linear with ``--use_mlp``) and ``omni_heads`` (a ``ModuleList``, one Linear per dataset in
the order of the ``--data_set`` arguments). It saves ``{'epoch', 'lossMIN', 'state_dict': student,
'teacher': teacher, 'optimizer', 'scheduler'}`` from ``DataParallel`` models, so every key has a
``module.`` prefix; the released files are the teacher (the whole dict, or the teacher alone).

What their files hold, and where each tensor goes here:

- the Swin backbone in timm 0.5.4's layout (patch merging at the end of a stage): through timm's own
  Swin ``checkpoint_filter_fn`` (:func:`arkx.models.backbones.to_model_layout`);
- the attention masks and relative position indices 0.5.4 saved as buffers: recomputed by timm, and
  compared with the file's, so a file made for another image or window size is refused, not
  silently run at the wrong geometry;
- ``head.*``: timm's ImageNet classifier, created by ``SwinTransformer.__init__`` and never called by
  their ``forward``; it is named in a log record and not loaded;
- ``projector.*`` -> ``ArkModel.projector`` (same module layout), ``omni_heads.<i>.*`` ->
  ``ArkModel.heads[<dataset of head i>]`` with the label names of the authors' ``datasets_config.yaml``.

Anything else in the file, or anything missing, is an error naming the keys.
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
from .ark import ArkModel
from ..tasks import Task
from .backbones import create_backbone, describe_unused, format_key_mismatch, to_model_layout
from .weights import load_state_dict_file

log = logging.getLogger("arkx.models")

#: label names per dataset, in the column order of the authors' ``datasets_config.yaml`` (Ark and Ark+).
#: RSNA: their list files hold a class index; its counts (8851 / 11821 / 6012 over train+val+test)
#: are Normal / No Lung Opacity-Not Normal / Lung Opacity of the RSNA challenge, which confirms the
#: config's order (their zero-shot notebook swaps the first two names).
AUTHORS_DATASETS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # authors' name: (arkx head / adapter name, kind, label names)
    "MIMIC": ("mimic_cxr", "multilabel", (
        "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
        "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
        "Fracture", "Support Devices")),
    "CheXpert": ("chexpert", "multilabel", (
        "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
        "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
        "Fracture", "Support Devices")),
    "ChestXray14": ("nih14", "multilabel", (
        "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
        "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")),
    "RSNAPneumonia": ("rsna", "multiclass", ("Normal", "No Lung Opacity/Not Normal", "Lung Opacity")),
    "VinDrCXR": ("vindr_cxr", "multilabel", (
        "PE", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")),
    "Shenzhen": ("shenzhen", "multilabel", ("TB",)),  # "binary classification": one logit, BCE
    "COVIDx": ("covidx", "multiclass", ("normal", "pneumonia", "COVID-19")),
}
#: the ``--data_set`` order of the authors' published Ark-6 / Ark+ commands (both READMEs)
ARK6_ORDER = ("MIMIC", "CheXpert", "ChestXray14", "RSNAPneumonia", "VinDrCXR", "Shenzhen")


def authors_head(dataset: str) -> Task:
    """The head of one of the authors' datasets (their name, e.g. ``ChestXray14``, or arkx's, ``nih14``)."""
    for authors_name, (name, kind, labels) in AUTHORS_DATASETS.items():
        if dataset in (authors_name, name):
            return Task(name, kind, labels)
    known = ", ".join(f"{a} ({n})" for a, (n, _, _) in AUTHORS_DATASETS.items())
    raise ArkxValueError(f"unknown dataset {dataset!r} for a released Ark head; known: {known}")


@dataclass(frozen=True)
class ReleasedVariant:
    """How one family of released files was built (their ``build_omni_model`` arguments)."""

    name: str
    backbone: str  # the current timm model of the same architecture
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    projector: str = "mlp"  # "mlp" (--use_mlp), "linear" or "none"
    projector_dim: int = 1376
    datasets: tuple[str, ...] = ARK6_ORDER

    def heads(self) -> list[Task]:
        return [authors_head(d) for d in self.datasets]


VARIANTS: dict[str, ReleasedVariant] = {
    # MICCAI 2023 Ark-6: ark6_teacher_ep200_swinb_projector1376_mlp.pth.tar
    "ark6": ReleasedVariant("ark6", "swin_base_patch4_window7_224", {}, 224, "mlp", 1376),
    # Ark+ (Nature 2025): Swin-L, window 12, 768 px input, linear projector (their zero-shot notebook)
    "ark_plus": ReleasedVariant("ark_plus", "swin_large_patch4_window12_384", {"img_size": 768}, 768, "linear", 1376),
    # Ark+ continued with COVIDx (their README's incremental command): a seventh head
    "ark_plus_covidx": ReleasedVariant("ark_plus_covidx", "swin_large_patch4_window12_384", {"img_size": 768}, 768,
                                       "linear", 1376, ARK6_ORDER + ("COVIDx",)),
}
#: what the authors' timm 0.5.4 model holds that their forward never uses
IMAGENET_CLASSIFIER = ("head.weight", "head.bias")
#: buffers timm recomputes; checked against the file's, not loaded
RECOMPUTED = ("attn_mask", "relative_position_index")


def authors_state(path: str | Path, which: str = "teacher") -> dict[str, torch.Tensor]:
    """The weights of one model in an authors' file, without ``module.`` prefixes.

    ``which``: ``teacher`` (the released model) or ``student`` (their ``state_dict``). A file that is
    the state dict itself (how the teacher is usually shared) is returned as is.
    """
    if which not in ("teacher", "student"):
        raise ArkxValueError(f"which must be 'teacher' or 'student', got {which!r}")
    obj = load_state_dict_file(path)
    if not isinstance(obj, dict):
        raise ArkxValueError(f"{path}: not a checkpoint dict (a {type(obj).__name__})")
    key = "teacher" if which == "teacher" else "state_dict"
    if isinstance(obj.get(key), dict):
        log.info("%s: using the weights stored under %r", path, key)
        obj = obj[key]
    elif all(isinstance(v, torch.Tensor) for v in obj.values()) and which == "student":
        raise ArkxValueError(f"{path}: holds one model (a state dict, no 'state_dict' entry): load it as the teacher")
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = ", ".join(sorted(k for k in obj if isinstance(obj[k], dict))) or "none"
        raise ArkxValueError(f"{path}: no {key!r} weights in this checkpoint (dicts in it: {found})")
    if any(not isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArkxValueError(f"{path}: the {key!r} entry is not a tensor mapping")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def is_authors_layout(state: dict) -> bool:
    """Whether a (prefix-free) state dict looks like the authors' Ark model: ``omni_heads`` or a projector
    on a timm backbone."""
    return any(k.startswith("omni_heads.") for k in state) and "patch_embed.proj.weight" in state


def describe_authors_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What an authors' state dict is, read from its tensors alone (used by ``arkx info`` and
    ``variant='auto'``): Swin width, depths, window and input size, projector kind and size, head sizes."""
    depths = []
    for stage in range(8):
        blocks = {int(m.group(1)) for k in state for m in [re.match(rf"layers\.{stage}\.blocks\.(\d+)\.", k)] if m}
        if not blocks:
            break
        depths.append(max(blocks) + 1)
    table = state.get("layers.0.blocks.0.attn.relative_position_bias_table")
    window = int(round((math.sqrt(table.shape[0]) + 1) / 2)) if table is not None else None
    patch = state["patch_embed.proj.weight"]
    info: dict[str, Any] = dict(embed_dim=int(patch.shape[0]), patch_size=int(patch.shape[-1]), depths=depths,
                                window_size=window, timm_054_layout="layers.0.downsample.reduction.weight" in state)
    mask = state.get("layers.0.blocks.1.attn_mask")
    if mask is not None and window:
        # one mask per window of the first stage: (side / window)^2 windows
        info["image_size"] = int(round(math.sqrt(mask.shape[0]))) * window * info["patch_size"]
    if "projector.0.weight" in state and "projector.2.weight" in state:
        info["projector"], info["projector_dim"] = "mlp", int(state["projector.2.weight"].shape[0])
    elif "projector.weight" in state:
        info["projector"], info["projector_dim"] = "linear", int(state["projector.weight"].shape[0])
    else:
        info["projector"], info["projector_dim"] = "none", None
    n_heads = len({k.split(".")[1] for k in state if k.startswith("omni_heads.")})
    info["head_sizes"] = [int(state[f"omni_heads.{i}.weight"].shape[0]) if f"omni_heads.{i}.weight" in state else 0
                          for i in range(n_heads)]
    return info


def detect_variant(state: dict[str, torch.Tensor]) -> ReleasedVariant | None:
    """The released variant a state dict matches (width, window, projector, head sizes), if any."""
    info = describe_authors_state(state)
    for variant in VARIANTS.values():
        width = 128 if "base" in variant.backbone else 192
        window = int(variant.backbone.split("window")[1].split("_")[0])
        sizes = [len(h.label_names) for h in variant.heads()]
        if (info["embed_dim"], info["window_size"], info["projector"], info["head_sizes"]) == (
                width, window, variant.projector, sizes):
            return variant
    return None


def load_released(path: str | Path, variant: str | ReleasedVariant = "auto", heads: Sequence[str | Task] | None = None,
                  which: str = "teacher") -> ArkModel:
    """An authors' Ark / Ark+ checkpoint as an :class:`ArkModel` in eval mode, every tensor of it used.

    ``variant``: ``ark6`` (Swin-B 224, MLP projector), ``ark_plus`` (Swin-L 768, window 12, linear
    projector), ``ark_plus_covidx`` (plus a COVIDx head), a :class:`ReleasedVariant`, or ``auto`` (read
    from the file's shapes). ``heads`` replaces the variant's dataset order (names as in the authors'
    ``--data_set`` or arkx's adapters, or :class:`Task`) for a file trained with another order.
    """
    path = Path(path)
    state = authors_state(path, which)
    spec = _resolve_variant(variant, state, path)
    head_specs = [h if isinstance(h, Task) else authors_head(h) for h in heads] if heads is not None else spec.heads()
    model = ArkModel(create_backbone(spec.backbone, **spec.backbone_kwargs), head_specs,
                     projector=spec.projector, projector_dim=spec.projector_dim)
    model.arkx_source = dict(format="authors-ark", variant=spec.name, which=which, file=str(path),
                             image_size=spec.image_size, datasets=list(spec.datasets if heads is None else
                                                                        [h.name for h in head_specs]))
    mapped = _to_arkx_keys(model, state, head_specs, path)
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    mismatched = sorted(k for k in set(own) & set(mapped) if own[k].shape != mapped[k].shape)
    if missing or unexpected or mismatched:
        raise ArkxValueError(format_key_mismatch(f"{path} (variant {spec.name})", missing, unexpected, mismatched,
                                                 own, mapped))
    model.load_state_dict(mapped)
    log.info("%s: loaded the authors' %s %s (%d tensors; heads %s)", path, spec.name, which, len(mapped),
             ", ".join(h.name for h in head_specs))
    return model.eval()


def _resolve_variant(variant: str | ReleasedVariant, state: dict, path: Path) -> ReleasedVariant:
    if isinstance(variant, ReleasedVariant):
        return variant
    if variant == "auto":
        if not is_authors_layout(state):
            raise ArkxValueError(f"{path}: not an Ark checkpoint (no omni_heads.* or patch_embed.* keys); "
                                 "a backbone-only file loads with model.checkpoint")
        found = detect_variant(state)
        if found is None:
            info = describe_authors_state(state)
            raise ArkxValueError(f"{path}: no released variant matches (embed_dim {info['embed_dim']}, window "
                                 f"{info['window_size']}, projector {info['projector']}, heads {info['head_sizes']}); "
                                 f"pass variant= one of {', '.join(VARIANTS)} or a ReleasedVariant, and heads=")
        return found
    if variant not in VARIANTS:
        raise ArkxValueError(f"unknown released variant {variant!r}; expected auto, {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def _to_arkx_keys(model: ArkModel, state: dict[str, torch.Tensor], heads: list[Task], path: Path
                  ) -> dict[str, torch.Tensor]:
    """The file's tensors under ``model``'s keys; the recomputed buffers are checked, the ImageNet
    classifier logged; every other key is kept (an unknown one then fails the caller's key check)."""
    backbone, out = {}, {}
    head_names = {str(i): h.name for i, h in enumerate(heads)}
    for key, value in state.items():
        if key in IMAGENET_CLASSIFIER:
            continue
        if key.startswith("projector."):
            out[key] = value
        elif key.startswith("omni_heads."):
            index, rest = key.split(".", 2)[1:]
            # a head beyond the given heads keeps its file name, so the key check names it
            out[f"heads.{head_names[index]}.{rest}" if index in head_names else key] = value
        else:
            backbone[key] = value
    ignored = [k for k in IMAGENET_CLASSIFIER if k in state]
    if ignored:
        log.info("%s: not loaded: %s (timm's ImageNet classifier, which the Ark forward never calls)",
                 path, ", ".join(describe_unused(ignored)))
    _check_recomputed_buffers(model.backbone, backbone, path)
    converted, _ = to_model_layout(model.backbone, backbone)
    # timm's filter renames keys (and would turn an unknown ``x_head.w`` into ``x_head.fc.w``): a key the
    # backbone has no place for is reported under its name in the file, found by its tensor's identity
    file_name = {id(v): k for k, v in backbone.items()}
    own = model.backbone.state_dict()
    for key, value in converted.items():
        if key.endswith(RECOMPUTED):
            continue
        out[f"backbone.{key}" if key in own else file_name.get(id(value), key)] = value
    return out


def _check_recomputed_buffers(backbone: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """The file's attention masks / position indices equal what the backbone computes for itself, so
    the file was made for this image size and window (else the outputs would silently differ)."""
    buffers = dict(backbone.named_buffers())
    differ = []
    for key in sorted(k for k in state if k.endswith(RECOMPUTED)):
        mine = buffers.get(key)
        if mine is None or mine.shape != state[key].shape or not torch.equal(mine.to(state[key].dtype), state[key]):
            shape = tuple(mine.shape) if mine is not None else "none"
            differ.append(f"{key} file {tuple(state[key].shape)} vs model {shape}")
    if differ:
        raise ArkxValueError(f"{path}: made for another image or window size: {len(differ)} recomputed buffer(s) "
                             f"differ: {'; '.join(differ[:3])}{' …' if len(differ) > 3 else ''}")


def load_any_model(path: str | Path, which: str = "teacher", variant: str | ReleasedVariant = "auto",
                   image_size: int | None = None) -> ArkModel:
    """An arkx model (run folder, export, ``last.pt``: :func:`arkx.api.load_model`), an authors' Ark
    checkpoint (:func:`load_released`) or an authors' Foundation X checkpoint
    (:func:`arkx.models.foundation_x_checkpoint.load_foundation_x`, built for ``image_size``, default 224),
    told apart by the file's content."""
    path = Path(path)
    if path.is_file() and path.suffix != ".safetensors":
        obj = load_state_dict_file(path)
        from .foundation_x_checkpoint import DEFAULT_IMAGE_SIZE, is_foundation_x_checkpoint, load_foundation_x

        if is_foundation_x_checkpoint(obj):
            return load_foundation_x(path, which, image_size=image_size or DEFAULT_IMAGE_SIZE)
        if not (isinstance(obj, dict) and str(obj.get("format", "")).startswith("arkx-")):
            return load_released(path, variant, which=which)
    from .files import load_model

    return load_model(path, which)
