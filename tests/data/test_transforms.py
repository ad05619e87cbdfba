import math

import torch

from arkx.config import AugmentConfig
from arkx.data.transforms import (MEAN, STD, apply_uncertain_policy, eval_view, normalize, sample_augment_params,
                                  student_view)


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
    ident = dict(scale_x=torch.ones(2), scale_y=torch.ones(2), cx=torch.zeros(2), cy=torch.zeros(2),
                 angle=torch.zeros(2), brightness=torch.zeros(2), contrast=torch.ones(2), gamma=torch.ones(2))
    torch.testing.assert_close(student_view(img, 32, ident), eval_view(img, 32), atol=1e-4, rtol=1e-4)


def test_crop_zooms_in():
    img = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    img[..., 24:40, 24:40] = 255
    params = dict(scale_x=torch.tensor([0.5]), scale_y=torch.tensor([0.5]), cx=torch.zeros(1), cy=torch.zeros(1),
                  angle=torch.zeros(1), brightness=torch.zeros(1), contrast=torch.ones(1), gamma=torch.ones(1))
    out = student_view(img, 64, params)[0, 0] * STD[0] + MEAN[0]
    assert (out > 0.5).float().mean().item() > 0.2  # the 6% bright square now covers about 25%


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
