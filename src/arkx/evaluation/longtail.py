"""Long-tailed view: labels grouped into head / medium / tail by how often they are positive in TRAINING.

A label's frequency is its share of positives among the training images where it is labelled (1 or 0);
with ``by="count"`` it is the number of positive training images instead. Defaults
(:data:`DEFAULT_FRACTIONS`): head above 10 % of the training images, tail below 1 %, medium in between
(the prevalence bands used for CXR-LT-style head / medium / tail reporting; pass your own with
``thresholds=(head_above, tail_below)``, e.g. ``by="count", thresholds=(1000, 100)`` for the
many-/medium-/few-shot counts of the long-tail literature). A label exactly at a bound goes to the
higher group (``>= head_above`` is head, ``< tail_below`` is tail).

:func:`group_means` averages any metric of the tidy evaluation table per group, over the labels that
have a value (the group's label count is reported beside it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import ArkxValueError
from .scoring import MEAN_LABEL

DEFAULT_FRACTIONS = (0.10, 0.01)
GROUPS = ("head", "medium", "tail")


def training_frequency(train_targets: np.ndarray, by: str = "fraction") -> np.ndarray:
    """Per label: the share (``by="fraction"``) or number (``by="count"``) of positive training images."""
    targets = np.asarray(train_targets, dtype=np.float64)
    positives = (targets == 1).sum(axis=0).astype(np.float64)
    if by == "count":
        return positives
    if by != "fraction":
        raise ArkxValueError(f"long-tail grouping by {by!r}; expected 'fraction' or 'count'")
    labelled = ((targets == 1) | (targets == 0)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(labelled > 0, positives / np.maximum(labelled, 1), np.nan)


def label_groups(train_targets: np.ndarray, label_names: Sequence[str], thresholds: tuple[float, float] | None = None,
                 by: str = "fraction") -> pd.DataFrame:
    """One row per label: ``label, frequency, group`` (``head``, ``medium``, ``tail``; ``""`` if never labelled)."""
    head_above, tail_below = thresholds if thresholds is not None else (
        DEFAULT_FRACTIONS if by == "fraction" else (None, None))
    if head_above is None:
        raise ArkxValueError("long-tail grouping by count needs thresholds=(head_above, tail_below)")
    if not tail_below <= head_above:
        raise ArkxValueError(f"long-tail thresholds: head bound {head_above} must be >= tail bound {tail_below}")
    freq = training_frequency(train_targets, by)
    if len(freq) != len(label_names):
        raise ArkxValueError(f"long-tail grouping: {len(freq)} target columns for {len(label_names)} labels")
    groups = np.where(np.isnan(freq), "", np.where(freq >= head_above, "head",
                                                    np.where(freq < tail_below, "tail", "medium")))
    return pd.DataFrame(dict(label=list(label_names), frequency=freq, group=groups))


def group_means(table: pd.DataFrame, groups: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Per (dataset, metric, group): the mean ``value`` over the group's labels that have one, and how many."""
    per_label = table[table["label"] != MEAN_LABEL].merge(groups[["label", "group"]], on="label", how="inner")
    if metrics is not None:
        per_label = per_label[per_label["metric"].isin(list(metrics))]
    rows = []
    keys = ["dataset", "metric"] if "dataset" in per_label.columns else ["metric"]
    for key, frame in per_label.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for group in GROUPS:
            values = frame.loc[frame["group"] == group, "value"].dropna()
            rows.append(dict(zip(keys, key), group=group, mean=float(values.mean()) if len(values) else np.nan,
                             n_labels=len(values),
                             labels=", ".join(map(str, frame.loc[frame["group"] == group, "label"]))))
    return pd.DataFrame(rows, columns=keys + ["group", "mean", "n_labels", "labels"])
