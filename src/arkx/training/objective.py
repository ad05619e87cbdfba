"""The per-batch objective: a task loss through the task's kind, plus consistency at named feature sites.

    loss = (1 - sum_s c_s) * task_loss + sum_s c_s * MSE(student features at s, teacher features at s)

``c_s`` is site ``s``'s weight during the step: its configured weight (``training.consistency.sites``,
by default ``{projection: training.consistency.weight}``) times the consistency ramp at the step's
place in the schedule. With Ark's one site this is the authors' ``(1 - c)·task + c·consistency``, the
same float operations in the same order. The teacher sees its own view (the resized original image)
and never receives a gradient: its features are detached.

A *site* is a named tensor read from a model's :class:`arkx.models.features.Features`: ``projection``,
``pooled`` (the backbone's features) on every step, and Foundation X's ``det_encoder`` (the shared
localization encoder's output memory) on localization steps and ``seg_decoder`` (the shared UperNet
decoder's maps) on segmentation steps, each with its own weight. A site applies to the steps of the
task kinds it names (a branch's consistency where that branch trains, so a classification step does
not run the detector's encoder twice); the task term keeps ``1 - sum`` of the weights of the sites
that apply. The student's site tensors come from the same pass as its head output (a shared branch
runs once per pass: :func:`arkx.models.features.branch_output`), so each consistency term has a
gradient that reaches the student (the authors' localization term was computed on a deep copy and
had none). A site of weight 0 is left out: it is not computed at all.

Targets come from the task's kind (``batch_targets``: the uncertain-label policy for classification),
the task loss from the kind's ``loss`` (through :func:`arkx.training.losses.task_loss`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..tasks import Task, get_kind
from .losses import consistency_loss, task_loss
from .schedule import Step, consistency_weight, step_fraction

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ConsistencyConfig, RampSchedule
    from ..data.batch import Batch
    from ..data.loaders import PreparedDataset
    from ..models.features import Features

PROJECTION = "projection"


@dataclass(frozen=True)
class Site:
    """A named feature site: ``read(model, features)`` gives its tensor from one forward pass."""

    name: str
    read: Callable[[Any, Features], torch.Tensor]
    needs_pyramid: bool = False  # whether reading it needs ``forward_features(x, pyramid=True)``
    kinds: tuple[str, ...] | None = None  # task kinds whose steps it applies to; None: every step

    def applies_to(self, task: Task | None) -> bool:
        return self.kinds is None or (task is not None and task.kind in self.kinds)


_SITES: dict[str, Site] = {}


def register_site(site: Site) -> Site:
    """Make ``site`` usable in ``training.consistency.sites`` (a second, different site of a name is an error)."""
    if site.name in _SITES and _SITES[site.name] != site:
        raise ValueError(f"consistency site {site.name!r} is registered already")
    _SITES[site.name] = site
    return site


def site_names() -> list[str]:
    return list(_SITES)


def get_site(name: str) -> Site:
    try:
        return _SITES[name]
    except KeyError:
        raise ValueError(f"unknown consistency site {name!r}; known sites: {', '.join(_SITES)}") from None


def _encoder_memory(model: Any, features: Features) -> torch.Tensor:
    return get_kind("detection").encoder_features(model, features).memory


def _decoder_maps(model: Any, features: Features) -> torch.Tensor:
    return get_kind("segmentation").decoder_features(model, features)


register_site(Site(PROJECTION, lambda model, features: features.projection))
register_site(Site("pooled", lambda model, features: features.pooled))
register_site(Site("det_encoder", _encoder_memory, needs_pyramid=True, kinds=("detection",)))
register_site(Site("seg_decoder", _decoder_maps, needs_pyramid=True, kinds=("segmentation",)))


@dataclass
class Terms:
    """The loss terms of one batch before they are weighted: the task's and one per consistency site."""

    task: torch.Tensor
    consistency: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective:
    """What a batch's loss is: built from ``training.consistency`` and the schedule's length.

    ``sites``: weight of each site at the end of the ramp (sites of weight 0 are dropped, except in the
    default, unset case, which keeps Ark's single projection site whatever its weight, as Ark computed it).
    """

    def __init__(self, sites: Mapping[str, float], ramp: RampSchedule, total_steps: int):
        for name in sites:
            get_site(name)  # unknown names fail here, not in the middle of a step
        self.sites: dict[str, float] = dict(sites)
        self.ramp = ramp
        self.total_steps = total_steps

    @classmethod
    def from_config(cls, consistency: ConsistencyConfig, total_steps: int) -> Objective:
        sites = consistency.site_weights
        if consistency.sites is not None:
            sites = {name: w for name, w in sites.items() if w > 0}
        return cls(sites, consistency.ramp, total_steps)

    # ------------------------------------------------------------------ what the engine asks
    @property
    def projection_only(self) -> bool:
        """Whether the projection is the only site: a classification step then needs only ``model(x, head)``
        for the student and ``model.embed`` for the teacher (Ark's path, which ``torch.compile`` speeds up)."""
        return set(self.sites) <= {PROJECTION}

    def active(self, task: Task | None) -> list[str]:
        """The sites that apply to a step of ``task`` (in the configured order)."""
        return [name for name in self.sites if get_site(name).applies_to(task)]

    def needs_pyramid(self, task: Task | None = None) -> bool:
        """Whether the sites of ``task``'s steps read the pyramid (any step's, without a task)."""
        names = self.active(task) if task is not None else list(self.sites)
        return any(get_site(name).needs_pyramid for name in names)

    def weights(self, step: Step) -> dict[str, float]:
        """``c_s`` of every site during ``step`` (fixed within the step)."""
        fraction = step_fraction(step, self.total_steps)
        return {name: consistency_weight(fraction, weight=w, ramp=self.ramp) for name, w in self.sites.items()}

    def targets(self, task: Task, batch: Batch, dataset: PreparedDataset,
                generator: torch.Generator | None) -> Any:
        """The loss targets of ``batch`` for ``task``, from its kind (classification: the raw labels with the
        dataset's uncertain-label policy applied; its draws come from ``generator``)."""
        return get_kind(task.kind).batch_targets(batch, dataset, generator)

    def read_sites(self, model: Any, features: Features, task: Task | None = None) -> dict[str, torch.Tensor]:
        """The tensor of every site that applies to ``task`` from one forward pass of ``model``."""
        return {name: get_site(name).read(model, features) for name in self.active(task)}

    # ------------------------------------------------------------------ the loss
    def terms(self, task: Task, output: Any, targets: Any, student_sites: Mapping[str, torch.Tensor],
              teacher_sites: Mapping[str, torch.Tensor]) -> Terms:
        """The unweighted terms: the task loss, then one consistency loss per site that applies to ``task``
        (in the sites' order)."""
        task_term = task_loss(task.kind, output, targets)
        consistency = {name: consistency_loss(student_sites[name], teacher_sites[name]) for name in self.active(task)}
        return Terms(task_term, consistency)

    @staticmethod
    def combine(terms: Terms, weights: Mapping[str, float]) -> torch.Tensor:
        """``(1 - sum c_s)·task + sum_s c_s·consistency_s`` (one site: the authors' ``(1 - c)·task + c·cons``)."""
        total = sum(weights[name] for name in terms.consistency)
        loss = (1.0 - total) * terms.task
        for name, term in terms.consistency.items():
            loss = loss + weights[name] * term
        return loss
