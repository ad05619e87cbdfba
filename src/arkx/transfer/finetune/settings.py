"""The settings and the result of a fine-tuning run (one task of one dataset)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ...config import AugmentConfig, UncertainPolicy

INIT_KINDS = ("run", "released", "timm", "scratch")
#: what ``task`` may name: the classification task (multilabel or multiclass, as the adapter declares),
#: or the dataset's segmentation or detection task
TASK_CHOICES = ("auto", "classification", "segmentation", "detection")
METRICS_FILE = "metrics.csv"
SETTINGS_FILE = "finetune.yaml"
BEST_FILE = "best.safetensors"
SHOTS_FILE = "shots.csv"
#: the task kinds whose pretrained per-dataset head a fine-tuning may keep (``reuse_head``)
REUSABLE_HEAD_KINDS = ("segmentation", "detection")


class FinetuneConfig(BaseModel):
    """The settings of one fine-tuning run (everything but the initial model is shared by every init)."""

    model_config = ConfigDict(extra="forbid")

    init: str
    dataset_type: str
    root: Path
    options: dict[str, Any] = Field(default_factory=dict)  # adapter options
    out: Path
    task: Literal["auto", "classification", "segmentation", "detection"] = "auto"
    mode: Literal["full", "head"] = "full"
    which: Literal["teacher", "student"] = "teacher"  # the model of a run:/released: init (teacher: the released one)
    # keep the initial model's segmentation head / detection decoder of the SAME dataset when its labels are the
    # same (a Foundation X model fine-tuned on a dataset it was pretrained on); classification heads are always new
    reuse_head: bool = True
    # few-shot: train on this many labelled training images, drawn with ``seed`` (recorded in SHOTS_FILE);
    # val and test stay whole
    shots: int | None = Field(default=None, ge=1)
    features: Literal["projector", "backbone"] = "projector"  # what a new classification head reads
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
    patience: int | None = Field(default=5, ge=1)  # epochs without a better val score before stopping
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    uncertain: UncertainPolicy | None = None  # default: the adapter's (arkx.data.adapters.default_uncertain)
    workers: int = Field(default=0, ge=0)
    # the architecture for timm: and scratch inits (run: and released: inits bring their own)
    backbone: str = "swin_base_patch4_window7_224"
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    projector: Literal["linear", "mlp", "none"] = "linear"
    projector_dim: int = Field(default=1376, ge=1)
    # options of the shared branches a new head builds, e.g. {"det_encoder": {"d_model": 256, "n_layers": 6},
    # "det_decoder": {"num_queries": 100}, "seg_decoder": {"channels": 512}} (a branch the model has keeps its own)
    branch_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


@dataclass
class FinetuneResult:
    """What a fine-tuning run found: the best epoch (by the task's val metric) and test with its weights.

    ``metric`` names the score: ``auc`` (classification: mean AUROC over labels), ``dice`` (segmentation:
    mean Dice over structures), ``map40`` (detection: COCO mAP at IoU 0.4)."""

    task: Any  # arkx.tasks.Task
    metric: str
    best_epoch: int  # 1-based
    best_val: float
    epochs_run: int
    test_score: float
    test_per_label: dict[str, float]
    val_history: list[float]
    out: Path
    best_path: Path
    metrics_path: Path
    settings_path: Path
    test_details: dict[str, float] = field(default_factory=dict)  # e.g. map50, map50_95, iou
    model: nn.Module | None = field(default=None, repr=False)  # with the best weights, in eval mode

    # the names of the classification-only API this result replaced
    @property
    def best_val_auc(self) -> float:
        return self.best_val

    @property
    def test_auc(self) -> float:
        return self.test_score
