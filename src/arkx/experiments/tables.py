"""An experiment's tables, plot and page, from its tidy results.

Per arm and (dataset, metric), over seeds, from the mean-over-labels rows (``__mean__``):

- mean ± std and the number of seeds (:func:`arkx.evaluation.aggregate.summarize_seeds`);
- a 95 % t-interval of the mean: mean ± t(0.975, n-1) · std / √n (needs 2 seeds);
- against the arm's baseline arm, paired by seed (:func:`arkx.evaluation.aggregate.paired_seed_test`): the
  mean difference, its 95 % t-interval (the same formula on the differences) and the paired t-test's p-value.

These intervals cover the variation over seeds (training and, on synthetic data, the data drawn); with 2-3
seeds they are wide and the test has little power: a large p is "not shown", not "no difference".
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation.aggregate import format_p
from ..evaluation.report_page import write_text_atomically

SUMMARY_COLUMNS = ("experiment", "arm", "baseline", "dataset", "metric", "n_seeds", "mean", "std", "ci_low", "ci_high",
                   "n_pairs", "diff", "diff_ci_low", "diff_ci_high", "p_value")
LEVEL = 0.95


def t_interval(mean: float, std: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The t-interval of a mean of ``n`` values with sample std ``std`` (NaN below 2 values)."""
    from scipy.stats import t

    if n < 2 or not np.isfinite(std):
        return math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


#: the summary's row of the mean over datasets
DATASET_MEAN = "(mean)"


def with_dataset_mean(tidy: pd.DataFrame) -> pd.DataFrame:
    """``tidy`` plus, per (arm, seed, metric), the mean of the datasets' scores as dataset :data:`DATASET_MEAN`,
    over the datasets that every arm and seed scored for that metric (a dataset with an undefined score in any
    run is left out of every arm's mean, so the means compare the same datasets)."""
    from ..evaluation.scoring import MEAN_LABEL

    rows = tidy[tidy["label"] == MEAN_LABEL]
    extra = []
    for metric, part in rows.groupby("metric", sort=False):
        table = part.pivot_table(index=["arm", "seed"], columns="dataset", values="value", aggfunc="first",
                                 dropna=False)
        complete = [d for d in table.columns if table[d].notna().all()]
        if len(complete) < 2 or table.empty:
            continue
        means = table[complete].mean(axis=1)
        for (arm, seed), value in means.items():
            extra.append(dict(experiment=part["experiment"].iloc[0], arm=arm, seed=seed, job=DATASET_MEAN,
                              dataset=DATASET_MEAN, label=MEAN_LABEL, metric=metric, value=float(value)))
    return pd.concat([tidy, pd.DataFrame(extra)], ignore_index=True) if extra else tidy


def _arm_rows(tidy: pd.DataFrame, arm: str) -> pd.DataFrame:
    from ..evaluation.scoring import MEAN_LABEL

    rows = tidy[(tidy["arm"] == arm) & (tidy["label"] == MEAN_LABEL)]
    return rows.rename(columns={"job": "run"})[["run", "seed", "dataset", "label", "metric", "value"]]


def summarize(experiment, tidy: pd.DataFrame) -> pd.DataFrame:
    """The summary table (:data:`SUMMARY_COLUMNS`), one row per arm and (dataset, metric), arms in the
    experiment's order."""
    from ..evaluation.aggregate import paired_seed_test, summarize_seeds

    tidy = with_dataset_mean(tidy)
    present = set(tidy["arm"])
    rows = []
    for arm in experiment.arms:
        if arm.name not in present:
            continue
        baseline = experiment.baseline_of(arm)
        mine = _arm_rows(tidy, arm.name)
        stats = summarize_seeds(mine)
        paired = pd.DataFrame()
        if arm.name != baseline and baseline in present:
            paired = paired_seed_test(mine, _arm_rows(tidy, baseline)).set_index(["dataset", "metric"])
        for r in stats.itertuples(index=False):
            low, high = t_interval(r.mean, r.std, r.n_runs)
            row = dict(experiment=experiment.name, arm=arm.name, baseline=baseline if arm.name != baseline else "",
                       dataset=r.dataset, metric=r.metric, n_seeds=r.n_runs, mean=r.mean, std=r.std, ci_low=low,
                       ci_high=high, n_pairs=0, diff=math.nan, diff_ci_low=math.nan, diff_ci_high=math.nan,
                       p_value=math.nan)
            if (r.dataset, r.metric) in paired.index:
                d = paired.loc[(r.dataset, r.metric)]
                d_low, d_high = t_interval(d["diff_mean"], d["diff_std"], int(d["n_pairs"]))
                row.update(n_pairs=int(d["n_pairs"]), diff=d["diff_mean"], diff_ci_low=d_low, diff_ci_high=d_high,
                           p_value=d["p_value"])
            rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _num(value: float, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _by_dataset(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by dataset (in order of appearance), arms in the experiment's order within each."""
    order = {d: i for i, d in enumerate(dict.fromkeys(summary["dataset"]))}
    return summary.assign(_d=summary["dataset"].map(order)).sort_values("_d", kind="stable").drop(columns="_d")


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as aligned plain text (what ``arkx experiment`` prints), grouped by dataset."""
    if summary.empty:
        return "(no results)"
    header = ("dataset", "metric", "arm", "mean ± std", "95% CI", "Δ vs baseline [95% CI]", "p (paired t)", "seeds")
    grouped = _by_dataset(summary)
    rows = []
    for r in grouped.itertuples(index=False):
        std = "n/a" if pd.isna(r.std) else f"{r.std:.4f}"
        ci = f"[{_num(r.ci_low)}, {_num(r.ci_high)}]" if not pd.isna(r.ci_low) else "n/a"
        if not r.baseline:
            diff = "(baseline)"
        elif r.n_pairs == 0:  # e.g. a Foundation X variant's task the baseline variant does not train
            diff = f"n/a: no {r.metric} of {r.baseline} to pair with"
        else:
            diff = f"{_num(r.diff, True)} [{_num(r.diff_ci_low, True)}, {_num(r.diff_ci_high, True)}] vs {r.baseline}"
        rows.append((r.dataset, r.metric, r.arm, f"{r.mean:.4f} ± {std}", ci, diff, format_p(r.p_value), str(r.n_seeds)))
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    right = {3, 6, 7}  # numbers right-aligned

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header)] + [line(row) for row in rows])


def format_markdown(summary: pd.DataFrame) -> str:
    """The summary as a markdown table (for a README or an issue)."""
    lines = ["| dataset | metric | arm | mean ± std | 95% CI | Δ vs baseline [95% CI] | p | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in _by_dataset(summary).itertuples(index=False):
        std = "n/a" if pd.isna(r.std) else f"{r.std:.4f}"
        diff = (f"{_num(r.diff, True)} [{_num(r.diff_ci_low, True)}, {_num(r.diff_ci_high, True)}] vs {r.baseline}"
                if r.baseline else "baseline")
        lines.append(f"| {r.dataset} | {r.metric} | {r.arm} | {r.mean:.4f} ± {std} | [{_num(r.ci_low)}, "
                     f"{_num(r.ci_high)}] | {diff} | {format_p(r.p_value)} | {r.n_seeds} |")
    return "\n".join(lines)


def plot_summary(summary: pd.DataFrame, path: Path, title: str) -> Path:
    """Per metric a panel: datasets along x, the arms side by side, each a point at its mean over seeds with
    its 95 % t-interval as a bar (no bar with one seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(summary["metric"])) or ["auroc"]
    arms = list(dict.fromkeys(summary["arm"]))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 1.6 * summary["dataset"].nunique() + 2),
                                                         3.4 * len(metrics)), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, metric in zip(axes[:, 0], metrics):
        part = summary[summary["metric"] == metric]
        datasets = list(dict.fromkeys(part["dataset"]))
        width = 0.8 / max(len(arms), 1)
        for i, arm in enumerate(arms):
            rows = part[part["arm"] == arm].set_index("dataset")
            xs = [j - 0.4 + width * (i + 0.5) for j, d in enumerate(datasets) if d in rows.index]
            sel = rows.loc[[d for d in datasets if d in rows.index]]
            if sel.empty:
                continue
            err = np.vstack([sel["mean"] - sel["ci_low"], sel["ci_high"] - sel["mean"]])
            err = np.where(np.isfinite(err), err, 0.0)
            ax.errorbar(xs, sel["mean"], yerr=err, fmt="o", capsize=3, color=colors(i % 10), label=arm)
        ax.set_xticks(range(len(datasets)), datasets)
        # scores live in [0, 1]; a t-interval of 2 seeds can reach far beyond: the axis keeps the range
        # (a bar cut at the edge runs on beyond it; summary.csv has its ends)
        low = np.nanmin(np.r_[part["mean"].to_numpy(float), part["ci_low"].to_numpy(float)])
        ax.set_ylim(max(-0.02, low - 0.05) if np.isfinite(low) else -0.02, 1.02)
        ax.set_ylabel(f"test {metric} (mean over labels)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="best", title="arm (95% CI over seeds)", title_fontsize=8)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_html(experiment, summary: pd.DataFrame, plot: Path, path: Path, seeds: Sequence[int], preset,
               skipped_arms: Sequence[str]) -> Path:
    """One self-contained page (the plot embedded, no script, no external URL)."""
    image = base64.b64encode(plot.read_bytes()).decode()
    arms = "".join(f"<li><b>{html.escape(a.name)}</b>: {html.escape(a.description)}"
                   f"{' (baseline)' if a.name == experiment.baseline else ''}</li>" for a in experiment.arms
                   if a.name not in skipped_arms)
    size = (f"preset <b>{preset.name}</b>: {html.escape(preset.description)}" if preset is not None
            else "base config: the user's (--config)")
    notes = f"<p>{html.escape(experiment.notes)}</p>" if experiment.notes else ""
    table = summary.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="n/a", border=0)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>arkx experiment {html.escape(experiment.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>Experiment {html.escape(experiment.name)}</h1>
<p><b>Claim:</b> {html.escape(experiment.claim)}</p>
<ul>{arms}</ul>{notes}
<p>{size}; seeds {', '.join(map(str, seeds))}. Scores: each run's final test score (teacher; mean over labels).
Means over seeds with 95 % t-intervals; differences paired by seed against the baseline arm with a paired
t-test. With 2-3 seeds the test has little power: a large p is "not shown", not "no difference".</p>
<img alt="per dataset, arms side by side with 95% CI over seeds" src="data:image/png;base64,{image}">
{table}
<p>Files: results.csv (every arm, seed, dataset, label), summary.csv, runs/JOB/seed-S/ (each run).</p>
</body></html>
"""
    write_text_atomically(path, page)
    return path


def write_outputs(experiment, tidy: pd.DataFrame, out: Path, *, preset, seeds: Sequence[int],
                  skipped_arms: Sequence[str] = ()) -> tuple[pd.DataFrame, str, dict[str, Path]]:
    """results.csv, summary.csv, summary.txt / .md, summary.png and experiment.html in ``out``."""
    summary = summarize(experiment, tidy)
    text = format_summary(summary)
    paths = dict(results=out / "results.csv", summary=out / "summary.csv", text=out / "summary.txt",
                 markdown=out / "summary.md", plot=out / "summary.png", html=out / "experiment.html")
    tidy.to_csv(paths["results"], index=False)
    summary.to_csv(paths["summary"], index=False)
    paths["text"].write_text(text + "\n")
    paths["markdown"].write_text(format_markdown(summary) + "\n")
    plot_summary(summary, paths["plot"], f"{experiment.name}: test score per dataset, mean and 95% CI over seeds")
    write_html(experiment, summary, paths["plot"], paths["html"], seeds, preset, skipped_arms)
    return summary, text, paths
