"""The run folder (issue 19 items 2, 12, 13, 15, 20; issue 12 section 7): one run at a time, a lock whose
holder died is taken over, a log file of what the user must find later, paths recorded absolute, a full
disk is one line and loses nothing, Ctrl-C says where to resume."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

import arkx
import arkx.training.state as state_mod
from arkx.cli import main
from arkx.errors import DiskFull, RunFolderBusy
from arkx.training.engine import Engine
from arkx.training.runfolder import LOCK_FILE, RunLock
from arkx.training.state import LAST, atomic_save, load_checkpoint

from .test_resume_changes import csv_dataset, csv_entry, run_config

HOLD_LOCK = textwrap.dedent("""
    import os, sys, time
    from arkx.training.runfolder import RunLock
    lock = RunLock(sys.argv[1]); lock.acquire()
    if sys.argv[2] == "orphan":  # a forked child keeps the flock; the recorded holder (this process) dies
        if os.fork() == 0:
            time.sleep(120); os._exit(0)
        print("locked", flush=True); os._exit(0)
    print("locked", flush=True); time.sleep(120)
""")


def _hold_lock(folder: Path, mode: str = "hold") -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), mode], stdout=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == b"locked"
    return proc


def _cli(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "arkx.cli", "--quiet", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder(tmp_path, capsys):
    root = csv_dataset(tmp_path / "data")
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(run_config(run, [csv_entry(root)])))
    holder = _hold_lock(run)
    try:
        assert main(["--quiet", "pretrain", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is in use by another arkx run" in err
        assert f"pid {holder.pid} on {os.uname().nodename}, started 20" in err
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["--quiet", "pretrain", str(cfg)]) == 0  # the kernel released the dead holder's lock


@pytest.mark.slow
def test_two_real_pretrain_processes_on_one_run_folder_one_is_refused(tmp_path):
    """Two ``arkx pretrain`` started together on one run.out: exactly one trains; the other is refused
    (without the lock both exited 0 and the folder held both runs' rows)."""
    root = csv_dataset(tmp_path / "data")
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(run_config(run, [csv_entry(root)], rounds=6)))
    procs = [_cli("pretrain", str(cfg)) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is in use by another arkx run (pid " in refused, refused
    assert load_checkpoint(run / "checkpoints" / LAST)["step_done"] == 6


def test_a_lock_kept_by_orphaned_children_of_a_dead_run_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    proc = _hold_lock(run, "orphan")
    proc.wait()
    # the recorded holder has exited; its forked child lives on
    with pytest.raises(BlockingIOError):  # the orphan still holds the flock on the old lock file
        import fcntl

        fd = os.open(run / LOCK_FILE, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    try:
        with caplog.at_level("WARNING", logger="arkx"), RunLock(run) as lock:
            assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
            with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
                RunLock(run).acquire()  # and the new lock excludes others again
            assert lock.fd is not None
        assert "taking over the run lock" in caplog.text
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_run_log_keeps_the_warnings_a_user_must_find_later(tmp_path):
    root = csv_dataset(tmp_path / "data")
    (root / "images" / "005.png").write_bytes(b"not a png")
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(run_config(run, [csv_entry(root)], rounds=1)))
    assert main(["--quiet", "pretrain", str(cfg)]) == 0
    text = (run / "run.log").read_text()
    assert "unreadable image(s) skipped" in text and "005.png" in text
    assert " INFO arkx: starting " in text and " INFO arkx: finished at step 1 of 1" in text  # although --quiet


def test_a_relative_run_out_is_recorded_absolute_and_resumes_from_anywhere(tmp_path, monkeypatch):
    root = csv_dataset(tmp_path / "data")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    cfg = run_config(Path("runs/x"), [csv_entry(root)])
    cfg["data"]["cache_dir"] = "cache"
    arkx.pretrain(cfg, progress=False, stop_after_steps=1)
    saved = yaml.safe_load((tmp_path / "a/runs/x/config.yaml").read_text())
    assert saved["run"]["out"] == str(tmp_path / "a/runs/x") and saved["data"]["cache_dir"] == str(tmp_path / "a/cache")
    monkeypatch.chdir(tmp_path / "b")
    assert main(["--quiet", "pretrain", "--resume", str(tmp_path / "a/runs/x")]) == 0
    assert load_checkpoint(tmp_path / "a/runs/x/checkpoints/last.pt")["step_done"] == 2
    assert not (tmp_path / "b/runs").exists() and not (tmp_path / "b/cache").exists()


# ---------------------------------------------------------------------------- disk full
def test_enospc_while_writing_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / LAST
    atomic_save({"format": state_mod.FORMAT, "step_done": 1, "w": torch.zeros(1000)}, path)
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state_mod.torch, "save", disk_full)
    with pytest.raises(DiskFull) as err:
        atomic_save({"format": state_mod.FORMAT, "step_done": 2, "w": torch.zeros(1000)}, path)
    message = str(err.value)
    assert str(path) in message and "needs about 1.0 MB" in message and "the previous last.pt is intact" in message
    assert "\n" not in message and err.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [LAST]


def test_torch_zip_writer_failure_on_a_full_disk_is_reported_as_disk_full(tmp_path, monkeypatch):
    """torch reports ENOSPC inside its zip writer as a RuntimeError from inline_container.cc."""
    path = tmp_path / LAST

    def cryptic(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(state_mod.torch, "save", cryptic)
    monkeypatch.setattr(state_mod, "free_bytes", lambda folder: 10**12)
    with pytest.raises(RuntimeError, match="inline_container"):  # plenty of space: some other failure, kept
        atomic_save({"format": state_mod.FORMAT, "w": torch.zeros(10)}, path)
    answers = iter([10**12])  # free before the write; the disk fills up during it

    monkeypatch.setattr(state_mod, "free_bytes", lambda folder: next(answers, 0))
    with pytest.raises(DiskFull, match=r"No space left on device writing .*last.pt \(needs about 1.0 MB, 0.0 MB free\)"):
        atomic_save({"format": state_mod.FORMAT, "w": torch.zeros(10)}, path)
    assert list(tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    path = tmp_path / LAST
    monkeypatch.setattr(state_mod, "free_bytes", lambda folder: 1000)
    with pytest.raises(DiskFull, match=r"needs about 5\.0 MB, 0\.0 MB free"):
        atomic_save({"format": state_mod.FORMAT, "w": torch.zeros(10**6)}, path)
    assert list(tmp_path.iterdir()) == []


def test_cli_disk_full_during_a_run_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    root = csv_dataset(tmp_path / "data")
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(run_config(run, [csv_entry(root)])))
    real_save, calls = state_mod.torch.save, {"n": 0}

    def full_on_second_checkpoint(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(state_mod.torch, "save", full_on_second_checkpoint)
    assert main(["--quiet", "pretrain", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device writing" in err and "last.pt" in err
    assert load_checkpoint(run / "checkpoints" / LAST)["step_done"] == 1
    monkeypatch.setattr(state_mod.torch, "save", real_save)
    assert main(["--quiet", "pretrain", "--resume", str(run)]) == 0


def test_enospc_while_writing_metrics_names_the_file(tmp_path, monkeypatch):
    from arkx.evaluation import reports
    from arkx.evaluation.metrics import multilabel_auc

    log = reports.MetricsLog(tmp_path, tensorboard=False)
    result = multilabel_auc(torch.rand(6, 1).numpy(), (torch.arange(6) % 2).float()[:, None].numpy(), ("a",))
    real_open = Path.open

    def full(self, *args, **kwargs):
        if self.name == "metrics.csv" and args and args[0] == "a":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(DiskFull, match=r"writing .*metrics.csv"):
        log.add_auc(step=0, round_=0, trained="x", model="teacher", dataset="d", split="val", result=result)


# ---------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_in_pretrain_prints_where_to_resume_and_exits_130(tmp_path, monkeypatch, capsys):
    root = csv_dataset(tmp_path / "data")
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(run_config(run, [csv_entry(root)])))
    real_step = Engine.train_step

    def interrupted_second_step(self, step, on_iteration=None):
        if step.index == 1:
            raise KeyboardInterrupt
        return real_step(self, step, on_iteration)

    monkeypatch.setattr(Engine, "train_step", interrupted_second_step)
    assert main(["--quiet", "pretrain", str(cfg)]) == 130
    err = capsys.readouterr().err
    assert err == (f"arkx pretrain: interrupted; the last checkpoint (step 1) is intact: resume with "
                   f"`arkx pretrain --resume {run}`\n")
    monkeypatch.setattr(Engine, "train_step", real_step)
    assert main(["--quiet", "pretrain", "--resume", str(run)]) == 0


@pytest.mark.slow
def test_real_sigint_to_the_cli_prints_one_line(tmp_path):
    root = csv_dataset(tmp_path / "data")
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(run_config(run, [csv_entry(root)], rounds=200)))
    proc = _cli("pretrain", str(cfg))
    last = run / "checkpoints" / LAST
    deadline = time.time() + 240
    while time.time() < deadline and not last.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"resume with `arkx pretrain --resume {run}`" in err


def test_a_filesystem_without_locks_warns_and_runs_unlocked(tmp_path, monkeypatch, caplog):
    import arkx.training.runfolder as runfolder

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runfolder.fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="arkx"), RunLock(tmp_path) as lock:
        assert lock.fd is None
    assert "does not support file locks (No locks available)" in caplog.text
