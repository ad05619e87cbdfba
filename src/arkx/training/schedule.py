"""The training schedule and the quantities that follow it.

A schedule is a list of :class:`Step` s, one per dataset epoch (cyclic) or per mixed epoch
(concurrent). Everything that varies over training — learning rate, EMA momentum, consistency
weight — is a pure function of the position in it, so resuming from a step index reproduces the
run exactly and a test can check every value against the formula (the authors stepped their LR
scheduler with the validation loss as the epoch number).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONCURRENT = "*"  # dataset name of a concurrent step: every dataset in every mini-batch


@dataclass(frozen=True)
class Step:
    index: int  # position in the schedule (0-based)
    round: int  # 0-based round
    dataset: str  # head name, or CONCURRENT
    position: int  # position of the dataset within the round
    per_round: int  # steps per round


def build_schedule(mode: str, order: list[str], rounds: int) -> list[Step]:
    if not order:
        raise ValueError("a schedule needs at least one dataset")
    if mode == "cyclic":
        k = len(order)
        return [Step(r * k + i, r, name, i, k) for r in range(rounds) for i, name in enumerate(order)]
    if mode == "concurrent":
        return [Step(r, r, CONCURRENT, 0, 1) for r in range(rounds)]
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


def learning_rate(progress: float, *, base: float, rounds: int, warmup: float, schedule: str,
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


def ema_momentum(fraction: float, *, start: float, end: float, schedule: str) -> float:
    """Teacher momentum after a step: cosine from ``start`` to ``end`` over training (or constant)."""
    if schedule == "constant":
        return start
    return start + (end - start) * cosine_ramp(fraction)


def consistency_weight(fraction: float, *, weight: float, ramp: str) -> float:
    """Weight c of the consistency term during a step: cosine from 0 to ``weight`` (or constant)."""
    if ramp == "constant":
        return weight
    return weight * cosine_ramp(fraction)
