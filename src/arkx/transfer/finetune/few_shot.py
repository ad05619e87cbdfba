"""Few-shot fine-tuning: train on K labelled training images, evaluate on the whole val and test splits.

The K images are a seeded draw (``numpy.random.default_rng(seed)``) among the training images that carry
targets of the task (for segmentation: an annotated mask of at least one structure; for detection: a box,
or a mask boxes are derived from; for classification: every training image), so the same seed gives the
same images on any machine, and another seed another draw. The images used are written to ``shots.csv``
(records row, image id, path) in the output folder, so a result names exactly what it was trained on.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np

from ...errors import ArkxValueError

log = logging.getLogger("arkx.transfer")


def labelled_train_rows(data, task) -> np.ndarray:
    """Rows of the usable training images that have targets of ``task`` (see the module docstring)."""
    rows = np.asarray(data.indices("train"))
    records = data.records
    if task.is_classification:
        return rows
    if task.kind == "detection" and records.boxes is not None:
        annotated = records.boxes
    else:  # segmentation, or detection from boxes derived from masks
        if records.masks is None:
            return rows[:0]
        if records.masks_exhaustive:  # every image annotated: an image without a mask row has empty masks
            return rows
        annotated = records.masks
    have = set(annotated["image_id"].astype(str))
    ids = records.images["image_id"].astype(str).to_numpy()
    return rows[np.fromiter((ids[r] in have for r in rows), dtype=bool, count=len(rows))]


def shot_rows(data, task, shots: int, seed: int) -> np.ndarray:
    """``shots`` rows drawn (seeded, without replacement) from :func:`labelled_train_rows`, sorted."""
    candidates = labelled_train_rows(data, task)
    if shots > len(candidates):
        raise ArkxValueError(f"{data.records.root} ({data.records.dataset}): shots={shots} but the train split has "
                             f"{len(candidates)} image(s) with {task.kind} targets")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=shots, replace=False))


@dataclasses.dataclass
class FewShotDataset:
    """A prepared dataset whose train split is the chosen rows (val and test unchanged); every other
    attribute is the wrapped dataset's."""

    dataset: object
    train_rows: np.ndarray

    def indices(self, split: str) -> np.ndarray:
        return self.train_rows if split == "train" else self.dataset.indices(split)

    def __getattr__(self, name: str):  # records, images, name, tasks(), ...: the dataset's own
        if name in ("dataset", "train_rows"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def few_shot(data, task, shots: int, seed: int, record: Path) -> FewShotDataset:
    """``data`` restricted to ``shots`` seeded training images, the choice written to ``record`` (CSV)."""
    rows = shot_rows(data, task, shots, seed)
    images = data.records.images
    record.parent.mkdir(parents=True, exist_ok=True)
    with open(record, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "image_id", "path"])
        for row in rows:
            writer.writerow([int(row), images["image_id"].iloc[row], images["path"].iloc[row]])
    log.info("few-shot: training on %d of %d labelled training images (seed %d), listed in %s", len(rows),
             len(labelled_train_rows(data, task)), seed, record)
    return FewShotDataset(data, rows)
