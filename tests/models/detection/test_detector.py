"""Detector assembly: output structure, gradients reach every parameter, images without boxes, bad pyramids."""

from __future__ import annotations

import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.models.detection import DeformableEncoder, DetectionDecoder, Detector, SetCriterion, make_targets


def tiny_detector(num_classes=2, levels=(8, 16, 16)) -> Detector:
    return Detector(list(levels), num_classes=num_classes, d_model=16, num_queries=6, encoder_layers=1,
                    decoder_layers=3, n_heads=2, n_points=2, ffn_dim=32)


def tiny_pyramid(batch=2, channels=(8, 16, 16), size=16):
    return [torch.randn(batch, c, size >> i, size >> i) for i, c in enumerate(channels)]


def batch_targets():
    return make_targets([torch.tensor([[2.0, 2.0, 10.0, 12.0], [16.0, 4.0, 30.0, 20.0]]), torch.zeros(0, 4)],
                        [torch.tensor([1, 0]), torch.zeros(0, dtype=torch.long)], image_size=32)


def test_outputs_have_the_documented_shapes_and_one_aux_per_earlier_layer():
    torch.manual_seed(0)
    outputs = tiny_detector(num_classes=3)(tiny_pyramid())
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


def test_every_head_parameter_gets_a_gradient_and_every_parameter_trains():
    """The authors' optimizer left the class/box heads out; here every parameter must move under the loss."""
    torch.manual_seed(0)
    detector = tiny_detector()
    criterion = SetCriterion(num_classes=2)
    pyramid, targets = tiny_pyramid(), batch_targets()
    criterion(detector(pyramid), targets)["loss"].backward()
    head_names = [n for n, _ in detector.named_parameters() if ".class_heads." in n or ".box_heads." in n]
    assert len(head_names) == 3 * 2 + 3 * 3 * 2  # per layer: a linear class head, a 3-layer box MLP
    params = dict(detector.named_parameters())
    assert [n for n in head_names if params[n].grad is None or not params[n].grad.abs().sum() > 0] == []

    before = {n: p.detach().clone() for n, p in detector.named_parameters()}
    optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-3)
    for _ in range(2):  # zero-initialised offset/weight projections pass gradient on from the second step
        optimizer.zero_grad()
        criterion(detector(pyramid), targets)["loss"].backward()
        optimizer.step()
    unchanged = [n for n, p in detector.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


def test_a_batch_without_any_box_gives_a_finite_loss_and_gradients():
    torch.manual_seed(0)
    detector = tiny_detector()
    targets = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))] * 2
    losses = SetCriterion(num_classes=2)(detector(tiny_pyramid()), targets)
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    losses["loss"].backward()
    assert detector.decoder.class_heads[-1].bias.grad.abs().sum() > 0


def test_decoder_layers_refine_boxes_in_inverse_sigmoid_space():
    """With the box heads' last layer zeroed every layer returns its reference: the learned initial boxes."""
    torch.manual_seed(0)
    detector = tiny_detector()
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
