"""Multi-scale deformable attention in plain PyTorch (``grid_sample``), so it runs on CPU and in tests.

Each query looks at a few sampled points around its reference point on every pyramid level instead
of at every position: per head, level and point the module predicts an offset and an attention weight
from the query; the values are bilinearly sampled at ``reference + offset`` and summed with those
weights. The authors' detectors call a compiled CUDA kernel for the sampling; arkx uses
``torch.nn.functional.grid_sample`` instead (same arithmetic, slower on GPU, no build step).

Coordinate convention (used by every caller): a location is ``(x, y)`` normalised to ``[0, 1]`` over
the whole feature map, where 0 is the left/top EDGE of the first pixel and 1 the right/bottom edge of
the last one (``align_corners=False``): the centre of pixel ``(i, j)`` of an ``H x W`` map is
``((j + 0.5) / W, (i + 0.5) / H)``. Samples that fall outside the map read zeros.

The inputs are padding-free: every image of a batch has the same size (arkx batches are square
crops), so there is no padding mask and no "valid ratio" rescaling of the reference points.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from arkx.errors import ArkxValueError


def level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """Offset of each level's first position in the flattened ``[sum H*W]`` sequence."""
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def deformable_sample(value: torch.Tensor, spatial_shapes: torch.Tensor, locations: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of bilinear samples of ``value`` at ``locations``, per head.

    value: ``[B, S, heads, head_dim]`` with ``S = sum(H_l * W_l)`` (levels concatenated in order,
    each flattened row-major). spatial_shapes: int64 ``[L, 2]`` of ``(H_l, W_l)``.
    locations: ``[B, Q, heads, L, P, 2]`` normalised ``(x, y)`` (module docstring).
    weights: ``[B, Q, heads, L, P]``. Returns ``[B, Q, heads * head_dim]``.
    """
    batch, _, heads, head_dim = value.shape
    queries, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    per_level = value.split([h * w for h, w in shapes], dim=1)
    # grid_sample's grid is in [-1, 1] with align_corners=False: -1 is the outer edge of the first pixel.
    grids = 2 * locations - 1
    sampled = []
    for level, (h, w) in enumerate(shapes):
        # [B, H*W, heads, Dh] -> [B*heads, Dh, H, W]
        value_map = per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
        # [B, Q, heads, P, 2] -> [B*heads, Q, P, 2]
        grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points, 2)
        sampled.append(F.grid_sample(value_map, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # [B*heads, Dh, Q, P]
    stacked = torch.stack(sampled, dim=-2)  # [B*heads, Dh, Q, L, P]
    w = weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels, points)
    out = (stacked * w).sum(dim=(-1, -2))  # [B*heads, Dh, Q]
    return out.reshape(batch, heads * head_dim, queries).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention over ``n_levels`` feature maps, ``n_heads`` heads, ``n_points`` samples.

    forward(query [B, Q, d], reference [B, Q, L, 2 or 4], value [B, S, d], spatial_shapes [L, 2])
    -> [B, Q, d]. A 2-d reference is a point: offsets are in pixels of each level. A 4-d reference is
    a box ``(cx, cy, w, h)``: offsets are in units of the box half-size divided by ``n_points``, so the
    samples stay inside (a scaled copy of) the box as it is refined.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ArkxValueError(f"deformable attention: d_model={d_model} must be divisible by n_heads={n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Start with each head sampling along its own direction, at 1..P steps, with uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values  # on the unit square
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        bias = directions.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1) * steps
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def sampling_locations(self, query: torch.Tensor, reference: torch.Tensor,
                           spatial_shapes: torch.Tensor) -> torch.Tensor:
        """Normalised ``(x, y)`` sample locations ``[B, Q, heads, L, P, 2]``."""
        batch, queries, _ = query.shape
        offsets = self.sampling_offsets(query).view(batch, queries, self.n_heads, self.n_levels, self.n_points, 2)
        if reference.shape[-1] == 2:
            # offsets in pixels of each level: divide by (W_l, H_l)
            size = spatial_shapes.flip(-1).to(offsets.dtype)  # [L, 2] as (W, H)
            return reference[:, :, None, :, None, :] + offsets / size[None, None, None, :, None, :]
        if reference.shape[-1] == 4:
            centre, extent = reference[..., :2], reference[..., 2:]
            return (centre[:, :, None, :, None, :]
                    + offsets / self.n_points * extent[:, :, None, :, None, :] * 0.5)
        raise ArkxValueError(f"deformable attention: reference points must end in 2 or 4 coordinates, "
                             f"got shape {tuple(reference.shape)}")

    def forward(self, query: torch.Tensor, reference: torch.Tensor, value: torch.Tensor,
                spatial_shapes: torch.Tensor) -> torch.Tensor:
        batch, queries, _ = query.shape
        expected = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
        if value.shape[1] != expected or spatial_shapes.shape[0] != self.n_levels:
            raise ArkxValueError(f"deformable attention: value has {value.shape[1]} positions over "
                                 f"{spatial_shapes.shape[0]} levels; expected {expected} over {self.n_levels}")
        head_dim = self.d_model // self.n_heads
        projected = self.value_proj(value).view(batch, value.shape[1], self.n_heads, head_dim)
        locations = self.sampling_locations(query, reference, spatial_shapes)
        weights = self.attention_weights(query).view(batch, queries, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(batch, queries, self.n_heads, self.n_levels, self.n_points)
        return self.output_proj(deformable_sample(projected, spatial_shapes, locations, weights))
