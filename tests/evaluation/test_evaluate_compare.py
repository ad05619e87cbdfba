"""Comparing runs: mean ± std over seeds from run folders, the paired t-test over seeds and the paired patient
bootstrap detect a real difference and not a null one; the long-tailed grouping by training frequency."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from arkx.cli import main
from arkx.evaluation.aggregate import (
    paired_bootstrap,
    paired_seed_test,
    read_runs,
    summarize_seeds,
)
from arkx.evaluation.longtail import group_means, label_groups
from arkx.evaluation.scoring import MEAN_LABEL, HeadPredictions


def _results(values: dict[int, list[float]], labels=("a", "b", "c")) -> pd.DataFrame:
    rows = [dict(run=f"r{seed}", seed=seed, dataset="d", label=label, metric="auroc", value=v)
            for seed, per_label in values.items() for label, v in zip(labels, per_label)]
    return pd.DataFrame(rows)


def test_paired_seed_test_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    seeds = range(6)
    base = {s: list(0.75 + rng.normal(0, 0.02, 3)) for s in seeds}
    better = {s: [v + 0.04 + rng.normal(0, 0.005) for v in base[s]] for s in seeds}
    null = {s: [v + rng.normal(0, 0.005) * (1 if s % 2 else -1) for v in base[s]] for s in seeds}
    real = paired_seed_test(_results(better), _results(base))
    assert (real["p_value"] < 0.001).all() and (real["diff_mean"] > 0.03).all() and (real["n_pairs"] == 6).all()
    none = paired_seed_test(_results(null), _results(base))
    assert (none["p_value"] > 0.05).all() and (none["diff_mean"].abs() < 0.01).all()


def test_paired_seed_test_pairs_by_seed_not_by_order():
    base = _results({0: [0.70, 0.70, 0.70], 1: [0.80, 0.80, 0.80], 2: [0.90, 0.90, 0.90]})
    group = _results({2: [0.91, 0.92, 0.91], 0: [0.71, 0.72, 0.71], 1: [0.81, 0.82, 0.81]})  # +0.01/+0.02 by seed
    test = paired_seed_test(group, base)
    assert test.set_index("label")["diff_mean"].to_dict() == pytest.approx(dict(a=0.01, b=0.02, c=0.01))
    # the same difference at every seed: paired by seed, the differences do not vary
    assert test["diff_std"].to_numpy() == pytest.approx(np.zeros(3), abs=1e-9)


def _two_models(rng, n_patients: int, noise_a: float, noise_b: float):
    patient = np.repeat(np.arange(n_patients), 2)
    y = np.repeat(rng.integers(0, 2, (n_patients, 2)), 2, axis=0).astype(float)
    signal = y + np.repeat(rng.normal(0, 0.7, (n_patients, 2)), 2, axis=0)  # what both models see
    a = signal + rng.normal(0, noise_a, y.shape)
    b = signal + rng.normal(0, noise_b, y.shape)
    return HeadPredictions(a, y, patient), HeadPredictions(b, y, patient)


def test_paired_bootstrap_detects_a_real_difference_and_rejects_a_null_one_at_about_alpha():
    rng = np.random.default_rng(3)
    better, worse = _two_models(rng, 150, 0.3, 1.5)
    table = paired_bootstrap(better, worse, ("x", "y"), n_resamples=200, seed=0, dataset="d")
    assert (table["p_value"] < 0.01).all() and (table["ci_low"] > 0).all()
    assert table["label"].tolist() == ["x", "y", MEAN_LABEL]
    assert table["diff"].iloc[-1] == pytest.approx(table["value"].iloc[-1] - table["baseline_value"].iloc[-1])
    rejected = 0
    for study in range(20):  # equally good models: about 5 % of studies reject at 0.05
        a, b = _two_models(np.random.default_rng(100 + study), 60, 1.0, 1.0)
        null = paired_bootstrap(a, b, ("x", "y"), n_resamples=100, seed=study)
        rejected += null["p_value"].iloc[-1] < 0.05
    assert rejected <= 3


def _fake_run(folder, seed: int, aucs: dict[str, float]):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"run:\n  seed: {seed}\n")
    rows = [dict(step=10, round=2, trained="final", model="teacher", dataset="nih14", split="test", label=label,
                 auc=v, n_pos=5, n_neg=5, note="", task="multilabel", metric="auc", score=v, trained_task="")
            for label, v in aucs.items()]
    rows.append(dict(rows[0], split="val", auc=0.1, score=0.1))  # not a final test row: ignored
    rows.append(dict(rows[0], model="student", auc=0.2, score=0.2))  # the student: ignored by default
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    return folder


def test_compare_reads_run_folders_and_prints_mean_std_and_the_paired_test(tmp_path, capsys):
    ark = [_fake_run(tmp_path / f"ark{s}", s, {"A": 0.80 + 0.01 * s, MEAN_LABEL: 0.80 + 0.01 * s}) for s in range(3)]
    single = [_fake_run(tmp_path / f"one{s}", s, {"A": 0.75 + 0.01 * s + 0.001 * s * s, MEAN_LABEL: 0.75})
              for s in range(3)]
    frame = read_runs(ark)
    assert sorted(frame["seed"].unique()) == [0, 1, 2] and set(frame["metric"]) == {"auroc"}
    summary = summarize_seeds(frame).set_index("label")
    assert summary.loc["A", "mean"] == pytest.approx(0.81) and summary.loc["A", "std"] == pytest.approx(0.01)
    out = tmp_path / "cmp.csv"
    assert main(["--quiet", "evaluate", "--compare", *map(str, ark), "--baseline", *map(str, single),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "paired t-test" in printed and "0.8100 ± 0.0100" in printed
    paired = pd.read_csv(out.with_name("cmp.paired.csv")).set_index("label")
    assert paired.loc["A", "n_pairs"] == 3 and paired.loc["A", "diff_mean"] == pytest.approx(0.05 - 0.005 / 3)
    assert main(["--quiet", "evaluate"]) == 2  # neither MODEL nor --compare: one line, status 2


def test_long_tail_groups_by_training_frequency_with_documented_bounds():
    n = 1000
    targets = np.zeros((n, 5))
    targets[:300, 0] = 1  # 30 % -> head
    targets[:100, 1] = 1  # exactly 10 % -> head (a bound goes to the higher group)
    targets[:50, 2] = 1  # 5 % -> medium
    targets[:10, 3] = 1  # exactly 1 % -> medium
    targets[:5, 4] = 1  # 0.5 % -> tail
    targets[500:, 4] = np.nan  # unlabelled images do not count: 5 of 500 = 1 % -> medium
    groups = label_groups(targets, list("abcde"))
    assert groups["group"].tolist() == ["head", "head", "medium", "medium", "medium"]
    targets[500:, 4] = 0
    assert label_groups(targets, list("abcde"))["group"].tolist()[-1] == "tail"
    by_count = label_groups(targets, list("abcde"), thresholds=(100, 20), by="count")
    assert by_count["group"].tolist() == ["head", "head", "medium", "tail", "tail"]
    table = pd.DataFrame(dict(dataset="d", label=list("abcde") + [MEAN_LABEL], metric="auroc",
                              value=[0.9, 0.8, 0.7, np.nan, 0.5, 0.0]))
    means = group_means(table, by_count).set_index("group")
    assert means.loc["head", "mean"] == pytest.approx(0.85) and means.loc["tail", "n_labels"] == 1
    assert means.loc["tail", "mean"] == pytest.approx(0.5) and means.loc["medium", "mean"] == pytest.approx(0.7)
