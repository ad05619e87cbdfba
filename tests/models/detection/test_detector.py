"""Detector assembly: output structure, gradients reach every parameter, images without boxes, bad pyramids."""

from __future__ import annotations

import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.models.detection import DeformableEncoder, DetectionDecoder, Detector, SetCriterion, make_targets


def tiny_detector(num_classes=2, levels=(8, 16, 16), **options) -> Detector:
    return Detector(list(levels), num_classes=num_classes, d_model=16, num_queries=6, encoder_layers=1,
                    decoder_layers=3, n_heads=2, n_points=2, ffn_dim=32, **{"dn_number": 8, **options})


def tiny_pyramid(batch=2, channels=(8, 16, 16), size=16):
    return [torch.randn(batch, c, size >> i, size >> i) for i, c in enumerate(channels)]


def batch_targets():
    return make_targets([torch.tensor([[2.0, 2.0, 10.0, 12.0], [16.0, 4.0, 30.0, 20.0]]), torch.zeros(0, 4)],
                        [torch.tensor([1, 0]), torch.zeros(0, dtype=torch.long)], image_size=32)


@pytest.mark.parametrize("two_stage", [True, False])
def test_outputs_have_the_documented_shapes_and_one_aux_per_earlier_layer(two_stage):
    torch.manual_seed(0)
    outputs = tiny_detector(num_classes=3, two_stage=two_stage).eval()(tiny_pyramid())
    assert set(outputs) == {"logits", "boxes", "aux"}  # inference: no proposals, no denoising part
    assert outputs["logits"].shape == (2, 6, 3) and outputs["boxes"].shape == (2, 6, 4)
    assert len(outputs["aux"]) == 2
    assert all(a["logits"].shape == (2, 6, 3) and a["boxes"].shape == (2, 6, 4) for a in outputs["aux"])
    assert ((outputs["boxes"] > 0) & (outputs["boxes"] < 1)).all()


def test_encoder_output_layout_on_non_square_maps():
    torch.manual_seed(0)
    pyramid = [torch.randn(2, 8, 8, 12), torch.randn(2, 16, 4, 6)]
    encoded = DeformableEncoder([8, 16], d_model=16, n_layers=1, n_heads=2, n_points=1, ffn_dim=16)(pyramid)
    assert encoded.memory.shape == encoded.positions.shape == (2, 8 * 12 + 4 * 6, 16)
    assert encoded.spatial_shapes.tolist() == [[8, 12], [4, 6]]
    assert encoded.level_start_index.tolist() == [0, 96]


def test_encoder_mixes_levels_through_deformable_attention():
    """Changing only the coarse map changes the memory at fine-level positions (a 1x1 projection alone would not)."""
    torch.manual_seed(0)
    encoder = DeformableEncoder([8, 16], d_model=16, n_layers=1, n_heads=2, n_points=2, ffn_dim=16)
    pyramid = tiny_pyramid(channels=(8, 16))
    changed = [pyramid[0], pyramid[1] + 1.0]
    fine = slice(0, 16 * 16)
    assert not torch.allclose(encoder(pyramid).memory[:, fine], encoder(changed).memory[:, fine])


def _give_zero_initialised_projections_small_weights(detector: Detector) -> None:
    """Deformable attention starts with zero offset/weight projections (Deformable DETR's init), which pass no
    gradient to what feeds their input (e.g. the level embedding) until the first step moves them; give them
    the small values a first step would."""
    generator = torch.Generator().manual_seed(1)
    for name, p in detector.named_parameters():
        if (".sampling_offsets." in name or ".attention_weights." in name) and name.endswith("weight"):
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) * 1e-2)


def _without_gradient(detector: Detector, names=None) -> list[str]:
    return [n for n, p in detector.named_parameters()
            if p.requires_grad and (names is None or n in names) and (p.grad is None or not p.grad.abs().sum() > 0)]


@pytest.mark.parametrize("two_stage", [True, False])
def test_every_parameter_gets_a_gradient_from_one_backward_on_a_batch_with_boxes(two_stage):
    """The authors' optimizer left the detector's output heads out (METHOD.md section 5); here every parameter
    with requires_grad, the class/box heads of every layer, the two-stage proposal heads and the denoising
    label embedding included, gets a gradient from one loss backward, and moves under the optimizer."""
    torch.manual_seed(0)
    detector = tiny_detector(two_stage=two_stage)
    criterion = SetCriterion(num_classes=2)
    pyramid, targets = tiny_pyramid(), batch_targets()
    outputs = detector(pyramid, targets)
    assert {"enc", "dn"} <= set(outputs) if two_stage else "dn" in outputs and "enc" not in outputs
    criterion(outputs, targets)["loss"].backward()
    heads = [n for n, _ in detector.named_parameters()
             if ".class_heads." in n or ".box_heads." in n or ".proposals." in n or "label_embedding" in n]
    per_layer = 2 + 3 * 2  # a linear class head, a 3-layer box MLP
    assert len(heads) == 3 * per_layer + (2 + 2 + per_layer if two_stage else 0) + 1
    assert _without_gradient(detector, heads) == []  # at init already

    detector.zero_grad()
    _give_zero_initialised_projections_small_weights(detector)
    criterion(detector(pyramid, targets), targets)["loss"].backward()
    assert _without_gradient(detector) == []

    before = {n: p.detach().clone() for n, p in detector.named_parameters()}
    torch.optim.AdamW(detector.parameters(), lr=1e-3).step()
    assert [n for n, p in detector.named_parameters() if torch.equal(p, before[n])] == []


def test_a_batch_without_any_box_gives_a_finite_loss_and_gradients():
    torch.manual_seed(0)
    detector = tiny_detector()
    targets = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))] * 2
    outputs = detector(tiny_pyramid(), targets)
    assert "dn" not in outputs  # nothing to denoise
    losses = SetCriterion(num_classes=2)(outputs, targets)
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    losses["loss"].backward()
    assert detector.decoder.class_heads[-1].bias.grad.abs().sum() > 0


def test_decoder_layers_refine_boxes_in_inverse_sigmoid_space():
    """Single stage: with the box heads' last layer a constant 0.5 every layer adds 0.5 to the learned initial
    boxes' logits."""
    torch.manual_seed(0)
    detector = tiny_detector(two_stage=False)
    for head in detector.decoder.box_heads:
        torch.nn.init.zeros_(head.layers[-1].weight)
        torch.nn.init.constant_(head.layers[-1].bias, 0.5)
    outputs = detector(tiny_pyramid())
    initial = detector.decoder.reference_logits.weight
    for depth, boxes in enumerate([a["boxes"] for a in outputs["aux"]] + [outputs["boxes"]], start=1):
        torch.testing.assert_close(boxes[0], torch.sigmoid(initial + 0.5 * depth))


def test_pyramid_with_wrong_channels_is_refused_with_the_expected_channels():
    with pytest.raises(ArkxValueError, match=r"expected \[8, 16, 16\]"):
        tiny_detector()(tiny_pyramid(channels=(8, 16, 32)))


def test_decoder_has_its_own_heads_for_another_dataset():
    encoder = DeformableEncoder([8, 16, 16], d_model=16, n_layers=1, n_heads=2, n_points=2, ffn_dim=16)
    first, second = (DetectionDecoder(k, d_model=16, num_queries=4, n_layers=2, n_heads=2, n_points=2, n_levels=3,
                                      ffn_dim=16) for k in (2, 5))
    encoded = encoder(tiny_pyramid())
    assert first(encoded)["logits"].shape[-1] == 2 and second(encoded)["logits"].shape[-1] == 5


def test_a_one_pixel_coarsest_level_works_for_one_image_in_eval():
    """Small d_model on a small input: the 1x1 level still carries information (not a constant) and a batch of
    one image evaluates (a GroupNorm group of one channel would raise and erase the level)."""
    from arkx.models.detection.encoder import DeformableEncoder, group_count

    assert group_count(256) == 32 and group_count(16) == 8 and group_count(2) == 1
    torch.manual_seed(0)
    encoder = DeformableEncoder([8, 16], d_model=16, n_layers=1, n_heads=2, n_points=2, ffn_dim=16).eval()
    coarse_a, coarse_b = torch.randn(1, 16, 1, 1), torch.randn(1, 16, 1, 1)
    fine = torch.randn(1, 8, 2, 2)
    with torch.no_grad():
        a = encoder([fine, coarse_a]).memory
        b = encoder([fine, coarse_b]).memory
    assert not torch.allclose(a, b)
