"""Callbacks at the schedule's boundaries: called in their fixed order after every step, and at the run's end."""

from __future__ import annotations

import torch

from arkx.training.callbacks import (
    Callback,
    Checkpoint,
    EmaTeacher,
    Evaluate,
    LogLoss,
    default_callbacks,
)
from arkx.training.schedule import build_schedule
from arkx.training.state import load_checkpoint

from .test_engine import make_cfg, make_engine


class Recorder(Callback):
    def __init__(self, name: str, events: list):
        self.name, self.events = name, events

    def on_step_end(self, engine, step, loss):
        self.events.append((self.name, step.index, round(loss, 6)))

    def on_run_end(self, engine, summary):
        self.events.append((self.name, "end", summary.steps_done))


def test_engine_calls_every_callback_in_order_after_each_step_then_at_the_end(tmp_path, tiny_datasets, tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, max_iters_per_epoch=1)
    losses = []
    real = eng.train_step

    def train_step(step, on_iteration=None):
        losses.append(round(real(step, on_iteration), 6))
        return losses[-1]

    eng.train_step = train_step
    events: list = []
    summary = eng.run(callbacks=[Recorder("first", events), Recorder("second", events)])
    assert summary.finished
    assert events == [("first", 0, losses[0]), ("second", 0, losses[0]), ("first", 1, losses[1]),
                      ("second", 1, losses[1]), ("first", "end", 2), ("second", "end", 2)]


def test_default_order_is_ema_log_evaluate_checkpoint():
    assert [type(c) for c in default_callbacks()] == [EmaTeacher, LogLoss, Evaluate, Checkpoint]


def test_evaluation_sees_and_the_checkpoint_holds_the_teacher_after_the_steps_ema(tmp_path, tiny_datasets,
                                                                                   tiny_heads):
    eng = make_engine(tmp_path / "b", tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, max_iters_per_epoch=1)
    eng.cfg.eval.every = "dataset_epoch"
    before = {k: v.clone() for k, v in eng.teacher.state_dict().items()}
    evaluated = []
    real_evaluate = eng.evaluate_tasks

    def evaluate(split, models):
        evaluated.append({k: v.clone() for k, v in eng.teacher.state_dict().items()})
        return real_evaluate(split, models)

    eng.evaluate_tasks = evaluate
    eng.run(stop_after_steps=1)
    after_ema = eng.teacher.state_dict()
    assert any(not torch.equal(before[k], after_ema[k]) for k in before if after_ema[k].is_floating_point())
    (seen,) = evaluated
    assert all(torch.equal(seen[k], after_ema[k]) for k in seen)
    saved = load_checkpoint(tmp_path / "b" / "run" / "checkpoints")
    assert saved["step_done"] == 1
    assert all(torch.equal(saved["teacher"][k], after_ema[k]) for k in after_ema)


def test_evaluation_is_due_as_eval_every_says(tmp_path):
    cfg = make_cfg(tmp_path).eval
    steps = build_schedule("cyclic", ["a", "b", "c"], rounds=2)
    due = {}
    for every in ("dataset_epoch", "round", "end"):
        cfg.every = every
        due[every] = [s.index for s in steps if Evaluate.due(cfg, s)]
    assert due == {"dataset_epoch": [0, 1, 2, 3, 4, 5], "round": [2, 5], "end": []}
