"""Results over runs: mean ± std over seeds, and paired tests of a run group against a baseline group.

Sources, one per run:

- a run folder: its ``metrics.csv`` rows of the final test evaluation (``trained == "final"``, split
  ``test``, the chosen ``model``: teacher by default), metric ``auc`` (``score`` for det/seg rows); the
  seed is the run's ``run.seed`` from ``config.yaml``;
- a CSV written by ``arkx evaluate`` (:data:`arkx.evaluation.scoring.TABLE_COLUMNS`), with its training seed
  taken from its ``run_seed`` column or, failing that, from the ``config.yaml`` of the folder it sits in.

Tests:

- several seeds per group (:func:`paired_seed_test`): runs are paired by seed (a seed present in one group
  only is left out and named); per (dataset, label, metric) the differences group - baseline over the
  paired seeds, their mean and std, and the two-sided **paired t-test** p-value (``scipy.stats.ttest_rel``,
  n - 1 degrees of freedom). With 2-3 seeds this test has little power: a large p is "not shown", not
  "no difference".
- one seed each (:func:`paired_bootstrap`): both models' test predictions on the same images; patients are
  resampled (:mod:`arkx.evaluation.bootstrap`) and the AUROC difference recomputed on each resample; the
  CI is the percentile interval of the differences and the p-value the two-sided bootstrap p-value
  (twice the smaller share of resampled differences on either side of 0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ArkxFileNotFoundError, ArkxValueError
from .bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    bootstrap_p_value,
    patient_bootstrap,
)
from .metrics import known_mask
from .scoring import MEAN_LABEL, HeadPredictions, auroc

log = logging.getLogger("arkx.evaluation")

RESULT_COLUMNS = ("run", "seed", "dataset", "label", "metric", "value")


# ---------------------------------------------------------------------------- reading runs
def _run_seed(folder: Path) -> int | None:
    config = folder / "config.yaml"
    if not config.is_file():
        return None
    from ..config_yaml import read_yaml_file

    loaded = read_yaml_file(config)
    seed = (loaded.get("run") or {}).get("seed") if isinstance(loaded, dict) else None
    if seed is None and isinstance(loaded, dict):
        seed = loaded.get("seed")  # a fine-tuning folder's settings
    return int(seed) if seed is not None else None


def read_run_results(source: str | Path, model: str = "teacher", metric: str = "auroc") -> pd.DataFrame:
    """One run's final test results as :data:`RESULT_COLUMNS` rows (see the module's sources)."""
    source = Path(source)
    if source.is_dir():
        return _from_metrics_csv(source, model)
    if source.is_file() and source.suffix == ".csv":
        return _from_evaluation_csv(source, metric)
    raise ArkxFileNotFoundError(f"{source}: expected a run folder (with metrics.csv) or a CSV written by arkx evaluate")


def _from_metrics_csv(folder: Path, model: str) -> pd.DataFrame:
    from .reports import read_metrics

    if not (folder / "metrics.csv").is_file():
        raise ArkxFileNotFoundError(f"{folder}: no metrics.csv (not a finished arkx run folder)")
    frame = read_metrics(folder)
    final = frame[(frame["trained"].astype(str) == "final") & (frame["split"] == "test")
                  & (frame["model"].astype(str) == model)]
    if final.empty:
        raise ArkxValueError(f"{folder / 'metrics.csv'}: no final test rows of the {model}; has the run finished?")
    value = pd.to_numeric(final["score"], errors="coerce").fillna(pd.to_numeric(final["auc"], errors="coerce"))
    metric = final["metric"].fillna("auc").replace({"auc": "auroc", "": "auroc"})
    return pd.DataFrame(dict(run=str(folder), seed=_run_seed(folder), dataset=final["dataset"].astype(str).values,
                             label=final["label"].astype(str).values, metric=metric.values, value=value.values),
                        columns=list(RESULT_COLUMNS))


def _from_evaluation_csv(path: Path, metric: str) -> pd.DataFrame:
    frame = pd.read_csv(path)
    missing = [c for c in ("dataset", "label", "metric", "value") if c not in frame.columns]
    if missing:
        raise ArkxValueError(f"{path}: not an arkx evaluate table (missing columns {missing})")
    if "run_seed" in frame.columns and frame["run_seed"].notna().any():
        seed = int(frame["run_seed"].dropna().iloc[0])
    else:
        seed = _run_seed(path.parent)
    return pd.DataFrame(dict(run=str(path), seed=seed, dataset=frame["dataset"].astype(str).values,
                             label=frame["label"].astype(str).values, metric=frame["metric"].values,
                             value=pd.to_numeric(frame["value"], errors="coerce").values), columns=list(RESULT_COLUMNS))


def read_runs(sources: Sequence[str | Path], model: str = "teacher") -> pd.DataFrame:
    """:func:`read_run_results` of several runs, concatenated."""
    if not sources:
        raise ArkxValueError("no runs given")
    return pd.concat([read_run_results(s, model) for s in sources], ignore_index=True)


# ---------------------------------------------------------------------------- over seeds
def summarize_seeds(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, label, metric): ``mean``, ``std`` (ddof 1; NaN for one run) and ``n_runs`` over the runs
    that have a value."""
    rows = []
    for (dataset, label, metric), group in results.groupby(["dataset", "label", "metric"], sort=False):
        values = group["value"].dropna().to_numpy(dtype=np.float64)
        rows.append(dict(dataset=dataset, label=label, metric=metric,
                         mean=float(values.mean()) if values.size else math.nan,
                         std=float(values.std(ddof=1)) if values.size > 1 else math.nan, n_runs=int(values.size)))
    return pd.DataFrame(rows, columns=["dataset", "label", "metric", "mean", "std", "n_runs"])


def paired_seed_test(group: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, label, metric): differences ``group - baseline`` over the seeds both have, their mean
    and std, and the paired t-test's two-sided p-value (NaN with fewer than 2 pairs or constant differences)."""
    from scipy.stats import ttest_rel

    for name, frame in (("group", group), ("baseline", baseline)):
        if frame["seed"].isna().any():
            raise ArkxValueError(f"paired test: a {name} run has no recorded seed ({frame.loc[frame['seed'].isna(), 'run'].iloc[0]}); "
                                 "runs are paired by seed")
        duplicated = frame.groupby(["seed", "dataset", "label", "metric"]).size()
        if (duplicated > 1).any():
            raise ArkxValueError(f"paired test: two {name} runs share seed {duplicated[duplicated > 1].index[0][0]}; "
                                 "give one run per seed")
    seeds_a, seeds_b = set(group["seed"]), set(baseline["seed"])
    unpaired = sorted(seeds_a ^ seeds_b)
    if unpaired:
        log.warning("paired test: seed(s) %s are in one group only and are left out", unpaired)
    merged = group.merge(baseline, on=["seed", "dataset", "label", "metric"], suffixes=("", "_base"))
    rows = []
    for (dataset, label, metric), pairs in merged.groupby(["dataset", "label", "metric"], sort=False):
        pairs = pairs.dropna(subset=["value", "value_base"])
        a, b = pairs["value"].to_numpy(float), pairs["value_base"].to_numpy(float)
        diff = a - b
        p = math.nan
        if len(diff) >= 2 and np.ptp(diff) > 0:
            p = float(ttest_rel(a, b).pvalue)
        rows.append(dict(dataset=dataset, label=label, metric=metric, n_pairs=len(diff),
                         mean=float(a.mean()) if len(a) else math.nan,
                         baseline_mean=float(b.mean()) if len(b) else math.nan,
                         diff_mean=float(diff.mean()) if len(diff) else math.nan,
                         diff_std=float(diff.std(ddof=1)) if len(diff) > 1 else math.nan, p_value=p,
                         test="paired t-test over seeds"))
    return pd.DataFrame(rows, columns=["dataset", "label", "metric", "n_pairs", "mean", "baseline_mean", "diff_mean",
                                       "diff_std", "p_value", "test"])


# ---------------------------------------------------------------------------- one seed: paired bootstrap
def _aurocs(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    out = np.full(scores.shape[1], np.nan)
    for j in range(scores.shape[1]):
        keep = known_mask(targets[:, j])
        out[j] = auroc(targets[keep, j], scores[keep, j])
    return out


def paired_bootstrap(a: HeadPredictions, b: HeadPredictions, label_names: Sequence[str], *,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL,
                     dataset: str = "") -> pd.DataFrame:
    """AUROC of model ``a`` minus model ``b`` on the same test images, per label and for the mean over the
    labels both define, with a patient-bootstrap CI and two-sided p-value (see the module docstring)."""
    label_names = tuple(label_names)
    if a.scores.shape != b.scores.shape:
        raise ArkxValueError(f"paired bootstrap: predictions of shape {a.scores.shape} and {b.scores.shape}; "
                             "both models must be scored on the same images")
    same_images = a.ids is None or b.ids is None or np.array_equal(np.asarray(a.ids), np.asarray(b.ids))
    if not same_images or not np.array_equal(a.patient_ids, b.patient_ids):
        raise ArkxValueError("paired bootstrap: the two prediction sets are not of the same images in the same order")
    targets = a.targets
    point_a, point_b = _aurocs(a.scores, targets), _aurocs(b.scores, targets)
    averaged = ~np.isnan(point_a) & ~np.isnan(point_b)

    def statistic(idx: np.ndarray) -> np.ndarray:
        diff = _aurocs(a.scores[idx], targets[idx]) - _aurocs(b.scores[idx], targets[idx])
        chosen = diff[averaged]
        mean = np.nanmean(chosen) if np.isfinite(chosen).any() else np.nan
        return np.r_[diff, mean]

    boot = patient_bootstrap(statistic, a.patient_ids, n_resamples=n_resamples, seed=seed, level=level)
    p_values = bootstrap_p_value(boot.draws)
    names = list(label_names) + [MEAN_LABEL]
    means_a = np.r_[point_a, np.nanmean(point_a[averaged]) if averaged.any() else np.nan]
    means_b = np.r_[point_b, np.nanmean(point_b[averaged]) if averaged.any() else np.nan]
    return pd.DataFrame(dict(dataset=dataset, label=names, metric="auroc", value=means_a, baseline_value=means_b,
                             diff=boot.point, ci_low=boot.low, ci_high=boot.high, p_value=p_values,
                             undefined_resamples=boot.undefined, n_resamples=n_resamples,
                             n_patients=boot.n_patients, test="paired patient bootstrap"))


def format_comparison(table: pd.DataFrame) -> str:
    """A paired-test table (either kind) as aligned text."""
    if table.empty:
        return "(nothing to compare)"
    lines = []
    if "n_pairs" in table.columns:
        lines.append(f"{'dataset':<14} {'label':<26} {'metric':<8} {'group':>14} {'baseline':>8} {'diff':>8} "
                     f"{'p (paired t)':>12} pairs")
        for r in table.itertuples(index=False):
            lines.append(f"{r.dataset:<14} {str(r.label)[:26]:<26} {r.metric:<8} {r.mean:>14.4f} {r.baseline_mean:>8.4f} "
                         f"{r.diff_mean:>+8.4f} {format_p(r.p_value):>12} {r.n_pairs:>5}")
        return "\n".join(lines)
    lines.append(f"{'dataset':<14} {'label':<26} {'model':>7} {'base':>7} {'diff [95% CI]':>26} {'p (boot)':>9}")
    for r in table.itertuples(index=False):
        ci = f"{r.diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]" if not pd.isna(r.diff) else "n/a"
        lines.append(f"{r.dataset:<14} {str(r.label)[:26]:<26} {r.value:>7.4f} {r.baseline_value:>7.4f} {ci:>26} "
                     f"{format_p(r.p_value):>9}")
    return "\n".join(lines)


def format_seed_summary(summary: pd.DataFrame) -> str:
    lines = [f"{'dataset':<14} {'label':<26} {'metric':<8} {'mean ± std':>18} runs"]
    for r in summary.itertuples(index=False):
        std = "n/a" if pd.isna(r.std) else f"{r.std:.4f}"
        lines.append(f"{r.dataset:<14} {str(r.label)[:26]:<26} {r.metric:<8} {r.mean:>9.4f} ± {std:<6} {r.n_runs:>4}")
    return "\n".join(lines)


def format_p(p: float) -> str:
    """A p-value for a table: 3 significant digits, scientific below 0.001, ``n/a`` when undefined."""
    return "n/a" if pd.isna(p) else (f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}")


def compare_runs(runs: Sequence[str | Path], baseline: Sequence[str | Path] | None = None,
                 model: str = "teacher") -> dict[str, pd.DataFrame]:
    """Final test results of ``runs`` (folders or ``arkx evaluate`` CSVs; one per seed) summarised over seeds
    (``"summary"``), and with ``baseline`` runs also ``"baseline_summary"`` and the paired-by-seed t-test
    (``"paired"``, :func:`paired_seed_test`)."""
    group = read_runs(runs, model)
    out = {"summary": summarize_seeds(group)}
    if baseline:
        base = read_runs(baseline, model)
        out["baseline_summary"] = summarize_seeds(base)
        out["paired"] = paired_seed_test(group, base)
    return out
