import math
from pathlib import Path

import pytest
import torch
import yaml

import arkx
from arkx.config import AugmentConfig
from arkx.data.transforms import (MEAN, STD, apply_uncertain_policy, eval_view, identity_params, normalize,
                                  pick_levels, pyramid_sides, sample_augment_params, student_view)


def test_one_normalisation_replicates_gray_to_three_channels():
    x = torch.full((1, 1, 4, 4), 0.5)
    y = normalize(x)
    assert y.shape == (1, 3, 4, 4)
    for c in range(3):
        assert math.isclose(y[0, c, 0, 0].item(), (0.5 - MEAN[c]) / STD[c], rel_tol=1e-6)


def test_eval_view_is_the_resized_whole_image():
    img = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    img[..., :, 32:] = 255  # right half white
    v = eval_view(img, 32)
    gray = v[0, 0] * STD[0] + MEAN[0]
    assert v.shape == (1, 3, 32, 32)
    assert gray[:, :15].max() < 0.05 and gray[:, 17:].min() > 0.95


def test_augment_params_are_seeded_and_per_sample():
    cfg = AugmentConfig()
    a = sample_augment_params(8, cfg, torch.Generator().manual_seed(1))
    b = sample_augment_params(8, cfg, torch.Generator().manual_seed(1))
    c = sample_augment_params(8, cfg, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["angle"], c["angle"])
    assert a["angle"].unique().numel() == 8  # one draw per sample, not one per batch
    assert (a["angle"].abs() <= cfg.rotate_degrees * math.pi / 180 + 1e-6).all()


def test_identity_params_give_the_eval_view():
    img = torch.randint(0, 256, (2, 1, 40, 40), dtype=torch.uint8)
    torch.testing.assert_close(student_view(img, 32, identity_params(2)), eval_view(img, 32), atol=1e-4, rtol=1e-4)


def _gray(view: torch.Tensor) -> torch.Tensor:
    return view[:, 0] * STD[0] + MEAN[0]


def _crop(side: float, **changes) -> dict[str, torch.Tensor]:
    params = identity_params(1)
    params["crop_w"] = params["crop_h"] = torch.tensor([side])
    params.update({k: torch.tensor([v]) for k, v in changes.items()})
    return params


def test_crop_zooms_in():
    img = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    img[..., 24:40, 24:40] = 255
    out = _gray(student_view(img, 64, _crop(0.5)))
    assert (out > 0.5).float().mean().item() > 0.2  # the 6% bright square now covers about 25%


def checkerboard(side: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return (((yy + xx) % 2) * 255).to(torch.uint8).view(1, 1, side, side)


def test_zoomed_crop_keeps_the_detail_of_the_full_cache_resolution():
    # a 1-px checkerboard cached at 64, crop of a quarter of the area, model input 32: sampled 1:1
    # from the cache it keeps full contrast; downsized to 32 first, it is a flat grey
    out = _gray(student_view(checkerboard(64), 32, _crop(0.5)))
    assert out.max() - out.min() > 0.9
    assert out.std() > 0.4


def test_wide_crop_is_antialiased_not_aliased():
    # a crop of 80% of the side shrinks 51 cache pixels into 32: the 1-px checkerboard must average
    # to grey, where a plain bilinear sampling of the full resolution makes a moire pattern
    out = _gray(student_view(checkerboard(64), 32, _crop(0.8)))
    assert out.std() < 0.05
    assert abs(out.mean() - 0.5) < 0.02


def test_each_sample_of_a_batch_gets_its_own_pyramid_level():
    images = checkerboard(64).repeat(3, 1, 1, 1)
    params = identity_params(3)
    params["crop_w"] = params["crop_h"] = torch.tensor([0.5, 0.8, 0.5])
    assert pick_levels(params, pyramid_sides(64, 32), 32).tolist() == [0, 3, 0]
    out = _gray(student_view(images, 32, params))
    assert out[0].std() > 0.4 and out[2].std() > 0.4 and out[1].std() < 0.05
    torch.testing.assert_close(out[1:2], _gray(student_view(images[:1], 32, _crop(0.8))))


def test_pyramid_runs_from_the_cache_side_down_to_the_model_input():
    assert pyramid_sides(64, 32) == [64, 54, 45, 38, 32]
    assert pyramid_sides(256, 224) == [256, 224]
    assert pyramid_sides(32, 32) == [32]


def test_zoom_and_shift_act_on_the_resized_crop():
    img = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    img[..., 24:40, 24:40] = 255  # a centred square, a quarter of the side
    bigger = _gray(student_view(img, 64, _crop(1.0, zoom=2.0)))
    assert 0.2 < (bigger > 0.5).float().mean().item() < 0.3  # zoomed 2x: covers about 25%, not 6%
    shifted = _gray(student_view(img, 64, _crop(1.0, shift_x=0.25)))[0]
    columns = torch.nonzero(shifted.amax(dim=0) > 0.5).flatten()
    assert columns.min().item() == 24 + 16 and columns.max().item() == 39 + 16  # a quarter of the side


def test_reflection_border_fills_the_corners_a_rotation_uncovers():
    img = torch.full((1, 1, 64, 64), 200, dtype=torch.uint8)
    params = _crop(1.0, angle=math.radians(10))
    zeros = _gray(student_view(img, 32, params, border="zeros"))
    reflected = _gray(student_view(img, 32, params, border="reflection"))
    assert zeros[0, 0, 0] < 0.1 and reflected[0, 0, 0] > 0.7


def test_ark_plus_preset_is_the_authors_recipe():
    cfg = AugmentConfig(preset="ark_plus")
    assert cfg.crop_scale == (0.08, 1.0) and cfg.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert cfg.rotate_degrees == 10 and cfg.color_mode == "one_of" and cfg.color_p == 0.3
    assert AugmentConfig(preset="ark_plus", crop_scale=(0.5, 1.0)).crop_scale == (0.5, 1.0)  # a key overrides
    assert AugmentConfig().crop_scale == (0.7, 1.0) and AugmentConfig().color_mode == "independent"


def test_one_of_applies_brightness_contrast_or_gamma_never_both():
    n = 20000
    p = sample_augment_params(n, AugmentConfig(preset="ark_plus"), torch.Generator().manual_seed(0))
    bc = (p["brightness"] != 0) | (p["contrast"] != 1)
    gamma = p["gamma"] != 1
    assert not (bc & gamma).any()
    assert abs((bc | gamma).float().mean().item() - 0.3) < 0.015  # OneOf(..., p=0.3)
    assert abs(bc.float().mean().item() - 0.15) < 0.015
    # the crop: area in (0.08, 1), ratio in (3/4, 4/3) (sides clamped to the image)
    area = p["crop_w"] * p["crop_h"]
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1.0 + 1e-6 and area.min() < 0.1
    unclamped = (p["crop_w"] < 1) & (p["crop_h"] < 1)
    ratio = (p["crop_w"] / p["crop_h"])[unclamped]
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    # shift/scale/rotate on about half of the samples
    moved = p["angle"] != 0
    assert abs(moved.float().mean().item() - 0.5) < 0.02
    assert ((p["zoom"] != 1) == moved).all() and p["zoom"].min() >= 0.9 and p["zoom"].max() <= 1.1


def test_independent_mode_applies_each_intensity_change_on_its_own():
    p = sample_augment_params(20000, AugmentConfig(), torch.Generator().manual_seed(0))
    bright, contrast, gamma = p["brightness"] != 0, p["contrast"] != 1, p["gamma"] != 1
    for applied in (bright, contrast, gamma):
        assert abs(applied.float().mean().item() - 0.3) < 0.015
    assert abs((bright & gamma).float().mean().item() - 0.09) < 0.01


def test_uncertain_policies():
    y = torch.tensor([[1.0, 0.0, -1.0, float("nan")]])
    assert apply_uncertain_policy(y, "ones")[0, 2] == 1
    assert apply_uncertain_policy(y, "zeros")[0, 2] == 0
    assert torch.isnan(apply_uncertain_policy(y, "ignore")[0, 2])
    for policy in ("ones", "zeros", "ignore", "lsr-ones"):
        out = apply_uncertain_policy(y, policy, torch.Generator().manual_seed(0))
        assert out[0, 0] == 1 and out[0, 1] == 0 and torch.isnan(out[0, 3])  # others untouched


def test_lsr_ones_drawn_per_access_within_range():
    y = torch.full((64, 3), -1.0)
    g = torch.Generator().manual_seed(0)
    first = apply_uncertain_policy(y, "lsr-ones", g, (0.55, 0.85))
    second = apply_uncertain_policy(y, "lsr-ones", g, (0.55, 0.85))
    assert first.min() >= 0.55 and first.max() <= 0.85
    assert not torch.equal(first, second)  # fresh values every batch (the authors drew them once)


def test_configs_that_claim_the_authors_setting_use_their_augmentation():
    claims = [p for p in sorted((Path(arkx.__file__).parent / "configs").glob("*.yaml"))
              if "as the authors ran it" in p.read_text().splitlines()[0]]
    assert claims, "no shipped config claims the authors' setting any more; update this test"
    for path in claims:
        assert yaml.safe_load(path.read_text()).get("augment", {}).get("preset") == "ark_plus", path.name
