"""Hungarian matching on hand-made cases."""

from __future__ import annotations

import torch

from arkx.models.detection.matcher import HungarianMatcher, focal_class_cost

BIG = 8.0  # a logit this large is a confident yes (sigmoid ~ 0.9997)


def outputs_from(boxes: list[list[float]], labels: list[int], num_classes: int = 3):
    """One image whose queries predict exactly these boxes and classes."""
    logits = torch.full((1, len(boxes), num_classes), -BIG)
    logits[0, torch.arange(len(labels)), torch.tensor(labels)] = BIG
    return dict(logits=logits, boxes=torch.tensor([boxes]))


def test_perfect_predictions_are_matched_to_their_targets_in_any_order():
    predicted = [[0.2, 0.2, 0.1, 0.1], [0.7, 0.6, 0.3, 0.2], [0.5, 0.5, 0.2, 0.4]]
    outputs = outputs_from(predicted, [0, 2, 1])
    # targets: query 2's box and class first, then query 0's, then query 1's
    targets = [dict(boxes=torch.tensor([predicted[2], predicted[0], predicted[1]]), labels=torch.tensor([1, 0, 2]))]
    (query_index, target_index), = HungarianMatcher()(outputs, targets)
    assert dict(zip(query_index.tolist(), target_index.tolist())) == {0: 1, 1: 2, 2: 0}


def test_class_decides_between_two_queries_on_the_same_box():
    box = [0.5, 0.5, 0.2, 0.2]
    outputs = outputs_from([box, box], [0, 1])
    targets = [dict(boxes=torch.tensor([box]), labels=torch.tensor([1]))]
    (query_index, target_index), = HungarianMatcher()(outputs, targets)
    assert query_index.tolist() == [1] and target_index.tolist() == [0]


def test_box_decides_between_two_queries_of_the_same_class():
    outputs = outputs_from([[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]], [0, 0])
    targets = [dict(boxes=torch.tensor([[0.78, 0.8, 0.12, 0.1]]), labels=torch.tensor([0]))]
    (query_index, _), = HungarianMatcher()(outputs, targets)
    assert query_index.tolist() == [1]


def test_image_without_targets_matches_nothing():
    outputs = outputs_from([[0.2, 0.2, 0.1, 0.1]], [0])
    targets = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    (query_index, target_index), = HungarianMatcher()(outputs, targets)
    assert query_index.numel() == 0 and target_index.numel() == 0


def test_focal_class_cost_is_lower_for_the_confident_class():
    logits = torch.tensor([[BIG, -BIG], [-BIG, BIG]])
    cost = focal_class_cost(logits, torch.tensor([0, 1]))
    assert cost[0, 0] < cost[0, 1] and cost[1, 1] < cost[1, 0]
