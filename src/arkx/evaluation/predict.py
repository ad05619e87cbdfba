"""Running a model over a loader to get scores (sigmoid or softmax per head) and targets."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..data.transforms import eval_view


@torch.no_grad()
def predict_head(model, loader, head: str, kind: str, device: torch.device, image_size: int,
                 autocast=contextlib.nullcontext, channels_last: bool = False):
    """``(scores [n, L], targets [n, L], rows [n])`` for one head over an eval loader."""
    from ..tasks import get_kind

    task_kind = get_kind(kind)
    was_training = model.training
    model.eval()
    scores, targets, rows = [], [], []
    try:
        for batch in loader:
            x = eval_view(batch.images.to(device, non_blocking=True), image_size)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                _, logits = model(x, head)
            probs = task_kind.predict(logits)
            scores.append(probs.cpu().numpy())
            targets.append(batch.labels.numpy())
            rows.append(batch.rows.numpy())
    finally:
        model.train(was_training)
    return np.concatenate(scores), np.concatenate(targets), np.concatenate(rows)


def score_task(model, loader, task, device: torch.device, image_size: int,
               autocast=contextlib.nullcontext, channels_last: bool = False):
    """The score of ``task`` (any kind) of ``model`` over an eval loader: :func:`predict_task`'s predictions
    and targets, scored once by the kind (AUC, mAP40, Dice)."""
    from ..tasks import get_kind

    predictions, targets = predict_task(model, loader, task, device, image_size, autocast, channels_last)
    return get_kind(task.kind).score(predictions, targets, task)


@torch.no_grad()
def predict_task(model, loader, task, device: torch.device, image_size: int,
                 autocast=contextlib.nullcontext, channels_last: bool = False) -> tuple[list, list]:
    """``(predictions, targets)`` of ``task`` over an eval loader, one entry per batch: the kind's ``predict``
    (on the CPU) and ``eval_targets`` of the batch resized to the evaluation view's grid (what the kind's
    ``score`` takes; lists from several loaders, e.g. the ranks of a job, concatenate)."""
    from ..data.geometry import resize_batch
    from ..tasks import get_kind

    kind = get_kind(task.kind)
    was_training = model.training
    model.eval()
    predictions, targets = [], []
    try:
        for batch in loader:
            x = eval_view(batch.images.to(device, non_blocking=True), image_size)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                _, output = model.run_task(x, task)
            predictions.append(_to_cpu(kind.predict(output)))
            targets.append(kind.eval_targets(resize_batch(batch, image_size)))
    finally:
        model.train(was_training)
    return predictions, targets


def _to_cpu(value):
    """Tensors (also inside lists and dicts) as float32 CPU arrays where floating (bf16 has no numpy dtype)."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return (value.float() if value.is_floating_point() else value).cpu().numpy()
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value
