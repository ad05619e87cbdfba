import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from arkx.evaluation.metrics import bootstrap_ci, multilabel_auc, task_auc


def test_every_label_gets_its_own_auc_and_missing_or_uncertain_are_excluded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 3)).astype(float)
    s = rng.random((200, 3))
    s[:, 1] = y[:, 1] * 0.5 + s[:, 1] * 0.5  # label 1 is predictable
    y_masked = y.copy()
    y_masked[:50, 2] = np.nan
    y_masked[50:80, 2] = -1
    res = multilabel_auc(s, y_masked, ("a", "b", "c"))
    assert res.per_label[1] > 0.8 > res.per_label[0]
    assert res.per_label[2] == pytest.approx(roc_auc_score(y[80:, 2], s[80:, 2]))
    assert res.n_positive[2] + res.n_negative[2] == 120
    assert res.mean == pytest.approx(np.mean(res.per_label))


def test_label_without_both_classes_is_nan_and_left_out_of_mean():
    y = np.array([[1, 0], [0, 0], [1, 0]], dtype=float)
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2]])
    res = multilabel_auc(s, y, ("a", "b"))
    assert np.isnan(res.per_label[1]) and res.mean == 1.0


def test_multiclass_one_vs_rest_skips_unlabelled_rows():
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [np.nan] * 3, [1, 0, 0], [0, 0, 1]])
    s = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.3] * 3, [0.6, 0.2, 0.2], [0.2, 0.2, 0.6]])
    res = task_auc("multiclass", s, y, ("n", "o", "p"))
    assert np.allclose(res.per_label, 1.0) and res.n_positive.sum() == 5


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        multilabel_auc(np.zeros((3, 2)), np.zeros((3, 3)), ("a", "b"))


def test_bootstrap_ci_brackets_the_point_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (300, 2)).astype(float)
    s = y * 0.3 + rng.random((300, 2))
    a = bootstrap_ci(s, y, ("a", "b"), n_resamples=200, seed=3)
    b = bootstrap_ci(s, y, ("a", "b"), n_resamples=200, seed=3)
    assert a == b
    point, lo, hi = a["mean"]
    assert lo < point < hi and hi - lo < 0.2
