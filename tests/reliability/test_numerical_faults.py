"""Numerical faults end to end: a NaN/Inf loss stops the run naming dataset, step and batch image ids
(or skips the step with training.on_nonfinite_loss=skip); the checkpoint before it stays intact and
loadable; resuming with a changed config is refused with the differing key; fixed, it resumes exactly."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
import yaml

import arkx
from arkx.cli import main
from arkx.config import ConfigError
from arkx.errors import RunChanged
from arkx.training.engine import Engine, NonFiniteLoss
from arkx.training.state import load_checkpoint

from .conftest import assert_bitwise_equal, checkpoint, tiny_config

IDS = re.compile(r"batch images: (.*?)(?:\. The last checkpoint|; step skipped|$)", re.S)


def _image_ids(message: str, dataset: str, records) -> list[str]:
    ids = [x.split(":", 1)[1] for x in IDS.search(message).group(1).split(", ")]
    assert ids and set(ids) <= set(records.images["image_id"].astype(str)), ids
    assert all(x.startswith(f"{dataset}:") for x in IDS.search(message).group(1).split(", "))
    return ids


def test_exploding_lr_stops_the_run_naming_dataset_and_images_cli(pristine_roots, tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(pristine_roots, tmp_path / "run", datasets=("shenzhen",))))
    capsys.readouterr()
    assert main(["--quiet", "pretrain", str(path), "training.lr=1e30", "training.warmup_rounds=0"]) == 2
    err = capsys.readouterr().err
    assert "arkx pretrain: error: non-finite loss" in err and "dataset shenzhen" in err and "Traceback" not in err
    assert "lower the learning rate or set training.on_nonfinite_loss=skip" in err
    _image_ids(err, "shenzhen", arkx.read_dataset("shenzhen", pristine_roots["shenzhen"]))
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_nonfinite_loss_keeps_the_last_checkpoint_and_resume_is_handled(pristine_roots, tmp_path, monkeypatch):
    full = tmp_path / "full"
    arkx.pretrain(tiny_config(pristine_roots, full), progress=False)
    run = tmp_path / "run"
    cfg = tiny_config(pristine_roots, run)
    arkx.pretrain(cfg, progress=False, stop_after_steps=2)
    last = run / "checkpoints" / "last.pt"
    good = last.read_bytes()
    # resuming with another lr is refused, naming the key
    bad = tiny_config(pristine_roots, run, training=dict(lr=1e30))
    with pytest.raises(ConfigError, match=r"cannot resume .* differs .*training\.lr"):
        arkx.pretrain(bad, progress=False, resume=True)
    # the run's own config edited by hand is refused too (issue 19 item 4)
    config_file = run / "config.yaml"
    original = config_file.read_text()
    edited = yaml.safe_load(original)
    edited["training"]["lr"] = 1e30
    config_file.write_text(yaml.safe_dump(edited, sort_keys=False))
    with pytest.raises(RunChanged, match=r"config.yaml differs from the config of the last checkpoint at training\.lr"):
        arkx.resume(run, progress=False)
    config_file.write_text(original)
    # the loss blows up after the checkpoint
    with monkeypatch.context() as patch:
        _poison(patch, "shenzhen", step=2)
        with pytest.raises(NonFiniteLoss) as err:
            arkx.resume(run, progress=False)
    message = str(err.value)
    assert re.search(r"non-finite loss \((nan|inf|-inf)\) at step 2 \(round 1, dataset shenzhen\)", message)
    _image_ids(message, "shenzhen", arkx.read_dataset("shenzhen", pristine_roots["shenzhen"]))
    assert last.read_bytes() == good
    assert load_checkpoint(last)["step_done"] == 2
    model = arkx.load_model(run)  # the in-progress teacher still loads
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    # fixed: resume continues from the intact checkpoint, exactly as if nothing had happened
    assert arkx.resume(run, progress=False).finished
    assert_bitwise_equal(full, run)


def _poison(monkeypatch, dataset: str, step: int) -> None:
    real = Engine._batch_loss

    def batch_loss(self, name, batch, s, *args):
        loss, rows = real(self, name, batch, s, *args)
        if name == dataset and s.index == step:
            loss = loss * float("nan")
        return loss, rows

    monkeypatch.setattr(Engine, "_batch_loss", batch_loss)


def test_skip_mode_skips_the_bad_steps_reports_them_and_keeps_weights_finite(pristine_roots, tmp_path,
                                                                             monkeypatch, caplog):
    _poison(monkeypatch, "rsna", step=1)
    run = tmp_path / "run"
    cfg = tiny_config(pristine_roots, run, training=dict(on_nonfinite_loss="skip"))
    with caplog.at_level(logging.WARNING, logger="arkx.training"):
        summary = arkx.pretrain(cfg, progress=False)
    assert summary.finished and summary.skipped_steps == 2  # both iterations of step 1
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 2
    warned = [r.getMessage() for r in caplog.records if "non-finite loss" in r.getMessage()]
    assert len(warned) == 2 and all("dataset rsna" in m and m.endswith("step skipped") for m in warned)
    _image_ids(warned[0], "rsna", arkx.read_dataset("rsna", pristine_roots["rsna"]))
    state = checkpoint(run)
    for which in ("student", "teacher"):
        assert all(torch.isfinite(v).all() for v in state[which].values() if v.is_floating_point())


def test_stop_mode_with_a_poisoned_batch_keeps_the_previous_checkpoint(pristine_roots, tmp_path, monkeypatch):
    _poison(monkeypatch, "rsna", step=3)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"at step 3 \(round 1, dataset rsna\); batch images: rsna:"):
        arkx.pretrain(tiny_config(pristine_roots, run), progress=False)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step_done"] == 3
    assert not (run / "teacher.safetensors").exists()
