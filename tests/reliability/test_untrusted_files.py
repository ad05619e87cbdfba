"""Untrusted files: pickles are never executed (weights_only=True everywhere a checkpoint is read), and
a checkpoint of another architecture fails with a message listing the mismatched keys."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import yaml

import arkx
from arkx.api import export_model
from arkx.cli import main
from arkx.config import ConfigError, config_from_dict
from arkx.training.state import FORMAT, load_checkpoint

from .conftest import SMALL_SWIN, tiny_config


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def runs(pristine_roots, tmp_path_factory):
    """Two finished one-step runs on the same data: ``a`` (Swin, 16-d) and ``b`` (Swin, 24-d)."""
    base = tmp_path_factory.mktemp("untrusted")
    a = base / "a"
    arkx.pretrain(tiny_config(pristine_roots, a, datasets=("shenzhen",), rounds=1), progress=False)
    b = base / "b"
    arkx.pretrain(tiny_config(pristine_roots, b, datasets=("shenzhen",), rounds=1,
                              model=dict(backbone_kwargs=dict(SMALL_SWIN, embed_dim=24))), progress=False)
    return a, b


def _copy_run(run, tmp_path, name="run", exports=True):
    """A copy of a run folder, with run.out in its config.yaml pointing at the copy (as a user must)."""
    dst = tmp_path / name
    shutil.copytree(run, dst, ignore=None if exports else shutil.ignore_patterns("*.safetensors"))
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    cfg["run"]["out"] = str(dst)
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


def test_resuming_a_copied_run_folder_never_continues_the_original(runs, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(runs[0], dst)
    before = (runs[0] / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"cannot resume .*copy: its config.yaml has run.out=.*/a, so resuming"):
        arkx.resume(dst, progress=False)
    assert (runs[0] / "checkpoints" / "last.pt").read_bytes() == before


def test_pickle_payloads_are_never_executed(runs, pristine_roots, tmp_path, capsys):
    marker = tmp_path / "owned"
    evil = {"format": FORMAT, "step_done": 1, "student": {"w": Payload(marker)}, "teacher": {}, "extra": {}}
    run = _copy_run(runs[0], tmp_path, exports=False)
    torch.save(evil, run / "checkpoints" / "last.pt")
    with pytest.raises(ValueError, match=r"last.pt: not a readable arkx checkpoint \(UnpicklingError"):
        load_checkpoint(run / "checkpoints" / "last.pt")
    with pytest.raises(ValueError, match="not a readable arkx checkpoint"):
        arkx.load_model(run)
    with pytest.raises(ValueError, match="not a readable arkx checkpoint"):
        arkx.resume(run, progress=False)
    assert main(["--quiet", "pretrain", "--resume", str(run)]) == 2
    assert "not a readable arkx checkpoint" in capsys.readouterr().err
    # as backbone weights (model.checkpoint)
    torch.save({"state_dict": {"w": Payload(marker)}}, tmp_path / "evil.pt")
    cfg = tiny_config(pristine_roots, tmp_path / "new", datasets=("shenzhen",), rounds=1,
                      model=dict(checkpoint=str(tmp_path / "evil.pt")))
    with pytest.raises(ValueError, match=r"evil.pt: cannot be loaded as weights .*weights_only=True"):
        arkx.pretrain(cfg, progress=False)
    assert not marker.exists(), "a pickle payload was executed"


def test_damaged_or_foreign_checkpoint_files_are_clear_errors(runs, tmp_path, capsys):
    run = _copy_run(runs[0], tmp_path, exports=False)
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])  # e.g. copied while being written by hand
    with pytest.raises(ValueError, match="last.pt: not a readable arkx checkpoint"):
        arkx.load_model(run)
    assert main(["--quiet", "pretrain", "--resume", str(run)]) == 2
    assert "not a readable arkx checkpoint" in capsys.readouterr().err
    torch.save({"student": {}}, last)  # a plain torch file, not an arkx checkpoint
    with pytest.raises(ValueError, match=r"not an arkx checkpoint \(format None, expected arkx-checkpoint/1\)"):
        arkx.resume(run, progress=False)


def test_export_of_another_architecture_fails_listing_keys(runs, tmp_path):
    a, b = runs
    run = _copy_run(a, tmp_path)
    foreign = arkx.load_model(b)
    cfg_a = config_from_dict(yaml.safe_load((a / "config.yaml").read_text()))
    export_model(foreign, cfg_a, run / "teacher.safetensors")  # metadata says a, tensors are b's
    with pytest.raises(ValueError) as err:
        arkx.load_model(run)
    message = str(err.value)
    assert "teacher.safetensors does not fit this architecture" in message
    assert "shape differs (" in message and "backbone.layers.0.blocks.0.norm1.weight file (24,) vs model (16,)" in message


def test_in_progress_checkpoint_of_another_architecture_fails_listing_keys(runs, tmp_path):
    a, b = runs
    run = _copy_run(a, tmp_path, exports=False)
    shutil.copy(b / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    with pytest.raises(ValueError, match=r"(?s)last.pt does not fit this architecture.*shape differs"):
        arkx.load_model(run)
    with pytest.raises(RuntimeError, match=r"differs from the config of the last checkpoint at "
                                           r"model\.backbone_kwargs\.embed_dim \(24 -> 16\)"):
        arkx.resume(run, progress=False)  # refused before any weight is loaded (issue 19 item 4)


def test_backbone_checkpoint_of_another_architecture_fails_listing_keys(runs, pristine_roots, tmp_path):
    foreign = runs[1] / "teacher.safetensors"  # an arkx export, 24-d Swin
    cfg = tiny_config(pristine_roots, tmp_path / "new", datasets=("shenzhen",), rounds=1,
                      model=dict(checkpoint=str(foreign)))
    with pytest.raises(ValueError) as err:
        arkx.pretrain(cfg, progress=False)
    message = str(err.value)
    assert "teacher.safetensors does not fit this architecture" in message
    assert "shape differs (" in message and "layers.0.blocks.0.norm1.weight file (24,) vs model (16,)" in message
    convnext = tmp_path / "convnext.pt"
    from arkx.models.backbones import create_backbone

    torch.save(create_backbone("test_convnext").state_dict(), convnext)
    cfg["model"]["checkpoint"] = str(convnext)
    cfg["run"]["out"] = str(tmp_path / "new2")
    with pytest.raises(ValueError, match=r"(?s)convnext.pt does not fit.*missing in file .*layers\.0\..*not in model .*stages\."):
        arkx.pretrain(cfg, progress=False)
