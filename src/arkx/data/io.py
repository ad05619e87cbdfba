"""Decode one image file (PNG, JPEG, TIFF, DICOM, MetaImage or JSRT raw) to a grayscale float array, and
resize it for the cache.

Every reader returns the same convention: float32 ``[H, W]`` in ``[0, 1]``, 0 = black (air),
1 = white (bone), whatever the file's format, bit depth or photometric interpretation, so that a
model trained on a mix of providers never sees "inverted" or "dark" images because one of them ships
MONOCHROME1 DICOMs or 12-bit data in 16-bit words.

* **Size cap, before decoding.** Every format's *declared* size (width x height x samples per pixel of
  the one frame decoded) is checked against :data:`MAX_IMAGE_PIXELS` before any pixel is decoded, so a
  small file that declares a huge image (an RLE DICOM or a zlib ``.mha`` of 20000 x 20000, a PNG
  "decompression bomb") is refused in milliseconds instead of taking gigabytes. The error names the
  file, the declared size and the cap. See :func:`max_image_pixels` for the override.
* PNG / JPEG / TIFF (Pillow): 8-bit values are divided by 255. 16-bit (``I;16*``, or ``I`` holding
  values in ``0..65535``) by 65535, except a PNG whose ``sBIT`` chunk says that only ``b < 16`` bits
  are significant: then values are read as ``b``-bit data (see :func:`_scale_16bit`). A 16-bit image
  without ``sBIT`` whose largest value is below 4096 is kept as 16-bit but logged (once per file, on
  ``logging.getLogger("arkx.data")``): it is most likely 12-bit data written unscaled, which the 8-bit
  cache would keep with only 16 grey levels. Colour, palette and alpha images become luminance
  (ITU-R 601: 0.299 R + 0.587 G + 0.114 B); alpha is ignored. EXIF orientation is *not* applied: boxes
  of the datasets are in the pixel coordinates of the file as stored. Truncated files are errors: the
  image is fully decoded with ``Image.load()`` and ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set.
* DICOM (pydicom 3, detected by the ``.dcm``/``.dicom``/``.dic`` extension or the ``DICM`` magic at
  offset 128): the dataset is read with ``dcmread`` (so Deflated Explicit VR Little Endian and files
  without a preamble or a Transfer Syntax UID read too) and only the first frame is decoded. The
  pipeline is the standard's (PS3.3 C.11, as ``pydicom.pixels.apply_modality_lut`` then
  ``apply_voi_lut``): the modality transform (``RescaleSlope``/``RescaleIntercept``, or a Modality LUT
  Sequence), then the VOI transform *on the modality output* (a VOI LUT Sequence, else the first
  ``WindowCenter``/``WindowWidth`` pair with LINEAR, LINEAR_EXACT or SIGMOID), and the output range of
  the last transform is mapped to ``[0, 1]``: without a VOI the range is the stored range
  ``[0, 2**BitsStored - 1]`` (signed: ``[-2**(b-1), 2**(b-1) - 1]``) passed through the modality
  transform; after a VOI LUT it is ``[0, 2**depth - 1]`` of the LUT descriptor. MONOCHROME1 is then
  inverted (``1 - x``) so that both photometric interpretations look the same. Pixels equal to
  ``PixelPaddingValue`` (or within ``PixelPaddingRangeLimit``) are set to 0 (black, like air): the
  standard places padding at the black end of the stored range for both photometric interpretations
  (PS3.3 C.7.5.1.1.2) and excludes it from the grayscale pipeline, which a window would otherwise map
  to an arbitrary grey. Rescale and windowing are folded into one float32 multiply-add (the common,
  fast path; it matches pydicom up to float rounding). Colour images (RGB, YBR converted to RGB by
  pydicom) become luminance scaled by ``2**BitsStored - 1``; PALETTE COLOR is refused. Compressed
  transfer syntaxes are decoded by whatever pydicom plugin is installed (RLE and, through Pillow,
  8-bit JPEG and some JPEG 2000 work out of the box); when decoding fails and a plugin that handles
  the transfer syntax is not installed, the error names the packages to install.
* MetaImage (``.mha``/``.mhd``, :mod:`arkx.data.mha`): scaled by the image's own range (the format
  records no bit depth or window); a ``.mhd`` data file must lie inside the header's folder.
* JSRT raw ``.IMG`` (:mod:`arkx.data.raw_img`): 12-bit big-endian words, inverted.

Any failure raises :class:`ImageReadError` naming the file and a reason a user can act on.
"""

from __future__ import annotations

from ..errors import ArkxError, ArkxValueError

import importlib.util
import logging
import math
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["ImageReadError", "read_image", "resize_uint8", "load_resized", "is_dicom", "source_files",
           "max_image_pixels", "RESIZE_FILTER", "DRAFT_MARGIN", "MAX_IMAGE_PIXELS", "MAX_PIXELS_ENV"]

log = logging.getLogger("arkx.data")

#: Filter of :func:`resize_uint8`. Pillow's BILINEAR is a triangle filter whose support is stretched by
#: the reduction factor, i.e. a true antialiased (area-weighted) downscale, not 4-tap point sampling.
#: It has no overshoot (LANCZOS rings at collimator edges and burnt-in markers, then clips), it is
#: what torchvision's ``Resize`` uses on PIL images (the authors' pipeline), and it is ~2x faster
#: than LANCZOS. BOX would be as fast but is visibly blockier at non-integer factors.
RESIZE_FILTER = Image.Resampling.BILINEAR

#: JPEGs are decoded at a reduced DCT scale (``Image.draft``) only down to ``DRAFT_MARGIN * size`` per
#: side, so at least a 2x antialiased resize always follows the decoder's own 1/2..1/8 reduction.
#: Measured on chest-like 2048 px JPEGs (224-512 px targets): draft + resize is within mean < 0.5 and
#: 99th percentile <= 2 gray levels of full decode + resize (a few pixels on hard edges differ by up
#: to ~8), and 2-3x faster; a margin of 1 (decoding straight to ~size) gave mean 1-3 and p99 up to 9.
DRAFT_MARGIN = 2

#: The largest image any reader decodes, counted as declared width x height x samples per pixel
#: (colour channels) of the one frame decoded (DICOM: Rows x Columns x SamplesPerPixel of the first
#: frame, the only one read; MetaImage: the product of DimSize x channels, all slices being read).
#: 60 M is about 3x the largest radiographs (a 4300 x 4300 detector, a 4096 x 5355 mammogram: ~18-22 M)
#: and bounds one decode to ~0.5 GB (float32 of 60 M values, plus the decoder's own buffer).
#: Override with the environment variable :data:`MAX_PIXELS_ENV` (read at every call, so cache workers
#: inherit it) or the ``max_pixels`` argument of :func:`read_image` / :func:`load_resized`. Pillow keeps
#: its own guard too (it refuses more than ``2 * PIL.Image.MAX_IMAGE_PIXELS``, ~179 M pixels).
MAX_IMAGE_PIXELS = 60_000_000
#: Environment variable that overrides :data:`MAX_IMAGE_PIXELS` (a positive integer).
MAX_PIXELS_ENV = "ARKX_MAX_IMAGE_PIXELS"

_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: 16-bit images whose largest value is below this (and with no PNG sBIT chunk) are reported: 12-bit
#: data written unscaled into 16-bit words
_LOW_RANGE_16BIT = 4096
_LOW_RANGE_REPORTS = 20  # named files per process; then one line saying that further ones are not named
_low_range_reported: set[str] = set()


class ImageReadError(ArkxError):
    """An image file could not be decoded. ``path`` is the file, ``reason`` says why in plain words."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(self.path, self.reason)

    def __str__(self) -> str:
        return f"cannot read image {self.path}: {self.reason}"

    def __reduce__(self):  # picklable across process pools with its two attributes
        return (type(self), (self.path, self.reason))


# ----------------------------------------------------------------------------------------------------
# public API


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a ``.dcm``/``.dicom`` file name or a file with the ``DICM`` magic at offset 128."""
    path = Path(path)
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def max_image_pixels(override: int | None = None) -> int:
    """The pixel cap in force: ``override`` if given, else ``$ARKX_MAX_IMAGE_PIXELS``, else
    :data:`MAX_IMAGE_PIXELS`.

    Raises:
        ArkxValueError: the override or the environment variable is not a positive integer.
    """
    source, value = "max_pixels", override
    if value is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return MAX_IMAGE_PIXELS
        source, value = MAX_PIXELS_ENV, raw.replace("_", "")
    try:
        cap = int(value)
    except (TypeError, ValueError):
        cap = 0
    if cap <= 0:
        raise ArkxValueError(f"{source}={value!r}: the image pixel cap must be a positive integer")
    return cap


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``path`` to float32 ``[H, W]`` in ``[0, 1]`` (0 = black/air, 1 = white/bone).

    ``max_pixels`` overrides the declared-size cap (see :func:`max_image_pixels`).

    Raises:
        ImageReadError: the file is missing, empty, truncated, not an image, has no pixel data, an
            unsupported depth or mode, non-finite pixels, declares more pixels than the cap, or needs a
            decoder that is not installed.
    """
    return _read(Path(path), draft_size=None, cap=max_image_pixels(max_pixels))


def resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the whole image (no crop, aspect not kept) to uint8 ``[size, size]``, ``round(x * 255)``.

    ``image`` is a float array in ``[0, 1]`` (values outside are clipped). Downscaling is antialiased
    (see :data:`RESIZE_FILTER`), computed in float32 so 16-bit detail is averaged before quantising.
    """
    size = int(size)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if image.shape != (size, size):
        pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode=None)
        image = np.asarray(pil.resize((size, size), RESIZE_FILTER))
    out = np.multiply(image, 255.0, dtype=np.float32)
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def load_resized(path: str | os.PathLike, size: int, *, max_pixels: int | None = None) -> np.ndarray:
    """:func:`read_image` then :func:`resize_uint8`; what the cache workers call.

    Large JPEGs are decoded at a reduced DCT scale when the target is at least ``2 * DRAFT_MARGIN``
    times smaller than the image (see :data:`DRAFT_MARGIN`).
    """
    return resize_uint8(_read(Path(path), draft_size=int(size), cap=max_image_pixels(max_pixels)), size)


def source_files(path: str | os.PathLike) -> list[Path]:
    """Every file whose bytes make up the image at ``path``: the file itself, plus the pixel-data file
    that a ``.mhd`` header names. What the cache hashes to notice a replaced image.

    The data file is resolved by the same rule as the reader: inside the header's folder only.

    Raises:
        ImageReadError: the ``.mhd`` header cannot be read, or names a data file that is absolute or
            resolves (``..``, symlinks) outside the header's folder -- the same refusal
            :func:`read_image` gives for that file.
    """
    path = Path(path)
    files = [path]
    if path.suffix.lower() == ".mhd":
        from .mha import data_file

        try:
            extra = data_file(path)
        except (ValueError, OSError, KeyError) as err:
            raise ImageReadError(path, _strip_path(_oserror_text(err), path)) from None
        if extra is not None:
            files.append(extra)
    return files


# ----------------------------------------------------------------------------------------------------
# implementation


def _read(path: Path, draft_size: int | None, cap: int) -> np.ndarray:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot access file ({e.strerror or e})") from None
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    if st.st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if is_dicom(path):
        image = _read_dicom(path, cap)
    elif suffix in (".mha", ".mhd"):
        image = _read_metaimage(path, cap)
    elif suffix == ".img":
        image = _read_jsrt(path, cap)
    else:
        image = _read_pillow(path, draft_size, cap)
    if image.ndim != 2 or image.size == 0:
        raise ImageReadError(path, f"decoded to an unusable array of shape {image.shape}")
    return image


def _check_declared_size(path: Path, dims: tuple[int, ...], samples: int, cap: int) -> None:
    """Refuse, before decoding, an image that declares more than ``cap`` values. ``dims`` is written
    as the file states it (width first), ``samples`` the values per pixel."""
    values = math.prod(dims) * max(int(samples), 1)
    if values > cap:
        shape = "x".join(str(d) for d in dims) + (f" x {samples} samples" if samples > 1 else "")
        raise ImageReadError(path, _cap_reason(shape, values, cap))


def _cap_reason(shape: str | None, values: int, cap: int) -> str:
    declared = f"a {shape} image ({values:,} pixel values)" if shape else f"{values:,} pixels"
    return (f"declares {declared}, above the cap of {cap:,} (a decompression bomb?); "
            f"if the file is genuine, raise the cap with {MAX_PIXELS_ENV}")


def _strip_path(message: str, path: Path) -> str:
    """An error text without a leading ``"<path>: "`` (ImageReadError names the file already)."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _oserror_text(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err)


# --- MetaImage (NODE21) and raw JSRT ------------------------------------------------------------------


def _read_metaimage(path: Path, cap: int) -> np.ndarray:
    """MetaImage pixels scaled by the image's own range: the format records no bit depth or window
    (NODE21's processed images are 2-D uint16 with varying ranges)."""
    from .mha import declared_shape, read_mha, read_mha_header

    try:
        dims, channels = declared_shape(read_mha_header(path), path)
        _check_declared_size(path, dims, channels, cap)
        arr = read_mha(path)
    except (ValueError, OSError) as err:
        raise ImageReadError(path, _strip_path(_oserror_text(err), path)) from None
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ImageReadError(path, f"MetaImage of shape {arr.shape} is not a 2-D radiograph")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ImageReadError(path, "pixel data contains NaN or Inf")
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _read_jsrt(path: Path, cap: int) -> np.ndarray:
    from .raw_img import jsrt_side, read_jsrt_img

    try:
        side = jsrt_side(path)  # from the file length: the declared size of a headerless file
        _check_declared_size(path, (side, side), 1, cap)
        return read_jsrt_img(path)
    except (ValueError, OSError) as err:
        raise ImageReadError(path, _strip_path(_oserror_text(err), path)) from None


# --- Pillow ------------------------------------------------------------------------------------------

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


def _luminance(rgb: np.ndarray, max_value: float) -> np.ndarray:
    return (rgb.astype(np.float32) @ _LUMA) * np.float32(1 / max_value)


# --- DICOM -------------------------------------------------------------------------------------------

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: Compressed transfer syntax -> the pip installs that give pydicom a decoder for it, each with the
#: modules that install provides (to tell which ones are missing). Pillow, always installed, covers only
#: 8-bit JPEG and part of JPEG 2000; pydicom's own RLE decoder covers RLE.
_LIBJPEG = ("pylibjpeg pylibjpeg-libjpeg", ("pylibjpeg", "libjpeg"))
_OPENJPEG = ("pylibjpeg pylibjpeg-openjpeg", ("pylibjpeg", "openjpeg"))
_RLE = ("pylibjpeg pylibjpeg-rle", ("pylibjpeg", "rle"))
_GDCM = ("python-gdcm", ("gdcm",))
_JPEGLS = ("pyjpegls", ("jpeg_ls",))
_DECODER_PACKAGES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "1.2.840.10008.1.2.4.50": (_LIBJPEG, _GDCM),  # JPEG Baseline (8-bit)
    "1.2.840.10008.1.2.4.51": (_LIBJPEG, _GDCM),  # JPEG Extended (12-bit: Pillow cannot)
    "1.2.840.10008.1.2.4.57": (_LIBJPEG, _GDCM),  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": (_LIBJPEG, _GDCM),  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": (_LIBJPEG, _JPEGLS, _GDCM),  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": (_LIBJPEG, _JPEGLS, _GDCM),  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": (_OPENJPEG, _GDCM),  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": (_OPENJPEG, _GDCM),  # JPEG 2000
    "1.2.840.10008.1.2.4.92": (_OPENJPEG, _GDCM),  # JPEG 2000 multi-component Lossless
    "1.2.840.10008.1.2.4.93": (_OPENJPEG, _GDCM),  # JPEG 2000 multi-component
    "1.2.840.10008.1.2.4.201": (_OPENJPEG,),  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": (_OPENJPEG,),  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": (_OPENJPEG,),  # HTJ2K
    "1.2.840.10008.1.2.5": (_RLE, _GDCM),  # RLE Lossless (pydicom decodes it; these are alternatives)
}  # fmt: skip


def _read_dicom(path: Path, cap: int) -> np.ndarray:
    ds = _dicom_dataset(path)
    _check_dicom_size(ds, path, cap)
    arr = _decode_first_frame(ds, path)
    try:
        out = _dicom_to_unit(arr, ds, path)
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageReadError(path, f"cannot apply the DICOM intensity transforms ({type(e).__name__}: {e})") from None
    if not np.isfinite(out).all():
        raise ImageReadError(path, "image has NaN or infinite pixel values")
    return out


def _dicom_dataset(path: Path):
    """The whole dataset, read leniently (``force``: files without preamble or meta header), with a
    Transfer Syntax UID: a missing one is taken from the encoding the parser detected. Reading the
    dataset (rather than decoding by path) is what inflates Deflated Explicit VR Little Endian."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about every vendor quirk it tolerates
            ds = pydicom.dcmread(path, force=True)
    except Exception as e:  # noqa: BLE001  (pydicom raises a zoo of types on garbage input)
        msg = str(e) or type(e).__name__
        if isinstance(e, EOFError) or "truncat" in msg.lower() or "end of file" in msg.lower():
            raise ImageReadError(path, f"DICOM file is truncated ({msg})") from None
        raise ImageReadError(path, f"corrupt or unsupported DICOM ({type(e).__name__}: {msg})") from None
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if getattr(ds, "preamble", None) is None and not getattr(ds, "file_meta", None):
            raise ImageReadError(path, "not a valid DICOM file (no DICM header and no pixel data found)")
        raise ImageReadError(path, "DICOM file has no pixel data (no PixelData element)")
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        implicit, little = getattr(ds, "original_encoding", (None, None))
        ds.file_meta = meta if meta is not None else FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit or implicit is None
                                          else ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian)
    return ds


def _check_dicom_size(ds, path: Path, cap: int) -> None:
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        samples = int(ds.get("SamplesPerPixel") or 1)
    except (TypeError, ValueError) as e:
        raise ImageReadError(path, f"DICOM image size is not a number ({e})") from None
    if rows <= 0 or cols <= 0:
        raise ImageReadError(path, f"DICOM file declares no image size (Rows={rows}, Columns={cols})")
    _check_declared_size(path, (cols, rows), samples, cap)


def _decode_first_frame(ds, path: Path) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixel_array(ds, index=0)
    except Exception as e:  # noqa: BLE001  (decoders and plugins raise many types on bad data)
        raise ImageReadError(path, _decode_failure_reason(ds, e)) from None


def _decode_failure_reason(ds, err: Exception) -> str:
    """One line: what went wrong and, when a decoder plugin that is not installed could decode this
    transfer syntax, which package to install."""
    detail = _plugin_errors(str(err) or type(err).__name__)
    low = detail.lower()
    if isinstance(err, AttributeError) and "pixel data" in low:
        return "DICOM file has no pixel data (no PixelData element)"
    tsyntax = ds.file_meta.TransferSyntaxUID
    options = _DECODER_PACKAGES.get(str(tsyntax))
    if options is not None:
        missing = [pip for pip, modules in options if not all(_importable(m) for m in modules)]
        if missing:
            installs = " or ".join(f"`pip install {pip}`" for pip in missing)
            return f"no installed decoder could decode its {tsyntax.name} pixel data ({detail}); install: {installs}"
    elif getattr(tsyntax, "is_compressed", False):
        return (f"pydicom has no decoder for {tsyntax.name} ({tsyntax}); convert the file to an uncompressed "
                f"transfer syntax first (e.g. `gdcmconv --raw` or dcmtk's `dcmdjpeg`) ({detail})")
    if "reshape" in low or "truncat" in low or "shorter" in low or "less than expected" in low \
            or isinstance(err, EOFError):
        return f"DICOM pixel data is truncated or does not match Rows x Columns ({detail})"
    if isinstance(err, (KeyError, AttributeError)):
        return f"DICOM file is missing a required attribute ({detail})"
    return f"corrupt or unsupported DICOM pixel data ({detail})"


def _plugin_errors(msg: str) -> str:
    """pydicom's multi-line "all plugins failed" text as one line: only the plugins' own messages."""
    lines = [line.strip() for line in msg.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Unable to decode"):
        lines = lines[1:]
    if lines and "missing dependencies" in lines[0]:
        return "no decoder plugin for it is installed"
    text = "; ".join(lines)
    return text if len(text) <= 300 else text[:297] + "..."


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _first(value) -> float:
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        value = value[0]
    return float(value)


def _dicom_to_unit(arr: np.ndarray, ds, path: Path) -> np.ndarray:
    """The standard's grayscale pipeline on the stored values of one frame: modality transform, VOI
    transform on its output, range of the last transform to ``[0, 1]``, MONOCHROME1 inverted,
    padding black."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or 0)
    if arr.dtype.kind == "f":
        raise ImageReadError(path, "unsupported DICOM float pixel data; expected integer pixels")
    if not 1 <= bits <= 32:
        raise ImageReadError(path, f"unsupported DICOM bit depth (BitsStored={bits})")
    if arr.ndim == 3:  # colour (pydicom already converted YBR to RGB)
        if arr.shape[-1] < 3:
            raise ImageReadError(path, f"unsupported DICOM samples per pixel ({arr.shape[-1]})")
        return _luminance(arr[..., :3], 2**bits - 1)
    if arr.ndim != 2:
        raise ImageReadError(path, f"unsupported DICOM pixel array shape {arr.shape}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(path, f"unsupported DICOM photometric interpretation {photometric!r}")
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    invert = photometric == "MONOCHROME1"

    x, slope, intercept, modality_range = _modality(arr, ds, path, stored)
    if ds.get("VOILUTSequence"):
        out = _voi_lut(x, slope, intercept, ds, path)
        if invert:
            out *= -1
            out += 1
    else:
        out = _linear_voi(x, slope, intercept, modality_range, ds, invert)
    padding = _padding_mask(arr, ds)
    if padding is not None:
        out[padding] = 0.0
    return out


def _modality(arr: np.ndarray, ds, path: Path, stored: tuple[int, int]):
    """The modality transform, kept symbolic when it is a rescale so that it folds into the VOI step:
    ``(x, slope, intercept, (lo, hi))`` with modality value ``slope * x + intercept`` in ``[lo, hi]``.
    A Modality LUT Sequence is applied here (``x`` = its output, slope 1, intercept 0)."""
    if ds.get("ModalityLUTSequence"):
        first, table, depth = _lut_table(ds.ModalityLUTSequence[0], ds, path, "Modality")
        return _apply_lut(arr, first, table), 1.0, 0.0, (0.0, float(2**depth - 1))
    slope, intercept = 1.0, 0.0
    if "RescaleSlope" in ds and ds.RescaleSlope not in (None, ""):
        slope = float(ds.RescaleSlope)
    if "RescaleIntercept" in ds and ds.RescaleIntercept not in (None, ""):
        intercept = float(ds.RescaleIntercept)
    if slope == 0 or not math.isfinite(slope) or not math.isfinite(intercept):
        raise ImageReadError(path, f"invalid DICOM rescale (slope={slope}, intercept={intercept})")
    lo, hi = sorted((stored[0] * slope + intercept, stored[1] * slope + intercept))
    return arr, slope, intercept, (lo, hi)


def _voi_lut(x: np.ndarray, slope: float, intercept: float, ds, path: Path) -> np.ndarray:
    """The first VOI LUT of the sequence, indexed by the *modality output* (PS3.3 C.11.2.1.1), scaled by
    its output range. A rescaled value that is not an integer enters the LUT rounded down, as pydicom
    does (it casts ``value - first_mapped`` to an unsigned integer)."""
    first, table, depth = _lut_table(ds.VOILUTSequence[0], ds, path, "VOI")
    if slope != 1.0 or intercept != 0.0:
        x = np.floor(x * slope + intercept).astype(np.int64)
    top = 2**depth - 1
    lut_max = int(table.max(initial=0))
    if 0 < lut_max < 2 ** (depth - 1):  # descriptor overstates the depth (a known vendor quirk)
        top = 2 ** max(lut_max.bit_length(), 1) - 1
    out = _apply_lut(x, first, table).astype(np.float32)
    out *= np.float32(1 / top)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _lut_table(item, ds, path: Path, what: str) -> tuple[int, np.ndarray, int]:
    """``(first value mapped, entries as int64, bits per entry)`` of a LUT item (LUT Descriptor and
    LUT Data; OW data is 16-bit words in the dataset's byte order)."""
    try:
        n_entries, first, depth = (int(v) for v in item.LUTDescriptor)
        element = item["LUTData"]
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ImageReadError(path, f"DICOM {what} LUT has no valid LUT Descriptor / LUT Data ({e})") from None
    n_entries = n_entries or 65536  # 0 means 2**16 (PS3.3 C.11.1.1.1)
    if not 1 <= depth <= 16:
        raise ImageReadError(path, f"DICOM {what} LUT of {depth} bits per entry is not supported")
    value = element.value
    if isinstance(value, (bytes, bytearray)):
        little = getattr(ds.file_meta.TransferSyntaxUID, "is_little_endian", True)
        table = np.frombuffer(value[: len(value) // 2 * 2], dtype="<u2" if little else ">u2")
    else:
        table = np.atleast_1d(np.asarray(value, dtype=np.int64))
    if table.size < n_entries:
        raise ImageReadError(path, f"DICOM {what} LUT has {table.size} entries, its descriptor declares {n_entries}")
    return first, table[:n_entries].astype(np.int64), depth


def _apply_lut(x: np.ndarray, first: int, table: np.ndarray) -> np.ndarray:
    """Values below the first mapped value take the first entry, above the last take the last."""
    index = np.clip(x.astype(np.int64) - first, 0, table.size - 1)
    return table[index]


def _linear_voi(x: np.ndarray, slope: float, intercept: float, modality_range: tuple[float, float], ds,
                invert: bool) -> np.ndarray:
    """Window (or, without one, the full modality range) to ``[0, 1]``, folded with the rescale into one
    multiply-add on ``x``: ``y = a * x + b``; MONOCHROME1 folds in as ``y -> 1 - y``."""
    m_lo, m_hi = modality_range
    window = _window(ds)
    sigmoid = None
    if window is not None:
        c, w, func = window
        # x_modality = slope * x + intercept
        if func == "SIGMOID" and w > 0:
            sigmoid = (slope * 4 / w, (intercept - c) * 4 / w)
            a = b = 0.0
        elif func == "LINEAR_EXACT" and w > 0:
            a, b = slope / w, (intercept - c) / w + 0.5
        elif func in ("LINEAR", "") and w >= 1:
            c, w = c - 0.5, w - 1
            if w == 0:  # a threshold: x <= c -> 0 else 1
                a, b = slope * 1e9, (intercept - c) * 1e9
            else:
                a, b = slope / w, (intercept - c) / w + 0.5
        else:  # invalid window or unknown function: fall back to the full output range of the modality step
            window = None
    if window is None:
        span = m_hi - m_lo
        if span <= 0:
            raise ArkxValueError(f"empty modality output range [{m_lo}, {m_hi}]")
        a, b = slope / span, (intercept - m_lo) / span

    out = np.asarray(x, dtype=np.float32)  # the one copy of the pixels (decode -> float32)
    if out is x or not out.flags.writeable:
        out = out.copy()
    if sigmoid is not None:
        k, k0 = sigmoid
        out *= np.float32(-k)
        out -= np.float32(k0)
        with np.errstate(over="ignore"):
            np.exp(out, out=out)
        out += 1
        np.reciprocal(out, out=out)
        if invert:
            out *= -1
            out += 1
        return out
    if invert:
        a, b = -a, 1.0 - b
    out *= np.float32(a)
    out += np.float32(b)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _window(ds) -> tuple[float, float, str] | None:
    """The first (center, width) pair and the VOI LUT Function, or None without a usable window."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds or ds.WindowCenter in (None, "") \
            or ds.WindowWidth in (None, ""):
        return None
    c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
    if not (math.isfinite(c) and math.isfinite(w)):
        return None
    return c, w, str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()


def _padding_mask(arr: np.ndarray, ds) -> np.ndarray | None:
    """Stored values equal to Pixel Padding Value, or between it and Pixel Padding Range Limit."""
    value = ds.get("PixelPaddingValue")
    if value is None or value == "":
        return None
    try:
        lo = int(value)
        limit = ds.get("PixelPaddingRangeLimit")
        hi = lo if limit is None or limit == "" else int(limit)
    except (TypeError, ValueError):
        return None  # a garbled optional attribute: the image reads without it
    lo, hi = min(lo, hi), max(lo, hi)
    mask = (arr >= lo) & (arr <= hi) if hi > lo else arr == lo
    return mask if mask.any() else None
