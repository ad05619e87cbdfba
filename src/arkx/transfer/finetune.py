"""Classification fine-tuning of a (pre)trained model on one labelled dataset.

A plain loop, written to be read: a NEW head for the target dataset on the initial model's features,
trained on the train split with the student-view augmentation, scored on val after every epoch (mean
AUC over labels), stopped early when val stops improving for ``patience`` epochs. The best epoch's
weights are kept and scored on test ONCE, at the end: test never takes part in any choice.

The initial model comes from one of (``init``):

* ``run:DIR`` - an arkx run (its teacher, the released model of a run; a ``.safetensors`` export works too),
* ``released:FILE`` - an authors' Ark / Ark+ checkpoint (:func:`arkx.load_released`),
* ``timm:FILE`` - backbone weights for a timm model (e.g. ImageNet), with a fresh projector,
* ``scratch`` - random initialisation,

and every init is trained with the same settings (epochs, optimizer, learning rate, augmentation,
seed), so their results compare fairly. ``mode="head"`` trains the new head only (backbone and
projector frozen and in eval mode); ``mode="full"`` trains everything.

The output folder holds ``metrics.csv`` (one row per epoch), ``finetune.yaml`` (the resolved settings)
and ``best.safetensors`` (the best weights, an arkx export :func:`arkx.load_model` reads).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from ..config import AugmentConfig, UncertainPolicy
from ..errors import ArkxFileNotFoundError, ArkxValueError

log = logging.getLogger("arkx.transfer")

INIT_KINDS = ("run", "released", "timm", "scratch")
METRICS_FILE = "metrics.csv"
SETTINGS_FILE = "finetune.yaml"
BEST_FILE = "best.safetensors"


class FinetuneConfig(BaseModel):
    """The settings of one fine-tuning run (everything but the initial model is shared by every init)."""

    model_config = ConfigDict(extra="forbid")

    init: str
    dataset_type: str
    root: Path
    options: dict[str, Any] = Field(default_factory=dict)  # adapter options
    out: Path
    mode: Literal["full", "head"] = "full"
    features: Literal["projector", "backbone"] = "projector"  # what the new head reads
    epochs: int = Field(default=10, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=1e-4, gt=0.0)
    weight_decay: float = Field(default=0.05, ge=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)  # sgd only
    warmup_epochs: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    image_size: int | None = Field(default=None, ge=16)  # default: the initial model's input size
    cache_size: int | None = Field(default=None, ge=16)  # default: image_size * 8/7
    cache_dir: Path | None = None  # default: the run's cache (init run:), else <out>/cache
    patience: int | None = Field(default=5, ge=1)  # epochs without a better val AUC before stopping
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    uncertain: UncertainPolicy | None = None  # default: the adapter's (arkx.data.adapters.default_uncertain)
    workers: int = Field(default=0, ge=0)
    # the architecture for timm: and scratch inits (run: and released: inits bring their own)
    backbone: str = "swin_base_patch4_window7_224"
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    projector: Literal["linear", "mlp", "none"] = "linear"
    projector_dim: int = Field(default=1376, ge=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


@dataclass
class FinetuneResult:
    """What a fine-tuning run found: the best epoch (by val mean AUC) and test AUC with its weights."""

    best_epoch: int  # 1-based
    best_val_auc: float
    epochs_run: int
    test_auc: float  # mean over labels with a defined AUC
    test_per_label: dict[str, float]
    val_history: list[float]
    out: Path
    best_path: Path
    metrics_path: Path
    settings_path: Path
    model: nn.Module | None = field(default=None, repr=False)  # with the best weights, in eval mode


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
    from ..models.ark import ArkModel
    from ..models.backbones import create_backbone

    if spec.kind == "run":
        from ..api import load_model
        from .embed import model_sizes

        model = load_model(spec.path, "teacher")
        sizes = model_sizes(spec.path)
        initial = _Initial(model, sizes.image_size, sizes.cache_size, sizes.cache_dir)
    elif spec.kind == "released":
        from ..models.released import load_released

        model = load_released(spec.path, variant)
        initial = _Initial(model, int(model.arkx_source["image_size"]), None, None)
    else:
        checkpoint = spec.path if spec.kind == "timm" else None
        backbone = create_backbone(cfg.backbone, checkpoint, **cfg.backbone_kwargs)
        model = ArkModel(backbone, [], projector=cfg.projector, projector_dim=cfg.projector_dim)
        initial = _Initial(model, None, None, None)
    # the new head replaces the pretraining heads: they predict other datasets' labels
    initial.model.heads = nn.ModuleDict()
    initial.model.head_specs = {}
    return initial


def with_new_head(model, head, features: str):
    """``model`` with one new head (a fresh linear layer) on its projector or on its backbone features."""
    if features == "backbone":
        model.projector = nn.Identity()
        model.embed_dim = int(model.backbone.num_features)
    model.add_head(head)
    return model


def _input_size(model) -> int:
    """The side a timm backbone was built for (its patch embedding records it), else 224."""
    size = getattr(getattr(model.backbone, "patch_embed", None), "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[-1]
    return int(size) if size else 224


def trainable_parameters(model, mode: str) -> list[nn.Parameter]:
    """``head``: only the heads train; ``full``: everything. Frozen tensors get ``requires_grad=False``."""
    for name, param in model.named_parameters():
        param.requires_grad_(mode == "full" or name.startswith("heads."))
    return [p for p in model.parameters() if p.requires_grad]


def set_train_mode(model, mode: str) -> None:
    """Train mode, except a frozen backbone and projector stay in eval mode (no dropout / drop-path,
    no BatchNorm statistics updates: frozen means their outputs do not change)."""
    model.train()
    if mode == "head":
        model.backbone.eval()
        model.projector.eval()


# ---------------------------------------------------------------------------- one epoch, one evaluation
def train_one_epoch(model, loader, data, optimizer, cfg: FinetuneConfig, image_size: int, epoch: int,
                    device: torch.device) -> tuple[float, float]:
    """One pass over the train loader; returns (mean loss, learning rate at the epoch's start)."""
    from ..data.transforms import apply_uncertain_policy, sample_augment_params, student_view
    from ..training.losses import task_loss
    from ..training.optim import set_learning_rate
    from ..training.schedule import learning_rate

    set_train_mode(model, cfg.mode)
    loader.sampler.set_seed(cfg.seed * 100_003 + epoch)  # a fresh, reproducible order every epoch
    aug_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 1)
    label_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 2)
    iterations = len(loader)
    losses, first_lr = [], None
    for i, (images, targets, _) in enumerate(loader):
        lr = learning_rate(epoch + i / iterations, base=cfg.lr, rounds=cfg.epochs, warmup=cfg.warmup_epochs,
                           schedule="cosine", iteration=1.0 / iterations)
        first_lr = lr if first_lr is None else first_lr
        set_learning_rate(optimizer, lr)
        targets = apply_uncertain_policy(targets, data.uncertain, label_gen, data.lsr_ones_range,
                                         data.lsr_zeros_range)
        images = images.to(device)
        x = student_view(images, image_size, sample_augment_params(images.shape[0], cfg.augment, aug_gen),
                         cfg.augment.border)
        _, logits = model(x, data.name)
        loss = task_loss(data.task.kind, logits, targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)), float(first_lr)


def evaluate(model, loader, data, image_size: int, device: torch.device):
    """AUC per label of ``model`` on one split (an :class:`arkx.evaluation.metrics.AucResult`)."""
    from ..evaluation.metrics import task_auc
    from ..evaluation.predict import predict_head

    scores, targets, _ = predict_head(model, loader, data.name, data.task.kind, device, image_size)
    return task_auc(data.task.kind, scores, targets, data.task.label_names)


def is_better(value: float, best: float | None) -> bool:
    """Strictly higher val AUC; a defined AUC beats an undefined (NaN) one, NaN never beats anything."""
    if best is None:
        return True
    if math.isnan(value):
        return False
    return math.isnan(best) or value > best


# ---------------------------------------------------------------------------- the run
def finetune(init: str, dataset_type: str, root: str | Path, *, out: str | Path, mode: str = "full",
             options: dict | None = None, variant="auto", progress: bool = True, **settings: Any) -> FinetuneResult:
    """Fine-tune a model on one dataset's classification labels; see the module docstring.

    Args:
        init: ``run:DIR``, ``released:FILE``, ``timm:FILE`` or ``scratch``.
        dataset_type, root, options: the target dataset, as for :func:`arkx.read_dataset`.
        out: the output folder (``metrics.csv``, ``finetune.yaml``, ``best.safetensors``).
        mode: ``full`` (train everything) or ``head`` (train the new head only).
        settings: any other :class:`FinetuneConfig` field (``epochs``, ``lr``, ``batch_size``,
            ``image_size``, ``patience``, ``seed``, ``device``, ``uncertain``, ``features``,
            ``backbone``/``backbone_kwargs`` for timm: and scratch, ...).
        variant: the released variant for ``released:`` inits (see :func:`arkx.load_released`).
    """
    try:
        cfg = FinetuneConfig(init=str(init), dataset_type=dataset_type, root=Path(root), options=options or {},
                             out=Path(out), mode=mode, **settings)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ArkxValueError(f"invalid fine-tuning settings: {problems}") from None
    spec = parse_init(cfg.init)
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    initial = load_initial_model(spec, cfg, variant)
    cfg = _resolved(cfg, initial)
    data = _prepare(cfg, initial, out, progress)
    head = _head_spec(data)
    torch.manual_seed(cfg.seed)  # the new head starts the same whatever the init's loading consumed
    model = with_new_head(initial.model, head, cfg.features).to(device)
    _write_settings(cfg, spec, out)

    from ..data.loaders import make_loader

    train_loader = make_loader(data, "train", cfg.batch_size, cfg.workers, train=True)
    val_loader = make_loader(data, "val", cfg.eval_batch_size, cfg.workers, train=False)
    optimizer = _optimizer(model, cfg)
    history, best_val, best_epoch, best_state, since_best = [], None, 0, None, 0
    metrics_path = out / METRICS_FILE
    with open(metrics_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "lr", "train_loss", "val_mean_auc", *[f"val_auc_{n}" for n in head.label_names],
                         "seconds"])
        for epoch in range(cfg.epochs):
            started = time.perf_counter()
            loss, lr = train_one_epoch(model, train_loader, data, optimizer, cfg, cfg.image_size, epoch, device)
            val = evaluate(model, val_loader, data, cfg.image_size, device)
            history.append(val.mean)
            writer.writerow([epoch + 1, f"{lr:.6g}", f"{loss:.6f}", f"{val.mean:.6f}",
                             *[f"{v:.6f}" for v in val.per_label], f"{time.perf_counter() - started:.2f}"])
            handle.flush()
            log.info("epoch %d/%d: train loss %.4f, val mean AUC %.4f", epoch + 1, cfg.epochs, loss, val.mean)
            if is_better(val.mean, best_val):
                best_val, best_epoch, since_best = val.mean, epoch + 1, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                since_best += 1
                if cfg.patience is not None and since_best >= cfg.patience:
                    log.info("early stop: no better val AUC for %d epoch(s)", since_best)
                    break

    model.load_state_dict(best_state)
    model.eval()
    best_path = save_best(model, cfg, out / BEST_FILE, dict(init=cfg.init, mode=cfg.mode, best_epoch=best_epoch,
                                                           best_val_auc=best_val, dataset_type=cfg.dataset_type))
    # the one and only look at test: the best weights, chosen on val
    test_loader = make_loader(data, "test", cfg.eval_batch_size, cfg.workers, train=False)
    test = evaluate(model, test_loader, data, cfg.image_size, device)
    log.info("best epoch %d (val mean AUC %.4f); test mean AUC %.4f", best_epoch, best_val, test.mean)
    return FinetuneResult(best_epoch=best_epoch, best_val_auc=float(best_val), epochs_run=len(history),
                          test_auc=test.mean, test_per_label=test.as_dict(), val_history=history, out=out,
                          best_path=best_path, metrics_path=metrics_path, settings_path=out / SETTINGS_FILE,
                          model=model)


def _device(name: str) -> torch.device:
    from ..training.engine import resolve_device

    try:
        return resolve_device(name)
    except RuntimeError as err:
        raise ArkxValueError(f"device {name!r}: {err}") from None


def _resolved(cfg: FinetuneConfig, initial: _Initial) -> FinetuneConfig:
    """Sizes and the uncertain policy filled in, so ``finetune.yaml`` records what was used."""
    from ..data.adapters import default_uncertain

    image = cfg.image_size or initial.image_size or _input_size(initial.model)
    if cfg.cache_size is not None:
        cache = cfg.cache_size
    elif initial.cache_size is not None and image == initial.image_size:
        cache = initial.cache_size
    else:
        cache = max(image, round(image * 8 / 7))
    if cache < image:
        raise ArkxValueError(f"cache_size ({cache}) must be >= image_size ({image})")
    cache_dir = cfg.cache_dir or initial.cache_dir or Path(cfg.out) / "cache"
    uncertain = cfg.uncertain or default_uncertain(cfg.dataset_type)
    return cfg.model_copy(update=dict(image_size=image, cache_size=cache, cache_dir=Path(cache_dir),
                                      uncertain=uncertain))


def _prepare(cfg: FinetuneConfig, initial: _Initial, out: Path, progress: bool):
    from ..config import DataConfig, DatasetConfig
    from ..data.loaders import prepare_dataset

    try:
        ds_cfg = DatasetConfig(type=cfg.dataset_type, root=cfg.root, options=cfg.options, uncertain=cfg.uncertain)
        data_cfg = DataConfig(image_size=cfg.image_size, cache_size=cfg.cache_size, cache_dir=cfg.cache_dir,
                              batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, workers=cfg.workers,
                              prepare_workers=cfg.workers)
    except ValidationError as err:
        raise ArkxValueError(f"dataset {cfg.dataset_type} at {cfg.root}: {err.errors()[0]['msg']}") from None
    Path(cfg.cache_dir).mkdir(parents=True, exist_ok=True)
    try:
        data = prepare_dataset(ds_cfg, data_cfg, Path(cfg.cache_dir), cfg.seed, progress=progress)
    except ValueError as err:  # no image-level labels
        raise ArkxValueError(str(err)) from None
    for split in ("train", "val", "test"):
        if len(data.indices(split)) == 0:
            raise ArkxValueError(f"{cfg.root} ({cfg.dataset_type}): no usable images in split {split!r}; "
                                 "fine-tuning needs train, val (early stopping) and test")
    return data


def _head_spec(data):
    from ..tasks import Task

    return Task(data.name, data.task.kind, tuple(data.task.label_names))


def _optimizer(model, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    from ..training.optim import check_param_groups, param_groups

    trainable_parameters(model, cfg.mode)
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    check_param_groups(model, opt)
    return opt


def _write_settings(cfg: FinetuneConfig, spec: InitSpec, out: Path) -> None:
    import yaml

    settings = cfg.model_dump(mode="json")
    settings["init_kind"] = spec.kind
    (out / SETTINGS_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))


# ---------------------------------------------------------------------------- the best weights
def model_config_of(model) -> dict:
    """The :class:`arkx.config.ModelConfig` fields that rebuild ``model`` (its backbone records its timm name)."""
    projector = model.projector
    kind = "none" if isinstance(projector, nn.Identity) else "linear" if isinstance(projector, nn.Linear) else "mlp"
    record = model.backbone.arkx_backbone
    return dict(backbone=record["name"], backbone_kwargs=dict(record["kwargs"]), checkpoint=None,
                projector=kind, projector_dim=int(model.embed_dim))


def save_best(model, cfg: FinetuneConfig, path: Path, finetune_info: dict) -> Path:
    """The weights as an arkx export (same metadata as :func:`arkx.api.export_model`), so
    :func:`arkx.load_model`, ``arkx embed`` and ``arkx info`` read it."""
    from safetensors.torch import save_file

    from .. import __version__
    from ..api import EXPORT_FORMAT
    from ..data.transforms import MEAN, STD

    meta = dict(format=EXPORT_FORMAT, arkx_version=__version__, model=model_config_of(model),
                heads=model.head_config(), image_size=cfg.image_size, normalization=dict(mean=MEAN, std=STD),
                finetune=finetune_info)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    try:
        save_file(state, str(tmp), metadata={"arkx": json.dumps(meta)})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
