"""`arkx experiment list`, `arkx experiment NAME ...` and `arkx.experiment(...)`: the same runner, the same
folder, one-line errors (training replaced by the fakes of test_runner.py)."""

from __future__ import annotations

import pandas as pd

import arkx
from arkx.cli import main
from arkx.experiments import EXPERIMENTS

from .conftest import write_tiny_config
from .test_runner import FakeTraining


def test_list_names_every_experiment_its_arms_and_the_presets(capsys):
    assert main(["experiment", "list"]) == 0
    printed = capsys.readouterr().out
    for name, e in EXPERIMENTS.items():
        assert f"{name}: " in printed
        for arm in e.arms:
            assert f"    {arm.name}" in printed
    assert "tiny " in printed and "demo " in printed and "(baseline)" in printed


def test_cli_runs_and_the_api_reads_the_same_folder(tiny_roots, tmp_path, monkeypatch, capsys):
    fake = FakeTraining(monkeypatch)
    config = write_tiny_config(tiny_roots, tmp_path / "base.yaml")
    out = tmp_path / "exp"
    assert main(["--quiet", "experiment", "cyclic-vs-concurrent", "--config", str(config), "--out", str(out),
                 "--seeds", "0", "1"]) == 0
    printed = capsys.readouterr().out
    assert "4 run(s) trained now" in printed and "vs concurrent" in printed and "+0.0500" in printed
    assert len(fake.pretrained) == 4
    result = arkx.experiment("cyclic-vs-concurrent", out, seeds=[0, 1], config=config, progress=False)
    assert len(fake.pretrained) == 4 and len(result.reused) == 4  # the API continued the CLI's folder
    written = pd.read_csv(out / "summary.csv").fillna({"baseline": ""})
    pd.testing.assert_frame_equal(result.summary, written, check_dtype=False)
    assert result.text in printed
    for key in ("results", "summary", "plot", "html", "text", "markdown"):
        assert result.paths[key].is_file() and result.paths[key].parent == out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["experiment", "no-such-thing", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'no-such-thing'" in err and "ark-vs-single" in err and len(err.splitlines()) == 1
    assert main(["experiment", "ema", "--init", "timm:/w.pth", "--out", str(tmp_path / "y")]) == 2
    assert "--init applies to the transfer experiment" in capsys.readouterr().err
    assert main(["experiment", "ema", "--seeds", "1", "1", "--out", str(tmp_path / "z")]) == 2
    assert "each seed once" in capsys.readouterr().err
