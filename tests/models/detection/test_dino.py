"""The DINO parts of the decoder: contrastive denoising (queries, attention mask, loss), look-forward-twice,
mixed query selection, and an inference output that did not change."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_convert

from arkx.models.detection import (
    DeformableEncoder,
    DetectionDecoder,
    SetCriterion,
    make_targets,
)
from arkx.models.detection.denoising import make_denoising_queries
from arkx.models.detection.proposals import anchor_boxes

BIG = 12.0
LEVELS = (8, 16, 16)


def tiny_parts(num_classes=2, **options):
    encoder = DeformableEncoder(list(LEVELS), d_model=16, n_layers=1, n_heads=2, n_points=2, ffn_dim=32)
    decoder = DetectionDecoder(num_classes, d_model=16, n_layers=3, n_heads=2, n_points=2, n_levels=len(LEVELS),
                               ffn_dim=32, **{"dn_number": 8, "num_queries": 6, **options})
    return encoder, decoder


def tiny_pyramid(batch=2, size=16):
    return [torch.randn(batch, c, size >> i, size >> i) for i, c in enumerate(LEVELS)]


def batch_targets():
    """Two boxes in the first image, one in the second (so the second has padding slots)."""
    return make_targets([torch.tensor([[2.0, 2.0, 10.0, 12.0], [16.0, 4.0, 30.0, 20.0]]),
                         torch.tensor([[4.0, 8.0, 28.0, 24.0]])],
                        [torch.tensor([1, 0]), torch.tensor([1])], image_size=32)


# -- denoising queries ---------------------------------------------------------------------------------
def test_denoising_slots_copy_every_box_per_group_with_bounded_noise():
    torch.manual_seed(0)
    targets = batch_targets()
    dn = make_denoising_queries(targets, num_classes=3, num_matching=6, total=8, label_noise=0.0, box_noise=0.4)
    assert (dn.groups, dn.per_group, dn.size) == (2, 2, 8)  # 8 slots // (2 * most boxes = 4)
    # per group: positives of target 0, 1, then negatives of target 0, 1; image 2 has one box: slot 1 is padding
    assert dn.target_index.tolist() == [[0, 1, 0, 1] * 2, [0, -1, 0, -1] * 2]
    assert dn.positive.tolist() == [[True, True, False, False] * 2, [True, False, False, False] * 2]
    assert dn.labels.tolist() == [[1, 0, 1, 0] * 2, [1, 0, 1, 0] * 2]  # no label noise asked for
    # corner shifts: positives below box_noise x half side, negatives between 1x and 2x that (before clipping)
    for i, target in enumerate(targets):
        valid = dn.target_index[i] >= 0
        original = box_convert(target["boxes"][dn.target_index[i, valid]], "cxcywh", "xyxy")
        noised = box_convert(dn.boxes[i, valid], "cxcywh", "xyxy")
        half = target["boxes"][dn.target_index[i, valid]][:, 2:].repeat(1, 2) / 2
        shift = (noised - original).abs() / (0.4 * half)
        positive = dn.positive[i, valid]
        assert shift[positive].max() < 1 + 1e-4 and shift[positive].max() > 0
        assert shift[~positive].max() <= 2 + 1e-4
        assert (shift[~positive] >= 1 - 1e-4).any()


def test_label_noise_flips_half_the_ratio_to_random_classes():
    torch.manual_seed(0)
    targets = [dict(boxes=torch.full((50, 4), 0.5), labels=torch.zeros(50, dtype=torch.long))]
    dn = make_denoising_queries(targets, num_classes=4, num_matching=1, total=2000, label_noise=0.5, box_noise=0.4)
    changed = float((dn.labels != 0).float().mean())
    # flipped with probability 0.25 to one of 4 classes, so 3/4 of the flips change it: 0.1875
    assert changed == pytest.approx(0.1875, abs=0.02)


def test_a_batch_without_boxes_or_without_denoising_has_no_denoising_part():
    empty = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    assert make_denoising_queries(empty, 2, 6, 8, 0.5, 0.4) is None
    assert make_denoising_queries(batch_targets(), 2, 6, 0, 0.5, 0.4) is None


# -- attention mask: no leakage ------------------------------------------------------------------------
def _run_with_denoising(decoder, encoded, targets, dn, shift: torch.Tensor | None = None):
    """The decoder's layers on [denoising, matching] queries, optionally with ``shift`` added to the
    denoising slots' content ``[B, size, d]``."""
    content, reference, _ = decoder.initial_queries(encoded)
    dn_content = decoder.label_embedding(dn.labels)
    if shift is not None:
        dn_content = dn_content + shift
    content = torch.cat([dn_content, content], dim=1)
    reference = torch.cat([dn.boxes, reference], dim=1)
    return decoder.run_layers(content, reference, encoded, dn.attention_mask)[-1]


def test_the_mask_keeps_ground_truth_out_of_the_matching_queries_and_groups_apart():
    torch.manual_seed(0)
    encoder, decoder = tiny_parts()
    encoded = encoder(tiny_pyramid())
    targets = batch_targets()
    dn = make_denoising_queries(targets, 2, 6, 8, 0.5, 0.4)
    base = _run_with_denoising(decoder, encoded, targets, dn)
    group0 = torch.zeros(2, dn.size, 16)
    group0[:, : 2 * dn.per_group] = 5.0  # perturb the first group's slots only
    moved = _run_with_denoising(decoder, encoded, targets, dn, shift=group0)
    size, per = dn.size, 2 * dn.per_group
    for key in ("logits", "boxes"):
        assert not torch.allclose(moved[key][:, :per], base[key][:, :per])  # the perturbation is felt...
        torch.testing.assert_close(moved[key][:, per:size], base[key][:, per:size])  # ...not by the other group
        torch.testing.assert_close(moved[key][:, size:], base[key][:, size:])  # ...nor by the matching queries
    padding = torch.zeros(2, dn.size, 16)
    padding[1, 1] = 5.0  # the second image's unused slot of the first group
    moved = _run_with_denoising(decoder, encoded, targets, dn, shift=padding)
    others = torch.ones(dn.size + 6, dtype=torch.bool)
    others[1] = False
    torch.testing.assert_close(moved["logits"][1, others], base["logits"][1, others])


def test_matching_outputs_are_those_of_inference_when_denoising_runs_alongside():
    torch.manual_seed(0)
    encoder, decoder = tiny_parts()
    encoded = encoder(tiny_pyramid())
    with_dn = decoder(encoded, batch_targets())
    alone = decoder(encoded)
    assert "dn" in with_dn and "dn" not in alone
    torch.testing.assert_close(with_dn["logits"], alone["logits"])
    torch.testing.assert_close(with_dn["boxes"], alone["boxes"])


# -- denoising loss --------------------------------------------------------------------------------------
def perfect_denoising(targets, dn) -> dict:
    """Positives predict their target exactly; negatives and padding are confident background."""
    batch, size = dn.target_index.shape
    logits = torch.full((batch, size, 2), -BIG)
    boxes = torch.full((batch, size, 4), 0.5)
    for i, target in enumerate(targets):
        slots = dn.positive[i].nonzero().flatten()
        logits[i, slots, target["labels"][dn.target_index[i, slots]]] = BIG
        boxes[i, slots] = target["boxes"][dn.target_index[i, slots]]
    return dict(logits=logits, boxes=boxes, target_index=dn.target_index, positive=dn.positive, groups=dn.groups)


def test_denoising_loss_is_zero_on_perfect_reconstruction_and_grows_with_each_mistake():
    torch.manual_seed(0)
    targets = batch_targets()
    dn = make_denoising_queries(targets, 2, 6, 8, 0.5, 0.4)
    criterion = SetCriterion(num_classes=2)
    perfect = perfect_denoising(targets, dn)

    def total(output):
        terms = criterion.denoising_terms(output, output, targets, num_boxes=3.0)
        return sum(criterion.weights[k] * v for k, v in terms.items())

    assert float(total(perfect)) < 1e-3
    positive_wrong_class = {**perfect, "logits": perfect["logits"].flip(-1)}
    negative_says_object = {**perfect, "logits": perfect["logits"].clone()}
    negative_says_object["logits"][0, 2, 1] = BIG  # slot 2 of image 0 is a negative
    shifted_box = {**perfect, "boxes": perfect["boxes"].clone()}
    shifted_box["boxes"][0, 0, :2] += 0.1  # slot 0 of image 0 is a positive
    moved_negative_box = {**perfect, "boxes": perfect["boxes"].clone()}
    moved_negative_box["boxes"][0, 2, :2] += 0.1
    padding_says_object = {**perfect, "logits": perfect["logits"].clone()}
    padding_says_object["logits"][1, 1, 0] = BIG  # slot 1 of image 1 is padding
    for wrong in (positive_wrong_class, negative_says_object, shifted_box):
        assert float(total(wrong)) > 0.1
    assert float(total(moved_negative_box)) < 1e-3  # negatives have no box to reconstruct
    assert float(total(padding_says_object)) < 1e-3  # padding slots are left out


def test_criterion_adds_denoising_and_proposal_terms_for_every_layer():
    torch.manual_seed(0)
    encoder, decoder = tiny_parts()
    targets = batch_targets()
    losses = SetCriterion(num_classes=2)(decoder(encoder(tiny_pyramid()), targets), targets)
    for suffix in ("", "_0", "_1", "_enc", "_dn", "_dn_0", "_dn_1"):
        assert {f"loss_class{suffix}", f"loss_bbox{suffix}", f"loss_giou{suffix}"} <= set(losses)
    weighted = sum(w * losses[f"{name}{s}"] for name, w in dict(loss_class=2, loss_bbox=5, loss_giou=2).items()
                   for s in ("", "_0", "_1", "_enc", "_dn", "_dn_0", "_dn_1"))
    torch.testing.assert_close(losses["loss"], weighted)


# -- look forward twice ------------------------------------------------------------------------------------
def _final_layer_terms(decoder, encoded, targets, name: str) -> torch.Tensor:
    criterion = SetCriterion(num_classes=2)
    num_boxes = float(sum(len(t["labels"]) for t in targets))
    return criterion.single_output(decoder(encoded, targets), targets, num_boxes)[name]


def _grad_sum(module) -> float:
    return float(sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None))


def test_look_forward_twice_the_last_layer_box_loss_trains_the_layer_before_but_no_further():
    torch.manual_seed(0)
    encoder, decoder = tiny_parts()
    encoded = encoder(tiny_pyramid())
    targets = batch_targets()
    for name in ("loss_bbox", "loss_giou"):
        decoder.zero_grad()
        _final_layer_terms(decoder, encoded, targets, name).backward(retain_graph=True)
        assert _grad_sum(decoder.box_heads[2]) > 0
        assert _grad_sum(decoder.box_heads[1]) > 0  # layer i's box loss reaches layer i-1's box head...
        assert _grad_sum(decoder.box_heads[0]) == 0  # ...and stops there: the handed-on reference is detached


def test_the_reference_the_next_layer_attends_around_is_detached():
    """The class loss of the last layer reads the boxes only through where the layer attended: no gradient may
    reach the earlier box heads that way."""
    torch.manual_seed(0)
    encoder, decoder = tiny_parts()
    _final_layer_terms(decoder, encoder(tiny_pyramid()), batch_targets(), "loss_class").backward()
    assert _grad_sum(decoder.class_heads[2]) > 0
    assert _grad_sum(decoder.box_heads[1]) == 0 and _grad_sum(decoder.box_heads[0]) == 0


# -- mixed query selection ----------------------------------------------------------------------------------
def test_two_stage_queries_start_at_the_top_proposals_detached_and_proposals_get_their_own_loss():
    torch.manual_seed(0)
    encoder, decoder = tiny_parts(dn_number=0)
    encoded = encoder(tiny_pyramid())
    with torch.no_grad():
        saved = [head.layers[-1].weight.clone() for head in decoder.box_heads]
        for head in decoder.box_heads:  # no refinement: every layer outputs its initial reference
            head.layers[-1].weight.zero_()
        outputs = decoder(encoded, batch_targets())
        for head, weight in zip(decoder.box_heads, saved):
            head.layers[-1].weight.copy_(weight)
    class_logits, box_logits = decoder.proposals(encoded.memory, encoded.spatial_shapes)
    best = class_logits.max(-1).values.topk(6, dim=1).indices
    expected = torch.gather(box_logits.sigmoid(), 1, best[..., None].expand(-1, -1, 4))
    torch.testing.assert_close(outputs["enc"]["boxes"], expected)
    torch.testing.assert_close(outputs["boxes"], expected)
    # the decoder's losses (every layer's) do not move the proposals (detached start); the proposal loss does
    criterion = SetCriterion(num_classes=2)
    targets = batch_targets()
    decoder.zero_grad()
    outputs = decoder(encoded, targets)
    decoder_only = {k: v for k, v in outputs.items() if k != "enc"}
    criterion(decoder_only, targets)["loss"].backward(retain_graph=True)
    assert _grad_sum(decoder.box_heads[0]) > 0 and _grad_sum(decoder.proposals) == 0
    criterion.single_output(outputs["enc"], targets, 3.0)["loss_bbox"].backward()
    assert _grad_sum(decoder.proposals.box_head) > 0


def test_anchors_are_pixel_centres_with_sides_doubling_per_level():
    anchors = anchor_boxes(torch.tensor([[2, 2], [1, 1]]))
    torch.testing.assert_close(anchors, torch.tensor([[0.25, 0.25, 0.05, 0.05], [0.75, 0.25, 0.05, 0.05],
                                                      [0.25, 0.75, 0.05, 0.05], [0.75, 0.75, 0.05, 0.05],
                                                      [0.5, 0.5, 0.1, 0.1]]))


def test_fewer_encoder_positions_than_queries_selects_them_all():
    torch.manual_seed(0)
    encoder, decoder = tiny_parts(num_queries=30)
    outputs = decoder.eval()(encoder(tiny_pyramid(size=4)))  # 16 + 4 + 1 positions for 30 queries
    assert outputs["logits"].shape == (2, 21, 2) and outputs["boxes"].shape == (2, 21, 4)


# -- inference output ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [False, True])
def test_inference_output_keys_and_shapes_are_unchanged(training):
    """Evaluation code (postprocess, arkx.evaluation) reads logits/boxes/aux: without targets the DINO decoder
    gives exactly what the plain decoder gave; with targets in eval mode only the proposals join."""
    torch.manual_seed(0)
    encoder, decoder = tiny_parts()
    plain = tiny_parts(two_stage=False, dn_number=0)[1]
    encoded = encoder(tiny_pyramid())
    dino, reference = decoder.train(training)(encoded), plain.eval()(encoded)
    assert set(dino) == set(reference) | ({"enc"} if training else set())
    for key in ("logits", "boxes"):
        assert dino[key].shape == reference[key].shape
    assert [a["boxes"].shape for a in dino["aux"]] == [a["boxes"].shape for a in reference["aux"]]
    assert set(decoder.eval()(encoded, batch_targets())) == {"logits", "boxes", "aux", "enc"}  # eval: no dn
