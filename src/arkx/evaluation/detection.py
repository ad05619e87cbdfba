"""Mean average precision of boxes, computed by pycocotools' ``COCOeval`` (never re-implemented here).

Conventions (each one checked by tests/evaluation/test_detection_metrics.py):

- Boxes are ``x_min, y_min, x_max, y_max`` in pixels with an *exclusive* max (the pixels a box covers
  are ``x_min <= x < x_max``), the frame of :mod:`arkx.data.masks` and of the batches. COCO boxes are
  ``x, y, width, height`` with ``width = x_max - x_min``; pycocotools' IoU uses ``width * height`` as the
  area, so both frames give the same IoU.
- Crowd-free: every ground-truth box counts (``iscrowd = 0``); there is no "ignore" region.
- A detection matches a ground-truth box of its class when their IoU is **at least** the threshold
  (pycocotools' rule), greedily by decreasing score, at most 100 detections per image (``maxDets``).
- AP per class is COCO's 101-point interpolated precision over recall, at IoU 0.4, 0.5 and averaged
  over 0.5:0.05:0.95, over the area range "all".
- A class without any ground-truth box in the evaluated images has AP NaN and is left out of every mean
  (its detections are never scored). A class with ground truth but no detection has AP 0.
- Every image given counts, including those without any ground-truth box: a detection on them is a
  false positive of its class.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ArkxValueError

#: IoU thresholds evaluated: 0.4 (the usual threshold for chest X-ray lesions, e.g. NODE21, VinDr-CXR
#: challenge), then COCO's 0.5:0.05:0.95 (the same floats as pycocotools' defaults).
IOU_THRESHOLDS = (0.4,) + tuple(np.linspace(0.5, 0.95, 10))
MAX_DETECTIONS = 100


@dataclass(frozen=True)
class DetectionScores:
    """Mean average precision of one detection task.

    Attributes:
        label_names: the classes, in head order.
        map40, map50, map50_95: mean over the classes with ground truth of AP at IoU 0.4, 0.5, and the
            mean of AP over IoU 0.5:0.05:0.95 (NaN when no class has ground truth).
        per_class_ap40, per_class_ap50: ``{class: AP}`` in head order, NaN for a class without ground truth.
        n_images: how many images were evaluated (with or without boxes).
        n_ground_truth: ``{class: number of ground-truth boxes}``.
    """

    label_names: tuple[str, ...]
    map40: float
    map50: float
    map50_95: float
    per_class_ap40: dict[str, float] = field(default_factory=dict)
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    n_images: int = 0
    n_ground_truth: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """Flat ``{metric: value}``: ``map40, map50, map50_95, n_images`` then ``ap40/<class>`` per class."""
        out: dict[str, float] = {"map40": self.map40, "map50": self.map50, "map50_95": self.map50_95,
                                 "n_images": float(self.n_images)}
        out.update({f"ap40/{name}": value for name, value in self.per_class_ap40.items()})
        return out


def mean_average_precision(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                           label_names: Sequence[str]) -> DetectionScores:
    """mAP at IoU 0.4, 0.5 and 0.5:0.95 of ``predictions`` against ``targets`` (see the module's conventions).

    Args:
        predictions: one dict per image with ``boxes`` float ``[n, 4]`` (xyxy pixels, max exclusive),
            ``scores`` ``[n]`` and ``labels`` int ``[n]`` (index into ``label_names``); tensors or arrays.
        targets: one dict per image, same order, with ``boxes`` ``[m, 4]`` and ``labels`` ``[m]``.
        label_names: the class names; label ``i`` is ``label_names[i]``.
    """
    label_names = tuple(map(str, label_names))
    if len(predictions) != len(targets):
        raise ArkxValueError(f"detection metric: {len(predictions)} predictions for {len(targets)} images; "
                             "expected one prediction dict per target image")
    if not label_names:
        raise ArkxValueError("detection metric: no class names given")
    ground_truth, detections = [], []
    for image_id, (prediction, target) in enumerate(zip(predictions, targets)):
        boxes, labels = _boxes_and_labels(target, image_id, "target", len(label_names))
        ground_truth += _annotations(image_id, boxes, labels, len(ground_truth))
        boxes, labels = _boxes_and_labels(prediction, image_id, "prediction", len(label_names))
        scores = _array(prediction.get("scores"), np.float64, image_id, "prediction", "scores").reshape(-1)
        if len(scores) != len(boxes):
            raise ArkxValueError(f"detection metric: prediction {image_id} has {len(boxes)} boxes and "
                                 f"{len(scores)} scores; expected one score per box")
        detections += _annotations(image_id, boxes, labels, len(detections), scores)
    precision = _coco_precision(len(predictions), len(label_names), ground_truth, detections)
    return _scores(precision, label_names, len(predictions), ground_truth)


def _coco_precision(n_images: int, n_classes: int, ground_truth: list[dict], detections: list[dict]) -> np.ndarray:
    """COCOeval's precision array ``[iou, recall, class]`` (area "all", 100 detections); -1 = no ground truth."""
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i} for i in range(n_images)]
    # category ids start at 1 (COCO's habit); class i is category i + 1
    categories = [{"id": k + 1} for k in range(n_classes)]
    # pycocotools prints progress on stdout; a library must not
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco(images, categories, ground_truth)
        coco_dt = _coco(images, categories, detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = list(range(n_images))
        evaluator.params.catIds = [c["id"] for c in categories]
        evaluator.params.iouThrs = np.asarray(IOU_THRESHOLDS, dtype=np.float64)
        evaluator.params.maxDets = [MAX_DETECTIONS]
        # only the area range "all" is reported: skip COCO's small / medium / large passes
        all_area = evaluator.params.areaRngLbl.index("all")
        evaluator.params.areaRng = [evaluator.params.areaRng[all_area]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, -1]


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]):
    """An in-memory COCO object (built directly, so an empty detection list is allowed, which ``loadRes`` is not)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    coco.createIndex()
    return coco


def _scores(precision: np.ndarray, label_names: tuple[str, ...], n_images: int,
            ground_truth: list[dict]) -> DetectionScores:
    ap = np.full((len(IOU_THRESHOLDS), len(label_names)), np.nan)
    for t in range(len(IOU_THRESHOLDS)):
        for k in range(len(label_names)):
            curve = precision[t, :, k]
            # -1 marks a class without ground truth (no AP defined); a class with ground truth always has >= 0
            if (curve > -1).any():
                ap[t, k] = curve[curve > -1].mean()
    ap40, ap50 = ap[0], ap[1]
    ap50_95 = ap[1:].mean(axis=0)  # NaN stays NaN: a class has ground truth at every threshold or at none
    counts = np.bincount([a["category_id"] - 1 for a in ground_truth], minlength=len(label_names))
    return DetectionScores(
        label_names=label_names, map40=_nanmean(ap40), map50=_nanmean(ap50), map50_95=_nanmean(ap50_95),
        per_class_ap40=dict(zip(label_names, map(float, ap40))),
        per_class_ap50=dict(zip(label_names, map(float, ap50))), n_images=n_images,
        n_ground_truth=dict(zip(label_names, map(int, counts))))


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else float("nan")


def _annotations(image_id: int, boxes: np.ndarray, labels: np.ndarray, first_id: int,
                 scores: np.ndarray | None = None) -> list[dict]:
    """COCO annotations of one image: ``bbox = [x, y, x_max - x, y_max - y]`` (the max is exclusive)."""
    out = []
    for j, ((x0, y0, x1, y1), label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        width, height = x1 - x0, y1 - y0
        # ids start at 1: pycocotools uses 0 in its match arrays for "unmatched"
        annotation = {"id": first_id + j + 1, "image_id": image_id, "category_id": int(label) + 1,
                      "bbox": [x0, y0, width, height], "area": width * height, "iscrowd": 0}
        if scores is not None:
            annotation["score"] = float(scores[j])
        out.append(annotation)
    return out


def _boxes_and_labels(entry: Mapping[str, Any], image_id: int, what: str, n_classes: int):
    boxes = _array(entry.get("boxes"), np.float64, image_id, what, "boxes")
    labels = _array(entry.get("labels"), np.int64, image_id, what, "labels").reshape(-1)
    boxes = boxes.reshape(-1, 4) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ArkxValueError(f"detection metric: {what} {image_id} has boxes of shape {tuple(boxes.shape)}; "
                             "expected [n, 4] (x_min, y_min, x_max, y_max)")
    if len(labels) != len(boxes):
        raise ArkxValueError(f"detection metric: {what} {image_id} has {len(boxes)} boxes and {len(labels)} "
                             "labels; expected one label per box")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ArkxValueError(f"detection metric: {what} {image_id} has label {int(labels.max())}; expected "
                             f"class indices 0..{n_classes - 1}")
    if not np.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any():
        raise ArkxValueError(f"detection metric: {what} {image_id} has a box with x_max < x_min, y_max < y_min "
                             "or a non-finite coordinate; expected x_min, y_min, x_max, y_max")
    return boxes, labels


def _array(value: Any, dtype, image_id: int, what: str, key: str) -> np.ndarray:
    if value is None:
        raise ArkxValueError(f"detection metric: {what} {image_id} has no {key!r}")
    if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)
