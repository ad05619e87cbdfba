"""Metrics on plain arrays, so any model's scores can be evaluated the same way.

AUROC per label with scikit-learn, over the images whose label is known (NaN = not labelled and
-1 = uncertain are excluded; a label without both classes present gets NaN and is left out of the
mean, the field's convention). Every label gets its own AUC — the authors' Foundation X reported
only the first label's AUC for a 13-label dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class AucResult:
    label_names: tuple[str, ...]
    per_label: np.ndarray  # AUC per label, NaN where undefined
    n_positive: np.ndarray
    n_negative: np.ndarray
    metric = "auc"  # what :attr:`mean` is (a class attribute: the task kinds' results all name theirs)

    @property
    def mean(self) -> float:
        """Mean over labels with a defined AUC (NaN if none)."""
        valid = self.per_label[~np.isnan(self.per_label)]
        return float(valid.mean()) if valid.size else float("nan")

    def as_dict(self) -> dict[str, float]:
        """``{label name: AUC}`` in label order (NaN where a label has one class only)."""
        return {name: float(v) for name, v in zip(self.label_names, self.per_label)}

    def excluded(self) -> dict[str, str]:
        """Labels left out of :attr:`mean`, each with the reason (see :func:`exclusion_reason`)."""
        out = {}
        for name, p, n in zip(self.label_names, self.n_positive, self.n_negative):
            reason = exclusion_reason(int(p), int(n))
            if reason:
                out[name] = reason
        return out


def exclusion_reason(n_positive: int, n_negative: int) -> str | None:
    """Why a label has no AUC (None when it has one): no labelled image, or one class only."""
    if n_positive and n_negative:
        return None
    if not n_positive and not n_negative:
        return "no labelled image"
    return f"one class only ({n_positive} positive, {n_negative} negative)"


def label_counts(kind: str, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives per label among the images that count for AUC (as :func:`task_auc` counts)."""
    targets = np.asarray(targets, dtype=np.float64)
    if kind == "multiclass":
        targets = targets[~np.isnan(targets).any(axis=1)]
    return (targets == 1).sum(axis=0).astype(np.int64), (targets == 0).sum(axis=0).astype(np.int64)


def excluded_labels(kind: str, targets: np.ndarray, label_names: tuple[str, ...]) -> dict[str, str]:
    """Labels that a split's targets leave without an AUC, with the reason (before any prediction)."""
    pos, neg = label_counts(kind, targets)
    out = {}
    for name, p, n in zip(label_names, pos, neg):
        reason = exclusion_reason(int(p), int(n))
        if reason:
            out[name] = reason
    return out


def known_mask(targets: np.ndarray) -> np.ndarray:
    """Entries with a definite label: 0 or 1 (not NaN, not uncertain -1)."""
    return (targets == 0) | (targets == 1)


def multilabel_auc(scores: np.ndarray, targets: np.ndarray, label_names: tuple[str, ...]) -> AucResult:
    """Per-label AUROC for ``scores`` and ``targets`` of shape ``[n, L]`` (targets in 1/0/-1/NaN)."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(label_names):
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be [n, {len(label_names)}]")
    aucs = np.full(len(label_names), np.nan)
    pos = np.zeros(len(label_names), dtype=np.int64)
    neg = np.zeros(len(label_names), dtype=np.int64)
    for j in range(len(label_names)):
        keep = known_mask(targets[:, j])
        y = targets[keep, j]
        pos[j], neg[j] = int((y == 1).sum()), int((y == 0).sum())
        if pos[j] and neg[j]:
            aucs[j] = roc_auc_score(y, scores[keep, j])
    return AucResult(tuple(label_names), aucs, pos, neg)


def task_auc(kind: str, scores: np.ndarray, targets: np.ndarray, label_names: tuple[str, ...]) -> AucResult:
    """AUROC for a head: per label (multilabel) or one-vs-rest per class on one-hot targets (multiclass)."""
    if kind == "multiclass":
        labelled = ~np.isnan(targets).any(axis=1)
        return multilabel_auc(scores[labelled], targets[labelled], label_names)
    return multilabel_auc(scores, targets, label_names)


def bootstrap_ci(scores: np.ndarray, targets: np.ndarray, label_names: tuple[str, ...], *,
                 kind: str = "multilabel", n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """Mean-AUC and per-label percentile bootstrap CIs (CheXzero protocol: resample the test set).

    Returns ``{name: (point, low, high)}`` with ``"mean"`` for the mean AUC.
    """
    rng = np.random.default_rng(seed)
    n = len(scores)
    point = task_auc(kind, scores, targets, label_names)
    draws = np.full((n_resamples, len(label_names) + 1), np.nan)
    for b in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        res = task_auc(kind, scores[idx], targets[idx], label_names)
        draws[b, :-1] = res.per_label
        draws[b, -1] = res.mean
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for j, name in enumerate(list(label_names) + ["mean"]):
        col = draws[:, j][~np.isnan(draws[:, j])]
        value = point.mean if name == "mean" else float(point.per_label[j])
        if col.size:
            out[name] = (value, float(np.percentile(col, lo_q)), float(np.percentile(col, hi_q)))
        else:
            out[name] = (value, float("nan"), float("nan"))
    return out
