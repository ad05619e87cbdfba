"""Image-level classification kinds: ``multilabel`` (a sigmoid per label) and ``multiclass`` (softmax).

The head is one linear layer on the model's projection (the Ark layout: every head reads the embedding
the consistency loss shapes). Targets are the raw labels of the batch with the dataset's
uncertain-label policy applied; missing labels (NaN) never count as negatives (see
:mod:`arkx.training.losses`). Scores are AUROC per label (:mod:`arkx.evaluation.metrics`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .base import Task, TaskKind, register_kind


class _Classification(TaskKind):
    head_attr = "heads"
    needs_pyramid = False
    loader_targets = ("labels",)

    def build_head(self, task: Task, model: Any) -> nn.Module:
        return nn.Linear(model.embed_dim, task.num_outputs)

    def head_output(self, model: Any, features: Any, task: Task, targets: Any = None) -> torch.Tensor:
        """Logits ``[B, L]`` from the projection (``features``: a Features tuple or the projection itself);
        ``targets`` is not used."""
        projection = getattr(features, "projection", features)
        return model.heads[task.name](projection)

    def targets(self, labels: torch.Tensor, policy: str, generator: torch.Generator | None = None,
                lsr_ones: tuple[float, float] = (0.55, 0.85), lsr_zeros: tuple[float, float] = (0.0, 0.3)
                ) -> torch.Tensor:
        """The batch's raw labels with the uncertain-label ``policy`` applied (on the CPU copy: its random
        draws come from a CPU generator, so CPU and GPU runs see the same values)."""
        from ..data.transforms import apply_uncertain_policy

        return apply_uncertain_policy(labels, policy, generator, lsr_ones, lsr_zeros)

    def batch_targets(self, batch: Any, data: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.targets(batch.labels, data.uncertain, generator, data.lsr_ones_range, data.lsr_zeros_range)

    def eval_targets(self, batch: Any) -> np.ndarray:
        return batch.labels.cpu().numpy()

    def score(self, predictions, targets, task: Task):
        """AUROC per label (an :class:`arkx.evaluation.metrics.AucResult`; ``metric`` "auc"); predictions and
        targets are arrays or lists of per-batch arrays."""
        from ..evaluation.metrics import task_auc

        scores = np.concatenate([np.asarray(p) for p in predictions]) if isinstance(predictions, list) else predictions
        labels = np.concatenate([np.asarray(t) for t in targets]) if isinstance(targets, list) else targets
        return task_auc(self.name, np.asarray(scores), np.asarray(labels), task.label_names)


class MultilabelKind(_Classification):
    name = "multilabel"

    def loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from ..training.losses import masked_bce

        return masked_bce(output, targets)

    def loss_count(self, targets: torch.Tensor) -> torch.Tensor:
        return (~torch.isnan(targets)).sum()  # masked_bce's mean runs over the labelled entries

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output.float())


class MulticlassKind(_Classification):
    name = "multiclass"

    def loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from ..training.losses import masked_cross_entropy

        return masked_cross_entropy(output, targets)

    def loss_count(self, targets: torch.Tensor) -> torch.Tensor:
        return (~torch.isnan(targets).any(dim=1)).sum()  # masked_cross_entropy's mean runs over labelled rows

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output.float(), dim=1)


register_kind(MultilabelKind())
register_kind(MulticlassKind())
