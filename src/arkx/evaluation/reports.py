"""Run reports: the metrics CSV (one row per label per evaluation), TensorBoard scalars, tables.

The CSV is the source of truth; TensorBoard is a view of it. On resume, rows written by a step
whose checkpoint never landed are dropped, so a resumed run's CSV equals an uninterrupted one's.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import pandas as pd

log = logging.getLogger("arkx.evaluation")

METRIC_COLUMNS = ("step", "round", "trained", "model", "dataset", "split", "label", "auc", "n_pos", "n_neg")
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
        if not self.csv_path.exists():
            with self.csv_path.open("w", newline="") as handle:
                csv.writer(handle).writerow(METRIC_COLUMNS)
            return
        frame = pd.read_csv(self.csv_path)
        kept = frame[frame["step"] < start_step]
        if len(kept) != len(frame):
            kept.to_csv(self.csv_path, index=False)

    def add_auc(self, *, step: int, round_: int, trained: str, model: str, dataset: str, split: str, result) -> None:
        rows = [
            (step, round_, trained, model, dataset, split, name, _fmt(auc), int(p), int(n))
            for name, auc, p, n in zip(result.label_names, result.per_label, result.n_positive, result.n_negative)
        ]
        rows.append((step, round_, trained, model, dataset, split, MEAN_LABEL, _fmt(result.mean),
                     int(result.n_positive.sum()), int(result.n_negative.sum())))
        with self.csv_path.open("a", newline="") as handle:
            csv.writer(handle).writerows(rows)
        if self.writer is not None and not math.isnan(result.mean):
            self.writer.add_scalar(f"auc/{split}/{dataset}/{model}", result.mean, step)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def read_metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "metrics.csv")


def mean_auc_table(metrics: pd.DataFrame, split: str = "test", model: str = "teacher") -> pd.Series:
    """Last mean AUC per dataset for a split and model (index: dataset)."""
    rows = metrics[(metrics["split"] == split) & (metrics["model"] == model) & (metrics["label"] == MEAN_LABEL)]
    last = rows.sort_values("step").groupby("dataset").tail(1)
    return last.set_index("dataset")["auc"]
