"""Headerless raw radiographs: the JSRT ``.IMG`` files.

JSRT (Japanese Society of Radiological Technology) ships its 247 chest radiographs as raw files with
no header at all: 2048 x 2048 pixels, 16-bit unsigned **big-endian** words of which 12 bits are used
(0..4095), row-major, 0.175 mm pixels. The values are the digitised film density, so *high values are
dark on the film* (air, lungs): displayed as stored, the lungs look white. The SCR database (van
Ginneken et al.) and every reader of JSRT invert them so that bone is bright, as on a normal
radiograph; :func:`read_jsrt_img` does the same and returns ``1 - value / 4095``.

The side is inferred from the file length (a square of 16-bit words), so scaled-down copies in the
same format (as the synthetic generator writes) read too; a length that is not a square of 2-byte
words is an error naming the file.
"""

from __future__ import annotations

from ..errors import ArkxValueError

import math
from pathlib import Path

import numpy as np

JSRT_SIDE = 2048
JSRT_MAX = 4095  # 12 bits stored
JSRT_PIXEL_MM = 0.175


class RawImageError(ArkxValueError):
    """A raw image file does not have the expected size or value range."""


def jsrt_side(path: str | Path) -> int:
    """The side of the square raw image at ``path``, from its byte length (2048 for real JSRT files)."""
    n = Path(path).stat().st_size
    side = math.isqrt(n // 2) if n % 2 == 0 else 0
    if side == 0 or 2 * side * side != n:
        raise RawImageError(
            f"{path}: {n} bytes is not a square image of 16-bit words (JSRT .IMG is {2 * JSRT_SIDE**2} bytes, "
            f"{JSRT_SIDE}x{JSRT_SIDE} big-endian)"
        )
    return side


def read_jsrt_img(path: str | Path, invert: bool = True) -> np.ndarray:
    """A JSRT ``.IMG`` file as float32 in [0, 1], ``side x side``, bone bright (``invert=True``).

    Values above 4095 (not possible in a 12-bit file) are an error: they mean the file is not JSRT raw
    data or was written little-endian.
    """
    side = jsrt_side(path)
    raw = np.fromfile(path, dtype=">u2")
    top = int(raw.max()) if raw.size else 0
    if top > JSRT_MAX:
        raise RawImageError(
            f"{path}: value {top} exceeds 12 bits (max {JSRT_MAX}); not a big-endian JSRT raw image?"
        )
    img = raw.reshape(side, side).astype(np.float32) / JSRT_MAX
    return (1.0 - img) if invert else img


def write_jsrt_img(path: str | Path, image: np.ndarray) -> Path:
    """Write a square image in [0, 1] (bone bright) as a JSRT-format raw file (inverted, 12-bit, big-endian)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise ValueError(f"JSRT raw images are square 2-D arrays, got shape {image.shape}")
    raw = np.round((1.0 - np.clip(image, 0.0, 1.0)) * JSRT_MAX).astype(">u2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.tofile(path)
    return path


__all__ = ["JSRT_MAX", "JSRT_PIXEL_MM", "JSRT_SIDE", "RawImageError", "jsrt_side", "read_jsrt_img", "write_jsrt_img"]
