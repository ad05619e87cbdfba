"""One self-contained HTML page per run: the final test metrics, the plots, the resolved config.

:func:`write_report` reads a run folder and writes ``report.html`` with the PNG files beside it (by default
in ``RUN/report/``). The page needs nothing else: images are embedded as base64 ``data:`` URIs, the CSS is
inline, there is no script and no address of any other resource, so it opens offline, from a copied folder,
or as an e-mail attachment.

What it reads from the run folder, each optional except the folder itself; a missing or unusable input
leaves a note in its section of the page saying what is missing and how to get it, never a failure:

* ``metrics.csv``: the schedule figure (focused vs unfocused, see :func:`arkx.evaluation.plots.plot_schedule`)
  and the final test table (the rows with ``trained == "final"``);
* ``losses.csv`` (columns ``step``, ``dataset``, ``loss`` and optionally ``task``), else the TensorBoard
  scalars ``loss/*`` in ``tensorboard/``: the learning curves;
* the model (``teacher.safetensors``, or ``checkpoints/last.pt`` of an unfinished run) and the datasets of
  ``config.yaml``: ROC curves per classification head and a t-SNE map of the embeddings, computed on a
  seeded sample of the test split (datasets whose folders are not reachable from here are named in the page);
* probe results, ``RUN/probe/*.csv`` (written by ``arkx probe --out RUN/probe/NAME.csv``), or files passed in;
* a bias audit: ``RUN/*.fnr.csv`` (``arkx evaluate RUN --bias --out RUN/NAME.csv`` writes ``RUN/NAME.fnr.csv``)
  and ``RUN/bias.csv`` (columns :data:`arkx.evaluation.plots.BIAS_COLUMNS`), or a file passed in;
* ``config.yaml`` (shown as written) and ``summary.json`` (steps, training time).
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import pandas as pd

from ..errors import ArkxFileNotFoundError, ArkxValueError
from . import plots
from .report_page import (
    Section,
    _html_table,
    _number,
    _one_line,
    render_page,
    write_text_atomically,
)
from .report_predictions import (  # noqa: F401
    CLASSIFICATION_KINDS,
    HeadPredictions,
    predict_run,
    prediction_sections,
)
from .reports import read_metrics

log = logging.getLogger("arkx.evaluation")

REPORT_DIR = "report"
REPORT_FILE = "report.html"
LOSSES_FILE = "losses.csv"
BIAS_FILE = "bias.csv"
PROBE_DIR = "probe"


# ---------------------------------------------------------------------------- entry point
def write_report(run_dir: str | Path, out: str | Path | None = None, *, predictions: bool = True,
                 which: str = "teacher", split: str = "test", device: str = "auto", max_images: int = 1000,
                 tsne_per_dataset: int = 150, seed: int = 0, probe_files: list[str | Path] | None = None,
                 bias_file: str | Path | None = None, progress: bool = False) -> Path:
    """Write the run's report page; returns the path of ``report.html``.

    Args:
        run_dir: the run folder (``run.out`` of its config).
        out: folder for ``report.html`` and its PNG files (default ``RUN/report``).
        predictions: compute ROC curves and the t-SNE map from the model on ``split`` (False: skip them, a
            note says so).
        which: ``teacher`` (the released model) or ``student``.
        split: the split the predictions are made on.
        device: ``auto``, ``cpu`` or ``cuda`` for the predictions.
        max_images: at most this many images per dataset for the ROC curves (a seeded sample, stated).
        tsne_per_dataset: at most this many images per dataset in the t-SNE map (seeded sample).
        seed: the sampling and t-SNE seed.
        probe_files: probe CSVs (default: ``RUN/probe/*.csv``).
        bias_file: a bias-audit CSV (default: ``RUN/*.fnr.csv`` and ``RUN/bias.csv``).
    """
    run_dir = _check_run_dir(run_dir)
    if which not in ("teacher", "student"):
        raise ArkxValueError(f"which must be 'teacher' or 'student', got {which!r}")
    if split not in ("train", "val", "test"):
        raise ArkxValueError(f"split must be train, val or test, got {split!r}")
    if max_images < 1 or tsne_per_dataset < 1:
        raise ArkxValueError("max_images and tsne_per_dataset must be >= 1")
    out = Path(out) if out is not None else run_dir / REPORT_DIR
    if out.exists() and not out.is_dir():
        raise ArkxValueError(f"{out} is a file; give a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    _remove_old_figures(out)
    metrics, metrics_note = _read_metrics(run_dir)
    sections = [
        final_section(metrics, metrics_note),
        schedule_section(metrics, metrics_note, out),
        learning_section(run_dir, out),
    ]
    sections += prediction_sections(run_dir, out, enabled=predictions, which=which, split=split, device=device,
                                    max_images=max_images, tsne_per_dataset=tsne_per_dataset, seed=seed,
                                    progress=progress)
    sections.append(probe_section(run_dir, out, probe_files))
    sections.append(bias_section(run_dir, out, bias_file))
    sections.append(config_section(run_dir))
    page = render_page(run_dir, sections, _read_summary(run_dir))
    path = out / REPORT_FILE
    write_text_atomically(path, page)
    log.info("report of %s written to %s", run_dir, path)
    return path


#: the PNG files a report writes (a figure not drawn this time must not be left from an earlier report)
FIGURE_PATTERNS = ("schedule.png", "learning_curves.png", "roc_*.png", "tsne.png", "probe.png", "bias*.png")


def _remove_old_figures(out: Path) -> None:
    for pattern in FIGURE_PATTERNS:
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)


def _check_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ArkxFileNotFoundError(f"no run folder {run_dir}")
    if not run_dir.is_dir():
        raise ArkxValueError(f"{run_dir} is a file, not a run folder")
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "metrics.csv").is_file():
        raise ArkxFileNotFoundError(f"{run_dir} is not an arkx run folder (no config.yaml and no metrics.csv)")
    return run_dir


def _read_metrics(run_dir: Path) -> tuple[pd.DataFrame | None, str]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None, f"no {path.name} in the run folder (the run has not evaluated anything yet)"
    try:
        frame = read_metrics(run_dir)
    except (pd.errors.ParserError, UnicodeDecodeError, KeyError, ValueError) as err:
        return None, f"{path} could not be read ({' '.join(str(err).split())[:160]})"
    if frame.empty:
        return None, f"{path} has no rows yet (the run has not evaluated anything)"
    return frame, ""


def _read_summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------- metrics sections
def final_section(metrics: pd.DataFrame | None, note: str) -> Section:
    section = Section("final", "Final test metrics",
                      "Mean over labels (AUC), classes (mAP40) or structures (Dice) on the test split, evaluated "
                      "once at the end of pretraining.")
    if metrics is None:
        section.notes.append(note)
        return section
    table = plots.final_table(metrics)
    if table.empty:
        section.notes.append("metrics.csv has no final test evaluation (rows with trained = final): the run has not "
                             "finished, or eval.test_at_end is off")
        return section
    table = _counts_as_integers(table.assign(metric=[plots.METRIC_NAMES.get(m, m) for m in table["metric"]],
                                             score=[_number(v) for v in table["score"]]))
    section.body = _html_table(_without_empty_columns(table))
    per_label = _final_per_label(metrics)
    if not per_label.empty:
        section.body += ("<details><summary>per label</summary>" + _html_table(_without_empty_columns(per_label))
                         + "</details>")
    return section


def _final_per_label(metrics: pd.DataFrame) -> pd.DataFrame:
    frame = plots.normalise_metrics(metrics)
    rows = frame[(frame["trained"] == plots.FINAL) & (frame["label"] != plots.MEAN_LABEL)]
    keep = [c for c in ("model", "dataset", "task", "label", "metric", "score", "n_pos", "n_neg", "note") if c in rows]
    rows = rows[keep].copy()
    rows["score"] = [_number(v) for v in rows["score"]]
    return _counts_as_integers(rows)


def _without_empty_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Leave out columns with no value at all (``task`` in files from before it was written, ``note``)."""
    empty = [c for c in frame.columns if frame[c].isna().all() or (frame[c].astype(str) == "").all()]
    return frame.drop(columns=empty)


def _counts_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """n_pos / n_neg as integers (empty for det/seg rows, which have no counts) instead of 12.0 / nan."""
    for column in ("n_pos", "n_neg"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def schedule_section(metrics: pd.DataFrame | None, note: str, out: Path) -> Section:
    section = Section("schedule", "Across the pretraining schedule: focused vs unfocused",
                      "Each dataset's mean score after each evaluated step. Dark where the step trained that "
                      "dataset (focused), light where it trained another one (unfocused); dashed: the best "
                      "focused score (Foundation X, figure 2). Green: classification (AUC), orange: localization "
                      "(mAP40), blue: segmentation (Dice).")
    if metrics is None:
        section.notes.append(note)
        return section
    table = plots.schedule_table(metrics)
    if table.empty:
        section.notes.append("metrics.csv holds no evaluation made during pretraining (eval.every is 'end', or the "
                             "run has not reached its first evaluation)")
        return section
    model, split = plots.choose_view(table)
    path = plots.plot_schedule(metrics, out / "schedule.png", model=model, split=split)
    section.figures.append((path, f"{model} on {split}; x: the step after which it was evaluated."))
    others = sorted({(m, s) for m, s in zip(table["model"], table["split"])} - {(model, split)})
    if others:
        section.notes.append("also in metrics.csv, not drawn: " + ", ".join(f"{m} on {s}" for m, s in others))
    drawn = table[(table["model"] == model) & (table["split"] == split)]
    never = [d for d, g in drawn.groupby("dataset", sort=False) if not g["focused"].any()]
    if never:
        section.notes.append(f"{', '.join(never)}: never evaluated right after a step that trained it, so no focused "
                             "point (with eval.every = round only the round's last dataset can be; eval.every = "
                             "dataset_epoch shows every dataset's focused steps)")
    return section


# ---------------------------------------------------------------------------- learning curves
def read_losses(run_dir: Path) -> tuple[pd.DataFrame | None, str]:
    """The training loss per step as ``(frame[step, series, loss], source)``, or ``(None, why)``.

    ``losses.csv`` wins when it exists (columns ``step``, ``dataset``, ``loss``, optional ``task``); else the
    TensorBoard scalars ``loss/<series>`` that pretraining logs."""
    csv_path = run_dir / LOSSES_FILE
    if csv_path.is_file():
        try:
            frame = pd.read_csv(csv_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            return None, f"{csv_path} could not be read ({' '.join(str(err).split())[:160]})"
        missing = [c for c in ("step", "dataset", "loss") if c not in frame.columns]
        if missing:
            return None, f"{csv_path} lacks column(s) {', '.join(missing)} (expected step, dataset, loss[, task])"
        series = frame["dataset"].astype(str)
        if "task" in frame.columns:
            task = frame["task"].fillna("").astype(str)
            series = series.where(task == "", series + "/" + task)
        return pd.DataFrame(dict(step=frame["step"], series=series, loss=frame["loss"])), str(csv_path.name)
    return _tensorboard_losses(run_dir / "tensorboard")


def _tensorboard_losses(folder: Path) -> tuple[pd.DataFrame | None, str]:
    if not folder.is_dir():
        return None, (f"no {LOSSES_FILE} and no tensorboard/ folder in the run folder: the training loss was not "
                      "recorded")
    try:
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )
    except ImportError:
        return None, "tensorboard is not importable, so the loss scalars in tensorboard/ cannot be read"
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    chatty = logging.getLogger("tensorboard")
    level = chatty.level
    chatty.setLevel(logging.WARNING)  # its INFO lines about event files mean nothing to a report's reader
    try:
        accumulator.Reload()
    finally:
        chatty.setLevel(level)
    tags = [t for t in accumulator.Tags().get("scalars", []) if t.startswith("loss/")]
    if not tags:
        return None, f"{folder} holds no loss/* scalars"
    rows = [(event.step, tag[len("loss/"):], event.value) for tag in tags for event in accumulator.Scalars(tag)]
    return pd.DataFrame(rows, columns=["step", "series", "loss"]), "TensorBoard scalars loss/*"


def learning_section(run_dir: Path, out: Path) -> Section:
    section = Section("learning", "Learning curves",
                      "The mean training loss of each pretraining step (one dataset epoch), per dataset.")
    losses, source = read_losses(run_dir)
    if losses is None:
        section.notes.append(source)
        return section
    path = plots.plot_learning_curves(losses, out / "learning_curves.png")
    if path is None:
        section.notes.append(f"{source}: no finite loss to plot")
        return section
    section.figures.append((path, f"source: {source}"))
    return section


# ---------------------------------------------------------------------------- probes and bias
def find_probe_files(run_dir: Path) -> list[Path]:
    """``RUN/probe/*.csv``, a summary file left out when its per-label file is there (same results)."""
    folder = run_dir / PROBE_DIR
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    names = {f.name for f in files}
    return [f for f in files if not (f.name.endswith(".summary.csv")
                                     and f.name[: -len(".summary.csv")] + ".csv" in names)]


def probe_section(run_dir: Path, out: Path, files: list[str | Path] | None) -> Section:
    section = Section("probe", "Linear probes and few-shot",
                      "Test AUC of logistic-regression probes on frozen embeddings, mean over labels, mean ± std "
                      "over seeds, against the fraction of the training split and against k labelled images per "
                      "class.")
    paths = [Path(f) for f in files] if files else find_probe_files(run_dir)
    if not paths:
        section.notes.append(f"no probe results: none given and no {PROBE_DIR}/*.csv in the run folder (write them "
                             f"with `arkx embed RUN ... --out E.npz` then `arkx probe E.npz --out "
                             f"{run_dir / PROBE_DIR}/NAME.csv`)")
        return section
    curves = {}
    for path in paths:
        try:
            curves[path.name.removesuffix(".csv")] = plots.probe_curves(pd.read_csv(path))
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            section.notes.append(f"{path}: skipped ({_one_line(err)})")
    figure = plots.plot_probe(curves, out / "probe.png") if curves else None
    if figure is None:
        if curves:
            section.notes.append("the probe files hold no fraction or k-shot setting to plot")
        return section
    section.figures.append((figure, "from " + ", ".join(str(p.name) for p in paths)))
    return section


def find_bias_files(run_dir: Path) -> list[Path]:
    """Bias audits in the run folder: ``*.fnr.csv`` (``arkx evaluate RUN --bias --out RUN/NAME.csv`` writes
    ``RUN/NAME.fnr.csv``) and ``bias.csv``."""
    files = sorted(run_dir.glob("*.fnr.csv"))
    return files + ([run_dir / BIAS_FILE] if (run_dir / BIAS_FILE).is_file() else [])


def bias_section(run_dir: Path, out: Path, bias_file: str | Path | None) -> Section:
    section = Section("bias", "Bias audit: false-negative rate per group",
                      "False-negative rate of each label at the threshold chosen on validation, per sex and per "
                      "age group, with its confidence interval (patient bootstrap).")
    paths = [Path(bias_file)] if bias_file is not None else find_bias_files(run_dir)
    if not paths or not paths[0].is_file():
        where = paths[0] if paths else f"{run_dir}/*.fnr.csv or {run_dir / BIAS_FILE}"
        section.notes.append(f"no bias audit: {where} does not exist (write one with `arkx evaluate {run_dir} "
                             f"--bias --out {run_dir}/evaluation.csv`; columns read: "
                             f"{', '.join(plots.BIAS_COLUMNS)})")
        return section
    for i, path in enumerate(paths):
        try:
            figure = plots.plot_bias(pd.read_csv(path), out / f"bias{'' if i == 0 else f'_{i}'}.png")
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            section.notes.append(f"{path}: not plotted ({_one_line(err)})")
            continue
        if figure is None:
            section.notes.append(f"{path}: no finite false-negative rate to plot")
            continue
        section.figures.append((figure, f"from {path.name}"))
    return section


def config_section(run_dir: Path) -> Section:
    section = Section("config", "Resolved config", "config.yaml of the run, as the run wrote it.")
    path = run_dir / "config.yaml"
    try:
        section.body = f"<pre>{html.escape(path.read_text(encoding='utf-8'))}</pre>"
    except (OSError, UnicodeDecodeError) as err:
        section.notes.append(f"{path} could not be read ({_one_line(err)})")
    return section
