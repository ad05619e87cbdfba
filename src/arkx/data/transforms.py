"""Batch transforms that run where the batch is (GPU in training, CPU in tests and the demo).

Images arrive as uint8 ``[B, 1, S, S]`` from the prepared cache. The student view is a random
resized crop with small rotation/shift plus brightness/contrast/gamma; the teacher view is the
resized original (Ark+). Per-sample random parameters are drawn on the CPU from a seeded
``torch.Generator`` and applied as one ``affine_grid``/``grid_sample`` call per batch: torchvision's
v2 transforms draw one parameter set per call, so per-sample augmentation of a GPU batch would
need a Python loop per image. Drawing on the CPU keeps the random stream identical on every device.

One input normalisation for every dataset and head, declared once here (the authors' Foundation X
fed three different normalisations into one backbone).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: ImageNet statistics (the authors' choice, and what timm backbones expect), applied to the
#: grayscale image replicated on three channels.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize(gray01: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` in [0, 1] -> ``[B, 3, H, W]`` normalised with :data:`MEAN`/:data:`STD`."""
    mean = torch.tensor(MEAN, device=gray01.device, dtype=gray01.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=gray01.device, dtype=gray01.dtype).view(1, 3, 1, 1)
    return (gray01.expand(-1, 3, -1, -1) - mean) / std


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 1, S, S]`` (or ``[B, S, S]``) -> float32 ``[B, 1, S, S]`` in [0, 1]."""
    if images_u8.dim() == 3:
        images_u8 = images_u8.unsqueeze(1)
    return images_u8.float().div_(255.0)


def eval_view(images_u8: torch.Tensor, size: int) -> torch.Tensor:
    """The whole image resized to ``size`` and normalised (evaluation and the Ark+ teacher view)."""
    x = to_unit(images_u8)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return normalize(x)


def sample_augment_params(batch: int, cfg, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-sample augmentation parameters on the CPU (so CPU and GPU runs see the same stream)."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch, generator=generator)

    area = uniform(*cfg.crop_scale)
    log_ratio = uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    ratio = torch.exp(log_ratio)
    scale_x = torch.sqrt(area * ratio).clamp(max=1.0)
    scale_y = torch.sqrt(area / ratio).clamp(max=1.0)
    # Crop centre anywhere the crop still fits, plus a small extra shift.
    cx = (1.0 - scale_x) * uniform(-1.0, 1.0) + uniform(-cfg.translate, cfg.translate) * 2
    cy = (1.0 - scale_y) * uniform(-1.0, 1.0) + uniform(-cfg.translate, cfg.translate) * 2
    angle = uniform(-cfg.rotate_degrees, cfg.rotate_degrees) * math.pi / 180.0

    def maybe(values: torch.Tensor, neutral: float) -> torch.Tensor:
        apply = torch.rand(batch, generator=generator) < cfg.color_p
        return torch.where(apply, values, torch.full_like(values, neutral))

    brightness = maybe(uniform(-cfg.brightness, cfg.brightness), 0.0)
    contrast = maybe(uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast), 1.0)
    gamma = maybe(torch.exp(uniform(math.log(cfg.gamma[0]), math.log(cfg.gamma[1]))), 1.0)
    return dict(scale_x=scale_x, scale_y=scale_y, cx=cx, cy=cy, angle=angle,
                brightness=brightness, contrast=contrast, gamma=gamma)


def student_view(images_u8: torch.Tensor, size: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Augmented, normalised ``[B, 3, size, size]`` student input."""
    x = to_unit(images_u8)
    p = {k: v.to(x.device, torch.float32) for k, v in params.items()}
    cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
    # Output grid (normalised coords) -> input coords: rotate, scale to the crop, move to its centre.
    theta = torch.stack([
        torch.stack([cos * p["scale_x"], -sin * p["scale_y"], p["cx"]], dim=1),
        torch.stack([sin * p["scale_x"], cos * p["scale_y"], p["cy"]], dim=1),
    ], dim=1)
    # Downscale first with antialiasing so the sampling grid does not alias fine structures.
    if x.shape[-1] > size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    grid = F.affine_grid(theta, [x.shape[0], 1, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * p["contrast"].view(-1, 1, 1, 1) + mean + p["brightness"].view(-1, 1, 1, 1)
    x = x.clamp(0.0, 1.0).pow(p["gamma"].view(-1, 1, 1, 1))
    return normalize(x)


def apply_uncertain_policy(targets: torch.Tensor, policy: str, generator: torch.Generator | None = None,
                           lsr_ones: tuple[float, float] = (0.55, 0.85),
                           lsr_zeros: tuple[float, float] = (0.0, 0.3)) -> torch.Tensor:
    """Replace uncertain (-1) targets according to ``policy``; NaN (missing) stays NaN.

    ``lsr-*`` values are drawn freshly for every batch (the authors drew them once per dataset).
    """
    uncertain = targets == -1
    if not bool(uncertain.any()):
        return targets
    out = targets.clone()
    if policy == "ones":
        out[uncertain] = 1.0
    elif policy == "zeros":
        out[uncertain] = 0.0
    elif policy == "ignore":
        out[uncertain] = float("nan")
    elif policy in ("lsr-ones", "lsr-zeros"):
        lo, hi = lsr_ones if policy == "lsr-ones" else lsr_zeros
        draws = lo + (hi - lo) * torch.rand(out.shape, generator=generator)
        out[uncertain] = draws.to(out.device, out.dtype)[uncertain]
    else:
        raise ValueError(f"unknown uncertain-label policy {policy!r}")
    return out
