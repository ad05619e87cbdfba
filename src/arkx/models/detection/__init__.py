"""A DETR-family detector in plain PyTorch: deformable encoder, per-dataset decoders, set loss.

Boxes inside the model are normalised ``(cx, cy, w, h)`` in [0, 1]; :func:`make_targets` and
:func:`postprocess` convert from/to pixel ``xyxy`` at the borders.
"""

from __future__ import annotations

from torch import nn

from arkx.models.detection.boxes import inverse_sigmoid, make_targets, normalised_to_pixels, pixels_to_normalised
from arkx.models.detection.decoder import DetectionDecoder
from arkx.models.detection.deformable import MultiScaleDeformableAttention, deformable_sample
from arkx.models.detection.encoder import DeformableEncoder, EncoderOutput
from arkx.models.detection.losses import SetCriterion
from arkx.models.detection.matcher import HungarianMatcher
from arkx.models.detection.postprocess import postprocess

__all__ = ["Detector", "DeformableEncoder", "EncoderOutput", "DetectionDecoder", "HungarianMatcher",
           "SetCriterion", "MultiScaleDeformableAttention", "deformable_sample", "postprocess",
           "make_targets", "pixels_to_normalised", "normalised_to_pixels", "inverse_sigmoid"]


class Detector(nn.Module):
    """Encoder + one decoder: forward(pyramid: list[Tensor NCHW]) -> dict(logits, boxes, aux).

    In Foundation X the encoder is shared and each dataset has its own decoder; this class is the
    single-dataset composition (and what the tests train).
    """

    def __init__(self, in_channels: list[int], num_classes: int, d_model: int = 256, num_queries: int = 100,
                 encoder_layers: int = 6, decoder_layers: int = 6, n_heads: int = 8, n_points: int = 4,
                 ffn_dim: int = 1024, dropout: float = 0.0):
        super().__init__()
        self.encoder = DeformableEncoder(in_channels, d_model, encoder_layers, n_heads, n_points, ffn_dim, dropout)
        self.decoder = DetectionDecoder(num_classes, d_model, num_queries, decoder_layers, n_heads, n_points,
                                        n_levels=len(in_channels), ffn_dim=ffn_dim, dropout=dropout)

    def forward(self, pyramid):
        return self.decoder(self.encoder(pyramid))
