"""The papers' claims as named experiments, declared as data.

An :class:`Experiment` is a set of named :class:`Arm` s compared over seeds against a baseline arm. An arm
says how it changes a base config: dotted ``overrides`` (``training.mode: concurrent``), ``dataset_overrides``
applied to the datasets that have uncertain labels, ``per_dataset`` (one run per dataset, that dataset alone,
with the same number of epochs on it), or a :class:`Transfer` pipeline (pretrain, then a linear probe or a
fine-tuning on a held-out dataset). :mod:`arkx.experiments.runner` turns an arm into the run folders of
each seed; nothing here trains.

A :class:`Preset` sizes the synthetic data and the schedule: ``tiny`` (CI size: seconds to a minute on 2 CPU
cores) and ``demo`` (the documented larger size, three seeds by default). With ``--config`` the user's own
config is the base and a preset only gives the default seeds and the fine-tuning epochs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ArkxValueError

#: adapters whose label files carry uncertain (-1) values; the uncertain-policy arms change these datasets
UNCERTAIN_TYPES = ("chexpert", "mimic_cxr")


@dataclass(frozen=True)
class Preset:
    """Sizes of one experiment scale (synthetic data and schedule)."""

    name: str
    n: int  # images per synthetic dataset
    size: int  # side of the synthetic originals (px)
    image_size: int  # model input side
    rounds: int  # pretraining rounds
    seeds: tuple[int, ...]
    datasets: tuple[str, ...]  # the Ark experiments' synthetic datasets (the demo's, in its cycle order)
    finetune_epochs: int  # transfer: epochs of each probe / fine-tuning
    fx_n: int  # Foundation X experiments: images per synthetic dataset
    fx_rounds: int
    fx_image_size: int
    description: str


_ALL_SIX = ("mimic_cxr", "chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen")

PRESETS: dict[str, Preset] = {
    # CI size: three small datasets (two share findings under different names; one is TB), 24 images each
    "tiny": Preset("tiny", n=24, size=32, image_size=32, rounds=1, seeds=(0, 1), datasets=("chexpert", "nih14", "shenzhen"),
                   finetune_epochs=1, fx_n=24, fx_rounds=1, fx_image_size=64,
                   description="24 images per dataset at 32 px, 1 round, 2 seeds (seconds per run)"),
    # the demo's scale, chosen for a 3-seed Ark vs single comparison in about 10 min on 2 idle cores
    "demo": Preset("demo", n=300, size=96, image_size=64, rounds=8, seeds=(0, 1, 2), datasets=_ALL_SIX,
                   finetune_epochs=10, fx_n=200, fx_rounds=12, fx_image_size=64,
                   description="300 images per dataset at 64 px, 8 rounds, 3 seeds (minutes per run; "
                               "Foundation X: the FX demo's 200 images, 12 rounds)"),
}


@dataclass(frozen=True)
class Transfer:
    """Pretrain (``source``), then train a new head on the held-out dataset (``mode``).

    ``source``: ``all-but-heldout`` (Ark on every dataset but the held-out one), ``single`` (one other dataset
    alone, the experiment's ``single_source``, with the same epochs on it), ``scratch`` (random
    initialisation, no pretraining) or ``init`` (a local checkpoint the user passes, e.g. ImageNet weights
    as ``timm:FILE``; the arm exists only when one is given). ``mode``: ``head`` (a linear probe: everything
    pretrained frozen) or ``full`` (fine-tuning everything)."""

    source: Literal["all-but-heldout", "single", "scratch", "init"]
    mode: Literal["head", "full"]


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted key -> value on the base config
    dataset_overrides: Mapping[str, Any] = field(default_factory=dict)  # on datasets of UNCERTAIN_TYPES
    per_dataset: bool = False  # one run per dataset, each reporting its own dataset
    transfer: Transfer | None = None
    baseline: str | None = None  # the arm this one is compared with (default: the experiment's)


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str
    arms: tuple[Arm, ...]
    baseline: str
    family: Literal["ark", "foundation-x"] = "ark"
    #: transfer experiments: the held-out dataset and the other dataset of single-dataset pretraining
    heldout: str | None = None
    single_source: str | None = None
    notes: str = ""

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise ArkxValueError(f"experiment {self.name!r} has no arm {name!r}; arms: {', '.join(a.name for a in self.arms)}")

    def baseline_of(self, arm: Arm) -> str:
        return arm.baseline or self.baseline


def _transfer_arms() -> tuple[Arm, ...]:
    arms = []
    for source, label, what in (("all-but-heldout", "ark", "Ark on every dataset but the held-out one"),
                                ("single", "single", "one other dataset alone, the same epochs on it"),
                                ("scratch", "scratch", "random initialisation"),
                                ("init", "checkpoint", "the local checkpoint passed with --init (no download)")):
        for mode, how in (("head", "linear probe"), ("full", "fine-tune")):
            arms.append(Arm(f"{label}/{how.replace(' ', '-')}", f"{what}, then a {how} on the held-out dataset",
                            transfer=Transfer(source, mode), baseline=f"scratch/{how.replace(' ', '-')}"))
    return tuple(arms)


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        "ark-vs-single",
        "Ark pretrained on all datasets beats a model trained on each dataset alone with the same budget "
        "(the same number of epochs on that dataset, the same schedules)",
        arms=(Arm("ark", "cyclic Ark pretraining on every dataset"),
              Arm("single", "each dataset alone, the same epochs on it", per_dataset=True)),
        baseline="single"),
    Experiment(
        "cyclic-vs-concurrent",
        "cyclic pretraining (one dataset epoch after another) beats concurrent (each iteration sums one "
        "batch of every dataset)",
        arms=(Arm("cyclic", "one dataset epoch after another", overrides={"training.mode": "cyclic"}),
              Arm("concurrent", "each iteration sums one batch of every dataset",
                  overrides={"training.mode": "concurrent"})),
        baseline="concurrent"),
    Experiment(
        "ema",
        "the epoch-wise EMA teacher helps",
        arms=(Arm("ema", "EMA teacher with the base config's momentum schedule"),
              Arm("no-ema", "momentum 0 from start to end: after every dataset epoch the teacher becomes an exact "
                            "copy of the student (no averaging); the consistency term still pulls the student to "
                            "the copy taken at the previous dataset epoch, and the released model is that copy",
                  overrides={"training.ema.momentum_start": 0.0, "training.ema.momentum_end": 0.0})),
        baseline="no-ema"),
    Experiment(
        "consistency-weight",
        "the student-teacher consistency loss helps (weight c at the end of its ramp)",
        arms=(Arm("c=0", "no consistency term", overrides={"training.consistency.weight": 0.0}),
              Arm("c=0.2", "the demo's weight", overrides={"training.consistency.weight": 0.2}),
              Arm("c=0.5", "arkx's default weight", overrides={"training.consistency.weight": 0.5})),
        baseline="c=0"),
    Experiment(
        "uncertain-policy",
        "how uncertain (-1) labels are used matters (CheXpert, MIMIC-CXR); every dataset is reported",
        arms=tuple(Arm(p, f"uncertain labels -> {p} on the datasets that have them",
                       dataset_overrides={"uncertain": p}) for p in ("ones", "zeros", "ignore", "lsr-ones")),
        baseline="ignore"),
    Experiment(
        "transfer",
        "Ark pretrained on every dataset but one transfers to the held-out one better than random "
        "initialisation and than single-dataset pretraining (Ark's main result)",
        arms=_transfer_arms(), baseline="scratch/linear-probe", heldout="chexpert", single_source="nih14",
        notes="held-out chexpert, single-dataset pretraining on nih14 (arkx's choice, made before any run); "
              "with --config: the last dataset is held out and the first other one is the single source"),
    Experiment(
        "fx-lock-release",
        "Foundation X's Lock-Release (a head-only phase on half the data before each dense-task epoch) helps",
        arms=(Arm("lock-release", "Lock-Release on detection and segmentation",
                  overrides={"training.lock_release.enabled": True}),
              Arm("no-lock-release", "everything trains on every batch",
                  overrides={"training.lock_release.enabled": False})),
        baseline="no-lock-release", family="foundation-x"),
    Experiment(
        "fx-variants",
        "adding localization and segmentation tasks helps each task (X-C, X-CL, X-CS vs X-CLS)",
        arms=tuple(Arm(v, f"Foundation X variant {v}", overrides={"training.tasks": v})
                   for v in ("X-C", "X-CL", "X-CS", "X-CLS")),
        baseline="X-C", family="foundation-x",
        notes="a variant without a task family has no rows for it: its differences are n/a"),
    Experiment(
        "fx-consistency-sites",
        "consistency at the localization encoder and the segmentation decoder helps, beyond the projection",
        arms=(Arm("all-sites", "projection 0.2, det_encoder 0.05, seg_decoder 0.05 (the FX demo)",
                  overrides={"training.consistency.sites": {"projection": 0.2, "det_encoder": 0.05,
                                                            "seg_decoder": 0.05}}),
              Arm("projection-only", "projection 0.2 only (Ark's site)",
                  overrides={"training.consistency.sites": {"projection": 0.2}})),
        baseline="projection-only", family="foundation-x"),
)}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ArkxValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)} (arkx experiment list)")
    return EXPERIMENTS[name]


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ArkxValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
