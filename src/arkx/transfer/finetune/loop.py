"""One training epoch and one evaluation of a fine-tuning run, for any task kind.

The loop never asks which kind it trains: the task's :class:`arkx.tasks.TaskKind` turns a batch into
loss targets, computes the loss, turns outputs into predictions and scores them. The geometry is
shared: the augmentation parameters drawn for the student view move the masks and boxes too
(:mod:`arkx.data.geometry`), and evaluation resizes them with the image.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...tasks import get_kind
from .settings import FinetuneConfig

#: the parameter groups a head-only fine-tuning keeps frozen (everything the initial model brought)
FROZEN_IN_HEAD_MODE = ("backbone", "projector")


def trainable_parameters(model, mode: str, frozen_groups=FROZEN_IN_HEAD_MODE) -> list[torch.nn.Parameter]:
    """``head``: the ``frozen_groups`` (default: backbone and projector; a fine-tuning adds the shared branches
    the initial model brought, e.g. a Foundation X ``seg_decoder``) are frozen (``requires_grad=False``), the new
    head (and a new decoder it needs) trains; ``full``: everything trains. Groups are selected by name
    (:meth:`arkx.models.ark.ArkModel.parameter_groups`), never by matching parameter names."""
    frozen = set()
    if mode == "head":
        groups = model.parameter_groups()
        frozen = {name for group in frozen_groups for name in groups.get(group, [])}
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    return [p for p in model.parameters() if p.requires_grad]


def set_train_mode(model, mode: str) -> None:
    """Train mode, except the frozen parts (``head`` mode: the model's children whose parameters are all
    frozen, see :func:`trainable_parameters`) stay in eval mode (no dropout / drop-path, no BatchNorm
    statistics updates: frozen means their outputs do not change)."""
    model.train()
    if mode == "head":
        for child in model.children():
            parameters = list(child.parameters())
            if parameters and not any(p.requires_grad for p in parameters):
                child.eval()


def train_one_epoch(model, loader, data, task, optimizer, cfg: FinetuneConfig, image_size: int, epoch: int,
                    device: torch.device) -> tuple[float, float]:
    """One pass over the train loader; returns (mean loss, learning rate at the epoch's start)."""
    from ...data.geometry import warp_batch
    from ...data.transforms import sample_augment_params, student_view
    from ...training.optim import set_learning_rate
    from ...training.schedule import learning_rate

    kind = get_kind(task.kind)
    set_train_mode(model, cfg.mode)
    loader.sampler.set_seed(cfg.seed * 100_003 + epoch)  # a fresh, reproducible order every epoch
    aug_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 1)
    label_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 2)
    iterations = len(loader)
    losses, first_lr = [], None
    for i, batch in enumerate(loader):
        lr = learning_rate(epoch + i / iterations, base=cfg.lr, rounds=cfg.epochs, warmup=cfg.warmup_epochs,
                           schedule="cosine", iteration=1.0 / iterations)
        first_lr = lr if first_lr is None else first_lr
        set_learning_rate(optimizer, lr)
        params = sample_augment_params(len(batch), cfg.augment, aug_gen)
        x = student_view(batch.images.to(device), image_size, params, cfg.augment.border)
        view = warp_batch(batch, params, image_size)  # masks and boxes moved as the image was
        targets = kind.batch_targets(view.to(device), data, label_gen)
        _, output = model.run_task(x, task, targets)  # targets: e.g. the detector's denoising queries
        loss = kind.loss(output, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)), float(first_lr)


@torch.no_grad()
def evaluate(model, loader, data, image_size: int, device: torch.device, task=None):
    """The task's score of ``model`` on one split (``.mean``, ``.metric``, ``.as_dict()``): AUC per label,
    Dice per structure or mAP per class. ``task`` defaults to the dataset's classification task."""
    from ...evaluation.predict import score_task

    task = task if task is not None else _classification_task(data)
    return score_task(model, loader, task, device, image_size)


def _classification_task(data):
    from ...tasks import Task

    return Task(data.name, data.task.kind, tuple(data.task.label_names))


def is_better(value: float, best: float | None) -> bool:
    """Strictly higher val score; a defined score beats an undefined (NaN) one, NaN never beats anything."""
    if best is None:
        return True
    if math.isnan(value):
        return False
    return math.isnan(best) or value > best
