"""Dice and IoU of segmentation masks, per image and per structure.

Conventions (checked against MONAI's ``DiceMetric`` / ``MeanIoU`` in tests/evaluation/test_segmentation_metrics.py):

- Predictions are probabilities (``from_logits=False``), logits (``from_logits=True``: a sigmoid first)
  or binary masks (``bool``, used as they are). A pixel is predicted inside a structure when its
  probability is **at least** ``threshold`` (0.5), i.e. a logit ``>= 0``.
- Per (image, structure): ``Dice = 2|P & G| / (|P| + |G|)``, ``IoU = |P & G| / |P | G|``.
- Empty ground truth, ``empty="ignore"`` (default, MONAI's ``ignore_empty=True``): the pair is NaN and
  left out of every mean, whatever the prediction. ``empty="one"`` (the Kaggle SIIM-ACR convention,
  MONAI's ``ignore_empty=False``): an empty prediction on an empty ground truth scores 1, any predicted
  pixel scores 0.
- A structure not annotated for an image (``present[i, c]`` False) is NaN for that image, never 0.
- Per-structure score: the mean over images of its non-NaN values; overall score: the mean over the
  structures that have one (macro average, every structure weighs the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ArkxValueError

EMPTY_CONVENTIONS = ("ignore", "one")


@dataclass(frozen=True)
class SegmentationScores:
    """Dice and IoU of one segmentation task.

    Attributes:
        label_names: the structures, in head order.
        dice, iou: ``[n_images, n_structures]`` float64, NaN where the pair does not count (not annotated,
            or empty ground truth under ``empty="ignore"``).
        empty: the empty-mask convention used (``"ignore"`` or ``"one"``).
    """

    label_names: tuple[str, ...]
    dice: np.ndarray
    iou: np.ndarray
    empty: str = "ignore"

    @property
    def n_images(self) -> int:
        return int(self.dice.shape[0])

    @property
    def per_class_dice(self) -> dict[str, float]:
        """``{structure: mean Dice over the images where it counts}`` (NaN if it counts nowhere)."""
        return dict(zip(self.label_names, map(float, _column_means(self.dice))))

    @property
    def per_class_iou(self) -> dict[str, float]:
        return dict(zip(self.label_names, map(float, _column_means(self.iou))))

    @property
    def per_image_dice(self) -> np.ndarray:
        """``[n_images]`` mean Dice over the structures that count for each image (NaN if none)."""
        return _column_means(self.dice.T)

    @property
    def per_image_iou(self) -> np.ndarray:
        return _column_means(self.iou.T)

    @property
    def mean_dice(self) -> float:
        """Mean of the per-structure Dice over the structures that have one."""
        return _nanmean(_column_means(self.dice))

    @property
    def mean_iou(self) -> float:
        return _nanmean(_column_means(self.iou))

    def as_dict(self) -> dict[str, float]:
        """Flat ``{metric: value}``: ``dice, iou, n_images`` then ``dice/<structure>``, ``iou/<structure>``."""
        out: dict[str, float] = {"dice": self.mean_dice, "iou": self.mean_iou, "n_images": float(self.n_images)}
        out.update({f"dice/{name}": value for name, value in self.per_class_dice.items()})
        out.update({f"iou/{name}": value for name, value in self.per_class_iou.items()})
        return out


def dice_iou(predictions: Any, targets: Any, label_names: Sequence[str], present: Any = None, *,
             threshold: float = 0.5, from_logits: bool = False, empty: str = "ignore") -> SegmentationScores:
    """Dice and IoU of ``predictions`` against binary ``targets``, both ``[N, C, H, W]`` (see module conventions).

    Args:
        predictions: probabilities, logits (``from_logits=True``) or a bool mask; tensor or array.
        targets: ground-truth masks (bool or 0/1).
        label_names: the ``C`` structure names.
        present: optional bool ``[N, C]``; False = structure not annotated for that image (excluded).
        threshold: probability at or above which a pixel is inside (ignored for bool predictions).
        empty: ``"ignore"`` or ``"one"`` (the empty ground-truth convention).
    """
    counts = SegmentationCounts(label_names, threshold=threshold, from_logits=from_logits)
    counts.update(predictions, targets, present)
    return counts.scores(empty)


class SegmentationCounts:
    """Accumulates per-(image, structure) pixel counts batch by batch, so evaluation never keeps every mask."""

    def __init__(self, label_names: Sequence[str], *, threshold: float = 0.5, from_logits: bool = False):
        self.label_names = tuple(map(str, label_names))
        self.threshold = float(threshold)
        self.from_logits = from_logits
        self._parts: list[np.ndarray] = []  # each [n, C, 4]: intersection, predicted, target, present

    def update(self, predictions: Any, targets: Any, present: Any = None) -> None:
        predicted = self._binarise(_tensor(predictions))
        target = _tensor(targets)
        if target.dtype != torch.bool:
            target = target != 0
        n_classes = len(self.label_names)
        if predicted.ndim != 4 or predicted.shape != target.shape or predicted.shape[1] != n_classes:
            raise ArkxValueError(f"segmentation metric: predictions {tuple(predicted.shape)} and targets "
                                 f"{tuple(target.shape)}; expected both [N, {n_classes}, H, W]")
        predicted, target = predicted.cpu(), target.cpu()
        if present is None:
            present = torch.ones(predicted.shape[:2], dtype=torch.bool)
        present = _tensor(present).cpu().to(torch.bool)
        if present.shape != predicted.shape[:2]:
            raise ArkxValueError(f"segmentation metric: present flags {tuple(present.shape)}; expected "
                                 f"{tuple(predicted.shape[:2])}")
        counts = torch.stack([(predicted & target).sum((2, 3)), predicted.sum((2, 3)), target.sum((2, 3)),
                              present.long()], dim=-1)
        self._parts.append(counts.numpy().astype(np.int64))

    def scores(self, empty: str = "ignore") -> SegmentationScores:
        if empty not in EMPTY_CONVENTIONS:
            raise ArkxValueError(f"segmentation metric: empty={empty!r}; expected one of {EMPTY_CONVENTIONS}")
        counts = (np.concatenate(self._parts) if self._parts
                  else np.zeros((0, len(self.label_names), 4), dtype=np.int64)).astype(np.float64)
        intersection, predicted, target, present = np.moveaxis(counts, -1, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = 2 * intersection / (predicted + target)
            iou = intersection / (predicted + target - intersection)
        empty_target = target == 0
        if empty == "ignore":
            dice[empty_target] = iou[empty_target] = np.nan
        else:
            both_empty = empty_target & (predicted == 0)
            dice[both_empty] = iou[both_empty] = 1.0  # 0/0 above; a predicted pixel already gives 0
        dice[present == 0] = iou[present == 0] = np.nan
        return SegmentationScores(self.label_names, dice, iou, empty)

    def _binarise(self, predictions: torch.Tensor) -> torch.Tensor:
        if predictions.dtype == torch.bool:
            return predictions
        probabilities = predictions.float()
        if self.from_logits:
            probabilities = torch.sigmoid(probabilities)
        return probabilities >= self.threshold


def _tensor(value: Any) -> torch.Tensor:
    return value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def _column_means(values: np.ndarray) -> np.ndarray:
    """Mean of each column over its non-NaN entries (NaN for an all-NaN column), without numpy's warning."""
    valid = ~np.isnan(values)
    totals = np.where(valid, values, 0.0).sum(axis=0)
    counts = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else float("nan")
