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
