"""The UperNet decoder and the per-dataset segmentation heads."""

from __future__ import annotations

import pytest
import torch

from arkx.models.segmentation import ConvNormAct, SegmentationHead, UperNetDecoder, group_count
from arkx.tasks import Task

from ..conftest import tiny_model
from .test_export import _tiny_run_config

CHANNELS = [8, 16, 24, 32]


def _pyramid(batch: int = 2, size: int = 16, requires_grad: bool = False) -> list[torch.Tensor]:
    """Maps at strides 1, 2, 4, 8 of a ``size`` grid (finest first)."""
    return [torch.randn(batch, c, size >> i, size >> i, requires_grad=requires_grad) for i, c in enumerate(CHANNELS)]


def test_output_has_the_decoder_width_at_the_finest_level():
    decoder = UperNetDecoder(CHANNELS, channels=12, pool_scales=(1, 2, 3))
    assert decoder(_pyramid()).shape == (2, 12, 16, 16)
    assert decoder.config == dict(channels=12, pool_scales=[1, 2, 3])
    single = UperNetDecoder([32], channels=8)  # a ViT's one-level pyramid: pyramid pooling only
    assert single([torch.randn(1, 32, 3, 3)]).shape == (1, 8, 3, 3)


def test_every_level_reaches_the_output():
    torch.manual_seed(0)
    decoder = UperNetDecoder(CHANNELS, channels=8)
    pyramid = _pyramid(requires_grad=True)
    decoder(pyramid).square().sum().backward()
    assert all(level.grad is not None and level.grad.abs().sum() > 0 for level in pyramid)


def test_pyramid_pooling_gives_each_pixel_global_context():
    """A change in one corner of the coarsest map moves the output at the opposite corner (through the
    1x1 pooling grid), which 3x3 convs alone could not reach. GroupNorm's statistics would carry some
    context too, so the norms are taken out to look at the pooling alone."""
    torch.manual_seed(0)
    decoder = UperNetDecoder([8], channels=8, pool_scales=(1,)).eval()
    for block in decoder.modules():
        if isinstance(block, ConvNormAct):
            block[1] = torch.nn.Identity()
    x = torch.randn(1, 8, 12, 12)
    moved = x.clone()
    moved[..., 0, 0] += 5.0
    with torch.no_grad():
        assert not torch.allclose(decoder([x])[..., -1, -1], decoder([moved])[..., -1, -1])


def test_group_norm_works_at_batch_one_in_training():
    decoder = UperNetDecoder(CHANNELS, channels=8).train()
    assert torch.isfinite(decoder(_pyramid(batch=1))).all()
    assert group_count(256) == 32 and group_count(8) == 2 and group_count(3) == 1


def test_head_upsamples_its_logits_to_the_input_size():
    head = SegmentationHead(8, 3)
    assert head(torch.randn(2, 8, 5, 5), (19, 21)).shape == (2, 3, 19, 21)


def test_wrong_number_of_levels_is_refused():
    with pytest.raises(ValueError, match="4 pyramid levels, got 3"):
        UperNetDecoder(CHANNELS)(_pyramid()[:3])


def test_an_exported_segmentation_model_loads_with_equal_outputs(tmp_path, tiny_heads):
    from arkx.api import export_model, load_model

    seg = Task("jsrt", "segmentation", ("lung", "heart"))
    model = tiny_model(tiny_heads)
    model.branch_options["seg_decoder"] = dict(channels=8, pool_scales=[1, 2])
    model.add_task(seg)
    path = export_model(model, _tiny_run_config(tmp_path), tmp_path / "teacher.safetensors")
    loaded = load_model(path)
    assert loaded.head_config() == model.head_config() and loaded.seg_decoder.config == model.seg_decoder.config
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.run_task(x, seg)[1], model.eval().run_task(x, seg)[1])
