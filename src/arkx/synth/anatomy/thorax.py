"""The body a case is drawn on: its geometry (lungs, heart, mediastinum, from ``Case.anatomy_seed``, so
every image of a patient shares it), the structural findings that change that geometry, the drawing
context shared by the finding drawers, the rendered anatomy (body, lungs with markings, mediastinum,
spine, ribs, clavicles, breast shadows) and the regions of the structural findings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .cases import Case
from .primitives import disk, ellipse_r, segment_dist, soft


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
        inside = (1.0 - ellipse_r(v, u, self.cx, self.cy, self.rx, self.ry)) * min(self.rx, self.ry)
        above = self.dome_y(u) - v
        return soft(np.minimum(inside, above), edge)

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


def geometry_of(case: Case, rng: np.random.Generator) -> Geometry:
    """The body of ``case`` before any finding (``rng`` seeded by ``case.anatomy_seed``)."""
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


def apply_structural(g: Geometry, concept: str, strength: float, rng) -> None:
    """In place: the change a structural finding makes to the body."""
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


class DrawContext:
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


def render_anatomy(c: DrawContext) -> np.ndarray:
    """The attenuation map of the anatomy (bright = dense), before additive findings and the site look."""
    g, v, u, px = c.g, c.v, c.u, c.px
    bx, by, brx, bry = g.body
    rb = (np.abs((u - bx) / brx) ** 3 + np.abs((v - by) / bry) ** 3) ** (1.0 / 3.0)
    body = soft((1.0 - rb) * brx, 2 * px)
    A = body * (0.40 + 0.14 * np.sqrt(np.clip(1.0 - rb * rb, 0.0, 1.0)))
    lungs = list({id(x): x for x in g.lungs.values()}.values())
    # abdomen under the diaphragm
    if g.lateral:
        dome_line = lungs[0].dome_y(u)
    else:
        dome_line = np.where(u < g.cx, g.lungs["R"].dome_y(u), g.lungs["L"].dome_y(u))
    A = A + 0.10 * body * soft(v - dome_line, 3 * px)
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
        spine = soft(0.035 - np.abs(u - sx), 1.5 * px) * (0.8 + 0.2 * np.cos(2 * np.pi * v / 0.055)) * body
        A = A + 0.20 * spine
        A = A + 0.10 * soft(0.008 - np.abs(u - (g.cx - 0.33 * g.s)), px) * ((v > 0.18) & (v < 0.6))
        A = A + 0.26 * disk(v, u, *g.heart, 3 * px)
        if g.female:
            A = A + 0.08 * disk(v, u, g.cx - 0.36 * g.s, g.cy + 0.22 * g.s, 0.09 * g.s, 0.12 * g.s, 8 * px)
        return A
    # mediastinum with trachea, aortic knob and heart
    med = soft(g.med_w - np.abs(u - g.med_cx), 2 * px) * soft(g.heart[1] - v, 2 * px) * body
    A = A + 0.27 * med
    trachea = soft(0.011 * g.s - np.abs(u - g.med_cx), px) * soft(g.cy - 0.06 - v, 2 * px)
    A = A - 0.12 * trachea
    A = A + 0.14 * disk(v, u, g.med_cx + g.med_w * 0.95, g.cy - 0.16 * g.s, 0.03 * g.s, 0.028 * g.s, 2 * px)
    A = A + 0.25 * disk(v, u, *g.heart, 2.5 * px)
    # spine with vertebral bodies
    spine = soft(0.03 * g.s - np.abs(u - g.cx), 1.5 * px) * (0.82 + 0.18 * np.cos(2 * np.pi * v / (0.05 * g.s)))
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
    band = soft(t - np.abs(v[None] - y), 1.2 * px) * keep  # (K, h, w)
    ribs = band.max(axis=0) * soft(d - 0.035, 2 * px) * soft(g.cx + dmax - (g.cx + d), 3 * px)
    A = A + 0.075 * ribs * body * soft(dome_line + 0.03 - v, 3 * px)
    # clavicles
    for side in (-1.0, 1.0):
        x0, y0 = g.cx + side * 0.03, g.cy - 0.265 * g.s
        x1, y1 = g.cx + side * 0.27 * g.s, g.cy - 0.33 * g.s
        dist, tt = segment_dist(v, u, x0, y0, x1, y1)
        cl = soft(0.011 * g.s - dist, 1.2 * px)
        if g.clavicle_fracture is not None and g.clavicle_fracture[0] == side:
            dy = g.clavicle_fracture[1]
            dist2, tt2 = segment_dist(v - dy, u, x0, y0, x1, y1)
            cl = np.where(tt < 0.5, cl, soft(0.011 * g.s - dist2, 1.2 * px))
            cl = cl * (np.abs(np.where(tt < 0.5, tt, tt2) - 0.5) > 0.035)
        A = A + 0.14 * cl
    # female: breast soft-tissue shadows over the lower zones
    if g.female:
        for ln in lungs:
            bx_ = ln.cx + 0.25 * ln.rx * ln.lateral_sign()
            A = A + 0.12 * disk(v, u, bx_, ln.cy + 0.6 * ln.ry, 0.95 * ln.rx, 0.36 * ln.ry, 10 * px) * body
    return A


def structural_masks(c: DrawContext, concept: str) -> list[np.ndarray]:
    """Regions of a structural finding (what its boxes are taken from), after the geometry changed."""
    g, v, u, px = c.g, c.v, c.u, c.px
    if concept == "cardiomegaly":
        return [disk(v, u, *g.heart, 2 * px) > 0.5]
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
