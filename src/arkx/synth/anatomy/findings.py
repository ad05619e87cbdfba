"""The additive finding drawers: one function per concept (opacity, effusion, nodule, devices ...),
the same whichever dataset asks for it. Each returns a list of ``(delta, region mask or None)``;
without a mask, the region (and box) of a component comes from where ``|delta|`` is large."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from .cases import CONCEPTS, STRUCTURAL
from .primitives import disk, ellipse_r, polyline_dist, segment_dist, soft
from .thorax import DrawContext


def _f_opacity(c: DrawContext, st: float, side):
    out = []
    for sd in c.sides(side, 0.35):
        ln, lm = c.g.lungs[sd], c.lung_masks[sd]
        x, y = ln.point(c.rng, c.rng.choice(["middle", "lower", None]), 0.6)
        acc = c.zeros()
        for _ in range(int(c.rng.integers(3, 6))):
            bx = x + c.rng.normal(0, 0.035)
            by = y + c.rng.normal(0, 0.04)
            r = c.rng.uniform(0.025, 0.045)
            acc = np.maximum(acc, np.exp(-(((c.u - bx) ** 2 + (c.v - by) ** 2) / (2 * r * r))))
        mott = 0.65 + 0.35 * np.clip(c.noise(1.2), -1.5, 1.5) / 1.5
        out.append((0.24 * st * acc * mott * lm, None))
    return out


def _f_consolidation(c: DrawContext, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, c.rng.choice(["middle", "lower"]), 0.5)
    rx, ry = c.rng.uniform(0.055, 0.08), c.rng.uniform(0.05, 0.075)
    patch = disk(c.v, c.u, x, y, rx, ry, 4 * c.px)
    hx = ln.cx - 0.45 * ln.rx * ln.lateral_sign()
    br = polyline_dist(c.v, c.u, [(hx, ln.cy), (x, y), (x + 0.04 * ln.lateral_sign(), y + 0.03)])
    bronch = soft(0.004 - br, c.px)
    return [(st * (0.32 * patch - 0.12 * bronch * patch) * lm, patch * lm > 0.3)]


def _f_effusion(c: DrawContext, st: float, side):
    out = []
    for sd in c.sides(side, 0.25):
        ln = c.g.lungs[sd]
        h = c.rng.uniform(0.18, 0.38) * ln.ry * (0.6 + 0.4 * st)
        lat = np.clip((c.u - ln.cx) * ln.lateral_sign() / ln.rx * 0.5 + 0.5, 0.0, 1.0)  # 0 medial, 1 lateral
        surface = ln.cy + 0.92 * ln.ry - h - 0.6 * h * lat**2
        inside = soft((1.02 - ellipse_r(c.v, c.u, ln.cx, ln.cy, ln.rx, ln.ry)) * ln.rx, 1.5 * c.px)
        fluid = inside * soft(c.v - surface, 3 * c.px)
        grad = 0.8 + 0.2 * np.clip((c.v - surface) / (h + 1e-6), 0, 1)
        out.append((0.36 * st * fluid * grad, fluid > 0.3))
    return out


def _f_pneumothorax(c: DrawContext, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    f = c.rng.uniform(0.22, 0.4) * (0.6 + 0.4 * st)
    icx = ln.cx - f * 0.45 * ln.rx * ln.lateral_sign()
    icy = ln.cy + f * 0.35 * ln.ry
    irx, iry = ln.rx * (1 - 0.55 * f), ln.ry * (1 - 0.45 * f)
    ri = ellipse_r(c.v, c.u, icx, icy, irx, iry)
    region = lm * soft((ri - 1.0) * irx, 1.5 * c.px) * soft(ln.cy + 0.35 * ln.ry - c.v, 3 * c.px)
    line = soft(0.0045 - np.abs(ri - 1.0) * irx, c.px) * lm * soft(ln.cy + 0.3 * ln.ry - c.v, 3 * c.px)
    c.suppress = c.suppress * (1.0 - region)
    delta = st * (-0.07 * region + 0.20 * line)
    return [(delta, (region > 0.3) | (line > 0.3))]


def _blob(c: DrawContext, sd: str, r: float, amp: float, lobes: float, zone=None):
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, zone, 0.62)
    th = np.arctan2(c.v - y, c.u - x)
    rr = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2)
    reff = r * (1.0 + lobes * np.cos(3 * th + c.rng.uniform(0, 6.3)) + 0.5 * lobes * np.cos(5 * th))
    m = soft(reff - rr, 1.5 * c.px)
    return amp * m * (0.85 + 0.15 * np.clip(1 - rr / r, 0, 1)) * np.maximum(lm, 0.35)


def _f_nodule(c: DrawContext, st: float, side):
    n = 1 if c.rng.random() < 0.7 else 2
    return [(st * _blob(c, c.sides(side, 0.0)[0], c.rng.uniform(0.017, 0.027), 0.32, 0.0), None) for _ in range(n)]


def _f_mass(c: DrawContext, st: float, side):
    return [(st * _blob(c, c.sides(side, 0.0)[0], c.rng.uniform(0.05, 0.075), 0.34, 0.12, "middle"), None)]


def _f_edema(c: DrawContext, st: float, side):
    out = []
    haze = 0.75 + 0.25 * np.clip(c.noise(0.8), -2, 2) / 2
    for sd in ["R"] if c.g.lateral else ["R", "L"]:
        ln, lm = c.g.lungs[sd], c.lung_masks[sd]
        hx = ln.cx - 0.35 * ln.rx * ln.lateral_sign()
        hy = ln.cy + 0.1 * ln.ry
        gauss = np.exp(-(((c.u - hx) / (0.75 * ln.rx)) ** 2 + ((c.v - hy) / (0.5 * ln.ry)) ** 2))
        out.append((0.21 * st * gauss * haze * lm, None))
    return out


def _f_atelectasis(c: DrawContext, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, "lower", 0.45)
    ang = c.rng.uniform(-0.35, 0.35)
    L = c.rng.uniform(0.07, 0.1)
    dx, dy = math.cos(ang) * L, math.sin(ang) * L
    dist, _ = segment_dist(c.v, c.u, x - dx, y - dy, x + dx, y + dy)
    band = soft(c.rng.uniform(0.008, 0.013) - dist, 1.5 * c.px)
    return [(0.33 * st * band * np.maximum(lm, 0.5), None)]


def _f_aortic_enlargement(c: DrawContext, st: float, side):
    g = c.g
    if g.lateral:
        return [(0.25 * st * disk(c.v, c.u, g.cx + 0.05, g.cy - 0.12, 0.06, 0.05, 2 * c.px), None)]
    r = (0.038 + 0.012 * st) * g.s
    return [(0.28 * st * disk(c.v, c.u, g.med_cx + g.med_w + 0.01, g.cy - 0.16 * g.s, r, r, 2 * c.px), None)]


def _f_enlarged_pa(c: DrawContext, st: float, side):
    g = c.g
    r = (0.03 + 0.01 * st) * g.s
    x = g.med_cx + g.med_w + 0.035 * g.s if not g.lateral else g.cx
    return [(0.26 * st * disk(c.v, c.u, x, g.cy - 0.03 * g.s, r, r * 1.1, 2 * c.px), None)]


def _f_fibrosis(c: DrawContext, st: float, side):
    n = c.rng.standard_normal(c.shape, dtype=np.float32)
    sc = c.px * 128.0
    bp = gaussian_filter(n, 0.9 * sc) - gaussian_filter(n, 2.2 * sc)
    bp /= bp.std() + 1e-6
    net = np.exp(-((bp / 0.35) ** 2))  # thin lines along the zero crossings: a reticular net
    out = []
    for sd in ["R"] if c.g.lateral else ["R", "L"]:
        ln, lm = c.g.lungs[sd], c.lung_masks[sd]
        per = np.clip((c.u - ln.cx) * ln.lateral_sign() / ln.rx + 0.3, 0, 1)
        low = np.clip((c.v - ln.cy) / ln.ry + 0.6, 0, 1)
        w = np.clip(0.35 + per + low, 0, 1.5) / 1.5
        out.append((0.17 * st * net * w * lm, lm > 0.5))
    return out


def _f_pleural_thickening(c: DrawContext, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln = c.g.lungs[sd]
    r = ellipse_r(c.v, c.u, ln.cx, ln.cy, ln.rx, ln.ry)
    ring = soft(0.012 * (0.6 + 0.4 * st) - np.abs(r - 0.99) * ln.rx, 1.2 * c.px)
    y0 = ln.cy + c.rng.uniform(-0.8, 0.0) * ln.ry
    span = c.rng.uniform(0.3, 0.6) * ln.ry
    lateral = (c.u - ln.cx) * ln.lateral_sign() > 0.25 * ln.rx
    sel = ring * lateral * (c.v > y0) * (c.v < y0 + span) * (c.v < ln.dome_y(c.u))
    return [(0.26 * st * sel, None)]


def _f_devices(c: DrawContext, st: float, side):
    g, v, u, px = c.g, c.v, c.u, c.px
    out = []
    kinds = list(c.rng.permutation(["ett", "cvc", "pacer", "ng"])[: int(c.rng.integers(1, 3))])
    amp = 0.5 * st
    w = 0.0045 + 0.5 * px
    for k in kinds:
        if k == "ett":
            tip = g.cy - c.rng.uniform(0.05, 0.1)
            d = polyline_dist(v, u, [(g.med_cx, -0.05), (g.med_cx, tip)])
            out.append((amp * soft(w - d, px), None))
        elif k == "ng":
            d = polyline_dist(
                v, u, [(g.med_cx + 0.005, -0.05), (g.med_cx + 0.01, g.cy + 0.1), (g.cx + 0.12, g.cy + 0.36)]
            )
            out.append((0.8 * amp * soft(w - d, px), None))
        elif k == "cvc":
            sgn = 1.0 if c.rng.random() < 0.5 else -1.0
            pts = [
                (g.cx + sgn * 0.3 * g.s, g.cy - 0.3 * g.s),
                (g.cx + sgn * 0.12 * g.s, g.cy - 0.27 * g.s),
                (g.med_cx + sgn * 0.025, g.cy - 0.18 * g.s),
                (g.med_cx + 0.01, g.cy + 0.02),
            ]
            out.append((amp * soft(w - polyline_dist(v, u, pts), px), None))
        else:
            gx, gy = g.cx + 0.28 * g.s, g.cy - 0.28 * g.s
            box = soft(0.028 - np.abs(u - gx), px) * soft(0.02 - np.abs(v - gy), px)
            lead = soft(
                w
                - polyline_dist(
                    v, u, [(gx - 0.02, gy), (g.med_cx + 0.03, g.cy - 0.1), (g.heart[0] - 0.02, g.heart[1])]
                ),
                px,
            )
            out.append((np.maximum(0.75 * st * box, amp * lead), None))
    return out


def _f_hernia(c: DrawContext, st: float, side):
    g = c.g
    x, y = (g.heart[0] - 0.01, g.heart[1] + 0.03) if not g.lateral else (g.cx + 0.12, g.cy + 0.15)
    r = (0.045 + 0.015 * st) * g.s
    ball = disk(c.v, c.u, x, y, r, r * 0.9, 1.5 * c.px)
    level = c.v > y - 0.2 * r
    return [(st * ball * np.where(level, 0.24, -0.16), ball > 0.3)]


def _f_tuberculosis(c: DrawContext, st: float, side):
    out = []
    for sd in c.sides(side, 0.4):
        ln, lm = c.g.lungs[sd], c.lung_masks[sd]
        acc = c.zeros()
        for _ in range(int(c.rng.integers(3, 6))):
            x, y = ln.point(c.rng, "upper", 0.7)
            r = c.rng.uniform(0.018, 0.035)
            acc = np.maximum(acc, np.exp(-(((c.u - x) ** 2 + (c.v - y) ** 2) / (2 * r * r))))
        delta = 0.26 * acc * (0.7 + 0.3 * np.clip(c.noise(1.0), -1, 1))
        hx = ln.cx - 0.4 * ln.rx * ln.lateral_sign()
        x, y = ln.point(c.rng, "upper", 0.6)
        streak = soft(0.004 - polyline_dist(c.v, c.u, [(x, y), (hx, ln.cy)]), c.px)
        delta = np.maximum(delta, 0.18 * streak)
        if c.rng.random() < 0.6:
            x, y = ln.point(c.rng, "upper", 0.55)
            r = c.rng.uniform(0.02, 0.03)
            rr = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2)
            delta = np.where(rr < 0.6 * r, -0.06, np.maximum(delta, 0.3 * soft(0.45 * r - np.abs(rr - r), c.px)))
        out.append((st * delta * np.maximum(lm, 0.3), None))
    return out


def _ring(c: DrawContext, sd: str, r: float, wall: float, amp: float, inner: float):
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, None, 0.6)
    rr = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2)
    w = soft(wall - np.abs(rr - r), c.px)
    centre = soft(r - wall - rr, c.px)
    return (amp * w - inner * centre) * np.maximum(lm, 0.4)


def _f_cavity(c: DrawContext, st: float, side):
    return [(st * _ring(c, c.sides(side, 0.0)[0], c.rng.uniform(0.025, 0.038), 0.009, 0.32, 0.05), None)]


def _f_cyst(c: DrawContext, st: float, side):
    return [(st * _ring(c, c.sides(side, 0.0)[0], c.rng.uniform(0.035, 0.05), 0.0035 + 0.5 * c.px, 0.22, 0.1), None)]


def _f_calcification(c: DrawContext, st: float, side):
    sd = c.sides(side, 0.0)[0]
    x, y = c.g.lungs[sd].point(c.rng, None, 0.6)
    acc = c.zeros()
    for _ in range(int(c.rng.integers(2, 5))):
        bx, by = x + c.rng.normal(0, 0.015), y + c.rng.normal(0, 0.015)
        r = c.rng.uniform(0.006, 0.009) + 0.5 * c.px
        acc = np.maximum(acc, soft(r - np.sqrt((c.u - bx) ** 2 + (c.v - by) ** 2), c.px))
    return [(0.55 * st * acc, None)]


def _f_other_lesion(c: DrawContext, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, None, 0.6)
    rr = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2)
    th = np.arctan2(c.v - y, c.u - x)
    spikes = 0.012 + 0.022 * np.maximum(np.cos(3 * (th + c.rng.uniform(0, 2))), 0) ** 6
    star = soft(spikes - rr, c.px)
    return [(0.3 * st * star * np.maximum(lm, 0.4), None)]


ADDITIVE = {
    "opacity": _f_opacity,
    "consolidation": _f_consolidation,
    "effusion": _f_effusion,
    "pneumothorax": _f_pneumothorax,
    "nodule": _f_nodule,
    "mass": _f_mass,
    "edema": _f_edema,
    "atelectasis": _f_atelectasis,
    "aortic_enlargement": _f_aortic_enlargement,
    "enlarged_pa": _f_enlarged_pa,
    "fibrosis": _f_fibrosis,
    "pleural_thickening": _f_pleural_thickening,
    "devices": _f_devices,
    "hernia": _f_hernia,
    "tuberculosis": _f_tuberculosis,
    "cavity": _f_cavity,
    "cyst": _f_cyst,
    "calcification": _f_calcification,
    "other_lesion": _f_other_lesion,
}
assert set(ADDITIVE) | STRUCTURAL == set(CONCEPTS)
