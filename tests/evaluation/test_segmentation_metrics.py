"""Dice / IoU per image and structure: hand-made values, the empty-mask conventions, and MONAI's metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.evaluation.segmentation import SegmentationCounts, dice_iou

NAMES = ("lung", "heart")


def masks(*channels):
    """[1, C, 4, 4] bool masks from per-channel lists of inside pixels (row, col)."""
    out = torch.zeros(1, len(channels), 4, 4, dtype=torch.bool)
    for c, pixels in enumerate(channels):
        for r, col in pixels:
            out[0, c, r, col] = True
    return out


def test_hand_made_overlap():
    # lung: 4 predicted, 2 true, 2 shared -> Dice 4/6, IoU 2/4 ; heart: identical -> 1, 1
    predicted = masks([(0, 0), (0, 1), (1, 0), (1, 1)], [(3, 3)])
    target = masks([(0, 0), (0, 1)], [(3, 3)])
    scores = dice_iou(predicted, target, NAMES)
    np.testing.assert_allclose(scores.dice, [[4 / 6, 1.0]])
    np.testing.assert_allclose(scores.iou, [[0.5, 1.0]])
    assert scores.per_class_dice == pytest.approx({"lung": 4 / 6, "heart": 1.0})
    assert scores.mean_dice == pytest.approx((4 / 6 + 1) / 2) and scores.mean_iou == pytest.approx(0.75)
    assert scores.as_dict()["dice/lung"] == pytest.approx(4 / 6) and scores.n_images == 1


def test_probabilities_and_logits_are_thresholded_at_one_half():
    target = masks([(0, 0), (0, 1)], [(1, 1)])
    probabilities = torch.zeros(1, 2, 4, 4)
    probabilities[0, 0, 0, 0] = 0.5    # at the threshold: inside
    probabilities[0, 0, 0, 1] = 0.49   # below: outside
    probabilities[0, 1, 1, 1] = 0.9
    scores = dice_iou(probabilities, target, NAMES)
    np.testing.assert_allclose(scores.dice, [[2 / 3, 1.0]])
    logits = torch.logit(probabilities.clamp(1e-6, 1 - 1e-6))
    np.testing.assert_allclose(dice_iou(logits, target, NAMES, from_logits=True).dice, [[2 / 3, 1.0]])
    # a stated threshold moves the cut
    np.testing.assert_allclose(dice_iou(probabilities, target, NAMES, threshold=0.4).dice, [[1.0, 1.0]])


def test_empty_ground_truth_conventions():
    # image 0: heart empty in both ; image 1: heart empty in the truth, one pixel predicted
    predicted = torch.cat([masks([(0, 0)], []), masks([(0, 0)], [(2, 2)])])
    target = torch.cat([masks([(0, 0)], []), masks([(0, 0)], [])])
    ignored = dice_iou(predicted, target, NAMES, empty="ignore")
    assert np.isnan(ignored.dice[:, 1]).all() and np.isnan(ignored.iou[:, 1]).all()
    assert math.isnan(ignored.per_class_dice["heart"])
    assert ignored.mean_dice == 1.0  # the heart, with no truth anywhere, is left out of the mean
    kaggle = dice_iou(predicted, target, NAMES, empty="one")
    np.testing.assert_array_equal(kaggle.dice[:, 1], [1.0, 0.0])
    np.testing.assert_array_equal(kaggle.iou[:, 1], [1.0, 0.0])
    assert kaggle.mean_dice == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ArkxValueError, match="empty='zero'"):
        dice_iou(predicted, target, NAMES, empty="zero")


def test_structures_not_annotated_are_excluded():
    # the heart is not annotated on image 0: a miss there must not count, nor under empty="one"
    predicted = torch.cat([masks([(0, 0)], []), masks([(0, 0)], [(1, 1)])])
    target = torch.cat([masks([(0, 0)], [(3, 3)]), masks([(0, 0)], [(1, 1)])])
    present = torch.tensor([[True, False], [True, True]])
    for empty in ("ignore", "one"):
        scores = dice_iou(predicted, target, NAMES, present, empty=empty)
        assert math.isnan(scores.dice[0, 1]) and scores.per_class_dice["heart"] == 1.0
        np.testing.assert_array_equal(scores.per_image_dice, [1.0, 1.0])


def test_the_overall_score_is_the_mean_of_the_structures():
    # lung: Dice 1 then 0 ; heart: 1 on image 0, not annotated on image 1. Macro: (0.5 + 1) / 2, not 2 / 3.
    predicted = torch.cat([masks([(0, 0)], [(1, 1)]), masks([(0, 0)], [])])
    target = torch.cat([masks([(0, 0)], [(1, 1)]), masks([(3, 3)], [(1, 1)])])
    present = torch.tensor([[True, True], [True, False]])
    scores = dice_iou(predicted, target, NAMES, present)
    assert scores.per_class_dice == {"lung": 0.5, "heart": 1.0}
    assert scores.mean_dice == pytest.approx(0.75) and scores.as_dict()["dice"] == pytest.approx(0.75)
    np.testing.assert_array_equal(scores.per_image_dice, [1.0, 0.0])


def test_batches_accumulate_to_the_same_scores():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(6, 2, 8, 8, generator=generator)
    target = torch.rand(6, 2, 8, 8, generator=generator) > 0.6
    whole = dice_iou(probabilities, target, NAMES)
    counts = SegmentationCounts(NAMES)
    for start in range(0, 6, 4):
        counts.update(probabilities[start:start + 4], target[start:start + 4])
    np.testing.assert_array_equal(counts.scores().dice, whole.dice)


def test_shapes_are_checked():
    with pytest.raises(ArkxValueError, match=r"expected both \[N, 2, H, W\]"):
        dice_iou(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), NAMES)
    with pytest.raises(ArkxValueError, match="present flags"):
        dice_iou(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), NAMES, torch.ones(2, 2, dtype=torch.bool))


def _random_masks(seed, n=8, c=3, size=12):
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.rand(n, c, size, size, generator=generator)
    target = torch.rand(n, c, size, size, generator=generator) > 0.7
    # hand-placed empties: truth empty with an empty prediction, and with a non-empty one
    target[0, 0] = False
    probabilities[0, 0] = 0.0
    target[1, 1] = False
    # a structure entirely empty in truth, and one where the prediction is empty but the truth is not
    target[:, 2] = False
    probabilities[2, 0] = 0.0
    return probabilities, target


@pytest.mark.parametrize("empty, ignore_empty", [("ignore", True), ("one", False)])
@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_monai(seed, empty, ignore_empty):
    metrics = pytest.importorskip("monai.metrics")
    probabilities, target = _random_masks(seed)
    ours = dice_iou(probabilities, target, ("a", "b", "c"), empty=empty)
    predicted = (probabilities >= 0.5).float()
    dice = metrics.DiceMetric(include_background=True, reduction="none", ignore_empty=ignore_empty)
    iou = metrics.MeanIoU(include_background=True, reduction="none", ignore_empty=ignore_empty)
    np.testing.assert_allclose(ours.dice, dice(predicted, target.float()).numpy(), rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(ours.iou, iou(predicted, target.float()).numpy(), rtol=1e-6, equal_nan=True)
    # per-structure means: MONAI's "mean_batch" averages the non-NaN images of each channel
    by_class = metrics.DiceMetric(include_background=True, reduction="mean_batch", ignore_empty=ignore_empty)
    by_class(predicted, target.float())
    expected = by_class.aggregate().numpy()
    got = np.array(list(ours.per_class_dice.values()))
    if ignore_empty:  # MONAI reports 0 for a channel without any valid image; ours is NaN (left out of the mean)
        assert np.isnan(got[2])
        got[2] = 0.0
    np.testing.assert_allclose(got, expected, rtol=1e-6)
