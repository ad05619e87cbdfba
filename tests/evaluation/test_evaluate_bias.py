"""Bias audit: FNR per sex and age group at the validation threshold on a hand-computed example (with CIs and
the F-M gap), and the sex-exclusive probe protocol finds a sex-specific embedding and not a shared one."""

from __future__ import annotations

import numpy as np
import pytest

from arkx.evaluation.bias import age_group, fnr_by_group, holm, sex_exclusive_probes
from arkx.evaluation.scoring import HeadPredictions
from arkx.transfer.embed import EmbeddingTable


def test_fnr_per_sex_and_age_group_by_hand():
    # label 0 positives: M scores 0.2, 0.8, 0.9 (1 of 3 missed at 0.5); F scores 0.1, 0.4, 0.6, 0.7 (2 of 4)
    scores = np.array([0.2, 0.8, 0.9, 0.1, 0.4, 0.6, 0.7, 0.9, 0.1])[:, None]
    targets = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0.0])[:, None]
    sex = np.array(["M", "M", "M", "F", "F", "F", "F", "M", "F"])
    age = np.array([25, 70, 72, 30, 35, 85, np.nan, 50, 50])
    test = HeadPredictions(scores, targets, [f"p{i}" for i in range(9)], sex=sex, age=age)
    table = fnr_by_group(test, np.array([0.5]), ("x",), dataset="d", n_resamples=200, seed=0)
    fnr = table.set_index(["attribute", "group"])["value"]
    assert fnr["sex", "M"] == pytest.approx(1 / 3) and fnr["sex", "F"] == pytest.approx(2 / 4)
    assert fnr["sex", "F-M"] == pytest.approx(2 / 4 - 1 / 3)
    # ages: 20-40 -> 0.2 (miss), 0.1 (miss), 0.4 (miss); 60-80 -> 0.8, 0.9; 80+ -> 0.6; unknown age left out
    assert fnr["age", "20-40"] == pytest.approx(1.0) and fnr["age", "60-80"] == 0.0 and fnr["age", "80+"] == 0.0
    assert "40-60" not in set(table.loc[table["metric"] == "fnr", "group"]) or np.isnan(fnr["age", "40-60"])
    n_pos = table.set_index(["attribute", "group"])["n_pos"]
    assert n_pos["sex", "M"] == 3 and n_pos["sex", "F"] == 4
    rows = table[table["metric"] == "fnr"].dropna(subset=["value"])
    assert ((rows["ci_low"] <= rows["value"]) & (rows["value"] <= rows["ci_high"])).all()
    assert (table["threshold"] == 0.5).all()


def test_age_bands_and_holm_adjustment():
    assert age_group(np.array([0, 19.9, 20, 79, 80, 101, np.nan])).tolist() == ["0-20", "0-20", "20-40", "60-80",
                                                                                   "80+", "80+", ""]
    assert holm(np.array([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])


def _table(rng, n: int, sex_specific: bool) -> EmbeddingTable:
    """Embeddings whose label signal lies on dimension 0 for women and dimension 1 for men (``sex_specific``),
    or on dimension 0 for everyone."""
    sex = np.array(["M", "F"] * (n // 2))
    y = rng.integers(0, 2, n).astype(np.float32)
    x = rng.normal(0, 1, (n, 6))
    women = sex == "F"
    x[women, 0] += 2.5 * y[women]
    x[~women, 1 if sex_specific else 0] += 2.5 * y[~women]
    split = np.where(np.arange(n) < n * 0.6, "train", np.where(np.arange(n) < n * 0.7, "val", "test"))
    return EmbeddingTable(ids=np.arange(n).astype(str), split=split, patient_id=np.arange(n).astype(str), sex=sex,
                          age=np.full(n, 50.0), label_names=("finding",), labels=y[:, None],
                          embeddings=x.astype(np.float32))


def test_sex_exclusive_protocol_flags_a_sex_specific_embedding_and_not_a_shared_one():
    rng = np.random.default_rng(0)
    biased = sex_exclusive_probes(_table(rng, 400, sex_specific=True), folds=8, train_fraction=0.5, seed=0)
    tests = biased.tests.set_index("test_sex")
    assert (tests["p_value"] < 0.05).all() and (tests["median_diff"] > 0.1).all()
    assert set(biased.per_fold["train_sex"]) == {"M", "F"} and biased.per_fold["fold"].nunique() == 8
    # male and female probes get the same number of positives and negatives in every fold
    assert biased.per_fold.groupby(["fold", "train_sex"])["n_train"].first().unstack().eval("M == F").all()
    fair = sex_exclusive_probes(_table(rng, 400, sex_specific=False), folds=8, train_fraction=0.5, seed=0)
    assert (fair.tests["p_value"] > 0.05).all() and (fair.tests["median_diff"].abs() < 0.05).all()
    assert "Wilcoxon" in fair.tests["test"].iloc[0] and "finding" in biased.format()
