"""Kill -9 at seeded points of a run (mid-iteration, mid-checkpoint-write, around the rename), resume,
and get bitwise the weights of an uninterrupted run; ``last.pt`` is never half-written.

The fast tests fork the test process (torch already imported, so a child costs no start-up) and the
child SIGKILLs *itself* at an exact, seeded point through hooks installed only in the child: a real
SIGKILL (no ``finally``, no atexit, no flush), but at a reproducible place. The slow test runs the real
CLI in a subprocess and kills it at seeded random wall-clock times.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import arkx
import arkx.training.state as state_mod
from arkx.cli import main
from arkx.training.engine import Engine
from arkx.training.state import LAST, atomic_save, load_checkpoint

from .conftest import assert_bitwise_equal, checkpoint, tiny_config

KINDS = ("iteration", "mid-write", "before-rename", "after-rename")


def _context():
    """Children fork from a clean, single-threaded forkserver (forking the test process itself after
    torch has started its thread pools can deadlock the child), with arkx and torch preloaded."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "arkx.api", "arkx.cli"])
    return ctx


def _run_in_child(target, *args) -> int:
    """Run ``target(*args)`` in a child process; returns the signal that ended it (0 if it exited)."""
    proc = _context().Process(target=target, args=args)
    proc.start()
    proc.join(timeout=300)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        pytest.fail(f"child {target.__name__}{args} hung")
    if proc.exitcode < 0:
        return -proc.exitcode
    assert proc.exitcode == 0, f"child exited with {proc.exitcode} instead of being killed"
    return 0


def _killed_cli(argv, kind, step, iteration, fraction):
    _install_kill_point(kind, step, iteration, fraction)
    main(argv)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


def _install_kill_point(kind: str, step: int, iteration: int = 1, fraction: float = 0.5) -> None:
    """Child only: SIGKILL this process at ``kind`` of schedule step ``step``."""
    where = {"step": -1, "iters": 0, "saving": None}
    train_step, optimizer_step = Engine.train_step, Engine._optimizer_step
    real_save, real_replace = torch.save, os.replace

    def hooked_train_step(self, s, on_iteration=None):
        where["step"], where["iters"] = s.index, 0
        return train_step(self, s, on_iteration)

    def hooked_optimizer_step(self, loss):
        optimizer_step(self, loss)
        where["iters"] += 1
        if kind == "iteration" and where["step"] == step and where["iters"] == iteration:
            _die()

    def hooked_save(obj, f, *args, **kwargs):
        where["saving"] = obj.get("step_done") if isinstance(obj, dict) else None
        if kind == "mid-write" and where["saving"] == step + 1:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: max(1, int(len(data) * fraction))])
            f.flush()
            os.fsync(f.fileno())
            _die()
        return real_save(obj, f, *args, **kwargs)

    def hooked_replace(src, dst, *args, **kwargs):
        hit = str(dst).endswith(LAST) and where["saving"] == step + 1
        if kind == "before-rename" and hit:
            _die()
        real_replace(src, dst, *args, **kwargs)
        if kind == "after-rename" and hit:
            _die()

    Engine.train_step, Engine._optimizer_step = hooked_train_step, hooked_optimizer_step
    state_mod.torch.save = hooked_save
    state_mod.os.replace = hooked_replace


def _kill_plan(seed: int, steps: int, kills: int) -> list[tuple[str, int, int, float]]:
    """Seeded kill points: every kind at least once, steps non-decreasing (a kill never lands in a
    step the run has already checkpointed)."""
    rng = random.Random(seed)
    kinds = list(KINDS) + [rng.choice(KINDS) for _ in range(kills - len(KINDS))]
    rng.shuffle(kinds)
    at = sorted(rng.randrange(steps) for _ in range(kills))
    return [(k, s, rng.randint(1, 2), rng.uniform(0.05, 0.95)) for k, s in zip(kinds, at)]


def test_sigkill_at_seeded_points_then_resume_is_bitwise_exact(pristine_roots, tmp_path):
    rounds = 3
    full = tmp_path / "full"
    arkx.pretrain(tiny_config(pristine_roots, full, datasets=("shenzhen",), rounds=rounds), progress=False)

    run = tmp_path / "killed"
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(pristine_roots, run, datasets=("shenzhen",), rounds=rounds)))
    last = run / "checkpoints" / LAST
    plan = _kill_plan(seed=20240611, steps=rounds, kills=5)
    for kind, step, iteration, fraction in plan:
        before = checkpoint(run)["step_done"] if last.exists() else 0
        before_bytes = last.read_bytes() if last.exists() else None
        argv = ["--quiet", "pretrain", "--resume", str(run)] if last.exists() else ["--quiet", "pretrain", str(cfg_path)]
        assert _run_in_child(_killed_cli, argv, kind, step, iteration, fraction) == signal.SIGKILL, (kind, step)
        # last.pt is always a complete checkpoint: loadable, of the expected step, never half-written
        expected = step + 1 if kind == "after-rename" else (before if kind != "iteration" else step)
        if expected == 0:
            assert not last.exists(), (kind, step)
            continue
        state = load_checkpoint(last)
        assert state["step_done"] == expected, (kind, step, state["step_done"])
        if expected == before:  # killed before its rename: the previous file is untouched, byte for byte
            assert last.read_bytes() == before_bytes, (kind, step)
    assert any(k == "mid-write" for k, *_ in plan)
    # finish and compare with the run that was never interrupted
    assert main(["--quiet", "pretrain", "--resume", str(run)]) == 0
    assert_bitwise_equal(full, run)
    assert (full / "metrics.csv").read_text() == (run / "metrics.csv").read_text()


def _stalling_atomic_save(path, fraction, inside):
    """Child: atomic_save with a writer that stalls inside torch.save after ``fraction`` of the bytes."""

    def stalled_save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        torch.serialization.save(obj, buffer)
        data = buffer.getvalue()
        f.write(data[: int(len(data) * fraction)])
        f.flush()
        inside.set()
        time.sleep(120)

    state_mod.torch.save = stalled_save
    atomic_save({"format": state_mod.FORMAT, "step_done": 2, "w": torch.zeros(5000)}, path)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.999])
def test_atomic_save_killed_from_outside_inside_torch_save_keeps_the_old_file(tmp_path, fraction):
    path = tmp_path / "ckpt" / LAST
    old = {"format": state_mod.FORMAT, "step_done": 1, "w": torch.arange(1000.0)}
    atomic_save(old, path)
    old_bytes = path.read_bytes()
    ctx = _context()
    inside = ctx.Event()
    proc = ctx.Process(target=_stalling_atomic_save, args=(path, fraction, inside))
    proc.start()
    assert inside.wait(timeout=120), "the child never reached torch.save"
    os.kill(proc.pid, signal.SIGKILL)  # killed from outside while it is inside torch.save
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert path.read_bytes() == old_bytes
    assert load_checkpoint(path)["step_done"] == 1
    leftovers = [p.name for p in path.parent.iterdir() if p.name != LAST]
    assert all(name.startswith(f".{LAST}.") and name.endswith(".tmp") for name in leftovers), leftovers
    # a stale temp file left by the kill does not disturb the next save
    atomic_save({"format": state_mod.FORMAT, "step_done": 3, "w": torch.ones(3)}, path)
    assert load_checkpoint(path)["step_done"] == 3


def test_atomic_save_failing_with_an_error_removes_its_temp_file(tmp_path, monkeypatch):
    path = tmp_path / LAST
    atomic_save({"format": state_mod.FORMAT, "step_done": 1}, path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_mod.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_save({"format": state_mod.FORMAT, "step_done": 2}, path)
    assert [p.name for p in tmp_path.iterdir()] == [LAST]
    assert load_checkpoint(path)["step_done"] == 1


@pytest.mark.slow
def test_cli_subprocess_killed_at_seeded_random_times_then_resumed_is_bitwise_exact(pristine_roots, tmp_path):
    """The real CLI in a subprocess, SIGKILLed at seeded random wall-clock times (some land while a
    checkpoint is written); after every kill last.pt loads; the finished run equals an uninterrupted one."""
    rounds = 20
    full = tmp_path / "full"
    arkx.pretrain(tiny_config(pristine_roots, full, datasets=("shenzhen",), rounds=rounds), progress=False)
    run = tmp_path / "killed"
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(pristine_roots, run, datasets=("shenzhen",), rounds=rounds)))
    last = run / "checkpoints" / LAST
    rng = random.Random(7)
    kills = 0
    for attempt in range(20):
        if last.exists() and checkpoint(run)["step_done"] >= rounds:
            break
        argv = ["--resume", str(run)] if last.exists() else [str(cfg_path)]
        proc = subprocess.Popen([sys.executable, "-m", "arkx.cli", "--quiet", "pretrain", *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until the child is past its imports and training (a checkpoint appears or grows), then
        # kill at a random moment inside the next step
        start_step = checkpoint(run)["step_done"] if last.exists() else 0
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and load_checkpoint(last)["step_done"] > start_step:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        if last.exists():
            load_checkpoint(last)  # never half-written
    assert kills >= 3
    assert main(["--quiet", "pretrain", "--resume", str(run)]) == 0
    assert_bitwise_equal(full, run)
