"""The training schedule and the quantities that follow it.

A schedule is a list of :class:`Step` s. Each step names what it trains as ``parts``, pairs of
(dataset head name, :class:`arkx.tasks.Task`): one pair per step in cyclic mode (one epoch of one
task of one dataset), every pair at once in concurrent mode (each iteration sums one batch of each).
Ark pretraining schedules each dataset's classification task; Foundation X lists a dataset's tasks in
order (classification, detection, segmentation), one step each.

Everything that varies over training — learning rate, EMA momentum, consistency weight — is a pure
function of the position in the schedule, so resuming from a step index reproduces the run exactly
and a test can check every value against the formula (the authors stepped their LR scheduler with the
validation loss as the epoch number).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..config import EmaSchedule, LrSchedule, RampSchedule, TrainingMode
    from ..tasks import Task

CONCURRENT = "*"  # dataset name of a concurrent step: every dataset in every mini-batch

#: What one step trains on: (dataset head name, task). The task is None only in a schedule built from bare
#: dataset names, whose shape (length, positions) is all that is asked of it.
Part = tuple[str, "Task | None"]
#: An entry of :func:`build_schedule`'s list: a dataset head name with its task(s), or a bare name.
ScheduleEntry = str | tuple[str, "Task | Sequence[Task]"]


@dataclass(frozen=True)
class Step:
    index: int  # position in the schedule (0-based)
    round: int  # 0-based round
    dataset: str  # head name, or CONCURRENT
    position: int  # position of the step within the round
    per_round: int  # steps per round
    parts: tuple[Part, ...] = ()  # (dataset, task) pairs trained in this step, in the order their losses sum

    @property
    def task(self) -> Task | None:
        """The task of a one-part step (every cyclic step); None when a step trains several."""
        return self.parts[0][1] if len(self.parts) == 1 else None

    @property
    def datasets(self) -> list[str]:
        """Head names of the datasets this step draws batches from, in order."""
        return [name for name, _ in self.parts]


def schedule_parts(entries: Sequence[ScheduleEntry]) -> list[Part]:
    """``(dataset, task)`` pairs in schedule order: a dataset's tasks in the order given; a bare name is
    ``(name, None)``."""
    parts: list[Part] = []
    for entry in entries:
        if isinstance(entry, str):
            parts.append((entry, None))
            continue
        name, tasks = entry
        if tasks is None or not isinstance(tasks, Sequence):
            parts.append((name, tasks))
        else:
            if not tasks:
                raise ValueError(f"dataset {name!r} is scheduled with no task")
            parts.extend((name, task) for task in tasks)
    return parts


def build_schedule(mode: TrainingMode, entries: Sequence[ScheduleEntry], rounds: int) -> list[Step]:
    """The steps of ``rounds`` rounds over ``entries`` (see :func:`schedule_parts`).

    cyclic: one step per (dataset, task) pair, in order, every round; concurrent: one step per round that
    trains every pair. Step indices depend only on the number of pairs, so a resume finds its step again.
    """
    parts = schedule_parts(entries)
    if not parts:
        raise ValueError("a schedule needs at least one dataset")
    if mode == "cyclic":
        k = len(parts)
        return [Step(r * k + i, r, name, i, k, ((name, task),)) for r in range(rounds)
                for i, (name, task) in enumerate(parts)]
    if mode == "concurrent":
        return [Step(r, r, CONCURRENT, 0, 1, tuple(parts)) for r in range(rounds)]
    raise ValueError(f"unknown training mode {mode!r}")


def progress_in_rounds(step: Step, iteration: int, iterations: int) -> float:
    """Fractional rounds done at an iteration inside a step (the LR's clock)."""
    return step.round + (step.position + iteration / max(iterations, 1)) / step.per_round


def cosine_ramp(t: float) -> float:
    """0 at t=0 rising to 1 at t=1 along half a cosine."""
    t = min(max(t, 0.0), 1.0)
    return 0.5 * (1.0 - math.cos(math.pi * t))


def iteration_rounds(step: Step, iterations: int) -> float:
    """The length of one iteration of a step, in rounds."""
    return 1.0 / (max(iterations, 1) * step.per_round)


def learning_rate(progress: float, *, base: float, rounds: int, warmup: float, schedule: LrSchedule,
                  min_lr: float = 0.0, iteration: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` rounds, then cosine decay to ``min_lr`` at ``rounds``.

    ``progress`` is where an iteration starts and ``iteration`` its length (both in rounds). The
    warm-up gives an iteration the value reached at its end, ``base·(i + 1)/warmup_iterations`` for
    iteration ``i``, so the first iteration trains (a warm-up from exactly 0 wastes it); the decay
    is read at the start, so the last iteration still trains too.
    """
    if warmup > 0 and progress < warmup:
        return base * min(progress + iteration, warmup) / warmup
    if schedule == "constant":
        return base
    t = (progress - warmup) / max(rounds - warmup, 1e-12)
    return min_lr + (base - min_lr) * (1.0 - cosine_ramp(t))


def step_fraction(step: Step, total_steps: int) -> float:
    """Where a step starts in training: 0 for the first, approaching 1 for the last."""
    return step.index / total_steps if total_steps else 0.0


def ema_momentum(fraction: float, *, start: float, end: float, schedule: EmaSchedule) -> float:
    """Teacher momentum after a step: cosine from ``start`` to ``end`` over training (or constant)."""
    if schedule == "constant":
        return start
    return start + (end - start) * cosine_ramp(fraction)


def consistency_weight(fraction: float, *, weight: float, ramp: RampSchedule) -> float:
    """Weight c of the consistency term during a step: cosine from 0 to ``weight`` (or constant)."""
    if ramp == "constant":
        return weight
    return weight * cosine_ramp(fraction)
