"""The DICOM path of :mod:`arkx.data.io`: one file read with pydicom's ``dcmread`` (leniently, with a
Transfer Syntax UID supplied when missing), its declared size checked against the pixel cap, the first
frame decoded, and the standard's grayscale pipeline applied (modality transform, VOI LUT or window on
its output, range to ``[0, 1]``, MONOCHROME1 inverted, padding black). When a compressed transfer
syntax cannot be decoded, the error names the decoder plugins to install. The dispatcher
:func:`arkx.data.io.read_image` calls :func:`_read_dicom`; the conventions are documented there.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np

from ..errors import ArkxValueError
from .io import ImageReadError, _check_declared_size, _luminance

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
