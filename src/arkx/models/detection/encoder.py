"""The deformable encoder over a backbone's feature pyramid (shared across datasets in Foundation X).

Each pyramid level is projected to ``d_model`` channels (1x1 conv + GroupNorm), flattened and
concatenated; a stack of deformable self-attention layers (each position attends to a few sampled
points on every level around its own location) then mixes the levels. Positions carry a 2-d sine
embedding plus a learned per-level embedding.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from arkx.errors import ArkxValueError
from arkx.models.detection.deformable import MultiScaleDeformableAttention, level_start_index


class EncoderOutput(NamedTuple):
    """What the decoders read. memory/positions: ``[B, S, d]`` with ``S = sum(H_l * W_l)``;
    spatial_shapes: int64 ``[L, 2]`` of ``(H_l, W_l)``; level_start_index: int64 ``[L]``."""

    memory: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    positions: torch.Tensor


def group_count(channels: int, most: int = 32) -> int:
    """Largest number of GroupNorm groups <= ``most`` that divides ``channels`` (32 for d_model=256) and leaves
    at least two channels per group: a group of one channel on a 1x1 map (the coarsest level of a small input)
    would normalise a single value to the bias, and torch refuses it for a batch of one."""
    return max(g for g in range(1, max(1, min(most, channels // 2)) + 1) if channels % g == 0)


def sine_positions(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """2-d sine/cosine embedding ``[H*W, dim]`` of pixel centres normalised to [0, 2*pi].

    The first half of the channels encodes y, the second half x; within each half, frequencies fall
    geometrically and sin/cos alternate. Normalising by the map size makes the embedding of a
    relative position the same on every level and at every input size.
    """
    if dim % 4:
        raise ArkxValueError(f"sine positions: dim={dim} must be divisible by 4")
    half = dim // 2
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 * math.pi
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 * math.pi
    return torch.cat([_sine_features(ys, half)[:, None, :].expand(height, width, half),
                      _sine_features(xs, half)[None, :, :].expand(height, width, half)], dim=-1).reshape(-1, dim)


def _sine_features(coordinate: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """``[..., dim]``: sin/cos pairs of ``coordinate`` at ``dim // 2`` geometric frequencies."""
    pairs = torch.arange(dim // 2, device=coordinate.device, dtype=torch.float32)
    scaled = coordinate[..., None] / temperature ** (2 * pairs / dim)
    return torch.stack([scaled.sin(), scaled.cos()], dim=-1).flatten(-2)


def pixel_centre_references(spatial_shapes: torch.Tensor, device=None) -> torch.Tensor:
    """Normalised ``(x, y)`` pixel centres of every level, concatenated: ``[S, 2]``."""
    centres = []
    for h, w in spatial_shapes.tolist():
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        centres.append(torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1))
    return torch.cat(centres)


class FeedForward(nn.Module):
    """Residual two-layer MLP followed by LayerNorm (post-norm, as in Deformable DETR)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, d_model), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x))


class MLP(nn.Module):
    """``n_layers`` linear layers with ReLU between them (the detector's box heads)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, n_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


class EncoderLayer(nn.Module):
    """Deformable self-attention (queries = positions + embedding, references = own centres) + FFN."""

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attention = MultiScaleDeformableAttention(d_model, n_levels, n_heads, n_points)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)

    def forward(self, x, positions, references, spatial_shapes):
        attended = self.attention(x + positions, references, x, spatial_shapes)
        return self.ffn(self.norm(x + self.dropout(attended)))


class DeformableEncoder(nn.Module):
    """Deformable transformer encoder over a pyramid of NCHW maps with ``in_channels[l]`` channels.

    forward(pyramid: list[Tensor [B, C_l, H_l, W_l]]) -> :class:`EncoderOutput`. Levels are given
    fine to coarse (any order works, but it must be the same at every call).
    """

    def __init__(self, in_channels: list[int], d_model: int = 256, n_layers: int = 6, n_heads: int = 8,
                 n_points: int = 4, ffn_dim: int = 1024, dropout: float = 0.0):
        super().__init__()
        if not in_channels:
            raise ArkxValueError("deformable encoder: in_channels must name at least one pyramid level")
        self.in_channels = [int(c) for c in in_channels]
        self.d_model, self.n_levels = d_model, len(self.in_channels)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d_model, kernel_size=1), nn.GroupNorm(group_count(d_model), d_model))
            for c in self.in_channels)
        self.level_embed = nn.Parameter(torch.empty(self.n_levels, d_model))
        self.layers = nn.ModuleList(EncoderLayer(d_model, self.n_levels, n_heads, n_points, ffn_dim, dropout)
                                    for _ in range(n_layers))
        nn.init.normal_(self.level_embed)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)

    def _check(self, pyramid: list[torch.Tensor]) -> None:
        channels = [int(p.shape[1]) for p in pyramid]
        if channels != self.in_channels:
            raise ArkxValueError(f"deformable encoder: pyramid has channels {channels}, "
                                 f"expected {self.in_channels} (one map per level, NCHW)")

    def forward(self, pyramid: list[torch.Tensor]) -> EncoderOutput:
        self._check(pyramid)
        device = pyramid[0].device
        tokens, positions = [], []
        for level, (feature, proj) in enumerate(zip(pyramid, self.input_proj)):
            h, w = feature.shape[-2:]
            tokens.append(proj(feature).flatten(2).transpose(1, 2))  # [B, H*W, d]
            pos = sine_positions(h, w, self.d_model, device=device).to(feature.dtype) + self.level_embed[level]
            positions.append(pos)
        spatial_shapes = torch.tensor([tuple(p.shape[-2:]) for p in pyramid], dtype=torch.long, device=device)
        x = torch.cat(tokens, dim=1)
        pos = torch.cat(positions)[None].expand(x.shape[0], -1, -1)
        # Every position refers to its own centre, repeated on every level (padding-free inputs:
        # the same normalised point is the same image location on each level).
        references = pixel_centre_references(spatial_shapes, device=device).to(x.dtype)
        references = references[None, :, None, :].expand(x.shape[0], -1, self.n_levels, -1)
        for layer in self.layers:
            x = layer(x, pos, references, spatial_shapes)
        return EncoderOutput(x, spatial_shapes, level_start_index(spatial_shapes), pos)
