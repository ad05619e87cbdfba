"""One detection decoder (per dataset in Foundation X): queries that refine boxes layer by layer.

Each query owns a learned content vector and a learned reference box. A layer lets the queries
attend to each other (self-attention), then sample the encoder memory around their current box
(deformable cross-attention), then an FFN. After every layer that layer's own heads predict class
logits and a box *correction* added to the reference in inverse-sigmoid space (iterative box
refinement); the refined box, detached, is the next layer's reference. Every layer's predictions are
returned (the earlier ones as auxiliary outputs for the loss).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from arkx.models.detection.boxes import inverse_sigmoid
from arkx.models.detection.deformable import MultiScaleDeformableAttention
from arkx.models.detection.encoder import EncoderOutput, FeedForward, _sine_features

# Focal-loss prior: every class starts at probability ~0.01, so the many background queries do
# not swamp the first steps of training.
PRIOR_PROBABILITY = 0.01


class MLP(nn.Module):
    """``n_layers`` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, n_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


def box_sine_embedding(boxes: torch.Tensor, d_model: int) -> torch.Tensor:
    """``[..., 4]`` normalised boxes -> ``[..., 2 * d_model]`` sine features (d_model/2 per coordinate)."""
    return _sine_features(boxes * 2 * math.pi, d_model // 2).flatten(-2)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(d_model)
        self.cross_attention = MultiScaleDeformableAttention(d_model, n_levels, n_heads, n_points)
        self.norm_cross = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)

    def forward(self, x, query_pos, reference_boxes, encoded: EncoderOutput):
        q = x + query_pos
        x = self.norm_self(x + self.dropout(self.self_attention(q, q, x, need_weights=False)[0]))
        levels = encoded.spatial_shapes.shape[0]
        references = reference_boxes[:, :, None, :].expand(-1, -1, levels, -1)
        attended = self.cross_attention(x + query_pos, references, encoded.memory, encoded.spatial_shapes)
        return self.ffn(self.norm_cross(x + self.dropout(attended)))


class DetectionDecoder(nn.Module):
    """Queries + deformable decoder layers + per-layer class/box heads.

    forward(encoded: EncoderOutput) -> dict(logits [B, Q, num_classes], boxes [B, Q, 4] normalised
    cxcywh, aux=[dict(logits, boxes) for each earlier layer, first layer first]).
    """

    def __init__(self, num_classes: int, d_model: int = 256, num_queries: int = 100, n_layers: int = 6,
                 n_heads: int = 8, n_points: int = 4, n_levels: int = 4, ffn_dim: int = 1024,
                 dropout: float = 0.0):
        super().__init__()
        self.num_classes, self.d_model, self.num_queries = num_classes, d_model, num_queries
        self.query_content = nn.Embedding(num_queries, d_model)
        self.reference_logits = nn.Embedding(num_queries, 4)  # inverse-sigmoid of the initial boxes
        self.query_pos_head = MLP(2 * d_model, d_model, d_model, 2)
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_levels, n_heads, n_points, ffn_dim, dropout)
                                    for _ in range(n_layers))
        self.class_heads = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(n_layers))
        self.box_heads = nn.ModuleList(MLP(d_model, d_model, 4, 3) for _ in range(n_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference boxes spread over the image (centres uniform, sides 0.1-0.3); class logits at the prior;
        box corrections start small so the first predictions are the reference boxes."""
        with torch.no_grad():
            centres = torch.rand(self.num_queries, 2)
            sides = 0.1 + 0.2 * torch.rand(self.num_queries, 2)
            self.reference_logits.weight.copy_(inverse_sigmoid(torch.cat([centres, sides], dim=-1)))
        nn.init.normal_(self.query_content.weight)
        prior_bias = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        for head in self.class_heads:
            nn.init.constant_(head.bias, prior_bias)
        for head in self.box_heads:
            # Small, not zero: a zero last layer would leave the earlier layers without gradient at step 0.
            nn.init.normal_(head.layers[-1].weight, std=1e-3)
            nn.init.zeros_(head.layers[-1].bias)

    def forward(self, encoded: EncoderOutput) -> dict:
        batch = encoded.memory.shape[0]
        x = self.query_content.weight[None].expand(batch, -1, -1)
        reference = self.reference_logits.weight.sigmoid()[None].expand(batch, -1, -1)
        outputs = []
        for layer, class_head, box_head in zip(self.layers, self.class_heads, self.box_heads):
            query_pos = self.query_pos_head(box_sine_embedding(reference, self.d_model))
            x = layer(x, query_pos, reference, encoded)
            boxes = (box_head(x) + inverse_sigmoid(reference)).sigmoid()
            outputs.append(dict(logits=class_head(x), boxes=boxes))
            # The next layer refines this box, but the gradient of each layer's loss stays in its layer.
            reference = boxes.detach()
        return dict(logits=outputs[-1]["logits"], boxes=outputs[-1]["boxes"], aux=outputs[:-1])
