"""Procedural chest radiographs: one image drawn from one :class:`Case`.

The drawing works on an *attenuation* map ``A`` (bright = dense), in normalised coordinates: the
thorax lives in the central ``m x m`` square of an ``h x w`` image (``m = min(h, w)``), ``u`` runs
left -> right and ``v`` top -> bottom, both in [0, 1] over that square. Image left is the patient's
right, as on a PA film: lung side ``"R"`` is drawn on the image left.

Order of drawing: anatomy parameters (from ``Case.anatomy_seed``, so follow-up images of one patient
share a body), structural findings that change the anatomy (big heart, shifted mediastinum, flat
diaphragm, broken rib ...), additive findings (blobs, bands, fluid, lines), then the anatomy is
rendered under them, and finally :func:`apply_site` puts the acquisition look of a site on top
(gamma, contrast, blur, noise, collimation border, burned-in marker block).

Every finding of a concept is drawn by the same function whichever dataset asks for it, so that a
model that learns "effusion" on NIH recognises "Pleural effusion" on VinDr-CXR. Every drawn finding
reports its bounding box (pixels of the written image, ``x0, y0, x1, y1`` with exclusive ends) from
where its pixels really changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

#: Every finding concept the drawer knows. Dataset labels map onto these (see ``layouts.LABEL_CONCEPTS``).
CONCEPTS = (
    "opacity",  # patchy air-space opacity (infiltration, lung opacity, pneumonia, RSNA opacity)
    "consolidation",  # dense homogeneous patch with air bronchograms
    "effusion",  # bright fluid with a meniscus at a lung base
    "pneumothorax",  # dark apical/lateral rim without lung markings, visible pleural line
    "nodule",  # small round dense blob
    "mass",  # large lobulated dense blob
    "edema",  # bilateral perihilar haze
    "atelectasis",  # linear (plate-like) dense band in a lower zone
    "cardiomegaly",  # wide heart
    "wide_mediastinum",  # wide upper mediastinum
    "aortic_enlargement",  # bulging aortic knob
    "enlarged_pa",  # bulging left hilum
    "mediastinal_shift",  # heart and mediastinum displaced sideways
    "emphysema",  # hyperlucent large lungs, flat low diaphragm, sparse markings
    "fibrosis",  # reticular (net-like) texture in the lower/peripheral lungs
    "pleural_thickening",  # bright band along the lateral chest wall
    "rib_fracture",  # discontinuity and step in one rib
    "clavicle_fracture",  # discontinuity and step in one clavicle
    "devices",  # tubes, lines and a pacemaker: very bright thin curves
    "hernia",  # retrocardiac round opacity with an air-fluid level
    "tuberculosis",  # upper-zone patches with cavities and streaks
    "cavity",  # thick-walled ring with a dark centre
    "cyst",  # thin-walled dark round space
    "calcification",  # cluster of tiny very bright dots
    "other_lesion",  # small spiculated star-shaped density
)

#: concepts that change the anatomy instead of (only) adding density
STRUCTURAL = frozenset(
    {"cardiomegaly", "wide_mediastinum", "mediastinal_shift", "emphysema", "rib_fracture", "clavicle_fracture"}
)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Finding:
    """One finding to draw. ``side``: ``"R"`` (patient right, image left), ``"L"``, ``"B"`` or None (random)."""

    concept: str
    strength: float = 1.0
    side: str | None = None

    def __post_init__(self) -> None:
        if self.concept not in CONCEPTS:
            raise ValueError(f"unknown finding concept {self.concept!r}")


@dataclass(frozen=True)
class Case:
    """Everything needed to draw one image deterministically."""

    sex: str = "M"  # "M", "F" or anything else (drawn as a random one of the two)
    view: str = "PA"  # "PA", "AP" or "LATERAL"
    findings: tuple[Finding, ...] = ()
    anatomy_seed: int = 0  # same for all images of one patient
    seed: int = 0  # this image: finding placement, texture, noise


@dataclass(frozen=True)
class Site:
    """Acquisition look of one dataset (constant within the dataset)."""

    name: str
    gamma: float = 1.0
    contrast: float = 1.0
    offset: float = 0.0
    noise: float = 0.02
    blur: float = 0.5  # gaussian sigma in pixels of a 128-px image (scaled with the image)
    border: float = 0.0  # collimation border as a fraction of the side (left/right)
    border_top: float = 0.0
    border_value: float = 0.0
    marker: str | None = "tr"  # corner of the burned-in text block: tl, tr, bl, br or None
    marker_seed: int = 0
    exposure_jitter: float = 0.04


@dataclass
class Drawn:
    """A drawn image (float32 in [0, 1], ``h x w``) and, per finding (index in ``Case.findings``), its drawn
    components as (box, region mask): localization and segmentation layouts write exactly these."""

    image: np.ndarray
    components: dict[int, list[tuple[Box, np.ndarray]]] = field(default_factory=dict)
    female: bool = False

    @property
    def boxes(self) -> dict[int, list[Box]]:
        return {i: [b for b, _ in comps] for i, comps in self.components.items()}

    def mask(self, i: int) -> np.ndarray:
        """Union of the regions of finding ``i`` (all False if it drew nothing)."""
        out = np.zeros(self.image.shape, dtype=bool)
        for _, m in self.components.get(i, []):
            out |= m
        return out


# ----------------------------------------------------------------------------------------- helpers


@lru_cache(maxsize=32)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, float]:
    m = min(h, w)
    u = ((np.arange(w, dtype=np.float32) + 0.5 - (w - m) / 2) / m)[None, :]
    v = ((np.arange(h, dtype=np.float32) + 0.5 - (h - m) / 2) / m)[:, None]
    u.setflags(write=False)
    v.setflags(write=False)
    return v, u, 1.0 / m


def _soft(d: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 ramp over ``width`` around ``d = 0`` (inside where ``d > 0``)."""
    return np.clip(0.5 + d / width, 0.0, 1.0)


def _ellipse_r(v, u, cx, cy, rx, ry):
    return np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)


def _disk(v, u, cx, cy, rx, ry, edge):
    """Soft-edged filled ellipse (edge in normalised units)."""
    return _soft((1.0 - _ellipse_r(v, u, cx, cy, rx, ry)) * min(rx, ry), edge)


def _segment_dist(v, u, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.sqrt((u - x0 - t * dx) ** 2 + (v - y0 - t * dy) ** 2), t


def _polyline_dist(v, u, pts):
    d = None
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        di, _ = _segment_dist(v, u, x0, y0, x1, y1)
        d = di if d is None else np.minimum(d, di)
    return d


def _bbox(mask: np.ndarray) -> Box | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def _region_of(delta: np.ndarray, frac: float = 0.3) -> np.ndarray | None:
    """Where an additive finding changed the image (above ``frac`` of its peak), or None if nowhere."""
    a = np.abs(delta)
    peak = float(a.max()) if a.size else 0.0
    if peak <= 1e-6:
        return None
    return a > frac * peak


# ----------------------------------------------------------------------------------------- anatomy


@dataclass
class Lung:
    side: str
    cx: float
    cy: float
    rx: float
    ry: float
    dome: float  # diaphragm height at the dome top (normalised v)
    dome_h: float  # how much lower the diaphragm is at the lateral edge

    def dome_y(self, u):
        return self.dome + self.dome_h * ((u - self.cx) / self.rx) ** 2

    def lateral_sign(self) -> float:
        """+1 when the lateral chest wall is towards larger u."""
        return -1.0 if self.side == "R" else 1.0

    def mask(self, v, u, edge):
        inside = (1.0 - _ellipse_r(v, u, self.cx, self.cy, self.rx, self.ry)) * min(self.rx, self.ry)
        above = self.dome_y(u) - v
        return _soft(np.minimum(inside, above), edge)

    def point(self, rng, zone: str | None = None, margin: float = 0.75) -> tuple[float, float]:
        lo_hi = {"upper": (-0.85, -0.35), "middle": (-0.35, 0.2), "lower": (0.15, 0.6), None: (-0.8, 0.55)}[zone]
        for _ in range(40):
            a = rng.uniform(-margin, margin)
            b = rng.uniform(*lo_hi)
            x, y = self.cx + a * self.rx, self.cy + b * self.ry
            if a * a + b * b < margin**2 and y < float(self.dome_y(x)) - 0.025:
                return x, y
        return self.cx, self.cy - 0.2 * self.ry


@dataclass
class Geometry:
    lateral: bool
    female: bool
    s: float
    cx: float
    cy: float
    lungs: dict[str, Lung]
    heart: list[float]  # cx, cy, rx, ry
    med_cx: float
    med_w: float
    body: list[float]  # cx, cy, rx, ry
    extra_dark: float = 0.0
    marking_gain: float = 1.0
    rib_fracture: tuple | None = None  # (side sign, rib index, d position, dy)
    clavicle_fracture: tuple | None = None  # (side sign, dy)


def _geometry(case: Case, rng: np.random.Generator) -> Geometry:
    female = case.sex == "F" or (case.sex != "M" and rng.random() < 0.5)
    s = (0.93 if female else 1.0) * rng.uniform(0.965, 1.035)
    cx = 0.5 + rng.normal(0.0, 0.008)
    cy = 0.44 + rng.normal(0.0, 0.01)
    if case.view == "LATERAL":
        field_ = Lung("B", cx - 0.02, cy, 0.27 * s, 0.30 * s, cy + 0.17 * s, 0.10 * s)
        lungs = {"R": field_, "L": field_}
        heart = [cx - 0.11 * s, cy + 0.2 * s, 0.15 * s * (0.95 if female else 1.0), 0.13 * s]
        return Geometry(True, female, s, cx, cy, lungs, heart, cx + 0.30 * s, 0.05, [cx, 0.55, 0.42 * s, 0.62])
    sep = 0.165 * s
    dome = cy + 0.16 * s + rng.normal(0.0, 0.006)
    lungs = {
        "R": Lung("R", cx - sep, cy, 0.145 * s, 0.27 * s, dome, 0.08 * s),
        "L": Lung("L", cx + sep, cy + 0.01, 0.135 * s, 0.27 * s, dome + 0.02 * s, 0.08 * s),
    }
    hs = (0.94 if female else 1.0) * rng.uniform(0.95, 1.05) * (1.07 if case.view == "AP" else 1.0)
    heart = [cx + 0.045 * s, cy + 0.13 * s, 0.145 * s * hs, 0.105 * s]
    return Geometry(False, female, s, cx, cy, lungs, heart, cx, 0.052 * s, [cx, 0.56, 0.43 * s, 0.62])


def _apply_structural(g: Geometry, concept: str, strength: float, rng) -> None:
    if concept == "cardiomegaly":
        k = 1.0 + 0.5 * strength
        g.heart[2] *= k
        g.heart[3] *= 1.0 + 0.15 * strength
        g.heart[0] += 0.025 * strength * g.s
    elif concept == "wide_mediastinum":
        g.med_w *= 1.0 + 0.9 * strength
    elif concept == "mediastinal_shift":
        d = (1 if rng.random() < 0.5 else -1) * 0.055 * strength * g.s
        g.med_cx += d
        g.heart[0] += d
    elif concept == "emphysema":
        for lung in {id(x): x for x in g.lungs.values()}.values():
            lung.ry *= 1.0 + 0.08 * strength
            lung.rx *= 1.0 + 0.04 * strength
            lung.dome += 0.055 * strength * g.s
            lung.dome_h *= 1.0 - 0.75 * strength
        g.extra_dark = max(g.extra_dark, 0.09 * strength)
        g.marking_gain = min(g.marking_gain, 1.0 - 0.55 * strength)
    elif concept == "rib_fracture":
        side = 1.0 if rng.random() < 0.5 else -1.0
        g.rib_fracture = (side, int(rng.integers(2, 7)), rng.uniform(0.16, 0.26) * g.s, 0.011 * g.s * strength)
    elif concept == "clavicle_fracture":
        g.clavicle_fracture = (1.0 if rng.random() < 0.5 else -1.0, 0.014 * g.s * strength)


class _Ctx:
    """Shared state while drawing one image."""

    def __init__(self, v, u, px, g: Geometry, rng):
        self.v, self.u, self.px, self.g, self.rng = v, u, px, g, rng
        self.shape = (v.shape[0], u.shape[1])
        self.edge = 1.5 * px
        self.lung_masks = {k: lung.mask(v, u, self.edge) for k, lung in g.lungs.items()}
        self.suppress = np.ones(self.shape, np.float32)

    def zeros(self):
        return np.zeros(self.shape, np.float32)

    def sides(self, side: str | None, p_both: float = 0.3) -> list[str]:
        if self.g.lateral:
            return ["R"]
        if side in ("R", "L"):
            return [side]
        if side == "B" or self.rng.random() < p_both:
            return ["R", "L"]
        return ["R" if self.rng.random() < 0.5 else "L"]

    def noise(self, sigma_px: float) -> np.ndarray:
        n = gaussian_filter(self.rng.standard_normal(self.shape, dtype=np.float32), sigma_px * self.px * 128.0)
        return n / (n.std() + 1e-6)


def _render_anatomy(c: _Ctx) -> np.ndarray:
    g, v, u, px = c.g, c.v, c.u, c.px
    bx, by, brx, bry = g.body
    rb = (np.abs((u - bx) / brx) ** 3 + np.abs((v - by) / bry) ** 3) ** (1.0 / 3.0)
    body = _soft((1.0 - rb) * brx, 2 * px)
    A = body * (0.40 + 0.14 * np.sqrt(np.clip(1.0 - rb * rb, 0.0, 1.0)))
    lungs = list({id(x): x for x in g.lungs.values()}.values())
    # abdomen under the diaphragm
    if g.lateral:
        dome_line = lungs[0].dome_y(u)
    else:
        dome_line = np.where(u < g.cx, g.lungs["R"].dome_y(u), g.lungs["L"].dome_y(u))
    A = A + 0.10 * body * _soft(v - dome_line, 3 * px)
    lung = np.maximum(c.lung_masks["R"], c.lung_masks["L"])
    A = A - (0.30 + g.extra_dark) * lung
    # lung markings: fine texture + vessels radiating from the hila
    tex = np.abs(c.noise(0.9))
    marks = 0.022 * tex
    phase = 3.0 * c.noise(2.0)
    for ln in lungs:
        hx = ln.cx - 0.45 * ln.rx * ln.lateral_sign() if not g.lateral else ln.cx + 0.05
        hy = ln.cy + 0.05 * ln.ry
        d = np.sqrt((u - hx) ** 2 + (v - hy) ** 2)
        th = np.arctan2(v - hy, u - hx)
        marks = marks + 0.075 * np.exp(-d / 0.09) * (0.55 + 0.45 * np.cos(th * 15.0 + phase))
    A = A + g.marking_gain * marks * lung * c.suppress
    if g.lateral:
        # spine (posterior, image right), sternum (anterior), heart (anterior-inferior)
        sx = g.med_cx
        spine = _soft(0.035 - np.abs(u - sx), 1.5 * px) * (0.8 + 0.2 * np.cos(2 * np.pi * v / 0.055)) * body
        A = A + 0.20 * spine
        A = A + 0.10 * _soft(0.008 - np.abs(u - (g.cx - 0.33 * g.s)), px) * ((v > 0.18) & (v < 0.6))
        A = A + 0.26 * _disk(v, u, *g.heart, 3 * px)
        if g.female:
            A = A + 0.08 * _disk(v, u, g.cx - 0.36 * g.s, g.cy + 0.22 * g.s, 0.09 * g.s, 0.12 * g.s, 8 * px)
        return A
    # mediastinum with trachea, aortic knob and heart
    med = _soft(g.med_w - np.abs(u - g.med_cx), 2 * px) * _soft(g.heart[1] - v, 2 * px) * body
    A = A + 0.27 * med
    trachea = _soft(0.011 * g.s - np.abs(u - g.med_cx), px) * _soft(g.cy - 0.06 - v, 2 * px)
    A = A - 0.12 * trachea
    A = A + 0.14 * _disk(v, u, g.med_cx + g.med_w * 0.95, g.cy - 0.16 * g.s, 0.03 * g.s, 0.028 * g.s, 2 * px)
    A = A + 0.25 * _disk(v, u, *g.heart, 2.5 * px)
    # spine with vertebral bodies
    spine = _soft(0.03 * g.s - np.abs(u - g.cx), 1.5 * px) * (0.82 + 0.18 * np.cos(2 * np.pi * v / (0.05 * g.s)))
    A = A + 0.15 * spine * body
    # posterior ribs (both sides at once, one fracture possible)
    K = 10
    d = np.abs(u - g.cx)  # (1, w)
    sgn = np.sign(u - g.cx)
    ks = np.arange(K, dtype=np.float32)[:, None, None]
    ytop = g.cy - 0.95 * g.lungs["R"].ry + 0.005
    y = ytop + ks * 0.05 * g.s + 1.9 * d[None] ** 2  # (K, 1, w)
    keep = np.ones((K, 1, d.shape[1]), np.float32)
    if g.rib_fracture is not None:
        fs, fk, fd, fdy = g.rib_fracture
        on_side = (sgn == fs)[0]
        beyond = on_side & (d[0] > fd)
        y[fk, 0, beyond] += fdy
        gap = on_side & (np.abs(d[0] - fd) < 1.2 * px + 0.004)
        keep[fk, 0, gap] = 0.0
    dmax = g.lungs["R"].rx * 2 + 0.03
    t = 0.0085 * g.s
    band = _soft(t - np.abs(v[None] - y), 1.2 * px) * keep  # (K, h, w)
    ribs = band.max(axis=0) * _soft(d - 0.035, 2 * px) * _soft(g.cx + dmax - (g.cx + d), 3 * px)
    A = A + 0.075 * ribs * body * _soft(dome_line + 0.03 - v, 3 * px)
    # clavicles
    for side in (-1.0, 1.0):
        x0, y0 = g.cx + side * 0.03, g.cy - 0.265 * g.s
        x1, y1 = g.cx + side * 0.27 * g.s, g.cy - 0.33 * g.s
        dist, tt = _segment_dist(v, u, x0, y0, x1, y1)
        cl = _soft(0.011 * g.s - dist, 1.2 * px)
        if g.clavicle_fracture is not None and g.clavicle_fracture[0] == side:
            dy = g.clavicle_fracture[1]
            dist2, tt2 = _segment_dist(v - dy, u, x0, y0, x1, y1)
            cl = np.where(tt < 0.5, cl, _soft(0.011 * g.s - dist2, 1.2 * px))
            cl = cl * (np.abs(np.where(tt < 0.5, tt, tt2) - 0.5) > 0.035)
        A = A + 0.14 * cl
    # female: breast soft-tissue shadows over the lower zones
    if g.female:
        for ln in lungs:
            bx_ = ln.cx + 0.25 * ln.rx * ln.lateral_sign()
            A = A + 0.12 * _disk(v, u, bx_, ln.cy + 0.6 * ln.ry, 0.95 * ln.rx, 0.36 * ln.ry, 10 * px) * body
    return A


# ----------------------------------------------------------------------------------------- findings
# Each returns a list of (delta, box_mask_or_None); the box comes from the mask, else from |delta|.


def _f_opacity(c: _Ctx, st: float, side):
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


def _f_consolidation(c: _Ctx, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, c.rng.choice(["middle", "lower"]), 0.5)
    rx, ry = c.rng.uniform(0.055, 0.08), c.rng.uniform(0.05, 0.075)
    patch = _disk(c.v, c.u, x, y, rx, ry, 4 * c.px)
    hx = ln.cx - 0.45 * ln.rx * ln.lateral_sign()
    br = _polyline_dist(c.v, c.u, [(hx, ln.cy), (x, y), (x + 0.04 * ln.lateral_sign(), y + 0.03)])
    bronch = _soft(0.004 - br, c.px)
    return [(st * (0.32 * patch - 0.12 * bronch * patch) * lm, patch * lm > 0.3)]


def _f_effusion(c: _Ctx, st: float, side):
    out = []
    for sd in c.sides(side, 0.25):
        ln = c.g.lungs[sd]
        h = c.rng.uniform(0.18, 0.38) * ln.ry * (0.6 + 0.4 * st)
        lat = np.clip((c.u - ln.cx) * ln.lateral_sign() / ln.rx * 0.5 + 0.5, 0.0, 1.0)  # 0 medial, 1 lateral
        surface = ln.cy + 0.92 * ln.ry - h - 0.6 * h * lat**2
        inside = _soft((1.02 - _ellipse_r(c.v, c.u, ln.cx, ln.cy, ln.rx, ln.ry)) * ln.rx, 1.5 * c.px)
        fluid = inside * _soft(c.v - surface, 3 * c.px)
        grad = 0.8 + 0.2 * np.clip((c.v - surface) / (h + 1e-6), 0, 1)
        out.append((0.36 * st * fluid * grad, fluid > 0.3))
    return out


def _f_pneumothorax(c: _Ctx, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    f = c.rng.uniform(0.22, 0.4) * (0.6 + 0.4 * st)
    icx = ln.cx - f * 0.45 * ln.rx * ln.lateral_sign()
    icy = ln.cy + f * 0.35 * ln.ry
    irx, iry = ln.rx * (1 - 0.55 * f), ln.ry * (1 - 0.45 * f)
    ri = _ellipse_r(c.v, c.u, icx, icy, irx, iry)
    region = lm * _soft((ri - 1.0) * irx, 1.5 * c.px) * _soft(ln.cy + 0.35 * ln.ry - c.v, 3 * c.px)
    line = _soft(0.0045 - np.abs(ri - 1.0) * irx, c.px) * lm * _soft(ln.cy + 0.3 * ln.ry - c.v, 3 * c.px)
    c.suppress = c.suppress * (1.0 - region)
    delta = st * (-0.07 * region + 0.20 * line)
    return [(delta, (region > 0.3) | (line > 0.3))]


def _blob(c: _Ctx, sd: str, r: float, amp: float, lobes: float, zone=None):
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, zone, 0.62)
    th = np.arctan2(c.v - y, c.u - x)
    rr = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2)
    reff = r * (1.0 + lobes * np.cos(3 * th + c.rng.uniform(0, 6.3)) + 0.5 * lobes * np.cos(5 * th))
    m = _soft(reff - rr, 1.5 * c.px)
    return amp * m * (0.85 + 0.15 * np.clip(1 - rr / r, 0, 1)) * np.maximum(lm, 0.35)


def _f_nodule(c: _Ctx, st: float, side):
    n = 1 if c.rng.random() < 0.7 else 2
    return [(st * _blob(c, c.sides(side, 0.0)[0], c.rng.uniform(0.017, 0.027), 0.32, 0.0), None) for _ in range(n)]


def _f_mass(c: _Ctx, st: float, side):
    return [(st * _blob(c, c.sides(side, 0.0)[0], c.rng.uniform(0.05, 0.075), 0.34, 0.12, "middle"), None)]


def _f_edema(c: _Ctx, st: float, side):
    out = []
    haze = 0.75 + 0.25 * np.clip(c.noise(0.8), -2, 2) / 2
    for sd in ["R"] if c.g.lateral else ["R", "L"]:
        ln, lm = c.g.lungs[sd], c.lung_masks[sd]
        hx = ln.cx - 0.35 * ln.rx * ln.lateral_sign()
        hy = ln.cy + 0.1 * ln.ry
        gauss = np.exp(-(((c.u - hx) / (0.75 * ln.rx)) ** 2 + ((c.v - hy) / (0.5 * ln.ry)) ** 2))
        out.append((0.21 * st * gauss * haze * lm, None))
    return out


def _f_atelectasis(c: _Ctx, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, "lower", 0.45)
    ang = c.rng.uniform(-0.35, 0.35)
    L = c.rng.uniform(0.07, 0.1)
    dx, dy = math.cos(ang) * L, math.sin(ang) * L
    dist, _ = _segment_dist(c.v, c.u, x - dx, y - dy, x + dx, y + dy)
    band = _soft(c.rng.uniform(0.008, 0.013) - dist, 1.5 * c.px)
    return [(0.33 * st * band * np.maximum(lm, 0.5), None)]


def _f_aortic_enlargement(c: _Ctx, st: float, side):
    g = c.g
    if g.lateral:
        return [(0.25 * st * _disk(c.v, c.u, g.cx + 0.05, g.cy - 0.12, 0.06, 0.05, 2 * c.px), None)]
    r = (0.038 + 0.012 * st) * g.s
    return [(0.28 * st * _disk(c.v, c.u, g.med_cx + g.med_w + 0.01, g.cy - 0.16 * g.s, r, r, 2 * c.px), None)]


def _f_enlarged_pa(c: _Ctx, st: float, side):
    g = c.g
    r = (0.03 + 0.01 * st) * g.s
    x = g.med_cx + g.med_w + 0.035 * g.s if not g.lateral else g.cx
    return [(0.26 * st * _disk(c.v, c.u, x, g.cy - 0.03 * g.s, r, r * 1.1, 2 * c.px), None)]


def _f_fibrosis(c: _Ctx, st: float, side):
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


def _f_pleural_thickening(c: _Ctx, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln = c.g.lungs[sd]
    r = _ellipse_r(c.v, c.u, ln.cx, ln.cy, ln.rx, ln.ry)
    ring = _soft(0.012 * (0.6 + 0.4 * st) - np.abs(r - 0.99) * ln.rx, 1.2 * c.px)
    y0 = ln.cy + c.rng.uniform(-0.8, 0.0) * ln.ry
    span = c.rng.uniform(0.3, 0.6) * ln.ry
    lateral = (c.u - ln.cx) * ln.lateral_sign() > 0.25 * ln.rx
    sel = ring * lateral * (c.v > y0) * (c.v < y0 + span) * (c.v < ln.dome_y(c.u))
    return [(0.26 * st * sel, None)]


def _f_devices(c: _Ctx, st: float, side):
    g, v, u, px = c.g, c.v, c.u, c.px
    out = []
    kinds = list(c.rng.permutation(["ett", "cvc", "pacer", "ng"])[: int(c.rng.integers(1, 3))])
    amp = 0.5 * st
    w = 0.0045 + 0.5 * px
    for k in kinds:
        if k == "ett":
            tip = g.cy - c.rng.uniform(0.05, 0.1)
            d = _polyline_dist(v, u, [(g.med_cx, -0.05), (g.med_cx, tip)])
            out.append((amp * _soft(w - d, px), None))
        elif k == "ng":
            d = _polyline_dist(
                v, u, [(g.med_cx + 0.005, -0.05), (g.med_cx + 0.01, g.cy + 0.1), (g.cx + 0.12, g.cy + 0.36)]
            )
            out.append((0.8 * amp * _soft(w - d, px), None))
        elif k == "cvc":
            sgn = 1.0 if c.rng.random() < 0.5 else -1.0
            pts = [
                (g.cx + sgn * 0.3 * g.s, g.cy - 0.3 * g.s),
                (g.cx + sgn * 0.12 * g.s, g.cy - 0.27 * g.s),
                (g.med_cx + sgn * 0.025, g.cy - 0.18 * g.s),
                (g.med_cx + 0.01, g.cy + 0.02),
            ]
            out.append((amp * _soft(w - _polyline_dist(v, u, pts), px), None))
        else:
            gx, gy = g.cx + 0.28 * g.s, g.cy - 0.28 * g.s
            box = _soft(0.028 - np.abs(u - gx), px) * _soft(0.02 - np.abs(v - gy), px)
            lead = _soft(
                w
                - _polyline_dist(
                    v, u, [(gx - 0.02, gy), (g.med_cx + 0.03, g.cy - 0.1), (g.heart[0] - 0.02, g.heart[1])]
                ),
                px,
            )
            out.append((np.maximum(0.75 * st * box, amp * lead), None))
    return out


def _f_hernia(c: _Ctx, st: float, side):
    g = c.g
    x, y = (g.heart[0] - 0.01, g.heart[1] + 0.03) if not g.lateral else (g.cx + 0.12, g.cy + 0.15)
    r = (0.045 + 0.015 * st) * g.s
    disk = _disk(c.v, c.u, x, y, r, r * 0.9, 1.5 * c.px)
    level = c.v > y - 0.2 * r
    return [(st * disk * np.where(level, 0.24, -0.16), disk > 0.3)]


def _f_tuberculosis(c: _Ctx, st: float, side):
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
        streak = _soft(0.004 - _polyline_dist(c.v, c.u, [(x, y), (hx, ln.cy)]), c.px)
        delta = np.maximum(delta, 0.18 * streak)
        if c.rng.random() < 0.6:
            x, y = ln.point(c.rng, "upper", 0.55)
            r = c.rng.uniform(0.02, 0.03)
            rr = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2)
            delta = np.where(rr < 0.6 * r, -0.06, np.maximum(delta, 0.3 * _soft(0.45 * r - np.abs(rr - r), c.px)))
        out.append((st * delta * np.maximum(lm, 0.3), None))
    return out


def _ring(c: _Ctx, sd: str, r: float, wall: float, amp: float, inner: float):
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, None, 0.6)
    rr = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2)
    w = _soft(wall - np.abs(rr - r), c.px)
    centre = _soft(r - wall - rr, c.px)
    return (amp * w - inner * centre) * np.maximum(lm, 0.4)


def _f_cavity(c: _Ctx, st: float, side):
    return [(st * _ring(c, c.sides(side, 0.0)[0], c.rng.uniform(0.025, 0.038), 0.009, 0.32, 0.05), None)]


def _f_cyst(c: _Ctx, st: float, side):
    return [(st * _ring(c, c.sides(side, 0.0)[0], c.rng.uniform(0.035, 0.05), 0.0035 + 0.5 * c.px, 0.22, 0.1), None)]


def _f_calcification(c: _Ctx, st: float, side):
    sd = c.sides(side, 0.0)[0]
    x, y = c.g.lungs[sd].point(c.rng, None, 0.6)
    acc = c.zeros()
    for _ in range(int(c.rng.integers(2, 5))):
        bx, by = x + c.rng.normal(0, 0.015), y + c.rng.normal(0, 0.015)
        r = c.rng.uniform(0.006, 0.009) + 0.5 * c.px
        acc = np.maximum(acc, _soft(r - np.sqrt((c.u - bx) ** 2 + (c.v - by) ** 2), c.px))
    return [(0.55 * st * acc, None)]


def _f_other_lesion(c: _Ctx, st: float, side):
    sd = c.sides(side, 0.0)[0]
    ln, lm = c.g.lungs[sd], c.lung_masks[sd]
    x, y = ln.point(c.rng, None, 0.6)
    rr = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2)
    th = np.arctan2(c.v - y, c.u - x)
    spikes = 0.012 + 0.022 * np.maximum(np.cos(3 * (th + c.rng.uniform(0, 2))), 0) ** 6
    star = _soft(spikes - rr, c.px)
    return [(0.3 * st * star * np.maximum(lm, 0.4), None)]


_ADDITIVE = {
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
assert set(_ADDITIVE) | STRUCTURAL == set(CONCEPTS)


def _structural_boxes(c: _Ctx, concept: str) -> list[np.ndarray]:
    g, v, u, px = c.g, c.v, c.u, c.px
    if concept == "cardiomegaly":
        return [_disk(v, u, *g.heart, 2 * px) > 0.5]
    if concept in ("wide_mediastinum", "mediastinal_shift"):
        top = 0.06
        return [(np.abs(u - g.med_cx) < g.med_w) & (v > top) & (v < g.heart[1])]
    if concept == "emphysema":
        lungs = ["R"] if g.lateral else ["R", "L"]
        return [c.lung_masks[k] > 0.5 for k in lungs]
    if concept == "rib_fracture" and g.rib_fracture is not None:
        fs, fk, fd, _ = g.rib_fracture
        ytop = g.cy - 0.95 * g.lungs["R"].ry + 0.005
        y = ytop + fk * 0.05 * g.s + 1.9 * fd**2
        return [(np.abs(u - (g.cx + fs * fd)) < 0.025) & (np.abs(v - y) < 0.025)]
    if concept == "clavicle_fracture" and g.clavicle_fracture is not None:
        side = g.clavicle_fracture[0]
        x = g.cx + side * (0.03 + 0.24 * g.s) * 0.5 + side * 0.015
        y = g.cy - (0.265 + 0.33) * g.s * 0.5
        return [(np.abs(u - x) < 0.03) & (np.abs(v - y) < 0.025)]
    return []


# ----------------------------------------------------------------------------------------- public


def draw_case(case: Case, shape: tuple[int, int], site: Site | None = None) -> Drawn:
    """Draw ``case`` at ``shape = (rows, cols)``; returns the image in [0, 1] and each finding's boxes."""
    h, w = int(shape[0]), int(shape[1])
    v, u, px = _grid(h, w)
    g = _geometry(case, np.random.default_rng(case.anatomy_seed))
    rng = np.random.default_rng(case.seed)
    for f in case.findings:
        if f.concept in STRUCTURAL and not (
            case.view == "LATERAL" and f.concept in ("rib_fracture", "clavicle_fracture")
        ):
            _apply_structural(g, f.concept, f.strength, rng)
    c = _Ctx(v, u, px, g, rng)
    deltas: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    for i, f in enumerate(case.findings):
        if f.concept in _ADDITIVE:
            for delta, mask in _ADDITIVE[f.concept](c, f.strength, f.side):
                deltas.append((i, delta.astype(np.float32, copy=False), mask))
    A = _render_anatomy(c)
    comps: dict[int, list[tuple[Box, np.ndarray]]] = {}
    for i, delta, mask in deltas:
        A = A + delta
        if mask is None:
            mask = _region_of(delta)
        b = _bbox(mask) if mask is not None else None
        if b is not None:
            comps.setdefault(i, []).append((b, np.asarray(mask, dtype=bool)))
    seen: dict[str, list[tuple[Box, np.ndarray]]] = {}
    for i, f in enumerate(case.findings):
        if f.concept in STRUCTURAL:
            if f.concept not in seen:
                seen[f.concept] = [(b, m) for m in _structural_boxes(c, f.concept) if (b := _bbox(m)) is not None]
            if seen[f.concept]:
                comps[i] = list(seen[f.concept])
    img = np.clip(A, 0.0, 1.0).astype(np.float32)
    if site is not None:
        img = apply_site(img, site, rng)
    return Drawn(image=img, components=comps, female=g.female)


@lru_cache(maxsize=64)
def _marker_glyphs(seed: int) -> np.ndarray:
    r = np.random.default_rng(seed + 7919)
    return (r.random((5, 14)) < 0.45).astype(np.float32)


def apply_site(img: np.ndarray, site: Site, rng: np.random.Generator) -> np.ndarray:
    """The acquisition look of ``site``: blur, gamma, contrast/offset, noise, collimation, marker block."""
    h, w = img.shape
    m = min(h, w)
    sc = m / 128.0
    out = img
    if site.blur > 0:
        out = gaussian_filter(out, site.blur * sc)
    out = np.clip(out, 0.0, 1.0) ** site.gamma
    exp = 1.0 + rng.uniform(-site.exposure_jitter, site.exposure_jitter)
    out = site.offset + site.contrast * exp * out
    if site.noise > 0:
        out = out + site.noise * rng.standard_normal(out.shape, dtype=np.float32) * (0.6 + 0.6 * out)
    bw = int(round(site.border * w))
    if bw > 0:
        out[:, :bw] = site.border_value
        out[:, w - bw :] = site.border_value
    bt = int(round(site.border_top * h))
    if bt > 0:
        out[:bt] = site.border_value
        out[h - bt :] = site.border_value
    if site.marker:
        glyph = _marker_glyphs(site.marker_seed)
        k = max(1, int(round(m / 128)))
        block = np.kron(glyph, np.ones((k, k), np.float32))
        bh, bwid = block.shape
        pad = max(2, int(round(0.03 * m)))
        y0 = pad + bt if site.marker[0] == "t" else h - bt - pad - bh
        x0 = pad + bw if site.marker[1] == "l" else w - bw - pad - bwid
        if 0 <= y0 and y0 + bh <= h and 0 <= x0 and x0 + bwid <= w:
            region = out[y0 : y0 + bh, x0 : x0 + bwid]
            out[y0 : y0 + bh, x0 : x0 + bwid] = np.where(block > 0, 0.97, region)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


__all__ = [
    "CONCEPTS",
    "STRUCTURAL",
    "Box",
    "Case",
    "Drawn",
    "Finding",
    "Site",
    "apply_site",
    "demo_case",
    "draw_case",
    "to_uint8",
]


def demo_case(concepts: tuple[str, ...], sex: str = "M", view: str = "PA", seed: int = 0) -> Case:
    """A case with the given concepts at full strength (for looking at the drawings)."""
    return Case(sex=sex, view=view, findings=tuple(Finding(k) for k in concepts), anatomy_seed=seed, seed=seed + 1)
