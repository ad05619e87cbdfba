"""Top-k post-processing and the pixel <-> normalised box conversions."""

from __future__ import annotations

import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.models.detection import make_targets, normalised_to_pixels, pixels_to_normalised, postprocess


def test_pixel_and_normalised_boxes_round_trip_on_a_non_square_image():
    pixels = torch.tensor([[0.0, 0.0, 40.0, 20.0], [10.0, 5.0, 30.0, 15.0]])
    normalised = pixels_to_normalised(pixels, (20, 40))  # height 20, width 40
    torch.testing.assert_close(normalised, torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]]))
    torch.testing.assert_close(normalised_to_pixels(normalised, (20, 40)), pixels)


def test_top_k_pairs_sorted_by_score_with_pixel_boxes():
    logits = torch.tensor([[[-5.0, 3.0], [1.0, -5.0], [2.0, 0.5]]])  # 3 queries, 2 classes
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5], [0.9, 0.9, 0.4, 0.4]]])
    result, = postprocess(dict(logits=logits, boxes=boxes), image_size=32, top_k=3)
    torch.testing.assert_close(result["scores"], torch.sigmoid(torch.tensor([3.0, 2.0, 1.0])))
    assert result["labels"].tolist() == [1, 0, 0]
    # query 0 (centre), query 2 (clipped at the image's corner), query 1 (top-left)
    torch.testing.assert_close(result["boxes"], torch.tensor([[8.0, 8.0, 24.0, 24.0], [22.4, 22.4, 32.0, 32.0],
                                                              [0.0, 0.0, 16.0, 16.0]]))


def test_top_k_is_capped_by_the_number_of_pairs_and_must_be_positive():
    outputs = dict(logits=torch.zeros(2, 2, 3), boxes=torch.rand(2, 2, 4))
    assert [len(r["scores"]) for r in postprocess(outputs, 16, top_k=100)] == [6, 6]
    with pytest.raises(ArkxValueError, match="top_k"):
        postprocess(outputs, 16, top_k=0)


def test_make_targets_from_batch_pixels_including_an_image_without_boxes():
    targets = make_targets([torch.tensor([[0.0, 8.0, 16.0, 32.0]]), torch.zeros(0, 4)],
                           [torch.tensor([1]), torch.zeros(0, dtype=torch.long)], image_size=32)
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[0.25, 0.625, 0.5, 0.75]]))
    assert targets[0]["labels"].tolist() == [1] and targets[1]["boxes"].shape == (0, 4)
    with pytest.raises(ArkxValueError, match="image 0"):
        make_targets([torch.zeros(2, 4)], [torch.zeros(1, dtype=torch.long)], 32)
