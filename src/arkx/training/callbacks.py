"""What happens at the schedule's boundaries, as separate pieces the engine calls after every step.

The engine's loop is ``for step in schedule: loss = train_step(step); for cb in callbacks:
cb.on_step_end(engine, step, loss)``, then ``cb.on_run_end(engine, summary)`` once the schedule is
done. The default callbacks, in their fixed order (:func:`default_callbacks`):

1. :class:`EmaTeacher`: the teacher's EMA update after each step (dataset epoch);
2. :class:`LogLoss`: the step's mean loss to the run's scalars;
3. :class:`Evaluate`: evaluation on the configured splits when due, and the final test evaluation;
4. :class:`Checkpoint`: the checkpoint that a resume starts from.

The order is part of what a run computes: evaluation sees the teacher after this step's EMA, and the
checkpoint, written last, holds the state after everything the step did (and its metrics rows are
already in ``metrics.csv``, so a resume that truncates rows after the checkpoint keeps them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..evaluation.reports import MetricsLog
from .schedule import Step, ema_momentum, step_fraction
from .state import save_checkpoint
from .teacher import ema_update

if TYPE_CHECKING:  # pragma: no cover
    from ..config import EvalConfig
    from .engine import Engine, RunSummary


class Callback:
    """A hook at the schedule's boundaries; both methods do nothing unless overridden."""

    def on_step_end(self, engine: Engine, step: Step, loss: float) -> None:
        """After ``step`` was trained (``loss``: its mean loss)."""

    def on_run_end(self, engine: Engine, summary: RunSummary) -> None:
        """After the last step of this run (not called when the run stops on an error)."""


class EmaTeacher(Callback):
    """θ_teacher ← m·θ_teacher + (1 − m)·θ_student after each step, ``m`` following ``training.ema``."""

    def momentum(self, engine: Engine, step: Step) -> float:
        e = engine.cfg.training.ema
        return ema_momentum(step_fraction(step, len(engine.schedule)), start=e.momentum_start, end=e.momentum_end,
                            schedule=e.schedule)

    def on_step_end(self, engine: Engine, step: Step, loss: float) -> None:
        m = self.momentum(engine, step)
        ema_update(engine.teacher, engine.student, m)
        engine.metrics.add_scalar("ema_momentum", m, step.index)


class LogLoss(Callback):
    """The step's mean loss, as the scalar ``loss/<dataset>``."""

    def on_step_end(self, engine: Engine, step: Step, loss: float) -> None:
        engine.metrics.add_scalar(f"loss/{step.dataset}", loss, step.index)


class Evaluate(Callback):
    """Evaluation of ``eval.models`` on ``eval.splits`` of every dataset when due (``eval.every``), written
    to ``metrics.csv``; at the end of a finished run, the test split (``eval.test_at_end``) into
    ``summary.final``."""

    @staticmethod
    def due(cfg: EvalConfig, step: Step) -> bool:
        return cfg.every == "dataset_epoch" or (cfg.every == "round" and step.position == step.per_round - 1)

    def on_step_end(self, engine: Engine, step: Step, loss: float) -> None:
        if self.due(engine.cfg.eval, step):
            for split in engine.cfg.eval.splits:
                log_evaluation(engine, engine.metrics, step, split)

    def on_run_end(self, engine: Engine, summary: RunSummary) -> None:
        if summary.finished and engine.cfg.eval.test_at_end:
            final_step = Step(len(engine.schedule), engine.cfg.training.rounds, "final", 0, 1)
            results = log_evaluation(engine, engine.metrics, final_step, "test")
            summary.final = {m: {} for m in engine.cfg.eval.models}
            summary.final_tasks = {m: {} for m in engine.cfg.eval.models}
            for model_name, name, task, result in results:
                if task.is_classification:
                    summary.final[model_name][name] = result.mean
                summary.final_tasks[model_name].setdefault(name, {})[task.kind] = result.mean


def log_evaluation(engine: Engine, metrics: MetricsLog, step: Step, split: str) -> list[tuple[str, str, Any, Any]]:
    """Evaluate every task of every dataset on ``split`` and append one row per (model, dataset, task, label)
    to ``metrics``; returns ``engine.evaluate_tasks``' list."""
    results = engine.evaluate_tasks(split, list(engine.cfg.eval.models))
    trained_task = step.task.kind if step.task is not None else ""
    for model_name, name, task, result in results:
        metrics.add_score(step=step.index, round_=step.round, trained=step.dataset, model=model_name, dataset=name,
                          split=split, result=result, task=task.kind, trained_task=trained_task)
    return results


class Checkpoint(Callback):
    """``checkpoints/last.pt`` after every step: student, teacher, optimizer, RNG and the run's record.

    ``extra``: a zero-argument callable whose dict joins the checkpoint's ``extra`` (the caller's record of
    the run: data, config, time)."""

    def __init__(self, extra: Callable[[], dict] | None = None):
        self.extra = extra

    def on_step_end(self, engine: Engine, step: Step, loss: float) -> None:
        if not engine.dist.is_main:  # a multi-process job: every rank holds the same state; rank 0 writes it
            return
        save_checkpoint(engine.out / "checkpoints", step_done=step.index + 1, student=engine.student,
                        teacher=engine.teacher, optimizer=engine.optimizer,
                        keep_history=engine.cfg.checkpoint.keep_history,
                        extra=dict(images_seen=engine.images_seen, skipped_steps=engine.skipped_steps,
                                   heads=engine.student.head_config(), **_branches(engine.student),
                                   **(self.extra() if self.extra else {})))


def default_callbacks(checkpoint_extra: Callable[[], dict] | None = None) -> list[Callback]:
    """Pretraining's callbacks in their fixed order: EMA, log the loss, evaluate, checkpoint."""
    return [EmaTeacher(), LogLoss(), Evaluate(), Checkpoint(checkpoint_extra)]


def _branches(model) -> dict:
    """``{"branches": ...}`` when the model has shared branches (a segmentation decoder, a detection encoder):
    what ``load_model`` needs to rebuild them; nothing for an Ark model, so its checkpoints stay as they were."""
    config = model.branch_config() if hasattr(model, "branch_config") else {}
    return {"branches": config} if config else {}
