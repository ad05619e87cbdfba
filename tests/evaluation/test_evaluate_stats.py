"""The statistics of ``arkx evaluate`` on hand-made score arrays: AUROC / AUPRC equal scikit-learn's, the
bootstrap draws whole patients and its CI covers the true AUROC at about the nominal rate, duplicated images
of one patient do not narrow the CI, the threshold comes from val (not test), thresholds by hand, and labels
with one class in a resample are counted."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from arkx.errors import ArkxValueError
from arkx.evaluation.bootstrap import PatientIndex, bootstrap_p_value, patient_bootstrap
from arkx.evaluation.scoring import (
    MEAN_LABEL,
    TABLE_COLUMNS,
    HeadPredictions,
    auroc,
    average_precision,
    classification_report,
    format_table,
)
from arkx.evaluation.thresholds import choose_threshold, sensitivity_specificity


def _row(table, label, metric):
    return table[(table["label"] == label) & (table["metric"] == metric)].iloc[0]


def test_auroc_and_average_precision_equal_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(30):
        y = rng.integers(0, 2, 40).astype(float)
        s = np.round(rng.random(40), 1)  # many ties
        if y.min() == y.max():
            continue
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert np.isnan(auroc(np.ones(3), np.arange(3.0))) and np.isnan(average_precision(np.zeros(3), np.arange(3.0)))


def test_a_resample_takes_all_images_of_each_drawn_patient():
    ids = np.array(["a", "b", "a", "c", "b", "a"])
    index = PatientIndex.from_ids(ids)
    assert index.n_patients == 3
    drawn = index.draw(np.random.default_rng(0), patients=np.array([0, 0, 2]))  # a twice, c once
    assert sorted(drawn.tolist()) == [0, 0, 2, 2, 3, 5, 5]
    rng = np.random.default_rng(1)
    for _ in range(20):
        picked = ids[index.draw(rng)]
        counts = {p: int((picked == p).sum()) for p in "abc"}
        # a patient contributes all its images each time it is drawn: counts are multiples of its image count
        assert counts["a"] % 3 == 0 and counts["b"] % 2 == 0


def _clustered_sample(rng, n_patients: int, per_patient: int, d: float, sigma: float):
    """Scores with a shared patient effect; the label is the patient's. True AUROC = Phi(d / sqrt(2 (sigma^2 + 1)))."""
    y_patient = rng.integers(0, 2, n_patients)
    effect = rng.normal(0, sigma, n_patients)
    patient = np.repeat(np.arange(n_patients), per_patient)
    y = y_patient[patient].astype(float)
    s = d * y + effect[patient] + rng.normal(0, 1, len(patient))
    return s[:, None], y[:, None], patient


def test_patient_bootstrap_ci_covers_the_true_auroc_at_about_the_nominal_rate():
    d, sigma = 2.0, 2.0
    true_auc = norm.cdf(d / np.sqrt(2 * (sigma ** 2 + 1)))
    rng = np.random.default_rng(123)
    covered, reps = 0, 50
    for rep in range(reps):
        s, y, patient = _clustered_sample(rng, 60, 4, d, sigma)
        boot = patient_bootstrap(lambda idx, y=y, s=s: auroc(y[idx, 0], s[idx, 0]), patient, n_resamples=100,
                                 seed=rep)
        covered += boot.low[0] <= true_auc <= boot.high[0]
    # 50 simulated studies: 0.95 expected (binomial sd 0.03; 0.90-0.96 over three other simulation seeds); an
    # image bootstrap of these clustered data (design effect 3.4) covers 0.72-0.78 of the time
    assert 0.86 <= covered / reps <= 1.0, covered / reps


def test_duplicated_images_of_one_patient_do_not_narrow_the_ci():
    rng = np.random.default_rng(5)
    n = 80
    y = rng.integers(0, 2, n).astype(float)
    s = y + rng.normal(0, 1.2, n)
    copies = 5
    s_dup, y_dup = np.repeat(s, copies)[:, None], np.repeat(y, copies)[:, None]
    by_patient = np.repeat(np.arange(n), copies)
    by_image = np.arange(n * copies)  # what an image bootstrap would treat as independent

    def width(patient_ids):
        table = classification_report(HeadPredictions(s_dup, y_dup, patient_ids), None, ("x",), dataset="d",
                                      n_resamples=300, seed=0)
        row = _row(table, "x", "auroc")
        return row.ci_high - row.ci_low

    single = classification_report(HeadPredictions(s[:, None], y[:, None], np.arange(n)), None, ("x",),
                                   dataset="d", n_resamples=300, seed=0)
    single_width = _row(single, "x", "auroc").ci_high - _row(single, "x", "auroc").ci_low
    assert width(by_patient) > 1.7 * width(by_image)
    assert width(by_patient) == pytest.approx(single_width, rel=0.25)  # five copies carry one patient's evidence


def test_threshold_is_chosen_on_val_and_applied_to_test():
    # val: positives score 0.3 and above, so max-F1 picks 0.3; on test the best cut would be 0.7
    val = HeadPredictions(np.array([[0.1], [0.2], [0.3], [0.35], [0.4]]), np.array([[0], [0], [1], [1], [1.0]]),
                          ["v1", "v2", "v3", "v4", "v5"])
    test = HeadPredictions(np.array([[0.35], [0.5], [0.6], [0.7], [0.8], [0.9]]),
                           np.array([[0], [0], [0], [1], [1], [1.0]]), ["t1", "t2", "t3", "t4", "t5", "t6"])
    table = classification_report(test, val, ("x",), dataset="d", n_resamples=0)
    sens, spec = _row(table, "x", "sensitivity"), _row(table, "x", "specificity")
    assert sens.threshold == pytest.approx(0.3) and spec.threshold == pytest.approx(0.3)
    assert sens.value == 1.0 and spec.value == 0.0  # every test image scores >= 0.3
    assert sens.threshold_rule == "max-f1"
    assert set(table.columns) >= set(TABLE_COLUMNS)


def test_max_f1_and_youden_thresholds_by_hand():
    y = np.array([0, 0, 1, 0, 1, 1.0])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    # score >= 0.3: TP 3, FP 1 -> F1 6/7; >= 0.5: TP 2, FP 0 -> F1 0.8; >= 0.1: F1 6/9
    assert choose_threshold(y, s, "max-f1") == pytest.approx(0.3)
    # Youden: >= 0.5 -> 2/3 - 0 = 0.667; >= 0.3 -> 1 - 1/3 = 0.667 (tie: the higher threshold wins)
    assert choose_threshold(y, s, "youden") == pytest.approx(0.5)
    assert sensitivity_specificity(y, s, 0.5) == pytest.approx((2 / 3, 1.0))
    assert np.isnan(choose_threshold(np.ones(3), s[:3], "max-f1"))
    with pytest.raises(ArkxValueError):
        choose_threshold(y, s, "median")


def test_labels_with_one_class_in_a_resample_are_counted_and_left_out():
    rng = np.random.default_rng(2)
    n = 40
    common = rng.integers(0, 2, n).astype(float)
    rare = np.zeros(n)
    rare[7] = 1.0  # one positive patient: absent from about (1 - 1/n)^n of the resamples
    targets = np.stack([common, rare], axis=1)
    scores = targets + rng.normal(0, 1, targets.shape)
    table = classification_report(HeadPredictions(scores, targets, np.arange(n)), None, ("common", "rare"),
                                  dataset="d", n_resamples=400, seed=0)
    rare_row, common_row = _row(table, "rare", "auroc"), _row(table, "common", "auroc")
    assert 0.25 * 400 < rare_row.undefined_resamples < 0.5 * 400
    assert common_row.undefined_resamples == 0
    assert not np.isnan(rare_row.ci_low)
    mean = _row(table, MEAN_LABEL, "auroc")
    assert mean.value == pytest.approx((common_row.value + rare_row.value) / 2)
    assert not np.isnan(mean.ci_low) and "mean over 2 of 2 labels" in mean.note
    assert "rare" in format_table(table)


def test_bootstrap_p_value_is_two_sided_and_never_zero():
    assert bootstrap_p_value(np.full(99, 0.1))[0] == pytest.approx(0.01)
    assert bootstrap_p_value(np.r_[np.full(50, -1.0), np.full(50, 1.0)])[0] == pytest.approx(1.0)
