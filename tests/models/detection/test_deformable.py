"""Deformable attention: grid_sample sampling against an explicit bilinear loop, and the coordinate convention."""

from __future__ import annotations

import math

import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.models.detection.deformable import MultiScaleDeformableAttention, deformable_sample, level_start_index


def bilinear_reference(value_map: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample ``value_map [C, H, W]`` at normalised (x, y): pixel centres at (j + 0.5) / W, zeros outside."""
    _, h, w = value_map.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(value_map.shape[0], dtype=torch.float64)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * value_map[:, yy, xx].double()
    return out


def slow_deformable_sample(value, spatial_shapes, locations, weights):
    """The same sum as deformable_sample, one sample at a time."""
    batch, _, heads, head_dim = value.shape
    queries, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    starts = level_start_index(spatial_shapes).tolist()
    out = torch.zeros(batch, queries, heads, head_dim, dtype=torch.float64)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                for lvl in range(levels):
                    h, w = spatial_shapes[lvl].tolist()
                    value_map = value[b, starts[lvl]:starts[lvl] + h * w, m].T.reshape(head_dim, h, w)
                    for p in range(points):
                        x, y = locations[b, q, m, lvl, p].tolist()
                        out[b, q, m] += weights[b, q, m, lvl, p].double() * bilinear_reference(value_map, x, y)
    return out.reshape(batch, queries, heads * head_dim)


def random_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[4, 5], [2, 3], [1, 1]])
    total = int((shapes[:, 0] * shapes[:, 1]).sum())
    batch, queries, heads, head_dim, points = 2, 3, 2, 3, 2
    value = torch.randn(batch, total, heads, head_dim, generator=g)
    # some locations outside [0, 1] so the zero padding is exercised
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=g)
    return value, shapes, locations, weights


def test_grid_sample_version_equals_explicit_bilinear_loop():
    value, shapes, locations, weights = random_inputs()
    fast = deformable_sample(value, shapes, locations, weights)
    slow = slow_deformable_sample(value, shapes, locations, weights)
    assert fast.shape == slow.shape == (2, 3, 6)
    torch.testing.assert_close(fast.double(), slow, atol=1e-5, rtol=1e-5)


def test_pixel_centre_reads_that_pixel_and_outside_reads_zero():
    shapes = torch.tensor([[3, 4]])
    value = torch.arange(12.0).view(1, 12, 1, 1)  # pixel (i, j) holds 4 * i + j
    i, j = 2, 1
    centre = torch.tensor([(j + 0.5) / 4, (i + 0.5) / 3])
    outside = torch.tensor([1.2, 0.5])  # beyond the right edge by more than half a pixel
    locations = torch.stack([centre, outside]).view(1, 2, 1, 1, 1, 2)
    out = deformable_sample(value, shapes, locations, torch.ones(1, 2, 1, 1, 1))
    assert out.flatten().tolist() == pytest.approx([4 * i + j, 0.0])


def test_level_start_index():
    assert level_start_index(torch.tensor([[4, 5], [2, 3], [1, 1]])).tolist() == [0, 20, 26]


def test_module_point_and_box_references_and_gradients():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(d_model=8, n_levels=2, n_heads=2, n_points=3)
    shapes = torch.tensor([[4, 4], [2, 2]])
    value = torch.randn(2, 20, 8, requires_grad=True)
    query = torch.randn(2, 5, 8)
    points = torch.rand(2, 5, 2, 2)
    boxes = torch.cat([torch.rand(2, 5, 2, 2), torch.full((2, 5, 2, 2), 0.3)], dim=-1)
    for reference in (points, boxes):
        out = attention(query, reference, value, shapes)
        assert out.shape == (2, 5, 8)
        out.sum().backward()
    assert value.grad.abs().sum() > 0
    # a box reference keeps the samples within the box scaled by the initial offsets (at most 1 half-side out)
    locations = attention.sampling_locations(query, boxes, shapes)
    centre = boxes[:, :, None, :, None, :2]
    assert ((locations - centre).abs() <= 0.3 * 0.5 * 1.0 + 1e-6).all()


def test_module_rejects_value_of_wrong_length():
    attention = MultiScaleDeformableAttention(d_model=8, n_levels=2, n_heads=2, n_points=1)
    with pytest.raises(ArkxValueError, match="positions"):
        attention(torch.randn(1, 3, 8), torch.rand(1, 3, 2, 2), torch.randn(1, 19, 8), torch.tensor([[4, 4], [2, 2]]))
