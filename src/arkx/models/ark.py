"""The Ark model: one shared backbone, a projector, and one head per dataset (no label merging).

``student(x, head)`` returns ``(projection, logits)``: the projection feeds the consistency loss
and is the embedding released for reuse; heads sit on the projection, as in the authors' model,
so the embedding is exactly what every head was trained to read.
Heads are kept in a ``ModuleDict`` keyed by dataset head name, so incremental pretraining adds a
head and nothing else changes.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..tasks import Task
from .backbones import create_backbone


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":  # MICCAI Ark-6: Linear(enc->proj)-ReLU-Linear(proj->proj), so their released weights fit
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim))
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown projector kind {kind!r}; expected linear, mlp or none")


class ArkModel(nn.Module):
    def __init__(self, backbone: nn.Module, heads: Iterable[Task], projector: str = "linear",
                 projector_dim: int = 1376):
        super().__init__()
        self.backbone = backbone
        feat_dim = int(backbone.num_features)
        self.embed_dim = feat_dim if projector == "none" else projector_dim
        self.projector = build_projector(projector, feat_dim, self.embed_dim)
        self.heads = nn.ModuleDict()
        self.head_specs: dict[str, Task] = {}
        for spec in heads:
            self.add_head(spec)

    def add_head(self, spec: Task) -> None:
        if spec.name in self.heads:
            raise ValueError(f"head {spec.name!r} exists already")
        self.heads[spec.name] = nn.Linear(self.embed_dim, len(spec.label_names))
        self.head_specs[spec.name] = spec

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[B, num_features]``."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding (projector output) ``[B, embed_dim]``."""
        return self.projector(self.backbone(x))

    def forward(self, x: torch.Tensor, head: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.embed(x)
        return z, (self.heads[head](z) if head is not None else None)

    def head_config(self) -> list[dict]:
        return [dict(name=s.name, kind=s.kind, label_names=list(s.label_names)) for s in self.head_specs.values()]


def build_model(model_cfg, heads: Iterable[Task]) -> ArkModel:
    """An ArkModel from a :class:`arkx.config.ModelConfig`."""
    backbone = create_backbone(model_cfg.backbone, model_cfg.checkpoint,
                               checkpoint_resize=model_cfg.checkpoint_resize, **model_cfg.backbone_kwargs)
    return ArkModel(backbone, heads, projector=model_cfg.projector, projector_dim=model_cfg.projector_dim)
