"""Detector outputs -> per-image detections in pixels (top-k over every (query, class) pair)."""

from __future__ import annotations

import torch

from arkx.errors import ArkxValueError
from arkx.models.detection.boxes import normalised_to_pixels


@torch.no_grad()
def postprocess(outputs: dict, image_size: int | tuple[int, int], top_k: int = 100) -> list[dict[str, torch.Tensor]]:
    """For each image: dict(boxes float [k, 4] xyxy pixels, scores float [k], labels int64 [k]).

    Scores are the sigmoid of each (query, class) logit; the ``top_k`` best pairs are kept (a query
    may appear with several classes, as the focal loss trains classes independently), sorted by
    score. ``image_size``: int (square) or ``(height, width)`` of the images the boxes refer to.
    """
    if top_k < 1:
        raise ArkxValueError(f"postprocess: top_k must be >= 1, got {top_k}")
    logits, boxes = outputs["logits"], outputs["boxes"]
    num_classes = logits.shape[-1]
    scores_all = logits.sigmoid().flatten(1)  # [B, Q*C], index = query * C + class
    k = min(top_k, scores_all.shape[1])
    scores, index = scores_all.topk(k, dim=1)
    query, labels = index // num_classes, index % num_classes
    chosen = torch.gather(boxes, 1, query[..., None].expand(-1, -1, 4))
    pixels = normalised_to_pixels(chosen, image_size)
    return [dict(boxes=pixels[i], scores=scores[i], labels=labels[i]) for i in range(logits.shape[0])]
