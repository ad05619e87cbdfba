"""SetCriterion: near zero for perfect predictions, falls under optimisation, handles images without boxes."""

from __future__ import annotations

import torch

from arkx.models.detection import SetCriterion

BIG = 12.0


def perfect_outputs(targets: list[dict], num_queries: int, num_classes: int) -> dict:
    """Queries 0..n-1 predict each image's targets exactly; the rest are confident background."""
    batch = len(targets)
    logits = torch.full((batch, num_queries, num_classes), -BIG)
    boxes = torch.full((batch, num_queries, 4), 0.5)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        logits[i, torch.arange(n), t["labels"]] = BIG
        boxes[i, :n] = t["boxes"]
    return dict(logits=logits, boxes=boxes)


TARGETS = [dict(boxes=torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]]), labels=torch.tensor([1, 0])),
           dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)),
           dict(boxes=torch.tensor([[0.5, 0.5, 0.5, 0.5]]), labels=torch.tensor([2]))]


def test_perfect_predictions_have_near_zero_loss_and_auxiliary_terms_are_added():
    outputs = perfect_outputs(TARGETS, num_queries=5, num_classes=3)
    outputs["aux"] = [perfect_outputs(TARGETS, 5, 3)]
    losses = SetCriterion(num_classes=3)(outputs, TARGETS)
    assert set(losses) == {"loss", "loss_class", "loss_bbox", "loss_giou", "loss_class_0", "loss_bbox_0", "loss_giou_0"}
    for value in losses.values():
        assert 0 <= float(value) < 1e-4


def test_auxiliary_outputs_can_be_left_out():
    outputs = perfect_outputs(TARGETS, num_queries=5, num_classes=3)
    outputs["aux"] = [dict(logits=torch.zeros(3, 5, 3), boxes=torch.full((3, 5, 4), 0.5))]  # a poor aux output
    losses = SetCriterion(num_classes=3, aux_loss=False)(outputs, TARGETS)
    assert set(losses) == {"loss", "loss_class", "loss_bbox", "loss_giou"} and losses["loss"] < 1e-3


def test_total_is_the_weighted_sum_of_final_and_auxiliary_terms():
    torch.manual_seed(0)
    outputs = dict(logits=torch.randn(3, 5, 3), boxes=torch.rand(3, 5, 4) * 0.5 + 0.25)
    outputs["aux"] = [dict(logits=torch.randn(3, 5, 3), boxes=torch.rand(3, 5, 4) * 0.5 + 0.25)]
    losses = SetCriterion(num_classes=3, weight_class=2.0, weight_bbox=5.0, weight_giou=3.0)(outputs, TARGETS)
    expected = sum(2.0 * losses[f"loss_class{s}"] + 5.0 * losses[f"loss_bbox{s}"] + 3.0 * losses[f"loss_giou{s}"]
                   for s in ("", "_0"))
    torch.testing.assert_close(losses["loss"], expected)
    assert all(float(v) > 0 for v in losses.values())


def test_wrong_class_and_wrong_box_each_raise_the_loss():
    perfect = perfect_outputs(TARGETS, 5, 3)
    criterion = SetCriterion(num_classes=3)
    wrong_class = {k: v.clone() for k, v in perfect.items()}
    wrong_class["logits"][2, 0] = torch.tensor([BIG, -BIG, -BIG])  # image 2's box called class 0, not 2
    wrong_box = {k: v.clone() for k, v in perfect.items()}
    wrong_box["boxes"][0, 0] = torch.tensor([0.35, 0.3, 0.2, 0.25])
    assert criterion(wrong_class, TARGETS)["loss_class"] > 1.0
    shifted = criterion(wrong_box, TARGETS)
    assert shifted["loss_bbox"] > 0.01 and shifted["loss_giou"] > 0.01


def test_image_without_boxes_trains_every_query_towards_background():
    targets = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    logits = torch.zeros(1, 4, 2, requires_grad=True)
    boxes = torch.rand(1, 4, 4, requires_grad=True)
    losses = SetCriterion(num_classes=2)(dict(logits=logits, boxes=boxes), targets)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    losses["loss"].backward()
    assert (logits.grad > 0).all()  # every logit pushed down (towards "no object")


def test_loss_decreases_under_a_few_optimizer_steps():
    torch.manual_seed(0)
    logits = torch.zeros(3, 5, 3, requires_grad=True)
    box_logits = torch.zeros(3, 5, 4, requires_grad=True)
    optimizer = torch.optim.Adam([logits, box_logits], lr=0.1)
    criterion = SetCriterion(num_classes=3)
    history = []
    for _ in range(30):
        loss = criterion(dict(logits=logits, boxes=box_logits.sigmoid()), TARGETS)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.3 * history[0]
