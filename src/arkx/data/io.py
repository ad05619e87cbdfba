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

This module is the dispatcher and holds what every reader shares (the error type, the pixel cap, format
detection, resizing); the DICOM reader lives in :mod:`arkx.data.dicom` and the Pillow (PNG/JPEG/TIFF)
reader in :mod:`arkx.data.pillow_io`, both imported on first use.
"""

from __future__ import annotations

from ..errors import ArkxError, ArkxValueError

import logging
import math
import os
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
        from .dicom import _read_dicom

        image = _read_dicom(path, cap)
    elif suffix in (".mha", ".mhd"):
        image = _read_metaimage(path, cap)
    elif suffix == ".img":
        image = _read_jsrt(path, cap)
    else:
        from .pillow_io import _read_pillow

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


def _luminance(rgb: np.ndarray, max_value: float) -> np.ndarray:
    return (rgb.astype(np.float32) @ _LUMA) * np.float32(1 / max_value)
