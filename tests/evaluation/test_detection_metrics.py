"""mAP through pycocotools: hand-made cases with known values, and torchmetrics as a second opinion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.evaluation.detection import mean_average_precision

NAMES = ("nodule", "effusion")


def target(boxes, labels):
    return dict(boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels=np.asarray(labels, dtype=np.int64))


def prediction(boxes, scores, labels):
    return dict(target(boxes, labels), scores=np.asarray(scores, dtype=np.float64))


NONE = prediction([], [], [])


def test_perfect_predictions_score_one_at_every_threshold():
    targets = [target([[10, 10, 30, 40], [50, 5, 60, 25]], [0, 1]), target([[0, 0, 8, 8]], [0])]
    predictions = [prediction(t["boxes"], np.linspace(0.9, 0.5, len(t["labels"])), t["labels"]) for t in targets]
    scores = mean_average_precision(predictions, targets, NAMES)
    assert (scores.map40, scores.map50, scores.map50_95) == pytest.approx((1.0, 1.0, 1.0))
    assert scores.per_class_ap40 == pytest.approx({"nodule": 1.0, "effusion": 1.0})
    assert scores.n_ground_truth == {"nodule": 2, "effusion": 1}


def test_a_false_positive_on_an_image_without_boxes_ranked_above_the_true_positive_halves_ap():
    # The image without any box counts: its detection is a false positive. Precision is 1/2 at recall 1.
    targets = [target([[10, 10, 30, 30]], [0]), target([], [])]
    tp = prediction([[10, 10, 30, 30]], [0.6], [0])
    fp_above = mean_average_precision([tp, prediction([[0, 0, 5, 5]], [0.9], [0])], targets, NAMES)
    assert fp_above.map40 == pytest.approx(0.5) and fp_above.map50_95 == pytest.approx(0.5)
    assert fp_above.n_images == 2
    # ranked below the true positive, it costs nothing (precision 1 up to recall 1)
    fp_below = mean_average_precision([tp, prediction([[0, 0, 5, 5]], [0.3], [0])], targets, NAMES)
    assert fp_below.map40 == pytest.approx(1.0)


@pytest.mark.parametrize("width, ap40, ap50, ap50_95", [
    (39.5, 0.0, 0.0, 0.0),   # IoU 0.395: below 0.4
    (40.0, 1.0, 0.0, 0.0),   # IoU 0.40 exactly: a match needs IoU >= threshold
    (41.0, 1.0, 0.0, 0.0),   # 0.41
    (49.5, 1.0, 0.0, 0.0),   # 0.495
    (51.0, 1.0, 1.0, 0.1),   # 0.51: matched at 0.5 only out of 0.5:0.95
    (76.0, 1.0, 1.0, 0.6),   # 0.76: matched at 0.5..0.75
])
def test_iou_thresholds_around_0_4_and_0_5(width, ap40, ap50, ap50_95):
    # ground truth 100 x 1 pixels starting at x = 50; the prediction shares its left edge, so IoU = width / 100
    # only when the max is exclusive (an inclusive max gives (width + 1) / 101) and when the xyxy box is turned
    # into COCO's x, y, width, height (read as xywh, IoU would be (50 + width) / 150).
    targets = [target([[50, 0, 150, 1]], [1])]
    scores = mean_average_precision([prediction([[50, 0, 50 + width, 1]], [0.8], [1])], targets, NAMES)
    assert scores.per_class_ap40["effusion"] == pytest.approx(ap40)
    assert scores.per_class_ap50["effusion"] == pytest.approx(ap50)
    assert scores.map50_95 == pytest.approx(ap50_95)


def test_a_class_without_ground_truth_is_nan_and_left_out_of_the_mean():
    targets = [target([[10, 10, 30, 30]], [0])]
    # a perfect nodule, and an effusion detection where no effusion exists anywhere
    predictions = [prediction([[10, 10, 30, 30], [0, 0, 9, 9]], [0.9, 0.95], [0, 1])]
    scores = mean_average_precision(predictions, targets, NAMES)
    assert math.isnan(scores.per_class_ap40["effusion"]) and math.isnan(scores.as_dict()["ap40/effusion"])
    assert (scores.map40, scores.map50, scores.map50_95) == pytest.approx((1.0, 1.0, 1.0))


def test_no_predictions_at_all_score_zero_for_classes_with_ground_truth():
    targets = [target([[10, 10, 30, 30]], [0]), target([], [])]
    scores = mean_average_precision([NONE, NONE], targets, NAMES)
    assert scores.per_class_ap40["nodule"] == 0.0 and math.isnan(scores.per_class_ap40["effusion"])
    assert (scores.map40, scores.map50, scores.map50_95) == (0.0, 0.0, 0.0)


def test_no_ground_truth_anywhere_is_nan():
    scores = mean_average_precision([prediction([[0, 0, 4, 4]], [0.5], [0])], [target([], [])], NAMES)
    assert math.isnan(scores.map40) and math.isnan(scores.map50_95)


def test_at_most_100_detections_per_image_are_scored():
    # 100 confident false positives push the only true positive to rank 101: it is not scored
    far = [[200 + i, 200, 201 + i, 201] for i in range(100)]
    boxes = far + [[10, 10, 30, 30]]
    scores = mean_average_precision([prediction(boxes, [0.9] * 100 + [0.1], [0] * 101)],
                                    [target([[10, 10, 30, 30]], [0])], NAMES)
    assert scores.map40 == 0.0
    scores = mean_average_precision([prediction(boxes[1:], [0.9] * 99 + [0.1], [0] * 100)],
                                    [target([[10, 10, 30, 30]], [0])], NAMES)
    assert scores.map40 == pytest.approx(0.01)  # precision 1/100 at recall 1


def test_tensors_are_accepted_and_pycocotools_prints_nothing(capsys):
    t = [dict(boxes=torch.tensor([[1.0, 2.0, 9.0, 12.0]]), labels=torch.tensor([1]))]
    p = [dict(boxes=torch.tensor([[1.0, 2.0, 9.0, 12.0]]), scores=torch.tensor([0.7]), labels=torch.tensor([1]))]
    assert mean_average_precision(p, t, NAMES).map50 == pytest.approx(1.0)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("predictions, targets, message", [
    ([NONE], [], "1 predictions for 0 images"),
    ([prediction([[0, 0, 1, 1]], [0.5], [2])], [target([], [])], "label 2"),
    ([prediction([[5, 0, 1, 1]], [0.5], [0])], [target([], [])], "x_max < x_min"),
    ([prediction([[0, 0, 1, 1]], [], [0])], [target([], [])], "one score per box"),
])
def test_bad_inputs_are_named(predictions, targets, message):
    with pytest.raises(ArkxValueError, match=message):
        mean_average_precision(predictions, targets, NAMES)


def _random_case(rng, n_images=12, n_classes=3):
    targets, predictions = [], []
    for _ in range(n_images):
        m = rng.integers(0, 4)
        xy = rng.uniform(0, 80, (m, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 40, (m, 2))], axis=1)
        labels = rng.integers(0, n_classes, m)
        # jittered copies of the ground truth (some good, some poor matches) plus random boxes
        jitter = gt + rng.normal(0, 4, gt.shape)
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 1)
        k = rng.integers(0, 4)
        xy = rng.uniform(0, 80, (k, 2))
        noise = np.concatenate([xy, xy + rng.uniform(5, 40, (k, 2))], axis=1)
        boxes = np.concatenate([jitter, noise])
        pred_labels = np.concatenate([labels, rng.integers(0, n_classes, k)])
        targets.append(target(gt, labels))
        predictions.append(prediction(boxes, rng.uniform(0, 1, len(boxes)), pred_labels))
    return predictions, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_torchmetrics(seed):
    tm = pytest.importorskip("torchmetrics.detection")
    predictions, targets = _random_case(np.random.default_rng(seed))
    names = ("a", "b", "c")
    ours = mean_average_precision(predictions, targets, names)

    def torch_dicts(entries, with_scores):
        return [dict(boxes=torch.as_tensor(e["boxes"], dtype=torch.float32), labels=torch.as_tensor(e["labels"]),
                     **({"scores": torch.as_tensor(e["scores"], dtype=torch.float32)} if with_scores else {}))
                for e in entries]

    # torchmetrics' default thresholds are float32 linspaces (0.2 becomes 0.2000000030): pass pycocotools' floats
    recalls = np.linspace(0.0, 1.0, 101).tolist()
    coco = tm.MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, rec_thresholds=recalls,
                                   iou_thresholds=np.linspace(0.5, 0.95, 10).tolist())
    coco.update(torch_dicts(predictions, True), torch_dicts(targets, False))
    theirs = coco.compute()
    assert ours.map50 == pytest.approx(float(theirs["map_50"]), abs=1e-4)
    assert ours.map50_95 == pytest.approx(float(theirs["map"]), abs=1e-4)
    at_04 = tm.MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.4], class_metrics=True,
                                    rec_thresholds=recalls)
    at_04.update(torch_dicts(predictions, True), torch_dicts(targets, False))
    theirs = at_04.compute()
    assert ours.map40 == pytest.approx(float(theirs["map"]), abs=1e-4)
    per_class = dict(zip(theirs["classes"].tolist(), theirs["map_per_class"].tolist()))
    for k, name in enumerate(names):
        expected = per_class.get(k, -1.0)
        got = ours.per_class_ap40[name]
        assert (math.isnan(got) and expected == -1.0) or got == pytest.approx(expected, abs=1e-4)
