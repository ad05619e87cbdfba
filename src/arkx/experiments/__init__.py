"""The papers' claims as experiments: ``arkx experiment NAME`` / :func:`experiment`.

Each named experiment (:data:`EXPERIMENTS`, ``arkx experiment list``) compares arms (config changes, single-
dataset baselines, transfer pipelines) over seeds, each (arm, seed) in its own run folder; it writes a tidy CSV
of every score, a summary with means, 95 % t-intervals over seeds and paired differences to a baseline arm
(paired t-test), a plot and a small HTML page. See :mod:`arkx.experiments.runner` for the folder layout and
resuming, :mod:`arkx.experiments.registry` for the experiments and presets, and
:mod:`arkx.experiments.tables` for the statistics.
"""

from __future__ import annotations

from .registry import (
    EXPERIMENTS,
    PRESETS,
    Arm,
    Experiment,
    Preset,
    Transfer,
    get_experiment,
    get_preset,
)
from .runner import ExperimentResult, run_experiment

__all__ = ["EXPERIMENTS", "PRESETS", "Arm", "Experiment", "ExperimentResult", "Preset", "Transfer", "experiment",
           "get_experiment", "get_preset", "list_experiments", "run_experiment"]


def experiment(name: str, out=None, *, seeds=None, preset: str = "tiny", config=None, init=None, arms=None,
               progress: bool = True, keep_checkpoints: bool = False) -> ExperimentResult:
    """Run experiment ``name`` (see :func:`arkx.experiments.runner.run_experiment`); ``result.text`` is the
    printed table, ``result.summary`` / ``result.tidy`` the tables, ``result.paths`` the files written."""
    return run_experiment(name, out, seeds=seeds, preset=preset, config=config, init=init, arms=arms,
                          progress=progress, keep_checkpoints=keep_checkpoints)


def list_experiments() -> list[Experiment]:
    return list(EXPERIMENTS.values())
