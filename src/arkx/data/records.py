"""The one schema every dataset adapter returns.

An adapter reads a provider's folder *as shipped* and returns :class:`Records`: one row per image
(with patient, split, view, sex, age) plus the raw targets of each task. Raw means as the provider
wrote them: classification labels are 1 (positive), 0 (negative), -1 (uncertain) or NaN (not
labelled). Label *policies* (uncertain -> ones, label smoothing, ...) are applied later, when batches
are made, so ``arkx datasets inspect`` can always report what is really on disk.

Label names travel with the labels: a head is built from ``Task.label_names`` and every output
(metrics, CSVs, predictions) is named from the same tuple, never re-typed (METHOD.md §5: the authors'
MIMIC head was in alphabetical order while everything named it in CheXpert order).
"""

from __future__ import annotations

from ..errors import ArkxValueError
from ..tasks.base import Task

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")

#: Columns every ``Records.images`` frame has, in this order.
IMAGE_COLUMNS = ("image_id", "path", "patient_id", "split", "view", "sex", "age")


class DatasetFormatError(ArkxValueError):
    """A dataset folder does not match the provider's layout (names the file, row and what was expected)."""


@dataclass
class Records:
    """What an adapter read from one dataset folder.

    Attributes:
        dataset: adapter name (``chexpert``, ``nih14``, ...).
        root: the dataset folder as the provider ships it; ``images.path`` is relative to it.
        images: one row per image with :data:`IMAGE_COLUMNS`. ``split`` is one of :data:`SPLITS`;
            ``sex`` is ``"M"``, ``"F"`` or ``None``; ``age`` is a float in years or NaN;
            ``view`` is the provider's view code (``PA``, ``AP``, ``LATERAL``, ...) or ``None``.
        task: the classification task (``None`` for datasets without image-level labels).
        labels: float32 array ``[n_images, task.num_outputs]`` aligned with ``images`` rows.
        boxes: optional frame with columns ``image_id, label, x_min, y_min, x_max, y_max`` in pixel
            coordinates of the image file (and optionally ``reader``).
        masks: optional frame, one row per (image, structure) mask, with columns ``image_id, label,
            kind`` and the mask's source: ``kind="file"`` -> ``path`` (relative to root, nonzero =
            inside), ``kind="rle"`` -> ``rle``, ``encoding`` (``"kaggle-siim"``, ``"coco"``, ...),
            ``height``, ``width``; ``kind="polygon"`` -> ``polygon`` (flat x,y list in file pixels),
            ``height``, ``width``. Decoding lives in ``arkx.data.masks``; adapters only reference.
        split_source: how splits were obtained: ``"official"`` (provider's split files) or
            ``"seeded-patient"`` (seeded patient-level split made by arkx; the seed is recorded).
        notes: free-form facts worth reporting (e.g. aggregation rule for several readers).
        box_label_names: the detection classes in head order (default: the sorted labels of ``boxes``,
            fixed when the records are made, so every split and subset shares them).
        mask_label_names: the segmentation structures in head order (default: the sorted labels of
            ``masks``, fixed the same way).
        masks_exhaustive: True when every image was annotated for every structure, so an image without a
            mask row of a structure has an EMPTY mask of it (SIIM-ACR's ``-1``, ChestX-Det's images without
            findings); False (the default) when a missing row means "not annotated" (no loss, no score).
    """

    dataset: str
    root: Path
    images: pd.DataFrame
    task: Task | None
    labels: np.ndarray
    boxes: pd.DataFrame | None = None
    masks: pd.DataFrame | None = None
    split_source: str = "official"
    notes: dict[str, object] = field(default_factory=dict)
    box_label_names: tuple[str, ...] | None = None
    mask_label_names: tuple[str, ...] | None = None
    masks_exhaustive: bool = False

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.box_label_names = _label_names(self.boxes, self.box_label_names, self.dataset, "boxes")
        self.mask_label_names = _label_names(self.masks, self.mask_label_names, self.dataset, "masks")
        missing = [c for c in IMAGE_COLUMNS if c not in self.images.columns]
        if missing:
            raise ValueError(f"{self.dataset}: records are missing columns {missing}")
        self.images = self.images.reset_index(drop=True)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        n_out = self.task.num_outputs if self.task else 0
        if self.labels.shape != (len(self.images), n_out):
            raise ValueError(
                f"{self.dataset}: labels have shape {self.labels.shape}, expected {(len(self.images), n_out)}"
            )
        bad_split = set(self.images["split"].unique()) - set(SPLITS)
        if bad_split:
            raise ValueError(f"{self.dataset}: unknown split values {sorted(bad_split)}; expected {SPLITS}")
        dup = self.images["image_id"].duplicated()
        if dup.any():
            first = self.images.loc[dup, "image_id"].iloc[0]
            raise DatasetFormatError(f"{self.dataset}: image id {first!r} appears more than once")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.task.label_names if self.task else ()

    def tasks(self, head_name: str | None = None) -> list[Task]:
        """Every task these records can train: the classification task (if any), detection (boxes, or boxes
        derived from masks when there are masks only) and segmentation (masks), each named ``head_name``
        (default: the classification task's name, else the dataset's)."""
        name = head_name or (self.task.name if self.task else self.dataset)
        out = []
        if self.task is not None:
            out.append(Task(name, self.task.kind, self.task.label_names))
        if self.box_label_names:
            out.append(Task(name, "detection", self.box_label_names))
        elif self.mask_label_names:
            out.append(Task(name, "detection", self.mask_label_names))
        if self.mask_label_names:
            out.append(Task(name, "segmentation", self.mask_label_names))
        return out

    def split(self, name: str) -> Records:
        """The subset of one split (a new Records; boxes filtered to its images)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.subset(self.images["split"].to_numpy() == name)

    def subset(self, mask: np.ndarray) -> Records:
        mask = np.asarray(mask, dtype=bool)
        images = self.images.loc[mask].reset_index(drop=True)
        keep = set(images["image_id"])

        def filtered(frame: pd.DataFrame | None) -> pd.DataFrame | None:
            return None if frame is None else frame[frame["image_id"].isin(keep)].reset_index(drop=True)

        return dataclasses.replace(self, images=images, labels=self.labels[mask], boxes=filtered(self.boxes),
                                   masks=filtered(self.masks))

    def absolute_paths(self) -> list[Path]:
        return [self.root / p for p in self.images["path"]]


def _label_names(frame: pd.DataFrame | None, declared: tuple[str, ...] | None, dataset: str,
                 what: str) -> tuple[str, ...] | None:
    """The declared names (checked against the frame's labels), else the frame's sorted labels, else None."""
    present = [] if frame is None or len(frame) == 0 or "label" not in frame else sorted(map(str, frame["label"].unique()))
    if declared is None:
        return tuple(present) or None
    declared = tuple(map(str, declared))
    unknown = sorted(set(present) - set(declared))
    if unknown:
        raise DatasetFormatError(f"{dataset}: {what} have labels {unknown} that are not among the declared "
                                 f"{what} labels {list(declared)}")
    return declared
