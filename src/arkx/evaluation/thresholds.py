"""Operating points: a decision threshold chosen on the VALIDATION split, then applied unchanged to test.

Choosing the threshold on the split it is reported on makes sensitivity and specificity look better than
they will be on new patients; so :func:`choose_threshold` only ever sees validation scores, and the test
split is scored at that fixed threshold (:func:`sensitivity_specificity`).

Rules:

- ``max-f1``: the threshold maximising F1 = 2 TP / (2 TP + FP + FN) (the underdiagnosis studies'
  choice, Seyyed-Kalantari et al. 2021);
- ``youden``: the threshold maximising Youden's J = sensitivity + specificity - 1.

Candidates are the distinct validation scores; an image is called positive when its score is **at least**
the threshold. Ties between candidates go to the highest threshold (the fewest positive calls).
"""

from __future__ import annotations

import numpy as np

from ..errors import ArkxValueError

RULES = ("max-f1", "youden")


def _counts_at_candidates(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, tp, fp)``: for each distinct score t (descending), TP and FP of ``score >= t``."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted == 1)
    fp = np.cumsum(y_sorted == 0)
    last_of_value = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]
    return s_sorted[last_of_value], tp[last_of_value], fp[last_of_value]


def choose_threshold(y: np.ndarray, s: np.ndarray, rule: str = "max-f1") -> float:
    """The threshold ``rule`` picks on labelled validation pairs (``y`` in {0, 1}); NaN when ``y`` lacks a class."""
    if rule not in RULES:
        raise ArkxValueError(f"threshold rule {rule!r}; expected one of {', '.join(RULES)}")
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    keep = (y == 0) | (y == 1)
    y, s = y[keep], s[keep]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if not n_pos or not n_neg:
        return float("nan")
    thresholds, tp, fp = _counts_at_candidates(y, s)
    if rule == "max-f1":
        fn = n_pos - tp
        objective = 2 * tp / (2 * tp + fp + fn)
    else:
        # Youden's J times n_pos * n_neg, in integers: equal J values tie exactly (floats would break ties by
        # rounding noise)
        objective = tp * n_neg - fp * n_pos
    # thresholds are in decreasing order: argmax returns the first (highest) of tied candidates
    return float(thresholds[int(np.argmax(objective))])


def sensitivity_specificity(y: np.ndarray, s: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity (TPR) and specificity (TNR) of ``score >= threshold`` on labelled pairs (NaN when a class is absent
    or the threshold is NaN)."""
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if np.isnan(threshold):
        return float("nan"), float("nan")
    called = s >= threshold
    pos, neg = y == 1, y == 0
    sens = float(called[pos].mean()) if pos.any() else float("nan")
    spec = float((~called[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def false_negative_rate(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    """FN / (TP + FN) of ``score >= threshold`` among the positives of ``y`` (NaN without positives)."""
    sens, _ = sensitivity_specificity(y, s, threshold)
    return float("nan") if np.isnan(sens) else 1.0 - sens
