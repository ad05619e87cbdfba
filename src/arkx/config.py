"""Typed, validated run configuration.

A config is YAML on disk and a tree of pydantic models in memory. Everything is checked before any
work starts: unknown keys (typos), wrong types and impossible values are rejected with the dotted key
path in the message (``training.ema.momentum_start: ...``). Every run writes the fully resolved
config next to its checkpoints, so a run can always be reproduced or resumed from its folder alone.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

# YAML reading lives in config_yaml; its names stay importable from here
from .config_yaml import MAX_EXPANDED_NODES, ConfigError, load_yaml_text, read_yaml_file  # noqa: F401

UncertainPolicy = Literal["ones", "zeros", "ignore", "lsr-ones", "lsr-zeros"]
#: The named choices of the training section (the schedule's functions are typed with them).
TrainingMode = Literal["cyclic", "concurrent"]
LrSchedule = Literal["cosine", "constant"]
EmaSchedule = Literal["cosine", "constant"]
RampSchedule = Literal["cosine", "constant"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "bf16", "fp16", "off"]
#: The consistency site of Ark: the projector's output (the embedding every classification head reads).
PROJECTION_SITE = "projection"
#: The task families a pretraining run can train (Foundation X's branches) and the kind each trains.
TaskFamily = Literal["classification", "localization", "segmentation"]
TASK_FAMILIES: tuple[str, ...] = ("classification", "localization", "segmentation")
#: Foundation X's configurations (the paper's names): which branches are used.
FOUNDATION_X_VARIANTS: dict[str, tuple[str, ...]] = {
    "X-C": ("classification",), "X-L": ("localization",), "X-S": ("segmentation",),
    "X-CL": ("classification", "localization"), "X-CS": ("classification", "segmentation"),
    "X-LS": ("localization", "segmentation"), "X-CLS": TASK_FAMILIES,
}


def _task_families(value: Any, key: str) -> Any:
    """A Foundation X variant name (``X-CLS``) -> its task families, in the schedule's order."""
    if isinstance(value, str):
        if value not in FOUNDATION_X_VARIANTS:
            raise ValueError(f"{key}: unknown variant {value!r}; expected a list of {list(TASK_FAMILIES)} or one of "
                             f"{', '.join(FOUNDATION_X_VARIANTS)}")
        return list(FOUNDATION_X_VARIANTS[value])
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Strict):
    out: Path = Path("runs/arkx")
    seed: int = 0
    device: Device = "auto"
    deterministic: bool = True  # deterministic algorithms where torch has them (bitwise resume on CPU)


class DatasetConfig(_Strict):
    type: str
    root: Path
    name: str | None = None  # head name; defaults to ``type``. Must be unique within a run.
    options: dict[str, Any] = Field(default_factory=dict)  # adapter options, validated by the adapter
    # uncertain (-1) label policy; unset (None) = the adapter's declared default (CheXpert: lsr-ones, as
    # METHOD.md gives; MIMIC and the rest: ones), resolved here so the run's config.yaml shows the value used
    uncertain: UncertainPolicy | None = Field(default=None, validate_default=True)
    lsr_ones_range: tuple[float, float] = (0.55, 0.85)
    lsr_zeros_range: tuple[float, float] = (0.0, 0.3)
    max_train_images: int | None = Field(default=None, gt=0)  # cap (seeded subset) for quick runs
    # which of the run's task families (training.tasks) this dataset trains; None = every one it has data for
    tasks: list[TaskFamily] | None = None

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

    @field_validator("tasks", mode="before")
    @classmethod
    def _variant_tasks(cls, value: Any) -> Any:
        return _task_families(value, "tasks")

    @field_validator("uncertain")
    @classmethod
    def _adapter_default(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None or "type" not in info.data:
            return value
        from .data.adapters import default_uncertain

        return default_uncertain(info.data["type"])

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


#: Named student-augmentation recipes; a preset fills every augment key the config does not set.
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    # Ours (the default): gentler crops, because a crop of 8% of a chest X-ray often cuts away the
    # small finding (a nodule, a line tip) that its multi-label targets still claim, and the head
    # then learns to call an empty crop positive. The other settings are close to the authors'.
    "arkx": dict(crop_scale=(0.7, 1.0), crop_ratio=(0.85, 1.18), affine_p=1.0, rotate_degrees=10.0,
                 translate=0.05, zoom=0.0, border="zeros", brightness=0.2, contrast=0.2, gamma=(0.8, 1.25),
                 color_p=0.3, color_mode="independent"),
    # The authors' Ark+ student view (jlianglab/Ark at cba3fad, albumentations defaults filled in):
    # RandomResizedCrop area (0.08, 1), ratio (3/4, 4/3); ShiftScaleRotate(rotate_limit=10) with its
    # defaults shift 0.0625, scale 0.1, p 0.5, reflected border; OneOf(RandomBrightnessContrast,
    # RandomGamma) with p 0.3, brightness/contrast limits 0.2 and gamma (0.8, 1.2).
    "ark_plus": dict(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), affine_p=0.5, rotate_degrees=10.0,
                     translate=0.0625, zoom=0.1, border="reflection", brightness=0.2, contrast=0.2,
                     gamma=(0.8, 1.2), color_p=0.3, color_mode="one_of"),
}


class AugmentConfig(_Strict):
    """Student-view augmentation (the teacher sees the resized original image, as in Ark+).

    The view is a random resized crop, then a shift/scale/rotate of the resized crop, then intensity
    changes. ``preset`` names a recipe from :data:`AUGMENT_PRESETS`: ``arkx`` (the default; gentler
    crops keep small findings in view, which multi-label CXR targets assume) or ``ark_plus`` (the
    authors' recipe). Keys set in the config override the preset's values.
    """

    preset: Literal["arkx", "ark_plus"] = "arkx"
    crop_scale: tuple[float, float] = (0.7, 1.0)  # area fraction of the random resized crop
    crop_ratio: tuple[float, float] = (0.85, 1.18)  # width / height of the crop (drawn log-uniformly)
    affine_p: float = Field(default=1.0, ge=0.0, le=1.0)  # probability of the shift/scale/rotate
    rotate_degrees: float = Field(default=10.0, ge=0.0, le=180.0)
    translate: float = Field(default=0.05, ge=0.0, le=0.5)  # shift, as a fraction of the crop's side
    zoom: float = Field(default=0.0, ge=0.0, lt=1.0)  # scale factor drawn from (1 - zoom, 1 + zoom)
    border: Literal["zeros", "reflection"] = "zeros"  # what fills the view beyond the image's edge
    brightness: float = Field(default=0.2, ge=0.0, le=1.0)
    contrast: float = Field(default=0.2, ge=0.0, le=1.0)
    gamma: tuple[float, float] = (0.8, 1.25)
    color_p: float = Field(default=0.3, ge=0.0, le=1.0)
    # independent: brightness, contrast and gamma each applied with probability color_p;
    # one_of: with probability color_p, either brightness+contrast or gamma (the authors' OneOf)
    color_mode: Literal["independent", "one_of"] = "independent"

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = data.get("preset", "arkx")
            if preset in AUGMENT_PRESETS:  # an unknown name is reported by the field's own check
                data = {**AUGMENT_PRESETS[preset], **data}
        return data

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
    # allow timm to interpolate the checkpoint's relative position tables / patch embedding to this
    # backbone's window / patch size (each interpolated tensor is logged); off: any shape difference is an error
    checkpoint_resize: bool = False
    projector: Literal["linear", "mlp", "none"] = "linear"  # Ark+: linear; MICCAI Ark-6: mlp
    projector_dim: int = Field(default=1376, ge=1)  # matches Google CXR-FM's embedding size
    # incremental pretraining (Ark+): a finished or in-progress arkx run folder (or its teacher/student
    # .safetensors) whose student and teacher weights start this run; heads of the same name must have the
    # same labels and are loaded, new heads start fresh and the teacher's new heads are copies of the student's
    init_from: Path | None = None
    # options of the shared branches and per-dataset heads of Foundation X, by name: seg_decoder (UperNet),
    # det_encoder (deformable encoder), det_decoder (each dataset's DINO decoder); unset keys take the
    # task kinds' defaults, and the model records the values it was built with
    branch_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source_of_weights(self) -> "ModelConfig":
        if self.init_from is not None and self.checkpoint is not None:
            raise ValueError("model.init_from and model.checkpoint are both set: init_from already gives the "
                             "backbone its weights; set model.checkpoint=null")
        return self

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
    schedule: EmaSchedule = "cosine"


class ConsistencyConfig(_Strict):
    """loss = (1 - c) * task + c * MSE(student projection, teacher projection), c ramped up to ``weight``.

    With ``sites`` (a mapping from a named feature site to its weight at the end of the ramp), every site
    ``s`` adds ``c_s * MSE(student features at s, teacher features at s)`` and the task term keeps
    ``1 - sum(c_s)``. Sites: ``projection`` (the projector's output; Ark's site) and ``pooled`` (the
    backbone's pooled features); :mod:`arkx.training.objective` lists them. A site of weight 0 is not
    computed. Unset (the default), ``sites`` is ``{projection: weight}``, exactly Ark's loss.
    """

    weight: float = Field(default=0.5, ge=0.0, le=1.0)  # c at the end of the ramp (the projection site's)
    ramp: RampSchedule = "cosine"
    sites: dict[str, float] | None = None  # site -> weight at the end of the ramp; None = {projection: weight}

    @field_validator("sites")
    @classmethod
    def _known_sites(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        from .training.objective import site_names

        known = site_names()
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown consistency site(s) {unknown}; known sites: {', '.join(known)}")
        bad = {k: w for k, w in value.items() if not 0.0 <= w <= 1.0}
        if bad:
            raise ValueError(f"site weights must be in [0, 1], got {bad}")
        if sum(value.values()) > 1.0:
            raise ValueError(f"site weights sum to {sum(value.values())}; at most 1 (the task term keeps 1 - sum)")
        return value

    @property
    def site_weights(self) -> dict[str, float]:
        """Weight of each consistency site at the end of the ramp (``{projection: weight}`` unless ``sites``)."""
        return {PROJECTION_SITE: self.weight} if self.sites is None else dict(self.sites)


class LockReleaseConfig(_Strict):
    """Foundation X's Lock-Release, for the task kinds in ``kinds``: each epoch of such a (dataset, task)
    first *locks* (the groups in ``freeze`` frozen, so only that dataset's head/decoder trains) on a seeded
    random ``lock_fraction`` of its training images, then *releases* (everything trains) on all of them."""

    enabled: bool = True
    lock_fraction: float = Field(default=0.5, gt=0.0, le=1.0)  # the paper: half the data
    kinds: list[Literal["detection", "segmentation"]] = Field(default_factory=lambda: ["detection", "segmentation"])
    freeze: list[str] = Field(default_factory=lambda: ["backbone", "projector", "det_encoder", "seg_decoder"])

    @field_validator("freeze")
    @classmethod
    def _known_groups(cls, value: list[str]) -> list[str]:
        shared = ("backbone", "projector", "det_encoder", "seg_decoder")
        unknown = [g for g in value if g not in shared]
        if unknown:
            raise ValueError(f"unknown parameter group(s) {unknown}; the lock phase can freeze {list(shared)}")
        return value


class TrainingConfig(_Strict):
    mode: TrainingMode = "cyclic"
    # task families trained, in each dataset's order (Foundation X: classification, then localization, then
    # segmentation, skipping what a dataset lacks); a variant name (X-C, X-L, X-S, X-CL, X-CS, X-LS, X-CLS)
    # is accepted. The default is Ark: classification only.
    tasks: list[TaskFamily] = Field(default_factory=lambda: ["classification"])
    lock_release: LockReleaseConfig = Field(default_factory=LockReleaseConfig)
    rounds: int = Field(default=200, ge=1)
    order: list[str] | None = None  # dataset head names in cycle order; default = config order
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_rounds: float = Field(default=20, ge=0.0)
    lr_schedule: LrSchedule = "cosine"
    min_lr: float = Field(default=0.0, ge=0.0)
    max_iters_per_epoch: int | None = Field(default=None, ge=1)  # cap per dataset epoch (quick runs)
    grad_clip: float | None = Field(default=None, gt=0.0)
    amp: Precision = "auto"  # auto = bf16 on CUDA, off on CPU
    compile: bool = False
    channels_last: bool = False
    # stop: a NaN/Inf loss ends the run, naming the batch (found at the next read-back, see log_every);
    # skip: that iteration is not applied, which needs the loss on the host at every iteration (a sync each)
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    # losses stay on the device and are read back (checked, mean logged at DEBUG) every N iterations
    # and at the end of each dataset epoch
    log_every: int = Field(default=20, ge=1)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)

    @field_validator("tasks", mode="before")
    @classmethod
    def _variant(cls, value: Any) -> Any:
        return _task_families(value, "training.tasks")

    @field_validator("tasks")
    @classmethod
    def _ordered_tasks(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one task family is required")
        if len(set(value)) != len(value):
            raise ValueError(f"repeated task families {value}")
        return [f for f in TASK_FAMILIES if f in value]  # a dataset's epochs always run C, then L, then S

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
        return load_yaml_text(text, "override")
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


def shipped_configs() -> dict[str, Path]:
    """The configs that ship inside the arkx package (``arkx/configs/*.yaml``), by name without suffix."""
    from importlib.resources import files

    folder = files("arkx") / "configs"
    if not folder.is_dir():
        return {}
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def resolve_config_path(path: str | Path) -> Path:
    """``path`` itself when it exists or names a folder; otherwise a config shipped with arkx of that
    name (``ark6-swinb224`` or ``ark6-swinb224.yaml``), so ``arkx pretrain ark6-swinb224`` works from
    any folder, installed from a wheel too. A bare name that is neither is a :class:`ConfigError` that
    lists the shipped configs; a missing path with a folder part is left to the reader to report."""
    path = Path(path)
    if path.exists() or len(path.parts) != 1:
        return path
    shipped = shipped_configs()
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if name in shipped:
        return shipped[name]
    raise ConfigError(f"config file {path} not found, and arkx ships no config of that name "
                      f"(shipped: {', '.join(sorted(shipped)) or 'none'})")


def load_config(path: str | Path, overrides: list[str] | None = None) -> ArkConfig:
    """Read a YAML config, apply overrides and validate it (errors name the file and key path)."""
    path = resolve_config_path(path)
    raw = read_yaml_file(path)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    try:
        return config_from_dict(raw, base_dir=path.parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def with_absolute_paths(cfg: ArkConfig, cwd: Path | None = None) -> ArkConfig:
    """A copy of ``cfg`` whose paths (run.out, data.cache_dir, dataset roots, model.checkpoint) are absolute,
    resolved against ``cwd`` (default: the current directory). A run records them so, because a relative
    ``run.out`` would mean another folder to a resume started from another directory."""
    base = Path.cwd() if cwd is None else Path(cwd)

    def absolute(path: Path) -> Path:
        path = Path(path).expanduser()
        return (path if path.is_absolute() else base / path).resolve()

    cfg = cfg.model_copy(deep=True)
    cfg.run.out = absolute(cfg.run.out)
    if cfg.data.cache_dir is not None:
        cfg.data.cache_dir = absolute(cfg.data.cache_dir)
    if cfg.model.checkpoint is not None:
        cfg.model.checkpoint = absolute(cfg.model.checkpoint)
    if cfg.model.init_from is not None:
        cfg.model.init_from = absolute(cfg.model.init_from)
    for d in cfg.datasets:
        d.root = absolute(d.root)
    return cfg
