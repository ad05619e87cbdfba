"""arkx.data.geometry: masks and boxes follow the image through the sampled student view.

hypothesis is not a dependency: the properties are checked over many parameter sets drawn, seeded, from
the real augmentation presets (``arkx`` and ``ark_plus``), at output sizes below, at and above the source.
"""

import numpy as np
import pytest
import torch

from arkx.config import AugmentConfig
from arkx.data.batch import Batch
from arkx.data.geometry import (
    resize_batch,
    resize_boxes,
    resize_masks,
    warp_batch,
    warp_boxes,
    warp_masks,
)
from arkx.data.masks import mask_to_box
from arkx.data.transforms import MEAN, STD, identity_params, sample_augment_params, student_view

S = 64
CASES = [(preset, size) for preset in ("arkx", "ark_plus") for size in (40, 64, 96)]


def sampled(preset: str, n: int, seed: int) -> dict[str, torch.Tensor]:
    return sample_augment_params(n, AugmentConfig(preset=preset), torch.Generator().manual_seed(seed))


def random_rectangles(n: int, seed: int, low: int = 3, high: int = 24, margin: int = 0):
    """One rectangle per image: its mask ``[n, 1, S, S]`` and its box (integer corners, max exclusive); with
    ``margin``, also the masks of the rectangle shrunk and grown by ``margin`` pixels on every side."""
    rng = np.random.default_rng(seed)
    masks, inner, outer = (torch.zeros((n, 1, S, S), dtype=torch.bool) for _ in range(3))
    boxes = []
    for i in range(n):
        w, h = rng.integers(low, high, 2)
        x0, y0 = rng.integers(0, S - w), rng.integers(0, S - h)
        masks[i, 0, y0:y0 + h, x0:x0 + w] = True
        inner[i, 0, y0 + margin:y0 + h - margin, x0 + margin:x0 + w - margin] = True
        outer[i, 0, max(y0 - margin, 0):y0 + h + margin, max(x0 - margin, 0):x0 + w + margin] = True
        boxes.append(torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32))
    return (masks, boxes) if not margin else (masks, boxes, inner, outer)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``mask_to_box`` of every ``[n, 1, H, W]`` mask, as float ``[n, 4]`` (NaN for an empty one)."""
    return torch.tensor([mask_to_box(m[0].numpy()) or (float("nan"),) * 4 for m in masks], dtype=torch.float32)


@pytest.mark.parametrize("preset,size", CASES)
def test_a_box_drawn_into_a_mask_stays_the_masks_box(preset, size):
    """Nearest sampling makes the warped mask exactly the output pixels whose centres fall inside the warped
    rectangle, so its box differs from the hull of the mapped corners only by where pixel centres fall: at
    most half a pixel on an axis-aligned edge, and under one pixel next to a rotated corner (the presets
    rotate by at most 10 degrees). Hence the tolerance: strictly under one output pixel. A box the view clips
    is compared one-sidedly: what is still visible lies inside the clipped hull (the hull of a rotated box
    can be larger than the box of its visible part)."""
    n = 300
    params = sampled(preset, n, seed=size)
    masks, boxes = random_rectangles(n, seed=size + 1)
    labels = [torch.tensor([7])] * n
    warped = warp_masks(masks, params, size)
    out, out_labels = warp_boxes(boxes, labels, params, S, size)
    assert warped.shape == (n, 1, size, size) and warped.dtype == torch.bool
    kept = torch.tensor([len(b) == 1 for b in out])
    assert all(lab.tolist() == [7] for lab, k in zip(out_labels, kept) if k)
    from_masks = mask_boxes(warped[kept])
    hulls = torch.cat([b for b in out if len(b)])
    assert not from_masks.isnan().any(), "a kept box whose mask vanished"
    inside = (hulls[:, :2] > 0).all(1) & (hulls[:, 2:] < size).all(1)
    assert (from_masks[inside] - hulls[inside]).abs().max() < 1.0
    clipped_masks, clipped_hulls = from_masks[~inside], hulls[~inside]
    assert (clipped_masks[:, :2] > clipped_hulls[:, :2] - 1).all() and (clipped_masks[:, 2:] < clipped_hulls[:, 2:] + 1).all()
    assert int(inside.sum()) >= 100 and int((~inside).sum()) >= 10  # both situations were really exercised
    # and a box the view dropped kept (almost) nothing of its mask in view
    dropped = warped[~kept].flatten(1).sum(1).float()
    areas = torch.tensor([float((b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1])) for b, k in zip(boxes, kept) if not k])
    scale = (size / S) ** 2 / (params["crop_w"] * params["crop_h"])[~kept] * params["zoom"][~kept] ** 2
    assert (dropped <= 0.6 * areas * scale + 2 * size).all()


@pytest.mark.parametrize("preset,size", CASES)
def test_the_warped_image_and_the_warped_mask_agree(preset, size):
    """A white rectangle drawn into the image lands where its mask lands. Bilinear sampling blurs its
    outline over about one *source* pixel (more output pixels when the view magnifies, and near corners),
    so the check is: whatever is inside the rectangle shrunk by that margin is bright in the view, whatever
    is outside it grown by that margin is dark -- with a second source pixel when the view shrinks (the
    pyramid's antialiasing). And the two disagree on few pixels overall."""
    n = 120
    params = sampled(preset, n, seed=3 * size)
    params.update(brightness=torch.zeros(n), contrast=torch.ones(n), gamma=torch.ones(n))
    masks, _, inner, outer = random_rectangles(n, seed=size, low=8, high=32, margin=1 if size >= S else 2)
    view = student_view(masks.to(torch.uint8) * 255, size, params)[:, :1] * STD[0] + MEAN[0]  # back to [0, 1]
    bright = view > 0.5
    warped = warp_masks(masks, params, size)
    assert int(warped.sum()) > 1000
    assert not (warp_masks(inner, params, size) & ~bright).any()
    assert not (bright & ~warp_masks(outer, params, size)).any()
    assert int((bright ^ warped).sum()) < 0.05 * int(warped.sum())


def test_identity_params_give_the_input_back_exactly():
    masks, boxes = random_rectangles(16, seed=5)
    masks[3, 0, 0, :] = True  # the image's edge too
    params = identity_params(16)
    assert torch.equal(warp_masks(masks, params, S), masks)
    labels = [torch.tensor([i]) for i in range(16)]
    out, out_labels = warp_boxes(boxes, labels, params, S, S)
    for a, b, la, lb in zip(out, boxes, out_labels, labels):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        assert torch.equal(la, lb)


def _left_half_view() -> dict[str, torch.Tensor]:
    """The view of the left half of the image (x in [0, S/2)), stretched over the output."""
    params = identity_params(1)
    params.update(crop_w=torch.tensor([0.5]), cx=torch.tensor([-0.5]))
    return params


def test_boxes_outside_the_crop_are_dropped_and_partly_visible_ones_clipped():
    params = _left_half_view()
    half = S // 2
    boxes = [torch.tensor([[40.0, 10, 60, 20],  # entirely in the right half: dropped
                           [28.0, 10, 48, 20],  # 4 of 20 px visible: mostly cropped away, dropped
                           [16.0, 10, 36, 20],  # 16 of 20 visible: kept, clipped at the view's edge
                           [31.4, 30, 32.4, 40],  # 0.6 of 1 source px visible = 1.2 output px: kept
                           [31.9, 30, 40, 40]])]  # 0.1 source px visible: thinner than a pixel, dropped
    labels = [torch.arange(5)]
    out, out_labels = warp_boxes(boxes, labels, params, S, S)
    assert out_labels[0].tolist() == [2, 3]
    scale = S / half
    torch.testing.assert_close(out[0], torch.tensor([[16 * scale, 10, S, 20], [31.4 * scale, 30, S, 40]]))
    # and the masks agree: nothing of the dropped box's pixels is in the view
    mask = torch.zeros((1, 1, S, S), dtype=torch.bool)
    mask[0, 0, 10:20, 40:60] = True
    assert not warp_masks(mask, params, S).any()


def test_rows_of_empty_boxes_and_devices_are_kept():
    params = sampled("ark_plus", 3, seed=0)
    boxes = [torch.zeros((0, 4)), torch.tensor([[10.0, 10, 30, 30]]), torch.zeros((0, 4))]
    labels = [torch.zeros(0, dtype=torch.int64), torch.tensor([1]), torch.zeros(0, dtype=torch.int64)]
    out, out_labels = warp_boxes(boxes, labels, params, S, 32)
    assert [len(b) for b in out] == [0, len(out_labels[1]), 0] and out[0].shape == (0, 4)
    assert out_labels[0].dtype == torch.int64


def test_resize_keeps_a_box_drawn_into_a_mask_and_scales_boxes():
    masks = torch.zeros((2, 2, S, S), dtype=torch.bool)
    masks[0, 1, 8:24, 4:40] = True
    masks[1, 0, 33:35, 60:64] = True  # two pixels thick: survives halving
    small = resize_masks(masks, 32)
    assert small.shape == (2, 2, 32, 32) and not small[0, 0].any()
    assert mask_to_box(small[0, 1].numpy()) == (2, 4, 20, 12)
    assert mask_to_box(small[1, 0].numpy()) is not None
    thin = torch.zeros((1, 1, S, S), dtype=torch.bool)
    thin[..., 34:36] = True  # half of output column 8 at 16 px (nearest sampling reads column 32: lost)
    thin[..., 40] = True  # a quarter of column 10, below the resolution (nearest reads column 40: kept)
    assert resize_masks(thin, 16)[0, 0].all(dim=0).tolist() == [c == 8 for c in range(16)]
    big = resize_masks(masks, 128)
    assert mask_to_box(big[0, 1].numpy()) == (8, 16, 80, 48)
    out = resize_boxes([torch.tensor([[4.0, 8, 40, 24]])], S, 32)
    torch.testing.assert_close(out[0], torch.tensor([[2.0, 4, 20, 12]]))


def test_warp_batch_and_resize_batch_move_the_targets_only():
    masks, boxes = random_rectangles(4, seed=9)
    batch = Batch(images=masks.to(torch.uint8) * 255, rows=torch.arange(4), masks=masks,
                  mask_present=torch.ones((4, 1), dtype=torch.bool), boxes=boxes,
                  box_labels=[torch.tensor([0])] * 4)
    params = sampled("arkx", 4, seed=2)
    warped = warp_batch(batch, params, 32)
    assert warped.images is batch.images and torch.equal(warped.mask_present, batch.mask_present)
    assert torch.equal(warped.masks, warp_masks(masks, params, 32))
    expected, _ = warp_boxes(boxes, batch.box_labels, params, S, 32)
    for a, b in zip(warped.boxes, expected):
        assert torch.equal(a, b)
    resized = resize_batch(batch, 32)
    assert torch.equal(resized.masks, resize_masks(masks, 32))
    torch.testing.assert_close(resized.boxes[0], boxes[0] / 2)
    no_targets = Batch(images=batch.images, rows=batch.rows)
    assert warp_batch(no_targets, params, 32).masks is None and resize_batch(no_targets, 32).boxes is None
