"""One detection decoder (per dataset in Foundation X) in the DINO recipe.

Queries and where they start:

- *Mixed query selection* (``two_stage=True``, the default; :mod:`.proposals`): the encoder memory's
  top-``num_queries`` proposals (this decoder's own proposal head: classes differ per dataset) give the
  initial reference boxes, detached; the content queries are learned embeddings. With
  ``two_stage=False`` the reference boxes are learned too (Deformable DETR's single stage).
- *Contrastive denoising* (training only, when the loss targets are given; :mod:`.denoising`): noised
  copies of the ground-truth boxes (positives and negatives, in groups) run ahead of the matching queries
  in the same layers; the self-attention mask keeps the matching queries blind to them. Their outputs are
  split off into ``out["dn"]``.

A layer lets the queries attend to each other (self-attention), then sample the encoder memory around
their current box (deformable cross-attention, grid_sample: :mod:`.deformable`), then an FFN. After
every layer that layer's heads predict class logits and a box correction in inverse-sigmoid space
(iterative box refinement). *Look forward twice*: the box a layer outputs (and is trained on) is its
correction applied to the previous layer's refined box WITH its gradient, so layer i's box loss also
trains layer i-1; the reference the next layer attends around is detached, so the chain stops there
(the layer after next does not reach back further). Every layer's predictions are returned (the earlier
ones as auxiliary outputs for the loss).

Differences from the authors' DINO: pure PyTorch grid_sample instead of their compiled CUDA op; one
class and one box head per layer (DINO's default config shares one box head and one class head across
its decoder layers); padding slots of the denoising groups are hidden and left out of the loss; the
proposal head belongs to the dataset's decoder (Foundation X's per-dataset decoders); small default sizes
(:data:`arkx.tasks.detection.DECODER_DEFAULTS`), set bigger through ``model.branch_options["det_decoder"]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from arkx.errors import ArkxValueError
from arkx.models.detection.boxes import inverse_sigmoid
from arkx.models.detection.deformable import MultiScaleDeformableAttention
from arkx.models.detection.denoising import DenoisingQueries, make_denoising_queries
from arkx.models.detection.encoder import (
    MLP,
    EncoderOutput,
    FeedForward,
    _sine_features,
)
from arkx.models.detection.proposals import (
    BASE_SIDE,
    ProposalHead,
    prior_logit,
    select_proposals,
)

__all__ = ["MLP", "PRIOR_PROBABILITY", "DecoderLayer", "DetectionDecoder", "box_sine_embedding"]

# Focal-loss prior: every class starts at probability ~0.01, so the many background queries do
# not swamp the first steps of training.
PRIOR_PROBABILITY = 0.01


def box_sine_embedding(boxes: torch.Tensor, d_model: int) -> torch.Tensor:
    """``[..., 4]`` normalised boxes -> ``[..., 2 * d_model]`` sine features (d_model/2 per coordinate)."""
    return _sine_features(boxes * 2 * math.pi, d_model // 2).flatten(-2)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.self_attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(d_model)
        self.cross_attention = MultiScaleDeformableAttention(d_model, n_levels, n_heads, n_points)
        self.norm_cross = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)

    def forward(self, x, query_pos, reference_boxes, encoded: EncoderOutput, blocked: torch.Tensor | None = None):
        """``blocked``: bool ``[B, T, T]`` self-attention mask (True = may not attend) or None."""
        q = x + query_pos
        mask = None if blocked is None else blocked.repeat_interleave(self.n_heads, dim=0)  # [B*heads, T, T]
        x = self.norm_self(x + self.dropout(self.self_attention(q, q, x, attn_mask=mask, need_weights=False)[0]))
        levels = encoded.spatial_shapes.shape[0]
        references = reference_boxes[:, :, None, :].expand(-1, -1, levels, -1)
        attended = self.cross_attention(x + query_pos, references, encoded.memory, encoded.spatial_shapes)
        return self.ffn(self.norm_cross(x + self.dropout(attended)))


class DetectionDecoder(nn.Module):
    """Queries + deformable decoder layers + per-layer class/box heads (+ proposal head, denoising labels).

    forward(encoded: EncoderOutput, targets=None) -> dict:

    - ``logits`` [B, Q, num_classes], ``boxes`` [B, Q, 4] normalised cxcywh, ``aux`` = [dict(logits, boxes)
      for each earlier layer, first layer first]; ``Q = num_queries`` (two-stage: at most the number of
      encoder positions). This is all there is in eval mode without targets (inference).
    - ``enc`` (two-stage, in training mode or when targets are given): dict(logits, boxes) of the selected
      proposals, for their own loss term.
    - ``dn`` (training mode with targets whose batch has boxes, ``dn_number > 0``): dict(logits, boxes, aux)
      of the denoising slots plus what their loss needs: ``target_index``, ``positive``, ``groups``.

    ``targets``: per image ``dict(boxes normalised cxcywh, labels)`` (:func:`.boxes.make_targets`).
    Options: ``two_stage``; ``anchor_side`` (two-stage: side of a finest-level anchor, a fraction of the image);
    ``dn_number`` (about how many denoising slots per image; 0 = no denoising);
    ``dn_label_noise`` (a denoising label is replaced by a random class with half this probability);
    ``dn_box_noise`` (corner noise as a fraction of the half side; negatives get 1-2x, positives 0-1x).
    """

    def __init__(self, num_classes: int, d_model: int = 256, num_queries: int = 100, n_layers: int = 6,
                 n_heads: int = 8, n_points: int = 4, n_levels: int = 4, ffn_dim: int = 1024,
                 dropout: float = 0.0, two_stage: bool = True, dn_number: int = 100, dn_label_noise: float = 0.5,
                 dn_box_noise: float = 0.4, anchor_side: float = BASE_SIDE):
        super().__init__()
        if num_classes < 1 or num_queries < 1 or n_layers < 1:
            raise ArkxValueError(f"detection decoder: num_classes={num_classes}, num_queries={num_queries} and "
                                 f"n_layers={n_layers} must all be at least 1")
        self.num_classes, self.d_model, self.num_queries = num_classes, d_model, num_queries
        self.two_stage, self.dn_number = bool(two_stage), int(dn_number)
        self.dn_label_noise, self.dn_box_noise = float(dn_label_noise), float(dn_box_noise)
        self.query_content = nn.Embedding(num_queries, d_model)
        if self.two_stage:
            self.proposals = ProposalHead(num_classes, d_model, prior_logit(PRIOR_PROBABILITY), anchor_side)
        else:
            self.reference_logits = nn.Embedding(num_queries, 4)  # inverse-sigmoid of the initial boxes
        if self.dn_number > 0:
            self.label_embedding = nn.Embedding(num_classes, d_model)  # content of a denoising slot: its class
        self.query_pos_head = MLP(2 * d_model, d_model, d_model, 2)
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_levels, n_heads, n_points, ffn_dim, dropout)
                                    for _ in range(n_layers))
        self.class_heads = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(n_layers))
        self.box_heads = nn.ModuleList(MLP(d_model, d_model, 4, 3) for _ in range(n_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Learned reference boxes (single stage) spread over the image (centres uniform, sides 0.1-0.3); class
        logits at the prior; box corrections start small so the first predictions are the reference boxes."""
        if not self.two_stage:
            with torch.no_grad():
                centres = torch.rand(self.num_queries, 2)
                sides = 0.1 + 0.2 * torch.rand(self.num_queries, 2)
                self.reference_logits.weight.copy_(inverse_sigmoid(torch.cat([centres, sides], dim=-1)))
        nn.init.normal_(self.query_content.weight)
        for head in self.class_heads:
            nn.init.constant_(head.bias, prior_logit(PRIOR_PROBABILITY))
        for head in self.box_heads:
            # Small, not zero: a zero last layer would leave the earlier layers without gradient at step 0.
            nn.init.normal_(head.layers[-1].weight, std=1e-3)
            nn.init.zeros_(head.layers[-1].bias)

    # -- queries ---------------------------------------------------------------------------------------
    def initial_queries(self, encoded: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
        """(content [B, Q, d], reference boxes [B, Q, 4], selected proposals or None)."""
        batch = encoded.memory.shape[0]
        if not self.two_stage:
            content = self.query_content.weight[None].expand(batch, -1, -1)
            return content, self.reference_logits.weight.sigmoid()[None].expand(batch, -1, -1), None
        proposals = select_proposals(*self.proposals(encoded.memory, encoded.spatial_shapes), self.num_queries)
        count = proposals["boxes"].shape[1]
        content = self.query_content.weight[:count][None].expand(batch, -1, -1)
        # detached: the decoder's losses refine the boxes, the proposals are trained by their own loss
        return content, proposals["boxes"].detach(), proposals

    def denoising_queries(self, targets: list[dict] | None, num_matching: int) -> DenoisingQueries | None:
        """The batch's denoising part (training mode with targets only)."""
        if targets is None or not self.training or self.dn_number <= 0:
            return None
        return make_denoising_queries(targets, self.num_classes, num_matching, self.dn_number,
                                      self.dn_label_noise, self.dn_box_noise)

    # -- layers ----------------------------------------------------------------------------------------
    def run_layers(self, content: torch.Tensor, reference: torch.Tensor, encoded: EncoderOutput,
                   blocked: torch.Tensor | None) -> list[dict]:
        """Every layer's dict(logits, boxes), with iterative refinement and look-forward-twice."""
        x, previous = content, reference  # ``previous``: the last refined box WITH its gradient
        outputs = []
        for layer, class_head, box_head in zip(self.layers, self.class_heads, self.box_heads):
            query_pos = self.query_pos_head(box_sine_embedding(reference, self.d_model))
            x = layer(x, query_pos, reference, encoded, blocked)
            correction = box_head(x)
            # look forward twice: this layer's box carries the previous layer's gradient (same value as
            # refining the detached reference)...
            outputs.append(dict(logits=class_head(x), boxes=(correction + inverse_sigmoid(previous)).sigmoid()))
            # ...while the box handed on is refined from the detached reference, so layer i+1's loss reaches
            # layer i but not layer i-1; the next layer attends around it detached.
            previous = (correction + inverse_sigmoid(reference)).sigmoid()
            reference = previous.detach()
        return outputs

    def forward(self, encoded: EncoderOutput, targets: list[dict] | None = None) -> dict:
        content, reference, proposals = self.initial_queries(encoded)
        dn = self.denoising_queries(targets, content.shape[1])
        blocked = None
        if dn is not None:
            content = torch.cat([self.label_embedding(dn.labels).to(content.dtype), content], dim=1)
            reference = torch.cat([dn.boxes.to(reference.dtype), reference], dim=1)
            blocked = dn.attention_mask
        layers = self.run_layers(content, reference, encoded, blocked)
        split = dn.size if dn is not None else 0
        matching = [{k: v[:, split:] for k, v in out.items()} for out in layers]
        result = dict(logits=matching[-1]["logits"], boxes=matching[-1]["boxes"], aux=matching[:-1])
        if proposals is not None and (self.training or targets is not None):
            result["enc"] = proposals
        if dn is not None:
            denoising = [{k: v[:, :split] for k, v in out.items()} for out in layers]
            result["dn"] = dict(logits=denoising[-1]["logits"], boxes=denoising[-1]["boxes"], aux=denoising[:-1],
                                target_index=dn.target_index, positive=dn.positive, groups=dn.groups)
        return result
