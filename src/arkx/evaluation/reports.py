"""Run reports: the metrics CSV (one row per label per evaluation), TensorBoard scalars, tables.

The CSV is the source of truth; TensorBoard is a view of it. On resume, rows written by a step
whose checkpoint never landed are dropped, so a resumed run's CSV equals an uninterrupted one's.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path

import pandas as pd

log = logging.getLogger("arkx.evaluation")

#: One row per label (class, structure) and one ``__mean__`` row per evaluation of one (model, dataset, task).
#: ``task`` is the evaluated task's kind, ``metric`` what ``score`` is (``auc``, ``map40``, ``dice``); the
#: ``auc`` column repeats the score of AUC rows (files from before Foundation X have it only).
#: ``trained_task``: the kind trained at that step (``trained`` names its dataset).
METRIC_COLUMNS = ("step", "round", "trained", "model", "dataset", "split", "label", "auc", "n_pos", "n_neg", "note",
                  "task", "metric", "score", "trained_task")
#: columns a file written before they existed may lack (filled in when it is read: see :func:`fill_old_columns`)
LATER_COLUMNS = ("note", "task", "metric", "score", "trained_task")
MEAN_LABEL = "__mean__"


class MetricsLog:
    def __init__(self, folder: Path, start_step: int = 0, tensorboard: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.folder / "metrics.csv"
        self._truncate_from(start_step)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.folder / "tensorboard"), purge_step=start_step or None)
            except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
                log.warning("tensorboard is not importable; writing CSV metrics only")

    def _truncate_from(self, start_step: int) -> None:
        """Keep the rows of steps before ``start_step`` (a resume drops rows of a step whose checkpoint never
        landed). A metrics.csv that cannot be read as ours is set aside, not trusted and not fatal."""
        if not self.csv_path.exists() or self.csv_path.stat().st_size == 0:
            self._write(pd.DataFrame(columns=list(METRIC_COLUMNS)))
            return
        read = self._read_existing()
        if read is None:
            return
        frame, repaired = read
        steps = pd.to_numeric(frame["step"], errors="coerce")
        kept = frame[steps < start_step]
        if repaired or len(kept) != len(frame):
            self._write(kept)

    def _read_existing(self) -> tuple[pd.DataFrame, bool] | None:
        """The rows of an existing metrics.csv, and whether they needed repair (a column added, empty rows
        dropped); None when the file was set aside."""
        try:
            frame = pd.read_csv(self.csv_path, dtype=str, keep_default_na=False)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
            return self._set_aside(f"unreadable ({' '.join(str(err).split())[:120]})")
        missing = [c for c in METRIC_COLUMNS if c not in frame.columns and c not in LATER_COLUMNS]
        if missing:
            return self._set_aside(f"columns {missing} missing")
        repaired = list(frame.columns) != list(METRIC_COLUMNS)
        frame = fill_old_columns(frame)[list(METRIC_COLUMNS)]
        blank = (frame == "").all(axis=1)  # rows of commas only
        if blank.any():
            log.warning("%s: %d empty row(s) dropped", self.csv_path, int(blank.sum()))
        return frame[~blank], repaired or bool(blank.any())

    def _set_aside(self, why: str) -> None:
        aside = self.csv_path.with_name(f"metrics.csv.damaged-{int(time.time())}")
        self.csv_path.replace(aside)
        log.warning("%s is %s; kept as %s, starting a new metrics.csv", self.csv_path, why, aside.name)
        self._write(pd.DataFrame(columns=list(METRIC_COLUMNS)))
        return None

    def _write(self, frame: pd.DataFrame) -> None:
        """Replace metrics.csv atomically (a kill leaves the old or the new file, never half of one)."""
        from ..training.state import space_checked

        tmp = self.csv_path.with_name(".metrics.csv.tmp")
        with space_checked(self.csv_path):
            frame.to_csv(tmp, index=False)
            tmp.replace(self.csv_path)

    def add_auc(self, *, step: int, round_: int, trained: str, model: str, dataset: str, split: str, result,
                task: str = "", trained_task: str = "") -> None:
        """The rows of one classification evaluation (:class:`~arkx.evaluation.metrics.AucResult`)."""
        from .metrics import exclusion_reason

        head = (step, round_, trained, model, dataset, split)
        tail = (task, "auc")
        rows = [
            (*head, name, _fmt(auc), int(p), int(n), exclusion_reason(int(p), int(n)) or "", *tail, _fmt(auc),
             trained_task)
            for name, auc, p, n in zip(result.label_names, result.per_label, result.n_positive, result.n_negative)
        ]
        rows.append((*head, MEAN_LABEL, _fmt(result.mean), int(result.n_positive.sum()),
                     int(result.n_negative.sum()), _mean_note(result), *tail, _fmt(result.mean), trained_task))
        self._append(rows)
        self._scalar("auc", split, dataset, model, "", result.mean, step)

    def add_score(self, *, step: int, round_: int, trained: str, model: str, dataset: str, split: str, result,
                  task: str, trained_task: str = "") -> None:
        """The rows of one evaluation of any task: an ``AucResult`` goes through :meth:`add_auc`; a
        :class:`~arkx.tasks.TaskScore` (mAP40 per class, Dice per structure) gets one row per label and a mean
        row whose note lists its other figures (``map50=...;map50_95=...``)."""
        if getattr(result, "metric", "auc") == "auc" and hasattr(result, "per_label") and hasattr(result, "n_positive"):
            self.add_auc(step=step, round_=round_, trained=trained, model=model, dataset=dataset, split=split,
                         result=result, task=task, trained_task=trained_task)
            return
        head = (step, round_, trained, model, dataset, split)
        rows = [(*head, name, "", "", "", "", task, result.metric, _fmt(value), trained_task)
                for name, value in result.per_label.items()]
        note = ";".join(f"{k}={v:.6f}" for k, v in result.details.items() if isinstance(v, (int, float)))
        rows.append((*head, MEAN_LABEL, "", "", "", note, task, result.metric, _fmt(result.mean), trained_task))
        self._append(rows)
        self._scalar(result.metric, split, dataset, model, f"/{task}", result.mean, step)

    def _append(self, rows: list[tuple]) -> None:
        from ..training.state import space_checked

        with space_checked(self.csv_path), self.csv_path.open("a", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)

    def _scalar(self, metric: str, split: str, dataset: str, model: str, task: str, value: float, step: int) -> None:
        if self.writer is not None and not math.isnan(value):
            self.writer.add_scalar(f"{metric}/{split}/{dataset}{task}/{model}", value, step)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class NullMetrics:
    """The metrics log of a rank other than 0 in a multi-process job: the same calls, nothing written (rank 0
    writes the one ``metrics.csv``)."""

    def add_auc(self, **_) -> None:
        pass

    add_score = add_auc

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def _mean_note(result) -> str:
    """Which labels the mean leaves out (empty when it averages all of them)."""
    excluded = result.excluded()
    if not excluded:
        return ""
    used = len(result.label_names) - len(excluded)
    return f"mean of {used} of {len(result.label_names)} labels; excluded: {', '.join(excluded)}"


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def fill_old_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns a file from an older arkx lacks: ``note``/``task``/``trained_task`` empty, ``metric`` ``auc``
    and ``score`` the ``auc`` column (those files hold AUC rows only)."""
    frame = frame.copy()
    for column in ("note", "task", "trained_task"):
        if column not in frame.columns:
            frame[column] = ""
    if "metric" not in frame.columns:
        frame["metric"] = "auc"
    if "score" not in frame.columns:
        frame["score"] = frame["auc"] if "auc" in frame.columns else float("nan")
    return frame


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """A run's metrics.csv with every column of :data:`METRIC_COLUMNS` (an older file's missing ones filled;
    a run that has not evaluated yet has the header only: an empty frame)."""
    path = Path(run_dir) / "metrics.csv"
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    return fill_old_columns(frame)
