"""Writing helpers shared by the providers: CSV files exactly as shipped (raw headers, gzip without a
timestamp so the bytes depend on the content only), label and number formatting, 8-bit images
(PNG/JPEG), binary masks (PNG, or GIF with a two-colour palette) and text files."""

from __future__ import annotations

import csv
import gzip
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from .anatomy import to_uint8


def fmt_label(x: float) -> str:
    """A label cell as the providers write it: ``1.0`` / ``0.0`` / ``-1.0``, blank for NaN or None."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.1f}"


def fmt_num(x: float) -> str:
    """A coordinate or spacing as Python writes a float (``12.0``, ``0.168``)."""
    return repr(float(x))


def csv_bytes(header, rows, raw_header: str | None = None) -> bytes:
    """UTF-8 CSV with ``\n`` line ends; ``raw_header`` is written verbatim instead of ``header``."""
    buf = io.StringIO()
    if raw_header is not None:
        buf.write(raw_header + "\n")
    w = csv.writer(buf, lineterminator="\n")
    if raw_header is None:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def write_csv(path: Path, header, rows, raw_header: str | None = None, gz: bool = False) -> None:
    """:func:`csv_bytes` to ``path`` (gzip without a timestamp when ``gz``), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = csv_bytes(header, rows, raw_header)
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0) if gz else data)


def save_gray(path: Path, img: np.ndarray, fmt: str) -> None:
    """An image in [0, 1] as 8-bit grey PNG or JPEG (quality 92), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(to_uint8(img), mode="L")
    if fmt == "JPEG":
        im.save(path, format="JPEG", quality=92)
    else:
        im.save(path, format="PNG")


def save_png(path: Path, img: np.ndarray) -> None:
    """:func:`save_gray` as PNG."""
    save_gray(path, img, "PNG")


def save_mask(path: Path, mask: np.ndarray) -> None:
    """Binary mask, 0 outside / 255 inside (PNG, or GIF with palette index 0 = black, 1 = white)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        im = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
        im.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
        im.save(path, format="GIF", optimize=False)
    else:
        Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, mode="L").save(path, format="PNG")


def write_text(path: Path, text: str) -> None:
    """``text`` as UTF-8 bytes (line ends as given), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
