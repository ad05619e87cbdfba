"""What a task is, and how a kind of task plugs into arkx.

A :class:`Task` names one head: the dataset it belongs to, its kind and its output names in head
order. It is the one concept the records (what an adapter read), the model (which head to build) and
the outputs (metrics, predictions) share; label names travel with it and are never re-typed.

A *kind* (``multilabel``, ``multiclass``, ``segmentation``, ``detection``) is a :class:`TaskKind`
registered under its name: it knows how to build its head, turn a :class:`arkx.data.batch.Batch`
into its targets, compute its loss, turn the head's output into predictions and score them. The
engine, fine-tuning and evaluation call these methods through :func:`get_kind`; they never branch on
the kind's name, so a new kind is one module and one :func:`register_kind` call.

This module imports no torch: the records layer depends on it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: The kinds arkx ships, and the module that registers each (imported on first use).
KIND_MODULES: dict[str, str] = {
    "multilabel": "arkx.tasks.classification",
    "multiclass": "arkx.tasks.classification",
    "segmentation": "arkx.tasks.segmentation",
    "detection": "arkx.tasks.detection",
}
#: Kinds whose targets are image-level labels (``Records.labels``).
CLASSIFICATION_KINDS = ("multilabel", "multiclass")


@dataclass(frozen=True)
class Task:
    """One head: ``name`` (the dataset's head name), ``kind`` and ``label_names`` in output order.

    ``multilabel``: sigmoid per label, targets in {1, 0, -1, NaN}.
    ``multiclass``: softmax over ``label_names``; targets are one-hot rows (all NaN when missing).
    ``segmentation``: one sigmoid mask per structure in ``label_names``.
    ``detection``: boxes whose class is one of ``label_names``.
    """

    name: str
    kind: str
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"task {self.name!r}: duplicated label names {self.label_names}")
        if self.kind not in KIND_MODULES and self.kind not in _REGISTRY:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; expected one of "
                             f"{sorted(set(KIND_MODULES) | set(_REGISTRY))}")

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    @property
    def is_classification(self) -> bool:
        return self.kind in CLASSIFICATION_KINDS

    def as_dict(self) -> dict[str, Any]:
        return dict(name=self.name, kind=self.kind, label_names=list(self.label_names))


@dataclass(frozen=True)
class TaskScore:
    """A kind's score of one split: ``mean`` (higher is better: what early stopping watches) is the ``metric``
    (e.g. ``dice``, ``map40``) averaged over ``per_label``; ``details`` holds the other figures (e.g. IoU,
    mAP50) and ``raw`` the metric module's full result."""

    metric: str
    mean: float
    per_label: dict[str, float]
    details: dict[str, float]
    raw: Any = None

    def as_dict(self) -> dict[str, float]:
        return dict(self.per_label)


class TaskKind(ABC):
    """The behaviour of one kind of task. Subclasses set the class attributes and implement every
    abstract method (a kind missing one cannot be instantiated, so it cannot be registered).

    Attributes:
        name: the kind's registered name.
        head_attr: the ``ModuleDict`` of :class:`arkx.models.ark.ArkModel` its heads live in
            (``heads`` for classification, so Ark checkpoints keep their keys).
        needs_pyramid: whether its head reads the backbone's multi-scale feature maps.
        loader_targets: the :class:`arkx.data.batch.Batch` targets its batches must carry
            (``labels``, ``masks``, ``boxes``; what ``make_loader(targets=...)`` is asked for).
    """

    name: ClassVar[str]
    head_attr: ClassVar[str]
    needs_pyramid: ClassVar[bool] = False
    loader_targets: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def build_head(self, task: Task, model: Any) -> "nn.Module":
        """A new head for ``task`` on ``model`` (building the shared branch it reads on first need)."""

    @abstractmethod
    def head_output(self, model: Any, features: Any, task: Task, targets: Any = None) -> Any:
        """The output of ``task``'s head for ``features`` (an :class:`arkx.models.features.Features`).

        ``targets`` (this kind's :meth:`batch_targets`, on the device) is given in training only, for heads
        whose forward uses them (the detector's denoising queries); without it the output is the inference one."""

    @abstractmethod
    def batch_targets(self, batch: Any, data: Any, generator: Any = None) -> Any:
        """The loss targets of ``batch`` (an :class:`arkx.data.batch.Batch` already on the model input's grid
        and device); ``data`` is the dataset (its label policy), ``generator`` the step's CPU generator."""

    @abstractmethod
    def loss(self, output: Any, targets: Any) -> Any:
        """The scalar loss of a head output against :meth:`batch_targets`."""

    def loss_count(self, targets: Any) -> torch.Tensor | None:
        """How many units :meth:`loss` averages over in ``targets`` (a 0-d tensor), or None when it is a mean
        over images. A multi-process job weights each rank's loss by its share of the global count, so the
        gradient is the one of the global batch (:mod:`arkx.training.distributed`)."""
        return None

    @abstractmethod
    def predict(self, output: Any) -> Any:
        """Per-batch predictions from the head's output, detached (on the output's device: the caller moves them)."""

    @abstractmethod
    def eval_targets(self, batch: Any) -> Any:
        """Per-batch evaluation targets (raw, on the CPU) of ``batch`` on the model input's grid."""

    @abstractmethod
    def score(self, predictions: list, targets: list, task: Task) -> Any:
        """The task's metric from per-batch predictions and targets (lists in batch order). The result has
        ``mean`` (higher is better; what early stopping watches), ``metric`` (its name) and ``as_dict()``."""


_REGISTRY: dict[str, TaskKind] = {}


def register_kind(kind: TaskKind) -> TaskKind:
    """Register ``kind`` under ``kind.name`` (a second registration of a name is an error)."""
    if kind.name in _REGISTRY and type(_REGISTRY[kind.name]) is not type(kind):
        raise ValueError(f"task kind {kind.name!r} is registered already")
    _REGISTRY[kind.name] = kind
    return kind


def get_kind(name: str) -> TaskKind:
    """The registered :class:`TaskKind` called ``name`` (imports the shipped kinds' modules on first use)."""
    if name not in _REGISTRY and name in KIND_MODULES:
        importlib.import_module(KIND_MODULES[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task kind {name!r}; expected one of {sorted(set(KIND_MODULES) | set(_REGISTRY))}") from None
