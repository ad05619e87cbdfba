"""The summary's statistics against an independent computation on a hand-made results frame, the sign of
the differences and the choice of each arm's baseline, the mean over datasets, and the files written."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from arkx.experiments import EXPERIMENTS
from arkx.experiments.tables import DATASET_MEAN, summarize, write_outputs

# t quantiles t(0.975, df) from a table, not from scipy: df 2 and df 3
T975 = {2: 4.302652729911275, 3: 3.182446305284263}


def frame(values: dict[str, dict[str, list[float]]], experiment="cyclic-vs-concurrent") -> pd.DataFrame:
    """values[arm][dataset] = scores of seeds 0, 1, ... (NaN: undefined)."""
    rows = []
    for arm, per in values.items():
        for dataset, scores in per.items():
            for seed, v in enumerate(scores):
                rows.append(dict(experiment=experiment, arm=arm, seed=seed, job=arm, dataset=dataset,
                                 label="__mean__", metric="auroc", value=v))
                rows.append(dict(experiment=experiment, arm=arm, seed=seed, job=arm, dataset=dataset,
                                 label="Nodule", metric="auroc", value=0.1))  # per-label rows are not summarised
    return pd.DataFrame(rows)


def paired_p(d: np.ndarray) -> float:
    """Two-sided paired t-test p from its formula (t statistic, then the t distribution's tail by integration)."""
    from scipy import integrate

    n = len(d)
    t_stat = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    df = n - 1
    density = lambda x: math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (1 + x * x / df) ** (-(df + 1) / 2)
    tail, _ = integrate.quad(density, abs(t_stat), np.inf)
    return 2 * tail


def test_summary_matches_an_independent_computation():
    cyc = [0.80, 0.84, 0.79, 0.83]
    con = [0.75, 0.80, 0.78, 0.76]
    table = summarize(EXPERIMENTS["cyclic-vs-concurrent"], frame({"cyclic": {"a": cyc}, "concurrent": {"a": con}}))
    row = table[(table.arm == "cyclic") & (table.dataset == "a")].iloc[0]
    x, d = np.array(cyc), np.array(cyc) - np.array(con)
    half = T975[3] * x.std(ddof=1) / 2
    assert row["mean"] == pytest.approx(x.mean()) and row["std"] == pytest.approx(x.std(ddof=1))
    assert (row.ci_low, row.ci_high) == pytest.approx((x.mean() - half, x.mean() + half))
    d_half = T975[3] * d.std(ddof=1) / 2
    assert row["diff"] == pytest.approx(d.mean()) and row["diff"] > 0  # arm minus baseline
    assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((d.mean() - d_half, d.mean() + d_half))
    assert row.p_value == pytest.approx(paired_p(d), rel=1e-6)
    assert row.baseline == "concurrent" and row.n_seeds == 4 and row.n_pairs == 4
    base = table[(table.arm == "concurrent") & (table.dataset == "a")].iloc[0]
    assert base.baseline == "" and math.isnan(base["diff"]) and base["mean"] == pytest.approx(np.mean(con))


def test_each_arm_is_compared_with_its_own_baseline():
    e = EXPERIMENTS["transfer"]
    scores = {"ark/fine-tune": [0.9, 0.8, 0.85], "scratch/fine-tune": [0.6, 0.62, 0.61],
              "ark/linear-probe": [0.7, 0.71, 0.69], "scratch/linear-probe": [0.5, 0.5, 0.52]}
    table = summarize(e, frame({arm: {"chexpert": v} for arm, v in scores.items()}, "transfer")).set_index("arm")
    assert table.loc["ark/fine-tune", "baseline"] == "scratch/fine-tune"
    assert table.loc["ark/fine-tune", "diff"] == pytest.approx(np.mean(np.subtract(scores["ark/fine-tune"],
                                                                                   scores["scratch/fine-tune"])))
    assert table.loc["ark/linear-probe", "baseline"] == "scratch/linear-probe"
    assert table.loc["ark/linear-probe", "diff"] == pytest.approx(np.mean(np.subtract(scores["ark/linear-probe"],
                                                                                      scores["scratch/linear-probe"])))
    # both random-initialisation arms are baselines (each mode its own)
    assert table.loc["scratch/fine-tune", "baseline"] == table.loc["scratch/linear-probe", "baseline"] == ""


def test_one_seed_has_no_interval_and_the_dataset_mean_uses_the_datasets_every_run_scored():
    values = {"cyclic": {"a": [0.8, 0.9, 0.7], "b": [0.6, 0.5, 0.4], "c": [0.9, math.nan, 0.9]},
              "concurrent": {"a": [0.7, 0.8, 0.6], "b": [0.6, 0.6, 0.6], "c": [0.1, 0.1, 0.1]}}
    table = summarize(EXPERIMENTS["cyclic-vs-concurrent"], frame(values)).set_index(["arm", "dataset"])
    # c has an undefined score in one run: left out of every arm's mean over datasets
    assert table.loc[("cyclic", DATASET_MEAN), "mean"] == pytest.approx(np.mean([0.8, 0.9, 0.7, 0.6, 0.5, 0.4]))
    assert table.loc[("concurrent", DATASET_MEAN), "mean"] == pytest.approx(np.mean([0.7, 0.8, 0.6, 0.6, 0.6, 0.6]))
    assert table.loc[("cyclic", "c"), "n_seeds"] == 2
    single = summarize(EXPERIMENTS["cyclic-vs-concurrent"], frame({"cyclic": {"a": [0.8]}, "concurrent": {"a": [0.7]}}))
    assert single[["std", "ci_low", "ci_high", "diff_ci_low", "p_value"]].isna().all().all()
    assert single.loc[single.arm == "cyclic", "diff"].iloc[0] == pytest.approx(0.1)


def test_outputs_are_written_and_the_page_is_self_contained(tmp_path):
    e = EXPERIMENTS["cyclic-vs-concurrent"]
    summary, text, paths = write_outputs(e, frame({"cyclic": {"a": [0.8, 0.9]}, "concurrent": {"a": [0.7, 0.6]}}),
                                         tmp_path, preset=None, seeds=[0, 1])
    assert pd.read_csv(paths["results"]).shape[0] == 8
    assert pd.read_csv(paths["summary"]).shape[0] == len(summary) == 2
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "<script" not in page and "http" not in page
    assert "cyclic" in text and "+0.2000" in text and "vs concurrent" in text
