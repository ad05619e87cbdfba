"""The DINO detector in plain PyTorch: deformable encoder, per-dataset decoders, set loss.

The recipe Foundation X uses for its localization branch (DINO: DETR with improved denoising anchor
boxes): a multi-scale deformable encoder (:mod:`.encoder`, shared by the datasets), and per dataset a
decoder (:mod:`.decoder`) with mixed query selection (two-stage proposals from the encoder memory,
:mod:`.proposals`), contrastive denoising queries in training (:mod:`.denoising`), iterative box
refinement with look-forward-twice, and the set loss (:mod:`.losses`: Hungarian matching, focal + L1 +
GIoU on the final, auxiliary, proposal and denoising outputs). Deformable attention samples with
``grid_sample`` (:mod:`.deformable`) where the authors use a compiled CUDA op: same arithmetic, runs on
CPU, nothing to build.

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
    """Encoder + one decoder: forward(pyramid: list[Tensor NCHW], targets=None) -> the decoder's dict
    (``logits``, ``boxes``, ``aux``; ``enc`` and ``dn`` in training: :class:`DetectionDecoder`).

    In Foundation X the encoder is shared and each dataset has its own decoder; this class is the
    single-dataset composition (and what the tests train). ``decoder_options``: the decoder's DINO options
    (``two_stage``, ``dn_number``, ``dn_label_noise``, ``dn_box_noise``).
    """

    def __init__(self, in_channels: list[int], num_classes: int, d_model: int = 256, num_queries: int = 100,
                 encoder_layers: int = 6, decoder_layers: int = 6, n_heads: int = 8, n_points: int = 4,
                 ffn_dim: int = 1024, dropout: float = 0.0, **decoder_options):
        super().__init__()
        self.encoder = DeformableEncoder(in_channels, d_model, encoder_layers, n_heads, n_points, ffn_dim, dropout)
        self.decoder = DetectionDecoder(num_classes, d_model, num_queries, decoder_layers, n_heads, n_points,
                                        n_levels=len(in_channels), ffn_dim=ffn_dim, dropout=dropout,
                                        **decoder_options)

    def forward(self, pyramid, targets=None):
        return self.decoder(self.encoder(pyramid), targets=targets)
