"""The classification report of one head: per-label AUROC, AUPRC, sensitivity and specificity with CIs.

For every label of a multilabel head (every class, one-vs-rest, of a multiclass head):

- AUROC and AUPRC (average precision, scikit-learn's definition: the sum over distinct thresholds of the
  recall step times the precision there, no interpolation) on the test split;
- sensitivity and specificity on test at a threshold chosen on the validation split (max-F1 or Youden's J,
  :mod:`arkx.evaluation.thresholds`); the threshold is fixed before test is looked at, and is not
  re-chosen inside the bootstrap (the CI is the test sample's uncertainty at that operating point);
- the mean of each metric over the labels that have both classes on test (``label == "__mean__"``);
- a percentile 95 % CI from resampling test *patients* (:mod:`arkx.evaluation.bootstrap`); ``undefined``
  counts the resamples in which a label had one class only (left out of its CI). The mean of a resample
  is over the labels defined in it, among those the point estimate averages.

Only definite labels count (1 or 0; NaN = not labelled and -1 = uncertain are left out), as
:mod:`arkx.evaluation.metrics` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..errors import ArkxValueError
from .bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, patient_bootstrap
from .metrics import known_mask
from .thresholds import RULES, choose_threshold, sensitivity_specificity

MEAN_LABEL = "__mean__"
CLASSIFICATION_METRICS = ("auroc", "auprc", "sensitivity", "specificity")
#: the tidy table's columns, in order (every report this module and its siblings write has them)
TABLE_COLUMNS = ("dataset", "head", "task", "split", "label", "metric", "value", "ci_low", "ci_high", "threshold",
                 "threshold_rule", "n", "n_pos", "n_neg", "n_patients", "undefined_resamples", "n_resamples", "note")


@dataclass
class HeadPredictions:
    """One head's probabilities on one split, with what the evaluation needs of each image.

    ``scores`` and ``targets`` are ``[n, L]`` (targets raw: 1, 0, -1, NaN); ``patient_ids``, ``sex``
    (``"M"``, ``"F"`` or ``""``) and ``age`` (years, NaN unknown) are ``[n]``.
    """

    scores: np.ndarray
    targets: np.ndarray
    patient_ids: np.ndarray
    sex: np.ndarray | None = None
    age: np.ndarray | None = None
    ids: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.targets = np.asarray(self.targets, dtype=np.float64)
        self.patient_ids = np.asarray(self.patient_ids).astype(str)
        if self.scores.shape != self.targets.shape or self.scores.ndim != 2:
            raise ArkxValueError(f"predictions: scores {self.scores.shape} and targets {self.targets.shape} must "
                                 "both be [images, labels]")
        if len(self.patient_ids) != len(self.scores):
            raise ArkxValueError(f"predictions: {len(self.patient_ids)} patient ids for {len(self.scores)} images")


# ---------------------------------------------------------------------------- binary metrics
def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve of scores ``s`` for binary ``y`` (ties count half; NaN with one class).

    The Mann-Whitney form (equal to scikit-learn's ``roc_auc_score``), fast enough for 1,000 resamples."""
    n_pos = int((y == 1).sum())
    n_neg = len(y) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (AUPRC) as scikit-learn defines it: ``sum_k (R_k - R_{k-1}) P_k`` over distinct
    thresholds, highest first (NaN without a positive)."""
    n_pos = int((y == 1).sum())
    if not n_pos:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted == 1)
    last_of_value = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]
    tp = tp[last_of_value]
    precision = tp / (last_of_value + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# ---------------------------------------------------------------------------- thresholds on val
def validation_thresholds(val: HeadPredictions, rule: str) -> np.ndarray:
    """Per label, the threshold ``rule`` picks on the validation predictions (NaN where val lacks a class)."""
    if rule not in RULES:
        raise ArkxValueError(f"threshold rule {rule!r}; expected one of {', '.join(RULES)}")
    return np.array([choose_threshold(val.targets[:, j], val.scores[:, j], rule)
                     for j in range(val.scores.shape[1])])


# ---------------------------------------------------------------------------- the report
def _per_label(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``[4, L]``: AUROC, AUPRC, sensitivity, specificity of every label."""
    out = np.full((len(CLASSIFICATION_METRICS), scores.shape[1]), np.nan)
    for j in range(scores.shape[1]):
        keep = known_mask(targets[:, j])
        y, s = targets[keep, j], scores[keep, j]
        if not ((y == 1).any() and (y == 0).any()):
            continue
        out[0, j], out[1, j] = auroc(y, s), average_precision(y, s)
        out[2, j], out[3, j] = sensitivity_specificity(y, s, thresholds[j])
    return out


def _with_means(values: np.ndarray, averaged: np.ndarray) -> np.ndarray:
    """``values [4, L]`` flattened, then the mean of each metric over the ``averaged`` labels defined here."""
    chosen = values[:, averaged]
    means = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in chosen])
    return np.r_[values.ravel(), means]


def classification_report(test: HeadPredictions, val: HeadPredictions | None, label_names: Sequence[str], *,
                          dataset: str, head: str | None = None, task: str = "multilabel",
                          threshold_rule: str = "max-f1", n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                          level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """The tidy table (:data:`TABLE_COLUMNS`) of one classification head on its test split.

    ``val`` gives the thresholds (``None``: no sensitivity/specificity rows). ``n_resamples=0`` skips the
    bootstrap (CIs NaN)."""
    label_names = tuple(label_names)
    if test.scores.shape[1] != len(label_names):
        raise ArkxValueError(f"{dataset}: {test.scores.shape[1]} score columns for {len(label_names)} labels")
    thresholds = (validation_thresholds(val, threshold_rule) if val is not None
                  else np.full(len(label_names), np.nan))
    point_values = _per_label(test.scores, test.targets, thresholds)
    averaged = ~np.isnan(point_values[0])  # labels with both classes on test

    def statistic(idx: np.ndarray) -> np.ndarray:
        return _with_means(_per_label(test.scores[idx], test.targets[idx], thresholds), averaged)

    if n_resamples > 0:
        boot = patient_bootstrap(statistic, test.patient_ids, n_resamples=n_resamples, seed=seed, level=level)
        point, low, high, undefined, n_patients = boot.point, boot.low, boot.high, boot.undefined, boot.n_patients
    else:
        point = statistic(np.arange(len(test.scores)))
        low = high = np.full_like(point, np.nan)
        undefined = np.zeros(len(point), dtype=np.int64)
        n_patients = len(np.unique(test.patient_ids))
    return _rows(point, low, high, undefined, thresholds, test, label_names, averaged, dict(
        dataset=dataset, head=head or dataset, task=task, split=test.meta.get("split", "test"),
        threshold_rule=threshold_rule if val is not None else "", n_patients=n_patients,
        n_resamples=n_resamples), val is not None)


def _rows(point, low, high, undefined, thresholds, test: HeadPredictions, label_names, averaged, common: dict,
          with_threshold: bool) -> pd.DataFrame:
    n_labels = len(label_names)
    known = known_mask(test.targets)
    n_pos = (test.targets == 1).sum(axis=0)
    n_neg = (test.targets == 0).sum(axis=0)
    rows = []
    metrics = CLASSIFICATION_METRICS if with_threshold else CLASSIFICATION_METRICS[:2]
    for m, metric in enumerate(CLASSIFICATION_METRICS):
        if metric not in metrics:
            continue
        for j, name in enumerate(label_names):
            k = m * n_labels + j
            note = "" if averaged[j] else "one class only on test"
            if metric in ("sensitivity", "specificity") and averaged[j] and np.isnan(thresholds[j]):
                note = "no threshold: one class only on val"
            rows.append(dict(common, label=name, metric=metric, value=point[k], ci_low=low[k], ci_high=high[k],
                             threshold=thresholds[j] if metric in ("sensitivity", "specificity") else np.nan,
                             n=int(known[:, j].sum()), n_pos=int(n_pos[j]), n_neg=int(n_neg[j]),
                             undefined_resamples=int(undefined[k]), note=note))
        k = len(CLASSIFICATION_METRICS) * n_labels + m
        rows.append(dict(common, label=MEAN_LABEL, metric=metric, value=point[k], ci_low=low[k], ci_high=high[k],
                         threshold=np.nan, n=int(known.any(axis=1).sum()), n_pos=int(n_pos[averaged].sum()),
                         n_neg=int(n_neg[averaged].sum()), undefined_resamples=int(undefined[k]),
                         note=f"mean over {int(averaged.sum())} of {n_labels} labels"))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def format_table(table: pd.DataFrame, metrics: Sequence[str] | None = None, max_label: int = 26) -> str:
    """The tidy table as aligned text: one line per (dataset, label), one ``value [low, high]`` column per metric."""
    if table.empty:
        return "(no rows)"
    metrics = list(metrics or dict.fromkeys(table["metric"]))
    lines = []
    for (dataset, head, task), group in table.groupby(["dataset", "head", "task"], sort=False):
        rule = next((r for r in group["threshold_rule"] if isinstance(r, str) and r), "")
        shown = [m for m in metrics if m in set(group["metric"])]
        n_res = int(group["n_resamples"].iloc[0]) if len(group) else 0
        title = f"{dataset} ({task} head {head}, split {group['split'].iloc[0]}; "
        title += f"{int(group['n_patients'].iloc[0])} patients; "
        title += (f"95% CI: {n_res} patient resamples" if n_res else "no CI") + ")"
        if rule:
            title += f"; sensitivity/specificity at the {rule} threshold chosen on val"
        lines.append(title)
        lines.append(f"{'label':<{max_label}} " + " ".join(f"{m:>22}" for m in shown) + "   pos   neg")
        for label, rows in group.groupby("label", sort=False):
            by_metric = {r.metric: r for r in rows.itertuples(index=False)}
            cells = [_cell(by_metric.get(m)) for m in shown]
            first = next(iter(by_metric.values()))
            lines.append(f"{str(label)[:max_label]:<{max_label}} " + " ".join(f"{c:>22}" for c in cells)
                         + f" {_count(first.n_pos):>5} {_count(first.n_neg):>5}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _count(value) -> str:
    return "" if pd.isna(value) else str(int(value))


def _cell(row) -> str:
    if row is None or pd.isna(row.value):
        return "n/a"
    if pd.isna(row.ci_low):
        return f"{row.value:.3f}"
    return f"{row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
