"""Bias audit (Ark, MICCAI 2023, §3.4): underdiagnosis per sex and age group, and the sex-exclusive protocol.

**False-negative rate per group** (:func:`fnr_by_group`): for every label, at the threshold chosen on the
VALIDATION split (:mod:`arkx.evaluation.thresholds`, the same for every group), FNR = FN / positives among
the test images of each group: sex (``M``, ``F``) and age band (:data:`AGE_BINS`, in years). Images whose
sex or age is unknown are left out of that attribute's groups. Each FNR has a percentile CI from one
patient bootstrap shared by all groups (patients are drawn from the whole test split, so the ``F - M`` gap
rows have a CI too); ``undefined_resamples`` counts resamples in which a group had no positive of the label.

**Sex-exclusive protocol** (:func:`sex_exclusive_probes`; Larrazabal et al., PNAS 2020, as Ark uses it):
for every label and each of ``folds`` seeded folds, two linear probes are trained on frozen embeddings
(:func:`arkx.transfer.probe.fit_probe`: standardised logistic regression, fixed ``C``): one on male-only and
one on female-only training images, with the SAME number of positives and of negatives for both sexes
(so only the sex of the training images differs; each fold draws ``train_fraction`` of the smaller sex's
positives and negatives, without replacement). Both probes are scored by AUROC on the male-only and on the
female-only test images. Per label and test sex, the AUROC of the probe trained on the same sex and the one
trained on the other sex are paired by fold and compared with the two-sided **Wilcoxon signed-rank test**
(``scipy.stats.wilcoxon``); p-values are also given Holm-adjusted over the labels of one test sex. A
significant difference is the protocol's sign of a sex-biased embedding.

Caveat: the male and the female training pools are fixed sets of images; folds only redraw subsets of them
(half of each by default, so folds overlap less than with larger fractions). A significant difference
therefore says that probes trained on these male images and on these female images differ on the test
sex, which includes any chance difference between the two pools; with small datasets read it as a flag to
look at, not as proof of a sex bias.

Deliberate differences from the authors: the test sets are the dataset's own test split restricted to each
sex (the same in every fold; folds differ by their training draws), and ``C`` is fixed rather than tuned per
fold, so the comparison varies only the training data's sex.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ArkxValueError
from .aggregate import format_p
from .bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, patient_bootstrap
from .metrics import known_mask
from .scoring import HeadPredictions

log = logging.getLogger("arkx.evaluation")

#: age bands in years: [0, 20), [20, 40), [40, 60), [60, 80), [80, inf) (the underdiagnosis studies' bands)
AGE_BINS = (0, 20, 40, 60, 80)
SEXES = ("M", "F")
BIAS_COLUMNS = ("dataset", "attribute", "group", "label", "metric", "value", "ci_low", "ci_high", "threshold", "n_pos",
                "n_patients", "undefined_resamples", "n_resamples")


# ---------------------------------------------------------------------------- groups
def age_group(age: np.ndarray, bins: Sequence[float] = AGE_BINS) -> np.ndarray:
    """Age band names (``"40-60"``, ``"80+"``) per image; ``""`` where the age is unknown."""
    age = np.asarray(age, dtype=np.float64)
    edges = list(bins)
    names = [f"{edges[i]:g}-{edges[i + 1]:g}" for i in range(len(edges) - 1)] + [f"{edges[-1]:g}+"]
    out = np.full(len(age), "", dtype=object)
    known = ~np.isnan(age) & (age >= edges[0])
    out[known] = np.asarray(names, dtype=object)[np.searchsorted(edges, age[known], side="right") - 1]
    return out.astype(str)


def sex_group(sex: np.ndarray) -> np.ndarray:
    """``"M"``, ``"F"`` or ``""`` per image (other spellings, None and NaN become unknown)."""
    text = pd.Series(list(sex), dtype=object).map(lambda s: s if s in SEXES else "")
    return text.to_numpy().astype(str)


def attribute_groups(predictions: HeadPredictions, age_bins: Sequence[float] = AGE_BINS) -> dict[str, np.ndarray]:
    """``{"sex": [n], "age": [n]}`` group names of the predictions' images (attributes the data lacks are left out)."""
    out = {}
    if predictions.sex is not None and (sex_group(predictions.sex) != "").any():
        out["sex"] = sex_group(predictions.sex)
    if predictions.age is not None and (age_group(predictions.age, age_bins) != "").any():
        out["age"] = age_group(predictions.age, age_bins)
    return out


# ---------------------------------------------------------------------------- FNR per group
def _fnr(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    positives = y == 1
    if not positives.any() or np.isnan(threshold):
        return np.nan
    return float((s[positives] < threshold).mean())


def fnr_by_group(test: HeadPredictions, thresholds: np.ndarray, label_names: Sequence[str], *,
                 groups: dict[str, np.ndarray] | None = None, dataset: str = "",
                 n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """FNR of every label in every group of every attribute at the given (validation) ``thresholds``, with
    patient-bootstrap CIs, plus ``F-M`` gap rows when the attribute is sex (see the module docstring)."""
    label_names = tuple(label_names)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if len(thresholds) != len(label_names):
        raise ArkxValueError(f"FNR by group: {len(thresholds)} thresholds for {len(label_names)} labels")
    groups = attribute_groups(test) if groups is None else groups
    if not groups:
        raise ArkxValueError(f"{dataset or 'predictions'}: no sex or age recorded for any test image; the FNR audit "
                             "needs them (does the adapter read them from this provider?)")
    cells = [(attr, name) for attr, values in groups.items() for name in sorted(set(values) - {""})]
    gaps = [("sex", "F-M")] if "sex" in groups and {"M", "F"} <= set(groups["sex"]) else []
    known = known_mask(test.targets)

    def statistic(idx: np.ndarray) -> np.ndarray:
        t, s = test.targets[idx], test.scores[idx]
        values = {}
        for attr, name in cells:
            in_group = groups[attr][idx] == name
            for j in range(len(label_names)):
                keep = in_group & known[idx, j]
                values[attr, name, j] = _fnr(t[keep, j], s[keep, j], thresholds[j])
        out = [values[attr, name, j] for attr, name in cells for j in range(len(label_names))]
        out += [values["sex", "F", j] - values["sex", "M", j] for _ in gaps for j in range(len(label_names))]
        return np.asarray(out, dtype=np.float64)

    boot = patient_bootstrap(statistic, test.patient_ids, n_resamples=max(n_resamples, 1), seed=seed, level=level)
    rows, k = [], 0
    for attr, name in cells + gaps:
        members = groups[attr] == name if name != "F-M" else np.zeros(len(test.scores), dtype=bool)
        for j, label in enumerate(label_names):
            n_pos = int((members & (test.targets[:, j] == 1)).sum())
            no_ci = n_resamples < 1
            rows.append(dict(dataset=dataset, attribute=attr, group=name, label=label, metric="fnr" if name != "F-M"
                             else "fnr_gap", value=boot.point[k], ci_low=np.nan if no_ci else boot.low[k],
                             ci_high=np.nan if no_ci else boot.high[k], threshold=thresholds[j], n_pos=n_pos,
                             n_patients=len(np.unique(test.patient_ids[members])) if name != "F-M"
                             else boot.n_patients, undefined_resamples=int(boot.undefined[k]),
                             n_resamples=n_resamples))
            k += 1
    return pd.DataFrame(rows, columns=list(BIAS_COLUMNS))


# ---------------------------------------------------------------------------- sex-exclusive probes
@dataclass
class SexBiasResult:
    """``per_fold``: one row per (label, fold, train_sex, test_sex) with ``auc`` and ``n_train``; ``tests``: one
    row per (label, test_sex) with the same-sex and other-sex mean AUROC, the median paired difference
    (same - other), the Wilcoxon p-value and its Holm adjustment; ``skipped``: ``(label, reason)``."""

    per_fold: pd.DataFrame
    tests: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"{'label':<26} {'test sex':>8} {'same-sex AUC':>12} {'other-sex AUC':>13} {'median diff':>11} "
                 f"{'p (Wilcoxon)':>12} {'p (Holm)':>9} folds"]
        for r in self.tests.itertuples(index=False):
            lines.append(f"{str(r.label)[:26]:<26} {r.test_sex:>8} {r.same_sex_auc:>12.4f} {r.other_sex_auc:>13.4f} "
                         f"{r.median_diff:>+11.4f} {format_p(r.p_value):>12} {format_p(r.p_holm):>9} {r.n_folds:>5}")
        for label, reason in self.skipped:
            lines.append(f"{str(label)[:26]:<26} skipped: {reason}")
        return "\n".join(lines)



def _balanced_draw(rng: np.random.Generator, pools: dict[str, dict[int, np.ndarray]], fraction: float) -> dict[str, np.ndarray]:
    """Per sex, rows with the same number of positives and negatives (``fraction`` of the smaller sex's)."""
    counts = {cls: max(1, int(fraction * min(len(pools[s][cls]) for s in SEXES))) for cls in (0, 1)}
    return {s: np.sort(np.concatenate([rng.choice(pools[s][cls], size=counts[cls], replace=False) for cls in (0, 1)]))
            for s in SEXES}


def sex_exclusive_probes(table, *, folds: int = 20, train_fraction: float = 0.5, C: float = 1.0, seed: int = 0,
                         labels: Sequence[str] | None = None, min_per_class: int = 2) -> SexBiasResult:
    """The sex-exclusive protocol on an :class:`arkx.transfer.embed.EmbeddingTable` (see the module docstring)."""
    from scipy.stats import wilcoxon

    from ..transfer.probe import _blas_threads, fit_probe
    from .scoring import auroc

    if folds < 2:
        raise ArkxValueError(f"sex-exclusive protocol: folds must be >= 2 (a paired test over folds), got {folds}")
    if not 0 < train_fraction <= 1:
        raise ArkxValueError(f"sex-exclusive protocol: train_fraction must be in (0, 1], got {train_fraction}")
    names = tuple(table.label_names)
    chosen = names if labels is None else tuple(labels)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ArkxValueError(f"sex-exclusive protocol: unknown label(s) {unknown}; the table's labels: {list(names)}")
    sex = sex_group(table.sex)
    x = np.asarray(table.embeddings, dtype=np.float64)
    y_all = np.asarray(table.labels, dtype=np.float64)
    train, test = table.split == "train", table.split == "test"
    rows, skipped = [], []
    with _blas_threads(x):
        for name in chosen:
            j = names.index(name)
            y = y_all[:, j]
            pools = {s: {cls: np.flatnonzero(train & (sex == s) & (y == cls)) for cls in (0, 1)} for s in SEXES}
            tests = {s: np.flatnonzero(test & (sex == s) & known_mask(y)) for s in SEXES}
            short = [f"{s} {'positive' if cls else 'negative'}" for s in SEXES for cls in (0, 1)
                     if len(pools[s][cls]) < min_per_class]
            short += [f"{s} test" for s in SEXES if len(np.unique(y[tests[s]])) < 2]
            if short:
                reason = f"too few images: {', '.join(short)}"
                log.warning("sex-exclusive protocol: label %r skipped (%s)", name, reason)
                skipped.append((name, reason))
                continue
            for fold in range(folds):
                rng = np.random.default_rng([seed, fold, j])
                drawn = _balanced_draw(rng, pools, train_fraction)
                for train_sex in SEXES:
                    rows_ = drawn[train_sex]
                    scaler, clf = fit_probe(x[rows_], y[rows_], C, None)
                    for test_sex in SEXES:
                        t = tests[test_sex]
                        scores = clf.predict_proba(scaler.transform(x[t]))[:, 1]
                        rows.append(dict(label=name, fold=fold, train_sex=train_sex, test_sex=test_sex,
                                         auc=auroc(y[t], scores), n_train=len(rows_), n_test=len(t)))
    per_fold = pd.DataFrame(rows, columns=["label", "fold", "train_sex", "test_sex", "auc", "n_train", "n_test"])
    return SexBiasResult(per_fold, _wilcoxon_tests(per_fold, wilcoxon), skipped)


def _wilcoxon_tests(per_fold: pd.DataFrame, wilcoxon) -> pd.DataFrame:
    rows = []
    for (label, test_sex), frame in per_fold.groupby(["label", "test_sex"], sort=False):
        wide = frame.pivot(index="fold", columns="train_sex", values="auc")
        other = "F" if test_sex == "M" else "M"
        same, opposite = wide[test_sex].to_numpy(), wide[other].to_numpy()
        diff = same - opposite
        p = 1.0 if np.allclose(diff, 0) else float(wilcoxon(same, opposite, alternative="two-sided").pvalue)
        rows.append(dict(label=label, test_sex=test_sex, same_sex_auc=float(same.mean()),
                         other_sex_auc=float(opposite.mean()), median_diff=float(np.median(diff)), p_value=p,
                         n_folds=len(diff), test="Wilcoxon signed-rank over folds"))
    tests = pd.DataFrame(rows, columns=["label", "test_sex", "same_sex_auc", "other_sex_auc", "median_diff", "p_value",
                                        "n_folds", "test"])
    tests["p_holm"] = np.nan
    for test_sex, frame in tests.groupby("test_sex"):
        tests.loc[frame.index, "p_holm"] = holm(frame["p_value"].to_numpy())
    return tests


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted
