"""The report's figures on small hand-made tables: which points are focused, which colours they get, that
det/seg rows and files from before Foundation X plot, and the small computations behind ROC, t-SNE tags,
probe curves and the bias panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from arkx.evaluation import plots
from arkx.evaluation.reports import METRIC_COLUMNS, read_metrics

OLD_COLUMNS = ("step", "round", "trained", "model", "dataset", "split", "label", "auc", "n_pos", "n_neg", "note")


def _row(step, trained, dataset, score, *, model="teacher", split="val", label="__mean__", task="multilabel",
         metric="auc", trained_task="multilabel"):
    auc = score if metric == "auc" else ""
    return dict(step=step, round=0, trained=trained, model=model, dataset=dataset, split=split, label=label, auc=auc,
                n_pos=3 if metric == "auc" else "", n_neg=5 if metric == "auc" else "", note="", task=task,
                metric=metric, score=score, trained_task=trained_task)


def cyclic_metrics() -> pd.DataFrame:
    """Two rounds of a cyclic a -> b -> c schedule, a and b evaluated after every step, then the final test."""
    rows = []
    for step, trained in enumerate(["a", "b", "c", "a", "b", "c"]):
        for dataset in ("a", "b"):
            rows.append(_row(step, trained, dataset, 0.5 + 0.05 * step + (0.01 if dataset == "b" else 0)))
            rows.append(_row(step, trained, dataset, 0.7, label="x"))  # a per-label row: not a mean
    rows += [_row(6, "final", d, 0.8, split="test") for d in ("a", "b")]
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def _write(frame: pd.DataFrame, folder) -> pd.DataFrame:
    frame.to_csv(folder / "metrics.csv", index=False)
    return read_metrics(folder)


def _pixels_vary(path) -> bool:
    image = np.asarray(Image.open(path).convert("L"), dtype=float)
    return image.std() > 5


# ---------------------------------------------------------------------------- focused vs unfocused
def test_focused_steps_are_those_that_trained_the_evaluated_dataset():
    table = plots.schedule_table(cyclic_metrics())
    focused = {d: list(g.loc[g["focused"], "step"]) for d, g in table.groupby("dataset")}
    unfocused = {d: list(g.loc[~g["focused"], "step"]) for d, g in table.groupby("dataset")}
    assert focused == {"a": [0, 3], "b": [1, 4]}
    assert unfocused == {"a": [1, 2, 4, 5], "b": [0, 2, 3, 5]}
    assert set(table["label"]) == {"__mean__"} and "final" not in set(table["trained"])


def test_a_concurrent_step_trains_every_dataset_so_it_is_focused():
    frame = pd.DataFrame([_row(0, "*", "a", 0.6), _row(0, "*", "b", 0.6), _row(1, "b", "a", 0.6)])
    table = plots.schedule_table(frame)
    assert list(zip(table["dataset"], table["step"], table["focused"])) == [
        ("a", 0, True), ("a", 1, False), ("b", 0, True)]


def test_segments_and_points_take_the_shade_of_the_step_before_their_evaluation():
    fig = plots._figure(3, 3)
    ax = fig.subplots()
    focused = np.array([True, False, False, True])
    plots.draw_focus_series(ax, np.arange(4.0), np.array([0.5, 0.8, 0.55, 0.7]), focused, "classification")
    dark, light = plots.FAMILY_COLOURS["classification"]
    lines, points = ax.collections  # the segments, then the points
    assert [to_hex(c) for c in lines.get_colors()] == [light, light, dark]  # into points 1, 2, 3
    assert [to_hex(c) for c in points.get_facecolors()] == [dark, light, light, dark]
    best = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(best) == 1 and best[0].get_ydata()[0] == pytest.approx(0.7)  # the best focused, not the max


def test_the_schedule_figure_has_one_panel_per_dataset_in_run_order(tmp_path):
    frame = cyclic_metrics()
    frame = pd.concat([frame[frame["dataset"] == "b"], frame[frame["dataset"] == "a"]])  # b evaluated first
    fig = plots.schedule_figure(frame)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["b", "a"]
    path = plots.plot_schedule(frame, tmp_path / "s.png")
    assert path.is_file() and _pixels_vary(path)


def test_teacher_on_val_is_drawn_by_default_and_another_view_on_request():
    student = pd.DataFrame([_row(s, "a", "a", 0.1, model="student", split="test") for s in range(3)])
    frame = pd.concat([student, cyclic_metrics()])  # the student's rows come first in the file
    table = plots.schedule_table(frame)
    assert plots.choose_view(table) == ("teacher", "val")
    assert plots.choose_view(table, model="student") == ("student", "val")
    drawn = plots.schedule_figure(frame, model="student", split="test")
    assert [ax.get_title() for ax in drawn.axes if ax.get_visible()] == ["a"]
    assert drawn._suptitle.get_text() == "student on test across the pretraining schedule"


# ---------------------------------------------------------------------------- det/seg and old files
def test_detection_and_segmentation_rows_are_plotted_with_their_own_colours(tmp_path):
    rows = []
    for step, (trained, kind) in enumerate([("vindr", "detection"), ("jsrt", "segmentation"), ("vindr", "multilabel")]):
        rows.append(_row(step, trained, "vindr", 0.2 + 0.1 * step, task="detection", metric="map40",
                         trained_task=kind))
        rows.append(_row(step, trained, "vindr", 0.6 + 0.05 * step, trained_task=kind))
        rows.append(_row(step, trained, "jsrt", 0.7 + 0.05 * step, task="segmentation", metric="dice",
                         trained_task=kind))
    metrics = _write(pd.DataFrame(rows, columns=list(METRIC_COLUMNS)), tmp_path)
    table = plots.schedule_table(metrics)
    assert set(zip(table["dataset"], table["family"])) == {("vindr", "detection"), ("vindr", "classification"),
                                                          ("jsrt", "segmentation")}
    fig = plots.schedule_figure(metrics)
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    drawn = {title: {to_hex(c) for coll in ax.collections for c in coll.get_facecolors()}
             for title, ax in by_title.items()}
    det, seg, cls = (plots.FAMILY_COLOURS[f] for f in ("detection", "segmentation", "classification"))
    assert {det[0], det[1], cls[0], cls[1]} <= drawn["vindr"]  # focused at steps 0 and 2, unfocused at 1
    assert {seg[0], seg[1]} <= drawn["jsrt"]
    ys = sorted(y for coll in by_title["jsrt"].collections[1:] for _, y in coll.get_offsets())
    assert ys == pytest.approx([0.7, 0.75, 0.8])  # the score column, not the empty auc column
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("detection (mAP40)" in t for t in legend) and any("segmentation (Dice)" in t for t in legend)


@pytest.mark.parametrize("columns", [OLD_COLUMNS, OLD_COLUMNS[:-1]], ids=["with-note", "before-note"])
def test_a_metrics_csv_from_before_foundation_x_plots(tmp_path, columns):
    lines = [",".join(columns)]
    for step, trained in enumerate(["a", "b", "a", "b"]):
        values = [str(step), "0", trained, "teacher", "a", "val", "__mean__", f"{0.5 + 0.1 * step:.1f}", "3", "5", ""]
        lines.append(",".join(values[: len(columns)]))
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    raw = pd.read_csv(tmp_path / "metrics.csv")  # as an older reader returns it: no task/metric/score
    for frame in (raw, read_metrics(tmp_path)):
        table = plots.schedule_table(frame)
        assert list(table["score"]) == pytest.approx([0.5, 0.6, 0.7, 0.8])
        assert list(table["focused"]) == [True, False, True, False]
        assert set(table["family"]) == {"classification"} and set(table["metric"]) == {"auc"}
    assert plots.plot_schedule(raw, tmp_path / "old.png").is_file()


def test_no_evaluation_during_pretraining_draws_nothing(tmp_path):
    final_only = pd.DataFrame([_row(3, "final", "a", 0.8, split="test")], columns=list(METRIC_COLUMNS))
    assert plots.plot_schedule(final_only, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    assert list(plots.final_table(final_only)["score"]) == [0.8]


# ---------------------------------------------------------------------------- learning curves and ROC
def test_learning_curves_skip_non_finite_losses_and_need_one(tmp_path):
    losses = pd.DataFrame(dict(step=[0, 1, 2, 3], series=["a", "b", "a", "b"], loss=[0.7, np.nan, 0.5, np.inf]))
    assert plots.plot_learning_curves(losses, tmp_path / "l.png").is_file()
    assert plots.plot_learning_curves(losses.assign(loss=np.nan), tmp_path / "none.png") is None


def test_roc_curves_skip_one_class_labels_and_read_uncertain_as_unknown(tmp_path):
    scores = np.array([[0.9, 0.2], [0.8, 0.3], [0.3, 0.4], [0.1, 0.9], [0.7, 0.5]])
    targets = np.array([[1, 0], [-1, 0], [0, 0], [0, np.nan], [1, 0]], dtype=float)
    curves, skipped = plots.roc_curves(scores, targets, ("pneumonia", "edema"), "multilabel")
    assert [(c[0], c[3], c[4], c[5]) for c in curves] == [("pneumonia", 1.0, 2, 2)]  # row 1 (-1) left out
    assert skipped == [("edema", "one class only (0 positive, 4 negative)")]
    assert plots.plot_roc("head", curves, tmp_path / "roc.png").is_file()
    assert plots.plot_roc("head", [], tmp_path / "none.png") is None


def test_multiclass_roc_is_one_vs_rest_over_known_rows():
    scores = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.75, 0.15, 0.1], [0.3, 0.3, 0.4]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]])  # the last row has no class
    curves, skipped = plots.roc_curves(scores, targets, ("normal", "pneumonia", "other"), "multiclass")
    by_name = {c[0]: c for c in curves}
    assert not skipped and by_name["normal"][4:] == (1, 3) and by_name["pneumonia"][4:] == (2, 2)
    assert by_name["pneumonia"][3] == pytest.approx(0.75)  # 0.7, 0.15 vs 0.1, 0.2: one pair of four wrong


# ---------------------------------------------------------------------------- t-SNE
def test_finding_tags_prefer_the_most_frequent_positive_label():
    names = [["Edema", "Pneumonia"], ["Pneumonia"], ["Edema"], ["Pneumonia", "Rare"], [], ["Rare"]]
    assert plots.primary_findings(names) == ["Pneumonia", "Pneumonia", "Edema", "Pneumonia", "no positive label",
                                             "Rare"]
    assert plots.primary_findings(names, top=1) == ["Pneumonia", "Pneumonia", "other findings", "Pneumonia",
                                                    "no positive label", "other findings"]


def test_tsne_map_is_reproducible_and_the_figure_has_both_colourings(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 8))
    a, b = plots.tsne_map(x, seed=1), plots.tsne_map(x, seed=1)
    assert a.shape == (30, 2) and np.array_equal(a, b)
    path = plots.plot_tsne(a, ["d1"] * 15 + ["d2"] * 15, ["x"] * 10 + ["no positive label"] * 20,
                           tmp_path / "t.png")
    assert path.is_file() and _pixels_vary(path)


# ---------------------------------------------------------------------------- probes and bias
def _per_label_probe() -> pd.DataFrame:
    rows = []
    for setting, kind, value in (("fraction=0.1", "fraction", 0.1), ("fraction=1", "fraction", 1.0),
                                 ("5-shot", "shots", 5)):
        for seed, shift in ((0, 0.0), (1, 0.1)):
            for label, base in (("a", 0.6), ("b", 0.8)):
                rows.append(dict(setting=setting, kind=kind, value=value, seed=seed, label=label,
                                 auc=base + shift + (0.05 if kind == "fraction" and value == 1.0 else 0.0),
                                 C=1.0, n_train=10, n_test=10))
    return pd.DataFrame(rows)


def test_probe_curves_from_a_per_label_file_and_from_its_summary_agree(tmp_path):
    from arkx.transfer.probe import summarize

    per_label = _per_label_probe()
    curves = plots.probe_curves(per_label)
    assert list(zip(curves["kind"], curves["value"])) == [("fraction", 0.1), ("fraction", 1.0), ("shots", 5.0)]
    assert list(curves["mean"]) == pytest.approx([0.75, 0.8, 0.75])  # seeds' means 0.7 and 0.8 (+0.05 at 1.0)
    assert list(curves["std"]) == pytest.approx([np.std([0.7, 0.8], ddof=1)] * 3)
    from_summary = plots.probe_curves(summarize(per_label))
    assert list(from_summary["mean"]) == pytest.approx(list(curves["mean"]))
    assert list(from_summary["value"]) == list(curves["value"])
    assert plots.plot_probe({"ark": curves, "scratch": from_summary}, tmp_path / "p.png").is_file()
    with pytest.raises(ValueError, match="not a probe table"):
        plots.probe_curves(pd.DataFrame(dict(x=[1])))


def _bias(n_labels: int) -> pd.DataFrame:
    rows = []
    for i in range(n_labels):
        for group, fnr in (("F", 0.2), ("M", 0.2 + 0.01 * i)):
            rows.append(dict(dataset="d", attribute="sex", group=group, label=f"L{i}", metric="fnr", value=fnr,
                             ci_low=fnr - 0.05, ci_high=fnr + 0.05, threshold=0.5, n_pos=20))
        rows.append(dict(dataset="d", attribute="sex", group="F-M", label=f"L{i}", metric="fnr_gap",
                         value=-0.01 * i, ci_low=-0.1, ci_high=0.1, threshold=0.5, n_pos=0))
    return pd.DataFrame(rows)


def test_bias_panel_keeps_the_widest_gaps_and_names_missing_columns(tmp_path):
    frame = _bias(6)
    frame = frame[frame["metric"] == "fnr"].rename(columns={"value": "fnr"})
    frame = frame.assign(row=frame["dataset"] + ": " + frame["label"])
    rows, cut = plots._widest_gaps(frame, max_rows=2)
    assert rows == ["d: L5", "d: L4"] and cut
    assert plots._widest_gaps(frame, max_rows=6) == (list(dict.fromkeys(frame["row"])), False)
    path = plots.plot_bias(_bias(6), tmp_path / "b.png", max_rows=3)
    assert path.is_file() and _pixels_vary(path)
    gaps_only = _bias(2)[lambda f: f["metric"] == "fnr_gap"]
    assert plots.plot_bias(gaps_only, tmp_path / "gaps.png") is None  # F-M gap rows are not group rates
    with pytest.raises(ValueError, match="ci_high"):
        plots.plot_bias(_bias(2).drop(columns="ci_high"), tmp_path / "x.png")
