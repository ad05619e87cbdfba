"""`arkx demo --foundation-x` at a tiny size: X-CLS next to single-task models, one row per (dataset, task).

The single-task baselines must train exactly one task of one dataset with Foundation X's number of epochs on
it; the table must carry the scores the runs wrote (not recomputed, not placeholders)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from arkx.cli import main
from arkx.demo_foundation_x import FX_DATASETS, _single_task, foundation_x_config


def test_the_single_task_baseline_trains_one_task_with_foundation_xs_epochs(tmp_path, monkeypatch):
    roots = {name: tmp_path / name for name, _ in FX_DATASETS}
    base = foundation_x_config(roots, tmp_path, rounds=3, seed=1)
    seen = {}

    class Summary:
        final_tasks = {"teacher": {"montgomery": {"segmentation": 0.5}}}

    def fake_pretrain(cfg, progress=True):
        seen.update(cfg)
        return Summary()

    monkeypatch.setattr("arkx.demo_foundation_x.pretrain", fake_pretrain)
    assert _single_task(base, base["datasets"][1], "segmentation", tmp_path, False) == 0.5
    assert [d["type"] for d in seen["datasets"]] == ["montgomery"]
    assert seen["datasets"][0]["tasks"] == ["segmentation"] and seen["training"]["tasks"] == ["segmentation"]
    assert seen["training"]["rounds"] == base["training"]["rounds"] == 3  # one epoch of the task per round
    assert seen["training"]["lock_release"] == base["training"]["lock_release"]
    assert base["training"]["tasks"] == "X-CLS"


@pytest.mark.slow
def test_foundation_x_demo_prints_every_task_next_to_its_single_task_model(tmp_path, capsys):
    out = tmp_path / "fx"
    assert main(["--quiet", "demo", "--foundation-x", "--out", str(out), "--n", "24", "--rounds", "1"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "demo_table.csv")
    assert list(zip(table.dataset, table.task)) == [
        ("jsrt", "classification"), ("jsrt", "localization"), ("jsrt", "segmentation"),
        ("montgomery", "classification"), ("montgomery", "localization"), ("montgomery", "segmentation"),
        ("vindr_cxr", "classification"), ("vindr_cxr", "localization")]
    assert set(table.metric) == {"AUC", "mAP40", "Dice"}
    metrics = pd.read_csv(out / "foundation-x" / "metrics.csv")
    final = metrics[(metrics.trained == "final") & (metrics.label == "__mean__")]
    for row in table.itertuples():
        kind = final[(final.dataset == row.dataset) & (final.metric == {"AUC": "auc", "mAP40": "map40",
                                                                           "Dice": "dice"}[row.metric])]
        assert math.isclose(kind.score.iloc[0], row.foundation_x, abs_tol=1e-6) or (
            math.isnan(row.foundation_x) and math.isnan(kind.score.iloc[0]))
        assert (out / f"single-{row.dataset}-{row.task}" / "teacher.safetensors").exists()
    assert "Foundation X" in printed and "report" in printed
    assert (out / "foundation-x" / "report" / "report.html").exists()
