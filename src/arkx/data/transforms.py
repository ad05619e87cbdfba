"""Batch transforms that run where the batch is (GPU in training, CPU in tests and the demo).

Images arrive as uint8 ``[B, 1, S, S]`` from the prepared cache. The student view is a random
resized crop (taken from the full cache resolution) with shift/scale/rotate plus
brightness/contrast/gamma; the teacher view is the resized original (Ark+). Per-sample random
parameters are drawn on the CPU from a seeded ``torch.Generator`` and applied as one
``affine_grid``/``grid_sample`` call per pyramid level the batch uses (usually one or two): torchvision's
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
    # non_blocking: a blocking host-to-device copy would wait for the GPU's queue at every batch
    mean = torch.tensor(MEAN, dtype=gray01.dtype).to(gray01.device, non_blocking=True).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=gray01.dtype).to(gray01.device, non_blocking=True).view(1, 3, 1, 1)
    return (gray01.expand(-1, 3, -1, -1) - mean) / std


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 1, S, S]`` (or ``[B, S, S]``) -> float32 ``[B, 1, S, S]`` in [0, 1].

    A floating-point tensor is taken to be converted already (values in [0, 1]) and is returned as float32
    without a copy: the training engine converts a batch once and takes both views from it. The views only
    read it (every op on it is out of place)."""
    if images_u8.dim() == 3:
        images_u8 = images_u8.unsqueeze(1)
    if images_u8.is_floating_point():
        return images_u8.float()
    return images_u8.float().div_(255.0)


def eval_view(images_u8: torch.Tensor, size: int) -> torch.Tensor:
    """The whole image resized to ``size`` and normalised (evaluation and the Ark+ teacher view)."""
    x = to_unit(images_u8)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return normalize(x)


def sample_augment_params(batch: int, cfg, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-sample augmentation parameters on the CPU (so CPU and GPU runs see the same stream).

    ``cfg`` is an :class:`arkx.config.AugmentConfig`. The draws happen in the same order whatever
    the options, so changing one option does not reshuffle the others' random streams.
    """

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch, generator=generator)

    def chance(p: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) < p

    # Random resized crop: area fraction and aspect ratio (log-uniform), centre anywhere it fits.
    area = uniform(*cfg.crop_scale)
    ratio = torch.exp(uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
    crop_w = torch.sqrt(area * ratio).clamp(max=1.0)
    crop_h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1.0 - crop_w) * uniform(-1.0, 1.0)
    cy = (1.0 - crop_h) * uniform(-1.0, 1.0)
    # Shift / scale / rotate of the resized crop, applied to a sample with probability affine_p.
    affine = chance(cfg.affine_p)
    angle = uniform(-cfg.rotate_degrees, cfg.rotate_degrees) * math.pi / 180.0
    zoom = uniform(1.0 - cfg.zoom, 1.0 + cfg.zoom)
    shift_x = uniform(-cfg.translate, cfg.translate)
    shift_y = uniform(-cfg.translate, cfg.translate)
    angle, shift_x, shift_y = (torch.where(affine, v, torch.zeros_like(v)) for v in (angle, shift_x, shift_y))
    zoom = torch.where(affine, zoom, torch.ones_like(zoom))
    # Intensity: brightness / contrast / gamma, independently or as the authors' one-of.
    draw_1, draw_2, draw_3 = (torch.rand(batch, generator=generator) for _ in range(3))
    brightness = uniform(-cfg.brightness, cfg.brightness)
    contrast = uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast)
    gamma = uniform(*cfg.gamma)
    if cfg.color_mode == "one_of":
        applied = draw_1 < cfg.color_p
        brightness_contrast = draw_2 < 0.5  # the two choices weigh the same, as in the authors' OneOf
        use_b = use_c = applied & brightness_contrast
        use_g = applied & ~brightness_contrast
    else:
        use_b, use_c, use_g = draw_1 < cfg.color_p, draw_2 < cfg.color_p, draw_3 < cfg.color_p
    return dict(crop_w=crop_w, crop_h=crop_h, cx=cx, cy=cy, angle=angle, zoom=zoom, shift_x=shift_x,
                shift_y=shift_y,
                brightness=torch.where(use_b, brightness, torch.zeros_like(brightness)),
                contrast=torch.where(use_c, contrast, torch.ones_like(contrast)),
                gamma=torch.where(use_g, gamma, torch.ones_like(gamma)))


def identity_params(batch: int) -> dict[str, torch.Tensor]:
    """Parameters of the view that is the whole image, unchanged (the eval view)."""
    zeros, ones = torch.zeros(batch), torch.ones(batch)
    return dict(crop_w=ones, crop_h=ones, cx=zeros, cy=zeros, angle=zeros, zoom=ones, shift_x=zeros,
                shift_y=zeros, brightness=zeros, contrast=ones, gamma=ones)


def affine_theta(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, 2, 3]`` map from output to source coordinates (``affine_grid``'s normalised [-1, 1]).

    The crop (size ``D = diag(crop_w, crop_h)``, centre ``c``) is resized to the output, then the
    output is rotated, zoomed and shifted (ShiftScaleRotate after RandomResizedCrop, as the authors
    compose them). Inverted and composed: ``x = c + D·R(angle)·(u - 2·shift) / zoom``.
    """
    p = params
    cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
    m00, m01 = p["crop_w"] * cos / p["zoom"], -p["crop_w"] * sin / p["zoom"]
    m10, m11 = p["crop_h"] * sin / p["zoom"], p["crop_h"] * cos / p["zoom"]
    sx, sy = 2.0 * p["shift_x"], 2.0 * p["shift_y"]
    return torch.stack([
        torch.stack([m00, m01, p["cx"] - (m00 * sx + m01 * sy)], dim=1),
        torch.stack([m10, m11, p["cy"] - (m10 * sx + m11 * sy)], dim=1),
    ], dim=1)


#: Ratio between neighbouring levels of the per-batch image pyramid the student view samples from.
PYRAMID_STEP = 2.0 ** 0.25


def pyramid_sides(source: int, size: int) -> list[int]:
    """Sides of the source levels a ``size`` view may sample: the cache side, then smaller by
    :data:`PYRAMID_STEP`, down to ``size`` itself (never below: a smaller level only loses detail)."""
    sides = [source]
    k = 1
    while round(source / PYRAMID_STEP**k) > size:
        sides.append(round(source / PYRAMID_STEP**k))
        k += 1
    if source > size:
        sides.append(size)
    return sides


def pick_levels(params: dict[str, torch.Tensor], sides: list[int], size: int) -> torch.Tensor:
    """Index into ``sides`` of the level each sample is drawn from: the one whose pixels are closest
    to 1:1 with the output along the crop's coarser axis (``max(crop_w, crop_h) / zoom`` of the source
    spans the output's ``size`` pixels)."""
    footprint = (torch.maximum(params["crop_w"], params["crop_h"]) / params["zoom"]).cpu().double()
    wanted = size / footprint  # the source side at which the crop would be sampled 1:1
    log_sides = torch.tensor(sides, dtype=torch.float64).log()
    return (log_sides[None, :] - wanted.log()[:, None]).abs().argmin(dim=1)


def student_view(images_u8: torch.Tensor, size: int, params: dict[str, torch.Tensor],
                 border: str = "zeros") -> torch.Tensor:
    """Augmented, normalised ``[B, 3, size, size]`` student input, cropped from the full cache resolution.

    Why a pyramid: a zoomed crop must come from the full-resolution image (downsizing first, then
    zooming, upsamples a low-resolution image and erases fine detail), but a wide crop taken from it
    shrinks, and bilinear ``grid_sample`` does not low-pass when it shrinks, so fine patterns alias
    into moiré. Each sample is therefore drawn from the level of an antialiased pyramid (the cache
    image and ``F.interpolate(antialias=True)`` reductions of it by :data:`PYRAMID_STEP`) at which its
    crop is closest to 1:1 with the output: ``grid_sample`` then shrinks by at most ~9% (a little more
    for a zoomed-out view of the whole image), too little to alias visibly. Only the levels some
    sample needs are computed, and only for those samples. (A per-sample crop then
    ``F.interpolate(antialias=True)`` would be exact too, but needs a loop over the batch.)
    ``border``: ``zeros`` or ``reflection`` beyond the image's edge.
    """
    x = to_unit(images_u8)
    theta = affine_theta({k: v.to(x.device, torch.float32, non_blocking=True) for k, v in params.items()})
    sides = pyramid_sides(x.shape[-1], size)
    levels = pick_levels(params, sides, size)
    used = levels.unique().tolist()
    parts, order = [], []
    for level in used:
        rows = torch.nonzero(levels == level).flatten() if len(used) > 1 else torch.arange(x.shape[0])
        rows_here = rows.to(x.device, non_blocking=True)
        source = x if len(used) == 1 else x.index_select(0, rows_here)
        if sides[level] != x.shape[-1]:
            source = F.interpolate(source, size=(sides[level], sides[level]), mode="bilinear",
                                   align_corners=False, antialias=True)
        grid = F.affine_grid(theta.index_select(0, rows_here), [len(rows), 1, size, size], align_corners=False)
        parts.append(F.grid_sample(source, grid, mode="bilinear", padding_mode=border, align_corners=False))
        order.append(rows)
    x = parts[0]
    if len(parts) > 1:  # back to batch order with a gather (deterministic on every device)
        inverse = torch.argsort(torch.cat(order)).to(x.device, non_blocking=True)
        x = torch.cat(parts).index_select(0, inverse)
    p = {k: params[k].to(x.device, torch.float32, non_blocking=True).view(-1, 1, 1, 1)
         for k in ("brightness", "contrast", "gamma")}
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * p["contrast"] + mean + p["brightness"]
    x = x.clamp(0.0, 1.0).pow(p["gamma"])
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
