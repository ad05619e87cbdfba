"""Optimizer with explicit parameter groups.

Every trainable parameter lands in exactly one group (the authors' Foundation X groups left the
detector's output heads out, so they never trained); :func:`check_param_groups` proves it and the
engine calls it at start-up.
"""

from __future__ import annotations

import torch
from torch import nn

NO_DECAY_NAME_PARTS = ("norm", "relative_position_bias_table", "pos_embed", "cls_token", "absolute_pos_embed")


def wants_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Matrices and kernels decay; biases, norms and position tables do not (common practice)."""
    return param.ndim > 1 and not any(part in name for part in NO_DECAY_NAME_PARTS)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if wants_weight_decay(name, param) else no_decay).append(param)
    groups = [dict(params=decay, weight_decay=weight_decay, name="decay"),
              dict(params=no_decay, weight_decay=0.0, name="no_decay")]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg, fused: bool = False) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    extra = {"fused": True} if fused else {}
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                              **extra)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, **extra)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    check_param_groups(model, opt)
    return opt


def check_param_groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise if a trainable parameter is in no group or in several."""
    seen: dict[int, int] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen[id(p)] = seen.get(id(p), 0) + 1
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    repeated = [names.get(i, "?") for i, c in seen.items() if c > 1]
    if missing or repeated:
        raise RuntimeError(f"optimizer groups are wrong: not in any group {missing[:5]}, in several {repeated[:5]}")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
