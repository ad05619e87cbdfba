"""The figures of a run's report, as PNG files drawn with matplotlib's Agg renderer.

Every function takes plain tables or arrays (no model, no run folder) and writes one PNG, so each can be
tested on a hand-made input. Figures are built on :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: drawing a report changes no global matplotlib state (a user's interactive backend stays theirs)
and needs no display.

* :func:`plot_schedule` -- each dataset's score across the pretraining schedule, focused vs unfocused
  (Foundation X's figure 2: dark where the step trained that dataset, light where it trained another,
  dashed at the best focused score; green classification, orange localization, blue segmentation);
* :func:`plot_learning_curves` -- the training loss per step and dataset;
* :func:`plot_roc` -- ROC curves of one classification head;
* :func:`plot_tsne` -- a t-SNE map of embeddings, coloured by dataset and by finding;
* :func:`plot_probe` -- linear-probe AUC against the fraction of training data and against k (shots);
* :func:`plot_bias` -- false-negative rate per group (sex, age group) with confidence intervals.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from .reports import MEAN_LABEL

#: ``trained`` of a concurrent step (every dataset trained at once) and of the final test evaluation.
CONCURRENT = "*"
FINAL = "final"
#: dark (focused) and light (unfocused) colour of each task family, as in Foundation X's figure 2.
FAMILY_COLOURS = {
    "classification": ("#1a7f37", "#a6d9b4"),
    "detection": ("#d4620a", "#f7c79c"),
    "segmentation": ("#1f5fa8", "#a9c6ea"),
}
FAMILY_OF_KIND = {"multilabel": "classification", "multiclass": "classification", "detection": "detection",
                  "segmentation": "segmentation"}
FAMILY_OF_METRIC = {"auc": "classification", "map40": "detection", "dice": "segmentation"}
METRIC_NAMES = {"auc": "AUC", "map40": "mAP40", "dice": "Dice"}
#: columns :func:`plot_bias` reads from a bias audit (``arkx evaluate --bias --out E.csv`` writes them to
#: ``E.fnr.csv``: :data:`arkx.evaluation.bias.BIAS_COLUMNS`); rows with ``metric == "fnr"`` are drawn.
BIAS_COLUMNS = ("dataset", "attribute", "group", "label", "metric", "value", "ci_low", "ci_high")
DPI = 110
_TEXT_COLUMNS = ("trained", "model", "dataset", "split", "label", "task", "metric", "trained_task")


# ---------------------------------------------------------------------------- metrics.csv
def normalise_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """A metrics table with the columns every plot reads, whatever arkx version wrote it.

    Files from before Foundation X lack ``task``, ``metric``, ``score`` and ``trained_task``: their rows are
    AUC rows, so ``metric`` is ``auc`` and ``score`` the ``auc`` column. Text columns become strings (empty
    for missing values), ``step`` and ``score`` numbers (NaN where a score could not be computed)."""
    from .reports import fill_old_columns

    frame = fill_old_columns(metrics)
    for column in _TEXT_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].fillna("").astype(str)
    frame.loc[frame["metric"] == "", "metric"] = "auc"
    frame["step"] = pd.to_numeric(frame["step"], errors="coerce")
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame


def task_family(task: str, metric: str) -> str:
    """``classification``, ``detection`` or ``segmentation``: from the row's task kind, else its metric (an
    old file has no task)."""
    return FAMILY_OF_KIND.get(task) or FAMILY_OF_METRIC.get(metric, "classification")


def schedule_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The mean rows of the evaluations made during pretraining (not the final test), with ``focused``
    (the step trained this dataset: ``trained == dataset``, or a concurrent step, which trains every
    dataset) and ``family`` (the task family the score measures), sorted by step."""
    frame = normalise_metrics(metrics)
    rows = frame[(frame["label"] == MEAN_LABEL) & (frame["trained"] != FINAL)].copy()
    rows["focused"] = (rows["trained"] == rows["dataset"]) | (rows["trained"] == CONCURRENT)
    rows["family"] = [task_family(t, m) for t, m in zip(rows["task"], rows["metric"])]
    # datasets keep the order the run evaluated them in (the config's), steps ascend within each series
    order = {name: i for i, name in enumerate(dict.fromkeys(rows["dataset"]))}
    rows["_order"] = rows["dataset"].map(order)
    rows = rows.sort_values(["_order", "step"], kind="stable").drop(columns="_order")
    return rows.reset_index(drop=True)


def final_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The final test evaluation's mean rows: model, dataset, task, metric, score, n_pos, n_neg, note."""
    frame = normalise_metrics(metrics)
    rows = frame[(frame["label"] == MEAN_LABEL) & (frame["trained"] == FINAL)]
    keep = [c for c in ("model", "dataset", "task", "metric", "score", "n_pos", "n_neg", "note") if c in rows]
    return rows[keep].reset_index(drop=True)


def choose_view(table: pd.DataFrame, model: str | None = None, split: str | None = None) -> tuple[str, str]:
    """The (model, split) the schedule figure shows: the one asked for, else the teacher (the released
    model) on val (what the schedule is evaluated on by default), else whatever the run evaluated first."""
    models = list(dict.fromkeys(table["model"]))
    splits = list(dict.fromkeys(table["split"]))
    model = model or ("teacher" if "teacher" in models else models[0])
    split = split or ("val" if "val" in splits else splits[0])
    return model, split


def _shade(focused: np.ndarray, family: str) -> list[str]:
    dark, light = FAMILY_COLOURS[family]
    return [dark if f else light for f in focused]


def plot_schedule(metrics: pd.DataFrame, path: str | Path, *, model: str | None = None,
                  split: str | None = None) -> Path | None:
    """Write :func:`schedule_figure` to ``path``; None (nothing written) when the run made no evaluation
    during pretraining."""
    fig = schedule_figure(metrics, model=model, split=split)
    return None if fig is None else _save(fig, path)


def schedule_figure(metrics: pd.DataFrame, *, model: str | None = None, split: str | None = None):
    """Each dataset's mean score across the pretraining schedule, one panel per dataset (titled with its
    name), one line per task family (see :func:`draw_focus_series`), for one (model, split)
    (:func:`choose_view`). None when there is nothing to draw."""
    from matplotlib.lines import Line2D

    table = schedule_table(metrics)
    if table.empty:
        return None
    model, split = choose_view(table, model, split)
    table = table[(table["model"] == model) & (table["split"] == split)]
    datasets = list(dict.fromkeys(table["dataset"]))
    ncols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    height = 2.9 * nrows + 1.2
    fig = _figure(4.3 * ncols, height)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    families_seen: dict[str, set[str]] = {}
    for ax, dataset in zip(axes.flat, datasets):
        for family, series in table[table["dataset"] == dataset].groupby("family", sort=False):
            series = series.dropna(subset=["score"])
            if series.empty:
                continue
            families_seen.setdefault(family, set()).update(series["metric"])
            draw_focus_series(ax, series["step"].to_numpy(float), series["score"].to_numpy(float),
                              series["focused"].to_numpy(bool), family)
        _score_axis(ax)
        ax.set_title(dataset, fontsize=10)
    for i, ax in enumerate(axes.flat):
        ax.set_visible(i < len(datasets))
        if i >= len(datasets) - ncols:  # the lowest panel of each column
            ax.set_xlabel("pretraining step (evaluated after it)", fontsize=8)
        if i % ncols == 0:
            ax.set_ylabel("mean score", fontsize=8)
    fig.suptitle(f"{model} on {split} across the pretraining schedule", fontsize=11)
    handles = [Line2D([], [], color=FAMILY_COLOURS[f][0], linewidth=2,
                      label=f"{f} ({', '.join(METRIC_NAMES.get(m, m) for m in sorted(ms))})")
               for f, ms in families_seen.items()]
    handles += [Line2D([], [], color="#333333", linewidth=2, label="dark: focused (the step trained this dataset)"),
                Line2D([], [], color="#bbbbbb", linewidth=2, label="light: unfocused (another dataset trained)"),
                Line2D([], [], color="#333333", linewidth=1, linestyle="--", label="best focused score")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.75 / height, 1, 1))  # the bottom 0.75 inch holds the legend
    return fig


def draw_focus_series(ax, x: np.ndarray, y: np.ndarray, focused: np.ndarray, family: str) -> None:
    """One score series on ``ax``: points dark where ``focused``, light elsewhere; the segment into point i
    takes point i's shade (it shows what the step before that evaluation trained); a dashed line at the
    best focused score."""
    from matplotlib.collections import LineCollection

    colours = _shade(focused, family)
    if len(x) > 1:
        segments = np.stack([np.column_stack([x[:-1], y[:-1]]), np.column_stack([x[1:], y[1:]])], axis=1)
        ax.add_collection(LineCollection(segments, colors=colours[1:], linewidths=1.8, zorder=2))
    ax.scatter(x, y, c=colours, s=16, zorder=3, edgecolors="none")
    if focused.any():
        ax.axhline(y[focused].max(), color=FAMILY_COLOURS[family][0], linestyle="--", linewidth=1, zorder=1)


def _score_axis(ax) -> None:
    """Integer steps on x; y a score (0..1) shown at least 0.1 tall, without an offset label."""
    from matplotlib.ticker import MaxNLocator

    ax.autoscale_view()
    low, high = ax.get_ylim()
    if high - low < 0.1:  # a flat series: a 0.1 window around it, kept inside the scores' range
        low = min(max((low + high) / 2 - 0.05, -0.02), 0.92)
        ax.set_ylim(low, low + 0.1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)


# ---------------------------------------------------------------------------- losses
def plot_learning_curves(losses: pd.DataFrame, path: str | Path) -> Path | None:
    """Training loss per step, one line per series (``series``: the dataset, or dataset/task).

    ``losses``: columns ``step``, ``series``, ``loss``. Returns None when there is no finite loss."""
    frame = losses.copy()
    frame["loss"] = pd.to_numeric(frame["loss"], errors="coerce")
    frame = frame[np.isfinite(frame["loss"])]
    if frame.empty:
        return None
    fig = _figure(7.5, 4.0)
    ax = fig.subplots()
    many = frame.groupby("series").size().max() > 150
    cmap = _palette(frame["series"].nunique())
    for i, (name, series) in enumerate(frame.groupby("series", sort=False)):
        series = series.sort_values("step")
        ax.plot(series["step"], series["loss"], marker=None if many else "o", markersize=3, linewidth=1.3,
                color=cmap[i], label=str(name))
    ax.set_xlabel("pretraining step (dataset epoch)")
    ax.set_ylabel("mean training loss of the step")
    ax.set_title("Learning curves", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------- ROC
def roc_curves(scores: np.ndarray, targets: np.ndarray, label_names, kind: str):
    """Per label: ``(name, fpr, tpr, auc, n_pos, n_neg)`` for labels with both classes among the known
    targets, and ``(name, reason)`` for the others. Multilabel targets are 1/0 (anything else unknown);
    multiclass targets are one-hot rows, each class read one-vs-rest."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = np.asarray(scores, dtype=float)
    targets = np.asarray(targets, dtype=float)
    if kind == "multiclass":
        known = np.isin(targets, (0.0, 1.0)).all(axis=1) & (targets == 1).sum(axis=1).astype(bool)
        targets = np.where(known[:, None], targets, np.nan)
    curves, skipped = [], []
    for j, name in enumerate(label_names):
        known = (targets[:, j] == 0) | (targets[:, j] == 1)
        y, s = targets[known, j], scores[known, j]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos == 0 or n_neg == 0:
            skipped.append((str(name), f"one class only ({n_pos} positive, {n_neg} negative)"))
            continue
        fpr, tpr, _ = roc_curve(y, s)
        curves.append((str(name), fpr, tpr, float(roc_auc_score(y, s)), n_pos, n_neg))
    return curves, skipped


def plot_roc(head: str, curves, path: str | Path, *, subtitle: str = "") -> Path | None:
    """ROC curves of one head (``curves`` from :func:`roc_curves`), the chance diagonal, AUC per label."""
    if not curves:
        return None
    fig = _figure(7.6, 4.6)
    ax = fig.subplots()
    colours = _palette(10)
    for i, (name, fpr, tpr, auc, n_pos, n_neg) in enumerate(curves):  # 10 colours, then the next line style
        ax.plot(fpr, tpr, color=colours[i % 10], linestyle=("-", "--", "-.")[i // 10 % 3], linewidth=1.4,
                label=f"{name}  AUC {auc:.3f} ({n_pos}+/{n_neg}-)")
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)")
    ax.set_aspect("equal")
    ax.set_title(f"ROC: {head}" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------- t-SNE
def primary_findings(positive_names: list[list[str]], *, top: int = 8, none: str = "no positive label",
                     other: str = "other findings") -> list[str]:
    """One colour tag per image from the names of its positive labels: the name that is most frequent over
    all images (so a finding shared by several datasets' vocabularies gets one colour everywhere), ``none``
    for an image without a positive label, and ``other`` when that name is not among the ``top`` most
    frequent ones."""
    counts = Counter(name for names in positive_names for name in set(names))
    rank = {name: i for i, (name, _) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))}
    tags = []
    for names in positive_names:
        if not names:
            tags.append(none)
            continue
        best = min(set(names), key=rank.__getitem__)
        tags.append(best if rank[best] < top else other)
    return tags


#: tags of :func:`primary_findings` that are not a finding: drawn grey
_NEUTRAL = {"no positive label": "#c4c4c4", "other findings": "#6b6b6b"}


def tsne_map(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates of ``embeddings`` (perplexity capped for small samples; seeded).

    One OpenMP/BLAS thread: a report's map has at most a few thousand points, and on a shared machine the
    thread pool only waits on itself (measured: 30 points took 34 s with the default pool on a busy 2-core
    machine, 0.75 s with one thread)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, dtype=np.float64)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def plot_tsne(coords: np.ndarray, datasets, findings, path: str | Path, *, title: str = "") -> Path | None:
    """Two panels of the same t-SNE map: points coloured by dataset, and by finding tag."""
    coords = np.asarray(coords, dtype=float)
    if len(coords) < 2:
        return None
    fig = _figure(12.0, 5.2)
    axes = fig.subplots(1, 2)
    for ax, values, what in zip(axes, (np.asarray(datasets, str), np.asarray(findings, str)), ("dataset", "finding")):
        names = sorted(set(values), key=lambda v: (v in _NEUTRAL, v))
        palette = _palette(len([n for n in names if n not in _NEUTRAL]))
        for name in names:
            colour = _NEUTRAL.get(name) or palette[names.index(name)]
            mask = values == name
            ax.scatter(coords[mask, 0], coords[mask, 1], s=12, color=colour, alpha=0.8, edgecolors="none",
                       label=f"{name} ({int(mask.sum())})")
        ax.set_title(f"coloured by {what}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False,
                  markerscale=1.3)
    fig.suptitle(title or "t-SNE of the embeddings", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------- probes
def probe_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of the mean test AUC over labels, per (kind, value): from a per-label probe
    table (``arkx probe --out``: setting, kind, value, seed, label, auc) or its summary (setting, mean, std,
    n_seeds, n_labels; settings ``fraction=F`` and ``K-shot``). Columns: kind, value, mean, std, n_seeds."""
    if {"kind", "value", "seed", "auc"} <= set(frame.columns):
        by_seed = frame.groupby(["kind", "value", "seed"])["auc"].mean().reset_index()
        out = by_seed.groupby(["kind", "value"])["auc"].agg(mean="mean", std=lambda s: s.std(ddof=1),
                                                            n_seeds="size").reset_index()
    elif {"setting", "mean", "std"} <= set(frame.columns):
        parsed = [_parse_setting(str(s)) for s in frame["setting"]]
        out = pd.DataFrame(dict(kind=[p[0] for p in parsed], value=[p[1] for p in parsed], mean=frame["mean"],
                                std=frame["std"], n_seeds=frame.get("n_seeds", pd.Series([np.nan] * len(frame)))))
        out = out[out["kind"] != ""]
    else:
        raise ValueError("not a probe table: expected columns kind, value, seed, auc (per label) or setting, mean, "
                         f"std (summary); got {', '.join(map(str, frame.columns))}")
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    return out.sort_values(["kind", "value"]).reset_index(drop=True)


def _parse_setting(setting: str) -> tuple[str, float]:
    if setting.startswith("fraction="):
        return "fraction", float(setting.split("=", 1)[1])
    if setting.endswith("-shot"):
        return "shots", float(setting[: -len("-shot")])
    return "", math.nan


def plot_probe(curves: dict[str, pd.DataFrame], path: str | Path) -> Path | None:
    """Probe AUC against the fraction of training data (log axis) and against k (shots), one line per
    source (``curves``: name -> :func:`probe_curves` table), with ± std over seeds as error bars."""
    kinds = [k for k in ("fraction", "shots") if any((c["kind"] == k).any() for c in curves.values())]
    if not kinds:
        return None
    fig = _figure(5.2 * len(kinds) + 1.5, 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(kinds)))
    colours = _palette(len(curves))
    for ax, kind in zip(axes, kinds):
        for colour, (name, table) in zip(colours, curves.items()):
            rows = table[table["kind"] == kind]
            if rows.empty:
                continue
            ax.errorbar(rows["value"], rows["mean"], yerr=rows["std"].fillna(0), marker="o", markersize=4,
                        capsize=3, color=colour, linewidth=1.4, label=name)
        _value_ticks(ax, sorted({v for c in curves.values() for v in c.loc[c["kind"] == kind, "value"]}))
        ax.set_xlabel("fraction of the training split" if kind == "fraction" else "k (labelled images per class)")
        ax.set_ylabel("test AUC (mean over labels)")
        ax.set_title("linear probe vs data fraction" if kind == "fraction" else "few-shot linear probe", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _value_ticks(ax, values: list[float]) -> None:
    """A log axis ticked at the probed values themselves (0.01, 0.1, 1 or 1, 5, 10), written plainly."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.xaxis.set_minor_locator(NullLocator())


# ---------------------------------------------------------------------------- bias
def plot_bias(frame: pd.DataFrame, path: str | Path, *, max_rows: int = 25) -> Path | None:
    """False-negative rate per group with its confidence interval: one panel per attribute (sex, age group),
    one row per (dataset, label), one colour per group (``F-M`` gap rows, ``metric == "fnr_gap"``, are left
    out: the groups' own rates show the gap). With more than ``max_rows`` labels the ones with the widest gap
    between groups are shown (the title says so). None when no rate is finite."""
    missing = [c for c in BIAS_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"bias table lacks column(s) {', '.join(missing)}; expected {', '.join(BIAS_COLUMNS)}")
    frame = frame[frame["metric"].astype(str) == "fnr"].rename(columns={"value": "fnr"})
    for column in ("fnr", "ci_low", "ci_high"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame[np.isfinite(frame["fnr"])]
    if frame.empty:
        return None
    frame["row"] = frame["dataset"].astype(str) + ": " + frame["label"].astype(str)
    attributes = list(dict.fromkeys(frame["attribute"].astype(str)))
    per_attr = {a: _widest_gaps(frame[frame["attribute"].astype(str) == a], max_rows) for a in attributes}
    height = max(len(rows) for rows, _ in per_attr.values())
    fig = _figure(6.4 * len(attributes) + 1.0, 1.2 + 0.32 * height)
    axes = np.atleast_1d(fig.subplots(1, len(attributes)))
    for ax, attribute in zip(axes, attributes):
        rows, cut = per_attr[attribute]
        part = frame[(frame["attribute"].astype(str) == attribute) & frame["row"].isin(rows)]
        groups = _group_order(part["group"].astype(str))
        position = {r: i for i, r in enumerate(rows)}
        for k, (colour, group) in enumerate(zip(_palette(len(groups)), groups)):
            g = part[part["group"].astype(str) == group]
            y = g["row"].map(position).to_numpy(float) + (k - (len(groups) - 1) / 2) * 0.18
            err = np.vstack([(g["fnr"] - g["ci_low"]).clip(lower=0).fillna(0),
                             (g["ci_high"] - g["fnr"]).clip(lower=0).fillna(0)])
            ax.errorbar(g["fnr"], y, xerr=err, fmt="o", markersize=4, capsize=2, color=colour, label=group)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("false-negative rate (95% CI)")
        ax.set_title(f"by {attribute}" + (f" ({len(rows)} labels with the widest gap)" if cut else ""), fontsize=10)
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the FNR = 1 points
    fig.tight_layout()
    return _save(fig, path)


def _group_order(groups: pd.Series) -> list[str]:
    """Groups in reading order: age bands by their lower bound (``0-20`` ... ``80+``), others as they come."""
    names = list(dict.fromkeys(groups))

    def lower_bound(name: str) -> float:
        head = name.split("-")[0].rstrip("+")
        try:
            return float(head)
        except ValueError:
            return math.inf

    return sorted(names, key=lambda n: (lower_bound(n), names.index(n)))


def _widest_gaps(part: pd.DataFrame, max_rows: int) -> tuple[list[str], bool]:
    gaps = part.groupby("row", sort=False)["fnr"].agg(lambda s: s.max() - s.min())
    if len(gaps) <= max_rows:
        return list(gaps.index), False
    return list(gaps.sort_values(ascending=False, kind="stable").index[:max_rows]), True


# ---------------------------------------------------------------------------- shared
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


def _palette(n: int) -> list:
    """``n`` distinct colours (tab10, then tab20 for more)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path
