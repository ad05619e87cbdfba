"""Linear probes on frozen embeddings: how much a model's embedding says about each label.

For every setting (a fraction of the training split, or k examples per class) and every seed, a
scikit-learn logistic regression is trained on a seeded subset of the train split, on standardised
features (the scaler is fitted on that subset only), and scored by AUROC on the test split.

* multilabel datasets: one binary probe per label; multiclass datasets: one multinomial probe whose
  classes are scored one-vs-rest.
* the inverse regularisation ``C`` is chosen from a small grid by AUROC on the **validation** split;
  the test split is only ever scored with the chosen probe.
* labels not labelled (NaN) are masked; uncertain ones (-1) follow ``uncertain`` in the training subset
  (``ignore``, ``ones``, ``zeros``) and are always left out of validation and test, as
  :mod:`arkx.evaluation.metrics` does.
* fraction subsets are nested (for one seed, the 1 % images are among the 10 % images) and keep one
  example of each class of every label when the train split has one; k-shot subsets hold exactly k
  positives and k negatives of the probed label (k per class for multiclass).
* a label with one class only in its training subset or in the test split is skipped with a warning
  naming it: it gets no AUC rather than a meaningless one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ..errors import ArkxValueError
from .embed import EmbeddingTable, load_embeddings

log = logging.getLogger("arkx.transfer")

#: Inverse regularisation strengths tried on the validation split.
C_GRID = tuple(10.0 ** p for p in range(-4, 3))
UNCERTAIN = ("ignore", "ones", "zeros")
#: Training matrices smaller than this (elements) are fitted on one thread.
SMALL_FIT = 2_000_000


@dataclass
class ProbeResult:
    """``per_label``: one row per (setting, seed, label) with ``auc``, chosen ``C`` and ``n_train``;
    ``summary``: per setting, the mean over labels averaged over seeds (``mean``, ``std`` over seeds);
    ``skipped``: ``(setting, seed, label, reason)`` of probes that got no AUC."""

    per_label: pd.DataFrame
    summary: pd.DataFrame
    skipped: list[tuple[str, int, str, str]] = field(default_factory=list)

    def to_csv(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``per_label`` to ``path`` and ``summary`` beside it (``NAME.summary.csv``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        summary_path = path.with_name(f"{path.stem}.summary{path.suffix or '.csv'}")
        self.per_label.to_csv(path, index=False)
        self.summary.to_csv(summary_path, index=False)
        return path, summary_path

    def format_summary(self) -> str:
        """The summary as aligned text: ``setting  mean ± std  (seeds, labels)``."""
        lines = [f"{'setting':<14} {'AUC mean ± std':>16}  seeds  labels"]
        for row in self.summary.itertuples(index=False):
            std = "n/a" if math.isnan(row.std) else f"{row.std:.3f}"
            lines.append(f"{row.setting:<14} {row.mean:>8.3f} ± {std:<5}  {row.n_seeds:>5}  {row.n_labels:>6}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- subsets
def fraction_subset(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions (into ``targets`` rows) of a seeded ``fraction`` of the rows, sorted.

    The first ``ceil(fraction * n)`` rows of a seeded permutation, plus, for every label column lacking
    a known positive or negative there, the earliest such row of the permutation. For one seed the
    subsets are nested: the rows added for a small fraction are the ones a larger fraction holds or adds.
    """
    if not 0 < fraction <= 1:
        raise ArkxValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(targets)
    order = np.random.default_rng(seed).permutation(n)
    m = max(1, math.ceil(fraction * n)) if n else 0
    chosen = set(order[:m].tolist())
    ordered = targets[order]
    for column in range(targets.shape[1]):
        for value in (1.0, 0.0):
            present = np.flatnonzero(ordered[:, column] == value)
            if present.size and present[0] >= m:
                chosen.add(int(order[present[0]]))
    return np.array(sorted(chosen), dtype=np.int64)


def kshot_subset(classes: np.ndarray, k: int, seed: int) -> np.ndarray | None:
    """Positions of exactly ``k`` rows of every class in ``classes`` (an int array, -1 = unusable),
    drawn with ``seed``; None when a class has fewer than ``k`` rows."""
    if k < 1:
        raise ArkxValueError(f"shots must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    picked = []
    for value in sorted(set(classes[classes >= 0].tolist())):
        pool = np.flatnonzero(classes == value)
        if len(pool) < k:
            return None
        picked.append(rng.choice(pool, size=k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else None


# ---------------------------------------------------------------------------- targets
def _train_targets(labels: np.ndarray, uncertain: str) -> np.ndarray:
    """Training targets: NaN stays unknown; -1 is unknown (ignore) or becomes 1/0."""
    y = np.array(labels, dtype=np.float64)
    fill = {"ignore": np.nan, "ones": 1.0, "zeros": 0.0}[uncertain]
    y[y == -1] = fill
    return y


def _eval_targets(labels: np.ndarray) -> np.ndarray:
    """Validation/test targets: only 1 and 0 count."""
    y = np.array(labels, dtype=np.float64)
    y[(y != 0) & (y != 1)] = np.nan
    return y


def _class_index(onehot: np.ndarray) -> np.ndarray:
    """Multiclass targets ``[n, L]`` one-hot -> class index, -1 where the row is not a known one-hot row."""
    known = ~np.isnan(onehot).any(axis=1) & (np.nan_to_num(onehot) == 1).sum(axis=1).astype(bool)
    out = np.full(len(onehot), -1, dtype=np.int64)
    out[known] = np.nanargmax(np.where(np.isnan(onehot), -np.inf, onehot)[known], axis=1)
    return out


# ---------------------------------------------------------------------------- fitting
def fit_probe(x: np.ndarray, y: np.ndarray, C: float, class_weight: str | None):
    """A standardised logistic regression fitted on ``(x, y)``: ``(scaler, classifier)``."""
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=C, class_weight=class_weight, max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few-shot fit at large C need not converge
        clf.fit(scaler.transform(x), y)
    return scaler, clf


def _blas_threads(x: np.ndarray):
    """One BLAS/OpenMP thread for small fits: their threads only wait on each other there (a probe of a few
    hundred rows ran 8x slower with two threads than with one on a busy 2-core machine)."""
    if x.size >= SMALL_FIT:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _scores(probe, x: np.ndarray) -> np.ndarray:
    scaler, clf = probe
    return clf.predict_proba(scaler.transform(x))


def _binary_auc(probe, x: np.ndarray, y: np.ndarray) -> float:
    return float(roc_auc_score(y, _scores(probe, x)[:, 1]))


def _ovr_aucs(probe, x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """One-vs-rest AUC per class (NaN for a class absent from ``y`` or from the probe's training)."""
    probs = _scores(probe, x)
    trained = list(probe[1].classes_)
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        positive = y == c
        if c in trained and positive.any() and (~positive).any():
            out[c] = roc_auc_score(positive, probs[:, trained.index(c)])
    return out


def choose_C(x_train, y_train, x_val, y_val, class_weight, score, grid=C_GRID) -> float:
    """The grid's ``C`` whose probe, fitted on the training subset, scores best on the validation rows
    (the smallest such ``C`` on a tie: the most regularised). ``score(probe, x, y)`` -> float."""
    best_c, best = None, -np.inf
    for C in grid:
        value = score(fit_probe(x_train, y_train, C, class_weight), x_val, y_val)
        if np.isfinite(value) and value > best:
            best_c, best = C, value
    return best_c if best_c is not None else 1.0


# ---------------------------------------------------------------------------- the probe loop
def probe(table_or_path: EmbeddingTable | str | Path, fractions=(0.01, 0.1, 1.0), shots=(), seeds=(0, 1, 2),
          class_weight: str | None = None, uncertain: str = "ignore", grid=C_GRID) -> ProbeResult:
    """Linear probes of a table's embeddings at data ``fractions`` and ``shots`` per class, over ``seeds``.

    Args:
        table_or_path: an :class:`EmbeddingTable` or a file written by ``arkx embed``.
        fractions: fractions of the train split (each in (0, 1]).
        shots: k for k-shot probes (k positives and k negatives per label; k per class for multiclass).
        seeds: one subset (and the resulting AUC) per seed.
        class_weight: None or ``"balanced"`` (scikit-learn's class weighting).
        uncertain: what an uncertain (-1) training label becomes: ``ignore``, ``ones`` or ``zeros``.
        grid: the ``C`` values tried on the validation split.
    """
    table = table_or_path if isinstance(table_or_path, EmbeddingTable) else load_embeddings(table_or_path)
    if class_weight not in (None, "balanced"):
        raise ArkxValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    if uncertain not in UNCERTAIN:
        raise ArkxValueError(f"uncertain must be one of {', '.join(UNCERTAIN)}, got {uncertain!r}")
    if not fractions and not shots:
        raise ArkxValueError("nothing to probe: give at least one fraction or one shot count")
    for split in ("train", "val", "test"):
        if not len(table.rows(split)):
            raise ArkxValueError(f"the embeddings have no {split} rows; a probe trains on train, chooses C on val "
                                 "and reports test")
    run = _ProbeRun(table, class_weight, uncertain, tuple(grid))
    with _blas_threads(run.x_train):
        for fraction in fractions:
            for seed in seeds:
                run.fraction(float(fraction), int(seed))
        for k in shots:
            for seed in seeds:
                run.shots(int(k), int(seed))
    per_label = pd.DataFrame(run.rows, columns=["setting", "kind", "value", "seed", "label", "auc", "C", "n_train",
                                                "n_test"])
    return ProbeResult(per_label, summarize(per_label), run.skipped)


def summarize(per_label: pd.DataFrame) -> pd.DataFrame:
    """Per setting: the mean AUC over labels of each seed, then its mean and std (ddof=1) over seeds."""
    rows = []
    for setting, group in per_label.groupby("setting", sort=False):
        by_seed = group.groupby("seed")["auc"].mean()
        rows.append(dict(setting=setting, mean=float(by_seed.mean()),
                         std=float(by_seed.std(ddof=1)) if len(by_seed) > 1 else float("nan"),
                         n_seeds=int(len(by_seed)), n_labels=int(group["label"].nunique())))
    return pd.DataFrame(rows, columns=["setting", "mean", "std", "n_seeds", "n_labels"])


class _ProbeRun:
    """The data of one :func:`probe` call, split once, and the rows it produces."""

    def __init__(self, table: EmbeddingTable, class_weight, uncertain: str, grid: tuple[float, ...]):
        self.names = tuple(table.label_names)
        self.multiclass = table.task_kind == "multiclass"
        self.class_weight = class_weight
        self.grid = grid
        x = np.asarray(table.embeddings, dtype=np.float64)
        labels = np.asarray(table.labels, dtype=np.float64)
        tr, va, te = (table.rows(s) for s in ("train", "val", "test"))
        self.x_train, self.x_val, self.x_test = x[tr], x[va], x[te]
        self.y_train = _train_targets(labels[tr], uncertain)
        self.y_val, self.y_test = _eval_targets(labels[va]), _eval_targets(labels[te])
        self.rows: list[tuple] = []
        self.skipped: list[tuple[str, int, str, str]] = []

    # ------------------------------------------------------------------ settings
    def fraction(self, fraction: float, seed: int) -> None:
        setting = f"fraction={fraction:g}"
        subset = fraction_subset(self.y_train, fraction, seed)
        if self.multiclass:
            self._multiclass(setting, "fraction", fraction, seed, subset)
            return
        for j in range(len(self.names)):
            rows = subset[~np.isnan(self.y_train[subset, j])]
            self._binary(setting, "fraction", fraction, seed, j, rows)

    def shots(self, k: int, seed: int) -> None:
        setting = f"{k}-shot"
        if self.multiclass:
            subset = kshot_subset(_class_index(self.y_train), k, seed)
            if subset is None:
                self._skip(setting, seed, "(all classes)", f"a class has fewer than {k} training images")
                return
            self._multiclass(setting, "shots", k, seed, subset)
            return
        for j, name in enumerate(self.names):
            column = self.y_train[:, j]
            classes = np.where(np.isnan(column), -1, column).astype(np.int64)
            rows = kshot_subset(classes, k, seed + 7919 * j)  # each label draws its own examples
            if rows is None or len(set(classes[rows].tolist())) < 2:
                self._skip(setting, seed, name, f"fewer than {k} positive or negative training images")
                continue
            self._binary(setting, "shots", k, seed, j, rows)

    # ------------------------------------------------------------------ one probe
    def _binary(self, setting: str, kind: str, value, seed: int, j: int, rows: np.ndarray) -> None:
        name = self.names[j]
        y = self.y_train[rows, j]
        if len(np.unique(y)) < 2:
            self._skip(setting, seed, name, "one class only in the training subset")
            return
        test = ~np.isnan(self.y_test[:, j])
        if len(np.unique(self.y_test[test, j])) < 2:
            self._skip(setting, seed, name, "one class only in the test split")
            return
        val = ~np.isnan(self.y_val[:, j])
        x = self.x_train[rows]
        if len(np.unique(self.y_val[val, j])) < 2:
            log.warning("probe %s seed %d, label %r: one class only in the validation split; C=1 is used",
                        setting, seed, name)
            C = 1.0
        else:
            C = choose_C(x, y, self.x_val[val], self.y_val[val, j], self.class_weight, _binary_auc, self.grid)
        fitted = fit_probe(x, y, C, self.class_weight)
        auc = _binary_auc(fitted, self.x_test[test], self.y_test[test, j])
        self.rows.append((setting, kind, value, seed, name, auc, C, len(rows), int(test.sum())))

    def _multiclass(self, setting: str, kind: str, value, seed: int, subset: np.ndarray) -> None:
        n = len(self.names)
        classes = _class_index(self.y_train[subset])
        rows, y = subset[classes >= 0], classes[classes >= 0]
        if len(np.unique(y)) < 2:
            self._skip(setting, seed, "(all classes)", "fewer than two classes in the training subset")
            return
        y_val, y_test = _class_index(self.y_val), _class_index(self.y_test)
        val, test = y_val >= 0, y_test >= 0

        def mean_auc(probe_, x_, y_):
            aucs = _ovr_aucs(probe_, x_, y_, n)
            return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")

        C = choose_C(self.x_train[rows], y, self.x_val[val], y_val[val], self.class_weight, mean_auc, self.grid)
        fitted = fit_probe(self.x_train[rows], y, C, self.class_weight)
        aucs = _ovr_aucs(fitted, self.x_test[test], y_test[test], n)
        for c, name in enumerate(self.names):
            if np.isnan(aucs[c]):
                reason = ("class absent from the training subset" if c not in set(y.tolist())
                          else "one class only in the test split (one-vs-rest)")
                self._skip(setting, seed, name, reason)
                continue
            self.rows.append((setting, kind, value, seed, name, float(aucs[c]), C, len(rows), int(test.sum())))

    def _skip(self, setting: str, seed: int, label: str, reason: str) -> None:
        log.warning("probe %s seed %d: label %r skipped (%s); it gets no AUC", setting, seed, label, reason)
        self.skipped.append((setting, seed, label, reason))
