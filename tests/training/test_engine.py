"""The engine on tiny in-memory datasets: order, EMA timing, LR schedule, resume, faults, learning."""

from __future__ import annotations

import math

import pytest
import torch

from arkx.config import ArkConfig
from arkx.training import callbacks as callbacks_mod
from arkx.training.engine import Engine, NonFiniteLoss
from arkx.training.schedule import learning_rate

from ..conftest import tiny_model


def make_cfg(tmp_path, device="cpu", **training):
    t = dict(rounds=3, optimizer="adamw", lr=3e-3, warmup_rounds=1, max_iters_per_epoch=3)
    t.update(training)
    return ArkConfig.model_validate(dict(
        run=dict(out=str(tmp_path / "run"), seed=7, device=device),
        datasets=[dict(type="chexpert", root=".", name="alpha"), dict(type="rsna", root=".", name="beta")],
        data=dict(image_size=32, cache_size=36, batch_size=8, eval_batch_size=16, workers=0),
        training=t,
        eval=dict(every="round", splits=["val"]),
    ))


def make_engine(tmp_path, datasets, heads, **training):
    cfg = make_cfg(tmp_path, **training)
    return Engine(cfg, datasets, tiny_model(heads, seed=cfg.run.seed), cfg.run.out, progress=False)


def test_cyclic_order_and_ema_once_per_dataset_epoch(tmp_path, tiny_datasets, tiny_heads, monkeypatch):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads)
    events = []
    real_step = eng.train_step

    def train_step(step, on_iteration=None):
        events.append(("train", step.dataset))
        return real_step(step, on_iteration)

    def ema(teacher, student, momentum):
        events.append(("ema", round(momentum, 6)))

    monkeypatch.setattr(eng, "train_step", train_step)
    monkeypatch.setattr(callbacks_mod, "ema_update", ema)
    eng.run()
    trained = [e[1] for e in events if e[0] == "train"]
    assert trained == ["alpha", "beta"] * 3
    # exactly one EMA right after every dataset epoch, never inside one
    kinds = [e[0] for e in events]
    assert kinds == ["train", "ema"] * 6
    # momentum follows the cosine from 0.9 to 1.0 over the 6 steps
    moms = [e[1] for e in events if e[0] == "ema"]
    expected = [0.9 + 0.1 * 0.5 * (1 - math.cos(math.pi * i / 6)) for i in range(6)]
    assert moms == pytest.approx(expected, abs=1e-6)


def test_learning_rate_at_every_step_equals_the_schedule(tmp_path, tiny_datasets, tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, lr_schedule="cosine")
    seen = []
    real = eng.optimizer.step

    def step(*a, **k):
        seen.append(eng.optimizer.param_groups[0]["lr"])
        return real(*a, **k)

    eng.optimizer.step = step
    eng.run()
    iters = 3  # max_iters_per_epoch; both datasets have >= 3 batches of 8
    expected = []
    for r in range(3):
        for pos in range(2):
            for it in range(iters):
                expected.append(learning_rate(r + (pos + it / iters) / 2, base=3e-3, rounds=3, warmup=1,
                                              schedule="cosine", iteration=1 / (iters * 2)))
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # warm-up: 1 round = 6 iterations; iteration i trains at lr·(i + 1)/6, never at 0
    assert seen[:6] == pytest.approx([3e-3 * (i + 1) / 6 for i in range(6)], rel=1e-12)
    assert seen[6] == pytest.approx(3e-3)  # the decay starts at the full rate
    assert all(g["lr"] == seen[-1] for g in eng.optimizer.param_groups)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_gives_bitwise_identical_weights(tmp_path, tiny_datasets, tiny_heads):
    torch.use_deterministic_algorithms(True, warn_only=True)
    full = make_engine(tmp_path / "a", tiny_datasets, tiny_heads)
    full.run()
    first = make_engine(tmp_path / "b", tiny_datasets, tiny_heads)
    first.run(stop_after_steps=3)
    again = make_engine(tmp_path / "b", tiny_datasets, tiny_heads)
    start = again.restore(tmp_path / "b" / "run" / "checkpoints")
    assert start == 3
    again.run(start_step=start)
    for which in ("student", "teacher"):
        a, b = _weights(getattr(full, which)), _weights(getattr(again, which))
        for key in a:
            assert torch.equal(a[key], b[key]), f"{which}.{key} differs after resume"
    m_full = (tmp_path / "a" / "run" / "metrics.csv").read_text()
    m_resumed = (tmp_path / "b" / "run" / "metrics.csv").read_text()
    assert m_full == m_resumed


def test_concurrent_mode_sums_all_heads_each_iteration(tmp_path, tiny_datasets, tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, mode="concurrent", rounds=2)
    heads_called = []
    real = eng._batch_loss

    def batch_loss(name, *a, **k):
        heads_called.append(name)
        return real(name, *a, **k)

    eng._batch_loss = batch_loss
    summary = eng.run()
    assert summary.finished and summary.total_steps == 2
    assert heads_called == ["alpha", "beta"] * (2 * 3)


def test_nonfinite_loss_stops_and_names_the_batch(tmp_path, tiny_datasets, tiny_heads):
    tiny_datasets["beta"].images.array[:] = 0
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads)
    real = eng._batch_loss

    def poisoned(name, *a, **k):
        loss, rows = real(name, *a, **k)
        return (loss * float("nan") if name == "beta" else loss), rows

    eng._batch_loss = poisoned
    with pytest.raises(NonFiniteLoss, match=r"dataset beta.*beta:beta-\d+"):
        eng.run()
    # the checkpoint written after the last good step is intact and loadable
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step_done"] == 1


def test_nonfinite_loss_skip_mode_keeps_weights_finite(tmp_path, tiny_datasets, tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, on_nonfinite_loss="skip", rounds=2)
    real = eng._batch_loss
    calls = {"n": 0}

    def sometimes_nan(name, *a, **k):
        loss, rows = real(name, *a, **k)
        calls["n"] += 1
        return (loss * float("inf") if calls["n"] % 4 == 0 else loss), rows

    eng._batch_loss = sometimes_nan
    summary = eng.run()
    assert summary.skipped_steps == calls["n"] // 4
    assert all(torch.isfinite(p).all() for p in eng.student.parameters())


def test_training_learns_the_signal(tmp_path, tiny_datasets, tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=6, max_iters_per_epoch=None, lr=3e-3)
    eng.run()
    result = eng.evaluate("test", ["student"])["student"]["alpha"]
    # label a1 is drawn as a bright square; a2/a3 are noise
    assert result.per_label[0] > 0.9, result.per_label


def test_every_step_trains_its_datasets_classification_task(tmp_path, tiny_datasets, tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads)
    for step in eng.schedule:
        (name, task), = step.parts
        assert name == step.dataset and step.task is task
        assert (task.name, task.kind, task.label_names) == (name, tiny_datasets[name].task.kind,
                                                            tiny_datasets[name].task.label_names)
    concurrent = make_engine(tmp_path / "c", tiny_datasets, tiny_heads, mode="concurrent")
    assert all([n for n, _ in s.parts] == ["alpha", "beta"] for s in concurrent.schedule)
