"""What the model's backbone computes for one batch: pooled features, the embedding and a feature pyramid.

:class:`Features` is the record every head reads (:meth:`arkx.models.ark.ArkModel.forward_features`):
classification heads the projection, the segmentation decoder and the detection encoder the pyramid.

The pyramid comes from timm's ``forward_intermediates`` (timm 1.0.x), which Swin, ConvNeXt, ResNet,
EfficientNet, DenseNet and ViT all implement; its entries are listed in the backbone's ``feature_info``
(channels and nominal stride of each). :func:`pyramid_levels` picks one entry per stride (the deepest
block of that stride), leaving out the stride-2 stems of CNNs, so a Swin or a ResNet both give the
familiar four levels at strides 4, 8, 16 and 32; a plain ViT gives one level at stride 16.

Input sizes: CNNs accept any size large enough for their strides; a map's side is the input's divided by
its stride, rounded up (ResNet, Swin) or down (ConvNeXt) by the architecture, so heads that return
input-sized outputs resize to ``Features.image_size`` rather than multiply by the stride.
A Swin built with its default ``strict_img_size=True`` accepts only its ``img_size``; built with
``strict_img_size=False`` (``model.backbone_kwargs``) it accepts any multiple of its patch size (4),
pads each stage to whole windows and rounds odd sides up when it merges patches. Its window sizes stay
those chosen for ``img_size``, so build it at the size it will mostly see.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..errors import ArkxValueError

#: Feature maps finer than this stride (the stems of CNNs) are left out of the pyramid: they cost memory
#: at full resolution and the decoders of arkx read strides 4 and coarser.
MIN_PYRAMID_STRIDE = 4


class Features(NamedTuple):
    """One forward pass of the backbone.

    Attributes:
        pooled: ``[B, num_features]``, the backbone's pooled output (``backbone(x)``).
        projection: ``[B, embed_dim]``, the projector's output (the Ark embedding; classification heads read it).
        pyramid: NCHW maps, finest first (strides :attr:`ArkModel.pyramid_strides`), or None when not asked for.
        image_size: ``(H, W)`` of the input, so dense heads can return outputs at the input's size.
        branches: outputs of shared branches computed from this pass (``det_encoder``, ``seg_decoder``), kept
            so that a head and a consistency site reading the same branch run it once (:func:`branch_output`).
    """

    pooled: torch.Tensor
    projection: torch.Tensor
    pyramid: list[torch.Tensor] | None = None
    image_size: tuple[int, int] | None = None
    branches: dict | None = None


def branch_output(features: Features, name: str, compute):
    """The output of shared branch ``name`` for ``features``: ``compute()`` the first time, then the same
    tensor (a head and a consistency site of one pass share it, and its gradient)."""
    if features.branches is None:
        return compute()
    if name not in features.branches:
        features.branches[name] = compute()
    return features.branches[name]


def pyramid_levels(backbone: nn.Module) -> list[int]:
    """Indices into ``backbone.feature_info`` (and ``forward_intermediates``' outputs) of the pyramid levels:
    for each stride of at least :data:`MIN_PYRAMID_STRIDE`, its last entry, finest first."""
    info = _feature_info(backbone)
    last_of_stride: dict[int, int] = {}
    for index, entry in enumerate(info):
        if int(entry["reduction"]) >= MIN_PYRAMID_STRIDE:
            last_of_stride[int(entry["reduction"])] = index
    if not last_of_stride:
        raise ArkxValueError(f"backbone {_name(backbone)}: no feature map of stride >= {MIN_PYRAMID_STRIDE} "
                             "in its feature_info; it cannot feed a segmentation or detection head")
    return [last_of_stride[stride] for stride in sorted(last_of_stride)]


def pyramid_channels(backbone: nn.Module) -> list[int]:
    info = _feature_info(backbone)
    return [int(info[i]["num_chs"]) for i in pyramid_levels(backbone)]


def pyramid_strides(backbone: nn.Module) -> list[int]:
    info = _feature_info(backbone)
    return [int(info[i]["reduction"]) for i in pyramid_levels(backbone)]


def backbone_features(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pooled features and the pyramid from ONE pass: ``forward_intermediates`` returns the final features
    with the intermediates, and ``forward_head`` pools them exactly as ``backbone(x)`` does (the backbone
    has no classifier: ``num_classes=0``)."""
    if not hasattr(backbone, "forward_intermediates"):
        raise ArkxValueError(f"backbone {_name(backbone)} has no forward_intermediates (timm); it cannot feed "
                             "a segmentation or detection head")
    final, maps = backbone.forward_intermediates(x, indices=pyramid_levels(backbone), output_fmt="NCHW",
                                                 intermediates_only=False)
    return backbone.forward_head(final), list(maps)


def _feature_info(backbone: nn.Module) -> list[dict]:
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise ArkxValueError(f"backbone {_name(backbone)} declares no feature_info (timm); it has no feature "
                             "pyramid for a segmentation or detection head")
    return list(info)


def _name(backbone: nn.Module) -> str:
    return getattr(backbone, "arkx_backbone", {}).get("name", type(backbone).__name__)
