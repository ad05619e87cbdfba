"""UperNet decoder: the segmentation branch shared by every dataset (Foundation X's segmentation decoder).

UperNet (Xiao et al., "Unified Perceptual Parsing", ECCV 2018) reads a backbone's feature pyramid:

1. a pyramid pooling module (PSPNet) on the coarsest map: the map average-pooled to a few grids
   (1x1, 2x2, 3x3, 6x6), each projected and upsampled back, concatenated with the map, fused by a 3x3 conv;
2. an FPN over every level: a 1x1 lateral conv per finer level, a top-down pass that adds each coarser
   level (upsampled) to the next finer one, then a 3x3 conv per level;
3. every level upsampled to the finest one's size, concatenated, fused by a 3x3 conv.

The output is ``channels`` maps at the finest level's stride (4 for Swin and CNNs); each dataset's own
head is a 1x1 conv on it (:class:`SegmentationHead`).

Normalisation is GroupNorm, not the BatchNorm of the reference implementation: segmentation fine-tuning
runs at small batches on chest X-rays, where batch statistics (and the PPM's 1x1 grid, which BatchNorm
refuses at batch 1) are unreliable, and GroupNorm has no running buffers for the EMA teacher to follow.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Default decoder width and pooling grids. The UperNet paper uses 512 channels; 256 keeps the decoder
#: small next to a Swin-B while the structures of a chest X-ray (lungs, heart, clavicles) are few.
DEFAULT_CHANNELS = 256
DEFAULT_POOL_SCALES = (1, 2, 3, 6)


def group_count(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """The most groups (at most ``max_groups``) that divide ``channels`` into groups of at least
    ``min_group_size`` channels (so a 1x1 map still has statistics to normalise over)."""
    candidates = [g for g in range(1, max_groups + 1) if channels % g == 0 and channels // g >= min_group_size]
    return max(candidates, default=1)


class ConvNormAct(nn.Sequential):
    """Conv (no bias: the norm re-centres) -> GroupNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.GroupNorm(group_count(out_channels), out_channels),
            nn.ReLU(inplace=True),
        )


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling on one map: context at several grid sizes, fused with the map."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int]):
        super().__init__()
        self.pool_scales = tuple(int(s) for s in pool_scales)
        self.stages = nn.ModuleList(ConvNormAct(in_channels, channels, 1) for _ in self.pool_scales)
        self.fuse = ConvNormAct(in_channels + len(self.pool_scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [_resize(stage(F.adaptive_avg_pool2d(x, scale)), x.shape[-2:])
                  for scale, stage in zip(self.pool_scales, self.stages)]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class UperNetDecoder(nn.Module):
    """UperNet over a feature pyramid (finest first): ``[B, C_i, H_i, W_i]`` maps -> ``[B, channels, H_0, W_0]``.

    Args:
        in_channels: channels of each pyramid level, finest first (``ArkModel.pyramid_channels``).
        channels: width of every decoder layer and of the output.
        pool_scales: grid sizes of the pyramid pooling module.

    ``config`` holds the options (not ``in_channels``, which the backbone determines), so a saved model
    records how to rebuild its decoder.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = DEFAULT_CHANNELS,
                 pool_scales: Sequence[int] = DEFAULT_POOL_SCALES):
        super().__init__()
        if not in_channels:
            raise ValueError("UperNetDecoder needs at least one pyramid level")
        self.in_channels = [int(c) for c in in_channels]
        self.channels = int(channels)
        self.config = dict(channels=self.channels, pool_scales=[int(s) for s in pool_scales])
        self.ppm = PyramidPooling(self.in_channels[-1], self.channels, pool_scales)
        self.laterals = nn.ModuleList(ConvNormAct(c, self.channels, 1) for c in self.in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvNormAct(self.channels, self.channels, 3) for _ in self.in_channels[:-1])
        self.fuse = ConvNormAct(len(self.in_channels) * self.channels, self.channels, 3)

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(pyramid) != len(self.in_channels):
            raise ValueError(f"UperNetDecoder built for {len(self.in_channels)} pyramid levels, got {len(pyramid)}")
        levels = [lateral(x) for lateral, x in zip(self.laterals, pyramid[:-1])] + [self.ppm(pyramid[-1])]
        for i in range(len(levels) - 2, -1, -1):  # top-down: each level receives the coarser one above it
            levels[i] = levels[i] + _resize(levels[i + 1], levels[i].shape[-2:])
        outputs = [conv(level) for conv, level in zip(self.fpn_convs, levels[:-1])] + [levels[-1]]
        finest = outputs[0].shape[-2:]
        return self.fuse(torch.cat([_resize(o, finest) for o in outputs], dim=1))


class SegmentationHead(nn.Module):
    """One dataset's output: a 1x1 conv from the decoder's maps to one logit map per structure,
    upsampled (bilinear) to the input's size."""

    def __init__(self, channels: int, num_outputs: int):
        super().__init__()
        self.classifier = nn.Conv2d(channels, num_outputs, kernel_size=1)

    def forward(self, decoded: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
        return _resize(self.classifier(decoded), image_size)
