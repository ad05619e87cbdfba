"""Real tiny experiments: the table holds the scores the runs wrote, and an arm does what it says."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from arkx.cli import main
from arkx.experiments import EXPERIMENTS, run_experiment

from .conftest import write_tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ema_experiment_end_to_end(tiny_roots, tmp_path):
    # two rounds: the last EMA update uses a momentum above the start (0 in both arms)
    config = write_tiny_config(tiny_roots, tmp_path / "base.yaml", datasets=("shenzhen",), training=dict(rounds=2))
    out = tmp_path / "exp"
    result = run_experiment("ema", out, seeds=[0, 1], config=config, progress=False)
    # the table's means are the runs' own final test scores (metrics.csv), averaged over seeds
    for arm in ("ema", "no-ema"):
        scores = []
        for seed in (0, 1):
            metrics = pd.read_csv(out / "runs" / arm / f"seed-{seed}" / "metrics.csv")
            final = metrics[(metrics.trained == "final") & (metrics.label == "__mean__") & (metrics.model == "teacher")
                            & (metrics.dataset == "shenzhen")]
            scores.append(float(final.auc.iloc[0]))
        row = result.summary[(result.summary.arm == arm) & (result.summary.dataset == "shenzhen")].iloc[0]
        assert row["mean"] == pytest.approx(sum(scores) / 2)
    # "no EMA": the released teacher is an exact copy of the student; with EMA it is not
    for arm, same in (("no-ema", True), ("ema", False)):
        teacher = load_file(out / "runs" / arm / "seed-0" / "teacher.safetensors")
        student = load_file(out / "runs" / arm / "seed-0" / "student.safetensors")
        equal = all(torch.equal(teacher[k], student[k]) for k in teacher if teacher[k].is_floating_point())
        assert equal is same, arm
    assert set(result.tidy["arm"]) == {"ema", "no-ema"} and set(result.tidy["seed"]) == {0, 1}
    # finished runs keep their exported models, not their checkpoints (disk: 77 MB each at the demo's size)
    for arm in ("ema", "no-ema"):
        run = out / "runs" / arm / "seed-1"
        assert (run / "teacher.safetensors").is_file() and not list((run / "checkpoints").glob("*.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_runs_at_the_tiny_preset(name, tmp_path, capsys):
    assert main(["--quiet", "experiment", name, "--preset", "tiny", "--out", str(tmp_path / name)]) == 0
    printed = capsys.readouterr().out
    summary = pd.read_csv(tmp_path / name / "summary.csv")
    assert set(summary.arm) >= {a.name for a in EXPERIMENTS[name].arms if a.transfer is None or a.transfer.source != "init"}
    assert "Δ vs baseline" in printed and (tmp_path / name / "experiment.html").is_file()
