"""`arkx demo`: the ark-vs-single experiment over three seeds, its table with CIs, the report of the first
seed's Ark run (the experiment runner is replaced by a fake here; the real one is in the slow test)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arkx.cli import main
from arkx.demo import DEMO_N, DEMO_ROUNDS, demo_table, format_table, run_demo
from arkx.experiments import EXPERIMENTS
from arkx.experiments.tables import summarize

DATASETS = ("mimic_cxr", "chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen")


def tidy(seeds=(0, 1, 2), arms=("ark", "single")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [dict(experiment="ark-vs-single", arm=arm, seed=s, job=arm, dataset=d, label="__mean__", metric="auroc",
                 value=float(rng.uniform(0.5, 0.9))) for arm in arms for s in seeds for d in DATASETS]
    return pd.DataFrame(rows)


def test_demo_table_carries_the_summary_of_each_dataset_and_the_mean():
    summary = summarize(EXPERIMENTS["ark-vs-single"], tidy())
    table = demo_table(summary)
    assert list(table.dataset) == list(DATASETS) + ["(mean)"]
    s = summary.set_index(["arm", "dataset"])
    for r in table.itertuples():
        assert r.ark_teacher_auc == s.loc[("ark", r.dataset), "mean"]
        assert r.single_dataset_auc == s.loc[("single", r.dataset), "mean"]
        assert (r.delta, r.delta_ci_low, r.p_value) == (s.loc[("ark", r.dataset), "diff"],
                                                        s.loc[("ark", r.dataset), "diff_ci_low"],
                                                        s.loc[("ark", r.dataset), "p_value"])
        assert r.seeds == 3 and r.ark_ci_low < r.ark_teacher_auc < r.ark_ci_high
    text = format_table(table)
    for dataset in DATASETS:  # what the packaging test reads: the dataset, then its Ark score
        assert re.search(rf"^{dataset}\s+[01]\.\d{{4}}\s", text, re.M)
    row = table.iloc[1]
    assert f"{row.delta:+.4f} [{row.delta_ci_low:+.3f}, {row.delta_ci_high:+.3f}]" in text


def test_without_baselines_the_single_columns_are_empty():
    table = demo_table(summarize(EXPERIMENTS["ark-vs-single"], tidy(arms=("ark",))))
    assert table[["single_dataset_auc", "delta", "p_value"]].isna().all().all()
    assert table["ark_teacher_auc"].notna().all()
    assert "n/a" in format_table(table)


def test_demo_runs_the_experiment_over_three_seeds_and_reports_the_first(tmp_path, monkeypatch, capsys):
    calls, reports = [], []

    class Result:
        seeds = [4, 5, 6]
        seconds = 1.0

        def __init__(self, arms):
            self.summary = summarize(EXPERIMENTS["ark-vs-single"], tidy(seeds=(4, 5, 6), arms=arms or ("ark", "single")))

    def fake_experiment(name, out, *, seeds, preset, arms, progress):
        calls.append(dict(name=name, out=out, seeds=seeds, preset=preset, arms=arms))
        (out / "runs" / "ark" / "seed-4").mkdir(parents=True)
        return Result(arms)

    monkeypatch.setattr("arkx.experiments.run_experiment", fake_experiment)
    monkeypatch.setattr("arkx.evaluation.html_report.write_report",
                        lambda run, **kw: reports.append(Path(run)) or Path(run) / "report" / "report.html")
    assert main(["--quiet", "demo", "--out", str(tmp_path / "demo"), "--seed", "4"]) == 0
    (call,) = calls
    assert call["name"] == "ark-vs-single" and call["seeds"] == (4, 5, 6) and call["arms"] is None
    assert (call["preset"].n, call["preset"].rounds, call["preset"].image_size) == (DEMO_N, DEMO_ROUNDS, 64)
    assert reports == [tmp_path / "demo" / "runs" / "ark" / "seed-4"]
    assert (tmp_path / "demo" / "ark").resolve() == reports[0]  # the name earlier demos used
    printed = capsys.readouterr().out
    assert "mean over seeds 4 5 6" in printed and "(mean)" in printed and "report" in printed
    assert pd.read_csv(tmp_path / "demo" / "demo_table.csv").shape[0] == 7
    calls.clear()
    run_demo(tmp_path / "d2", seeds=(0, 1, 2), baselines=False, progress=False)
    assert calls[0]["arms"] == ["ark"]


@pytest.mark.slow
def test_demo_end_to_end_three_seeds(tmp_path):
    result = run_demo(tmp_path / "demo", n=40, size=48, rounds=1, progress=False)
    table = result.table
    assert list(table.dataset)[:6] == list(DATASETS) and result.experiment.seeds == [0, 1, 2]
    runs = tmp_path / "demo" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(["ark"] + [f"single-{d}" for d in DATASETS])
    assert all((runs / "ark" / f"seed-{s}" / "teacher.safetensors").is_file() for s in (0, 1, 2))
    assert result.report == runs / "ark" / "seed-0" / "report" / "report.html" and result.report.is_file()
    scored = table[table.seeds >= 2]
    assert len(scored) and scored[["ark_ci_low", "delta_ci_low"]].notna().all().all()
    assert all(math.isfinite(v) for v in scored.ark_teacher_auc)
