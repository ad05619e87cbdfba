"""The acquisition look of a dataset put on a drawn image (blur, gamma, contrast and offset, exposure
jitter, noise, collimation borders, a burned-in marker block), and the conversion to 8 bits."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

from .cases import Site


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
