"""Typed, validated run configuration.

A config is YAML on disk and a tree of pydantic models in memory. Everything is checked before any
work starts: unknown keys (typos), wrong types and impossible values are rejected with the dotted key
path in the message (``training.ema.momentum_start: ...``). Every run writes the fully resolved
config next to its checkpoints, so a run can always be reproduced or resumed from its folder alone.
"""

from __future__ import annotations

from .errors import ArkxValueError

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

UncertainPolicy = Literal["ones", "zeros", "ignore", "lsr-ones", "lsr-zeros"]


class ConfigError(ArkxValueError):
    """A config that cannot be used; the message names the key path and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Strict):
    out: Path = Path("runs/arkx")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = True  # deterministic algorithms where torch has them (bitwise resume on CPU)


class DatasetConfig(_Strict):
    type: str
    root: Path
    name: str | None = None  # head name; defaults to ``type``. Must be unique within a run.
    options: dict[str, Any] = Field(default_factory=dict)  # adapter options, validated by the adapter
    uncertain: UncertainPolicy = "ones"
    lsr_ones_range: tuple[float, float] = (0.55, 0.85)
    lsr_zeros_range: tuple[float, float] = (0.0, 0.3)
    max_train_images: int | None = Field(default=None, gt=0)  # cap (seeded subset) for quick runs

    @property
    def head_name(self) -> str:
        return self.name or self.type

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        from .data.adapters import adapter_names

        known = adapter_names()
        if known and value not in known:
            raise ValueError(f"unknown dataset type {value!r}; known types: {', '.join(known)}")
        return value

    @field_validator("lsr_ones_range", "lsr_zeros_range")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"expected 0 <= low <= high <= 1, got {value}")
        return value


class DataConfig(_Strict):
    image_size: int = Field(default=224, ge=16)  # model input side
    cache_size: int | None = Field(default=None, ge=16)  # prepared-cache side; default = image_size * 8/7
    cache_dir: Path | None = None  # default: <run.out>/cache
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    workers: int = Field(default=2, ge=0)  # DataLoader workers (reading the cache)
    prepare_workers: int = Field(default=2, ge=0)  # processes decoding originals into the cache
    fail_fraction: float = Field(default=0.05, ge=0.0, le=1.0)  # unreadable images tolerated per dataset

    @property
    def resolved_cache_size(self) -> int:
        return self.cache_size or max(self.image_size, round(self.image_size * 8 / 7))

    @model_validator(mode="after")
    def _cache_not_smaller(self) -> DataConfig:
        if self.cache_size is not None and self.cache_size < self.image_size:
            raise ValueError(f"cache_size ({self.cache_size}) must be >= image_size ({self.image_size})")
        return self


class AugmentConfig(_Strict):
    """Student-view augmentation (the teacher sees the resized original image, as in Ark+)."""

    crop_scale: tuple[float, float] = (0.7, 1.0)  # area fraction of the random resized crop
    crop_ratio: tuple[float, float] = (0.85, 1.18)
    rotate_degrees: float = Field(default=10.0, ge=0.0, le=180.0)
    translate: float = Field(default=0.05, ge=0.0, le=0.5)
    brightness: float = Field(default=0.2, ge=0.0, le=1.0)
    contrast: float = Field(default=0.2, ge=0.0, le=1.0)
    gamma: tuple[float, float] = (0.8, 1.25)
    color_p: float = Field(default=0.3, ge=0.0, le=1.0)  # probability of each intensity transform

    @field_validator("crop_scale", "crop_ratio", "gamma")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"expected 0 < low <= high, got {value}")
        return value


class ModelConfig(_Strict):
    backbone: str = "swin_base_patch4_window7_224"
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to timm.create_model
    checkpoint: Path | None = None  # local weights for the backbone (timm, Ark or arkx file)
    projector: Literal["linear", "mlp", "none"] = "linear"  # Ark+: linear; MICCAI Ark-6: mlp
    projector_dim: int = Field(default=1376, ge=1)  # matches Google CXR-FM's embedding size

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        import timm  # checked here, so a typo fails before any cache is prepared

        if not timm.is_model(value):
            raise ValueError(f"unknown timm backbone {value!r} (timm {timm.__version__}; see timm.list_models())")
        return value


class EmaConfig(_Strict):
    """Teacher = EMA of the student, updated once after each dataset epoch."""

    momentum_start: float = Field(default=0.9, ge=0.0, lt=1.0)
    momentum_end: float = Field(default=1.0, ge=0.0, le=1.0)
    schedule: Literal["cosine", "constant"] = "cosine"


class ConsistencyConfig(_Strict):
    """loss = (1 - c) * task + c * MSE(student projection, teacher projection)."""

    weight: float = Field(default=0.5, ge=0.0, le=1.0)  # c at the end of the ramp
    ramp: Literal["cosine", "constant"] = "cosine"


class TrainingConfig(_Strict):
    mode: Literal["cyclic", "concurrent"] = "cyclic"
    rounds: int = Field(default=200, ge=1)
    order: list[str] | None = None  # dataset head names in cycle order; default = config order
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_rounds: float = Field(default=20, ge=0.0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr: float = Field(default=0.0, ge=0.0)
    max_iters_per_epoch: int | None = Field(default=None, ge=1)  # cap per dataset epoch (quick runs)
    grad_clip: float | None = Field(default=None, gt=0.0)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto = bf16 on CUDA, off on CPU
    compile: bool = False
    channels_last: bool = False
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    log_every: int = Field(default=20, ge=1)  # host sync for loss logging every N iterations
    ema: EmaConfig = Field(default_factory=EmaConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)

    @model_validator(mode="after")
    def _warmup_within_rounds(self) -> TrainingConfig:
        if self.warmup_rounds >= self.rounds and self.lr_schedule == "cosine" and self.warmup_rounds > 0:
            raise ValueError(f"warmup_rounds ({self.warmup_rounds}) must be < rounds ({self.rounds})")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        return self


class EvalConfig(_Strict):
    every: Literal["dataset_epoch", "round", "end"] = "dataset_epoch"
    splits: list[Literal["val", "test"]] = Field(default_factory=lambda: ["val"])
    test_at_end: bool = True
    models: list[Literal["student", "teacher"]] = Field(default_factory=lambda: ["student", "teacher"])


class CheckpointConfig(_Strict):
    keep_history: int = Field(default=0, ge=0)  # also keep the last N per-step checkpoints


class ArkConfig(_Strict):
    run: RunConfig = Field(default_factory=RunConfig)
    datasets: list[DatasetConfig]
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="after")
    def _datasets_consistent(self) -> ArkConfig:
        if not self.datasets:
            raise ValueError("datasets: at least one dataset is required")
        names = [d.head_name for d in self.datasets]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"datasets: head names must be unique; repeated: {dups} (set `name:` to tell them apart)")
        if self.training.order is not None:
            unknown = [n for n in self.training.order if n not in names]
            if unknown:
                raise ValueError(f"training.order names unknown datasets {unknown}; datasets are {names}")
            if sorted(self.training.order) != sorted(names):
                missing = sorted(set(names) - set(self.training.order))
                raise ValueError(f"training.order must list every dataset once; missing {missing}")
        return self

    @property
    def dataset_order(self) -> list[str]:
        return list(self.training.order) if self.training.order else [d.head_name for d in self.datasets]

    def dataset(self, head_name: str) -> DatasetConfig:
        for d in self.datasets:
            if d.head_name == head_name:
                return d
        raise KeyError(head_name)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key (check the spelling)")
        else:
            lines.append(f"{path}: {e['msg']}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _parse_scalar(text: str) -> Any:
    """Value of a ``key=value`` override, typed the way YAML would type it."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (list items by index: ``datasets.0.root=...``)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        key, _, value = item.partition("=")
        parts = key.strip().split(".")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            here = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {key}: {here} is not a valid list index (list has {len(node)} items)")
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise ConfigError(f"override {key}: {here} is not a section")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {key}: {last} is not a valid list index")
            node[int(last)] = _parse_scalar(value)
        elif isinstance(node, dict):
            node[last] = _parse_scalar(value)
        else:
            raise ConfigError(f"override {key}: cannot set a key inside a value")
    return raw


def config_from_dict(raw: dict[str, Any], base_dir: Path | None = None) -> ArkConfig:
    """Validate a raw config; relative dataset roots are resolved against ``base_dir``."""
    try:
        cfg = ArkConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None
    if base_dir is not None:
        for d in cfg.datasets:
            if not d.root.is_absolute():
                d.root = (base_dir / d.root).resolve()
    from .data.adapters.registry import validate_options

    for i, d in enumerate(cfg.datasets):
        try:
            validate_options(d.type, d.options)
        except ValueError as err:
            raise ConfigError(f"invalid config:\n  datasets.{i}.options: {err}") from None
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> ArkConfig:
    """Read a YAML config, apply overrides and validate it (errors name the file and key path)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    try:
        return config_from_dict(raw, base_dir=path.parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
