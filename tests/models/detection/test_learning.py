"""The detector learns: a tiny conv pyramid + detector trained jointly on synthetic rectangles beats random boxes.

The DINO recipe as training runs it: two-stage query selection, denoising queries from the targets.

Images are 32 px with one or two non-overlapping rectangles; the class is the rectangle's brightness
(0.5 -> class 0, 1.0 -> class 1). Training draws fresh images every step; evaluation is on a fixed set
with mAP at IoU 0.4 from :mod:`arkx.evaluation.detection` (pycocotools).
"""

from __future__ import annotations

import torch
from torch import nn

from arkx.evaluation.detection import mean_average_precision
from arkx.models.detection import Detector, SetCriterion, make_targets, postprocess

SIZE = 32
CLASSES = ("dim", "bright")


def rectangle_images(n: int, generator: torch.Generator):
    """``n`` images [n, 1, 32, 32] with their pixel boxes (xyxy, max exclusive) and labels."""
    images = torch.rand(n, 1, SIZE, SIZE, generator=generator) * 0.1
    boxes, labels = [], []
    for i in range(n):
        count = int(torch.randint(1, 3, (1,), generator=generator))
        image_boxes, image_labels = [], []
        while len(image_boxes) < count:
            w, h = torch.randint(6, 15, (2,), generator=generator).tolist()
            x0, y0 = (int(torch.randint(0, SIZE - side + 1, (1,), generator=generator)) for side in (w, h))
            box = torch.tensor([x0, y0, x0 + w, y0 + h], dtype=torch.float32)
            if any(((box[:2] < other[2:]) & (other[:2] < box[2:])).all() for other in image_boxes):
                continue  # overlapping: draw again
            label = int(torch.randint(0, 2, (1,), generator=generator))
            images[i, 0, y0:y0 + h, x0:x0 + w] = 0.5 + 0.5 * label
            image_boxes.append(box)
            image_labels.append(label)
        boxes.append(torch.stack(image_boxes))
        labels.append(torch.tensor(image_labels))
    return images, boxes, labels


class TinyPyramid(nn.Module):
    """Three conv stages: 16 x 16 (16 ch), 8 x 8 (32 ch), 4 x 4 (32 ch) from a 32 px image."""

    channels = [16, 32, 32]

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())])

    def forward(self, x):
        levels = []
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        return levels


def random_detections(n_images: int, per_image: int, generator: torch.Generator) -> list[dict]:
    """Baseline: boxes of the same size range as the targets, anywhere, with random classes and scores."""
    out = []
    for _ in range(n_images):
        wh = torch.randint(6, 15, (per_image, 2), generator=generator).float()
        xy = torch.rand(per_image, 2, generator=generator) * (SIZE - wh)
        out.append(dict(boxes=torch.cat([xy, xy + wh], dim=1), scores=torch.rand(per_image, generator=generator),
                        labels=torch.randint(0, 2, (per_image,), generator=generator)))
    return out


def train_and_evaluate(steps: int, seed: int = 0, **options) -> tuple[float, float]:
    torch.manual_seed(seed)
    backbone = TinyPyramid()
    detector = Detector(TinyPyramid.channels, num_classes=2, d_model=32, num_queries=8, encoder_layers=1,
                        decoder_layers=2, n_heads=4, n_points=2, ffn_dim=64,
                        **{"dn_number": 8, "anchor_side": 0.1, **options})  # 0.05 would be 1.6-px anchors at 32 px
    parameters = list(backbone.parameters()) + list(detector.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=3e-3, weight_decay=1e-4)
    criterion = SetCriterion(num_classes=2)
    train_draws = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        images, boxes, labels = rectangle_images(16, train_draws)
        targets = make_targets(boxes, labels, SIZE)
        loss = criterion(detector(backbone(images), targets), targets)["loss"]  # targets: the denoising queries
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    images, boxes, labels = rectangle_images(64, torch.Generator().manual_seed(seed + 99))
    targets = [dict(boxes=b, labels=lab) for b, lab in zip(boxes, labels)]
    detector.eval()
    with torch.no_grad():
        predictions = postprocess(detector(backbone(images)), SIZE, top_k=8)
    trained = mean_average_precision(predictions, targets, CLASSES).map40
    baseline = mean_average_precision(random_detections(64, 8, torch.Generator().manual_seed(seed + 7)),
                                      targets, CLASSES).map40
    return trained, baseline


def test_short_training_beats_random_boxes_at_map40():
    trained, baseline = train_and_evaluate(steps=80)
    assert baseline < 0.15
    assert trained > 0.5 and trained > 3 * baseline, (trained, baseline)
