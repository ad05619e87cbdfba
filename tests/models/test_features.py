"""forward_features: pooled features, projection and the feature pyramid from one backbone pass."""

from __future__ import annotations

import math

import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.models.ark import ArkModel
from arkx.models.backbones import create_backbone

from ..conftest import TINY_SWIN

SWIN = "swin_tiny_patch4_window7_224"


def _model(name: str, **kwargs) -> ArkModel:
    torch.manual_seed(0)
    return ArkModel(create_backbone(name, **kwargs), [], projector="linear", projector_dim=8).eval()


def _check_pyramid(model: ArkModel, x: torch.Tensor) -> None:
    """Pooled and projection equal the Ark path's; each map has the declared channels and stride."""
    features = model.forward_features(x, pyramid=True)
    torch.testing.assert_close(features.pooled, model.backbone(x))
    torch.testing.assert_close(features.projection, model.embed(x))
    assert features.image_size == tuple(x.shape[-2:])
    assert [m.shape[:2] for m in features.pyramid] == [(x.shape[0], c) for c in model.pyramid_channels]
    for level, stride in zip(features.pyramid, model.pyramid_strides):  # a side rounds up or down by architecture
        for side, input_side in zip(level.shape[-2:], x.shape[-2:]):
            assert side in (input_side // stride, math.ceil(input_side / stride))


@pytest.mark.parametrize("name, kwargs", [(SWIN, TINY_SWIN), ("test_convnext", {}), ("test_resnet", {})])
def test_pyramid_and_pooled_features_come_from_one_pass(name, kwargs):
    model = _model(name, **kwargs)
    assert model.pyramid_strides == [4, 8, 16, 32]
    _check_pyramid(model, torch.randn(2, 3, 32, 32))


def test_without_pyramid_the_features_are_the_ark_path_bit_for_bit():
    model = _model(SWIN, **TINY_SWIN)
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.pyramid is None
    assert torch.equal(features.pooled, model.backbone(x)) and torch.equal(features.projection, model.embed(x))


def test_cnn_stems_are_left_out_and_channels_follow_feature_info():
    model = _model("test_resnet")
    info = {entry["module"]: entry for entry in model.backbone.feature_info}
    assert model.pyramid_channels == [info[f"layer{i}"]["num_chs"] for i in range(1, 5)]


def test_a_plain_vit_gives_one_level_at_stride_16():
    model = _model("test_vit")
    assert model.pyramid_strides == [16] and model.pyramid_channels == [model.backbone.embed_dim]
    x = torch.randn(1, 3, 32, 32)
    features = model.forward_features(x, pyramid=True)
    assert tuple(features.pyramid[0].shape) == (1, model.backbone.embed_dim, 2, 2)
    last_block = model.backbone.forward_intermediates(x, intermediates_only=True)[-1]
    torch.testing.assert_close(features.pyramid[0], last_block)  # the deepest block of the stride


def test_swin_takes_other_input_sizes_only_when_built_without_strict_size():
    x = torch.randn(1, 3, 48, 48)
    strict = _model(SWIN, **TINY_SWIN)
    with pytest.raises(AssertionError, match="doesn't match model"):
        strict.forward_features(x, pyramid=True)
    model = _model(SWIN, **TINY_SWIN, strict_img_size=False)
    _check_pyramid(model, x)
    _check_pyramid(model, torch.randn(1, 3, 64, 40))


def test_cnn_pyramid_at_another_input_size():
    _check_pyramid(_model("test_convnext"), torch.randn(1, 3, 72, 40))


def test_a_backbone_without_feature_info_has_no_pyramid():
    class Pooled(torch.nn.Module):
        num_features = 3

        def forward(self, x):
            return x.mean(dim=(2, 3))

    model = ArkModel(Pooled(), [], projector="none")
    assert model.forward_features(torch.randn(1, 3, 8, 8)).pooled.shape == (1, 3)
    with pytest.raises(ArkxValueError, match="cannot feed a segmentation or detection head"):
        model.forward_features(torch.randn(1, 3, 8, 8), pyramid=True)
