"""The Pillow path of :mod:`arkx.data.io`: PNG, JPEG and TIFF files decoded to float32 ``[H, W]`` in
``[0, 1]``. Checks the declared size against the pixel cap before decoding (and rewords Pillow's own
decompression-bomb guard), decodes large JPEGs at a reduced DCT scale for the cache, scales 8-bit by
255 and 16-bit by 65535 or by the ``b`` significant bits of a PNG ``sBIT`` chunk (read from the file,
Pillow does not expose it), logs 16-bit images that look like unscaled 12-bit data, and turns colour,
palette and alpha images into luminance. The dispatcher :func:`arkx.data.io.read_image` calls
:func:`_read_pillow`; the conventions are documented there.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .io import (
    DRAFT_MARGIN,
    MAX_PIXELS_ENV,
    ImageReadError,
    _cap_reason,
    _check_declared_size,
    _luminance,
)

log = logging.getLogger("arkx.data")

#: 16-bit images whose largest value is below this (and with no PNG sBIT chunk) are reported: 12-bit
#: data written unscaled into 16-bit words
_LOW_RANGE_16BIT = 4096
_LOW_RANGE_REPORTS = 20  # named files per process; then one line saying that further ones are not named
_low_range_reported: set[str] = set()

_PIL_BOMB = re.compile(r"Image size \((\d+) pixels\)")


def _read_pillow(path: Path, draft_size: int | None, cap: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette transparency, EXIF noise, Pillow's bomb warning, ...
            with Image.open(path) as img:  # reads the header only
                _check_declared_size(path, img.size, len(img.getbands()), cap)
                if draft_size and img.format == "JPEG":
                    target = DRAFT_MARGIN * draft_size
                    if min(img.size) >= 2 * target:
                        img.draft("L", (target, target))
                img.load()
                return _pil_to_float(img, path)
    except ImageReadError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (expected PNG, JPEG or DICOM)") from None
    except Image.DecompressionBombError as e:
        # Pillow's own guard fired while opening (above 2 x its MAX_IMAGE_PIXELS): say it like ours
        found = _PIL_BOMB.search(str(e))
        declared = int(found.group(1)) if found else None
        if declared is not None and declared > cap:
            raise ImageReadError(path, _cap_reason(None, declared, cap)) from None
        raise ImageReadError(path, (
            f"declares {'an implausibly large image' if declared is None else f'{declared:,} pixels'}, above "
            f"Pillow's own limit (2 x PIL.Image.MAX_IMAGE_PIXELS = {2 * (Image.MAX_IMAGE_PIXELS or 0):,}), "
            f"which {MAX_PIXELS_ENV} does not raise")) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            reason = f"file is truncated or corrupt ({msg})"
        else:
            reason = f"corrupt or unreadable image data ({msg})"
        raise ImageReadError(path, reason) from None


def _pil_to_float(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.float32) * np.float32(1 / 255)
    if mode == "1":
        return np.asarray(img, dtype=np.float32)
    if mode in ("LA", "La"):
        return np.asarray(img.getchannel("L"), dtype=np.float32) * np.float32(1 / 255)
    if mode.startswith("I;16"):
        return _scale_16bit(np.asarray(img), _png_significant_bits(path) if img.format == "PNG" else None, path)
    if mode == "I":
        arr = np.asarray(img)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise ImageReadError(path, f"unsupported 32-bit integer pixels (range {lo}..{hi}; expected 8 or 16 bit)")
        return _scale_16bit(arr, _png_significant_bits(path) if img.format == "PNG" else None, path)
    if mode == "F":
        raise ImageReadError(path, "unsupported floating-point image (mode F); expected 8- or 16-bit gray")
    if mode != "RGB":
        try:
            img = img.convert("RGBA" if mode in ("P", "PA") and "transparency" in img.info else "RGB")
        except Exception as e:  # noqa: BLE001
            raise ImageReadError(path, f"unsupported image mode {mode!r} ({e})") from None
    rgb = np.asarray(img)[..., :3]
    return _luminance(rgb, 255)


def _scale_16bit(arr: np.ndarray, significant_bits: int | None, path: Path) -> np.ndarray:
    """16-bit gray values to ``[0, 1]``.

    * A PNG ``sBIT`` chunk saying ``b < 16`` bits are significant: the PNG specification has the
      writer scale ``b``-bit samples up to 16 bits (shift left, optionally replicating the top bits),
      and the reader recover them by shifting right; we then divide by ``2**b - 1``. If instead every
      value fits in ``b`` bits, the writer stored the ``b``-bit values unscaled (non-conforming, but
      what "12-bit data in a 16-bit PNG" tools produce; a conforming file would need an original whose
      maximum is below 1/16 of its range for 12 bits, i.e. a nearly black image): divide them by
      ``2**b - 1`` directly.
    * No ``sBIT``: divide by 65535, the range the format declares. We deliberately do not guess a
      smaller depth from the values: any per-image rule (scale by the smallest ``2**k - 1`` covering
      the maximum, or "12 bits if the maximum is below 4096") changes the contrast between images of
      one dataset whose maxima straddle the threshold, silently. A maximum below 4096 (16x below the
      range: 12-bit data written unscaled, or a nearly black image) is logged instead, naming the file
      and the fix (scale the values to 16 bits, or add an sBIT chunk).
    """
    out = arr.astype(np.float32)
    if significant_bits is not None and 1 <= significant_bits < 16:
        full = 2**significant_bits - 1
        if int(arr.max(initial=0)) > full:  # scaled up as the PNG specification says: drop the low bits
            out = np.right_shift(arr.astype(np.uint16), 16 - significant_bits).astype(np.float32)
        return out * np.float32(1 / full)
    top = int(arr.max(initial=0))
    if 0 < top < _LOW_RANGE_16BIT:
        _report_low_range(path, top)
    return out * np.float32(1 / 65535)


def _report_low_range(path: Path, top: int) -> None:
    key = str(path)
    if key in _low_range_reported or len(_low_range_reported) > _LOW_RANGE_REPORTS:
        return
    _low_range_reported.add(key)
    if len(_low_range_reported) > _LOW_RANGE_REPORTS:
        log.warning("more 16-bit images with values below %d and no sBIT chunk; not naming further ones "
                    "(in this process)", _LOW_RANGE_16BIT)
        return
    log.warning("%s: 16-bit image whose largest value is %d (below %d) and no PNG sBIT chunk: read as 16-bit "
                "(value / 65535), so it is dark and keeps about %d grey levels in the 8-bit cache; if it holds "
                "12-bit (or fewer) data, rescale the values to 16 bits or add an sBIT chunk naming the bit depth",
                path, top, _LOW_RANGE_16BIT, top // 257 + 1)


def _png_significant_bits(path: Path) -> int | None:
    """The gray (first) value of a PNG's ``sBIT`` chunk, or None when it has none.

    Pillow does not expose sBIT, so the chunk list is walked from the file: ``sBIT`` must come before
    the first ``IDAT``, and each chunk is ``length, type, data, crc``; data of other chunks is skipped
    with ``seek``, so this reads a few dozen bytes.
    """
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            for _ in range(256):  # IHDR, then a few ancillary chunks; bounded against a crafted file
                head = f.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND"):
                    return None
                if kind == b"sBIT":
                    data = f.read(min(length, 4))
                    return data[0] if data else None
                f.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return None
    return None
