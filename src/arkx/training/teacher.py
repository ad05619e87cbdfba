"""The teacher: an exponential moving average of the student, never trained by gradients.

It starts as an exact copy of the student (the authors' teacher heads/projector started from a
different random init) and is updated once per dataset epoch with θ_t ← m·θ_t + (1−m)·θ_s for
parameters **and** floating-point buffers (BatchNorm statistics; the authors' Foundation X code
skipped buffers). Integer buffers (e.g. ``num_batches_tracked``, index tables) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In-place EMA of every parameter and floating buffer (one fused foreach op per group)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(s_params) ^ set(t_params))[:5]
        raise ValueError(f"teacher and student differ in parameters: {missing}")
    t_float, s_float = [], []
    for name, tp in t_params.items():
        t_float.append(tp)
        s_float.append(s_params[name].detach())
    t_bufs = dict(teacher.named_buffers())
    for name, sb in student.named_buffers():
        tb = t_bufs[name]
        if tb.is_floating_point():
            t_float.append(tb)
            s_float.append(sb.detach())
        else:
            tb.copy_(sb)
    if t_float:
        # lerp_: t + (s - t) * (1 - m) == m * t + (1 - m) * s
        torch._foreach_lerp_(t_float, s_float, 1.0 - momentum)
