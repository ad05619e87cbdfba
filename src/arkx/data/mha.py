"""MetaImage (``.mha`` / ``.mhd`` + raw) reading and writing without SimpleITK.

NODE21 ships its radiographs as ``.mha``: a text header of ``Key = Value`` lines ending with
``ElementDataFile = LOCAL``, followed by the raw pixel bytes (optionally zlib-compressed). ``.mhd``
files name a separate data file instead of ``LOCAL``. Image decoding belongs to ``arkx.data.io``;
this module gives it :func:`read_mha` (raw values, no normalisation) to call for these suffixes.

Array layout: ``DimSize = x y [z]`` (fastest axis first) is returned as a C-order array of shape
``(z, y, x)`` / ``(y, x)``, i.e. ``[rows, cols]`` for a 2-D radiograph. A 3-D image with a single
slice (``DimSize = x y 1``) keeps its 3-D shape; callers that want 2-D squeeze it.

Untrusted headers: a ``.mhd`` names its data file, and that file must lie inside the header's own folder
(subfolders allowed): an absolute path, a ``..`` that climbs out, or a symlink resolving outside is
refused (:func:`data_file`), so a crafted header cannot make the reader (and the cache) copy the bytes
of an arbitrary file. Compressed data is inflated only up to the size the header declares, so a small
zlib stream cannot expand beyond it; callers that must bound the declared size itself (a decompression
bomb declaring 20000 x 20000 pixels) check :func:`declared_shape` first, as ``arkx.data.io`` does.
"""

from __future__ import annotations

from ..errors import ArkxValueError

import os
import zlib
from pathlib import Path, PureWindowsPath

import numpy as np

__all__ = ["MetaImageError", "read_mha", "read_mha_header", "write_mha", "data_file", "declared_shape",
           "MET_TYPES"]

#: MetaImage element types -> numpy dtypes (byte order applied separately)
MET_TYPES = {
    "MET_UCHAR": np.uint8, "MET_CHAR": np.int8, "MET_USHORT": np.uint16, "MET_SHORT": np.int16,
    "MET_UINT": np.uint32, "MET_INT": np.int32, "MET_ULONG": np.uint32, "MET_LONG": np.int32,
    "MET_ULONG_LONG": np.uint64, "MET_LONG_LONG": np.int64, "MET_FLOAT": np.float32, "MET_DOUBLE": np.float64,
}  # fmt: skip
_DTYPE_TO_MET = {np.dtype(v): k for k, v in reversed(list(MET_TYPES.items()))}
_MAX_HEADER = 64 * 1024


class MetaImageError(ArkxValueError):
    """A MetaImage file is malformed or uses a feature this reader does not support."""


def _parse_header(data: bytes, path: Path) -> tuple[dict[str, str], int]:
    header: dict[str, str] = {}
    pos = 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0 or pos > _MAX_HEADER:
            raise MetaImageError(f"{path}: no 'ElementDataFile' line in the MetaImage header")
        line = data[pos:end].decode("latin-1").strip()
        pos = end + 1
        if not line:
            continue
        if "=" not in line:
            raise MetaImageError(f"{path}: header line {line[:60]!r} is not 'Key = Value'")
        key, value = (part.strip() for part in line.split("=", 1))
        header[key] = value
        if key == "ElementDataFile":
            return header, pos


def read_mha_header(path: str | Path) -> dict[str, str]:
    """The header fields of a ``.mha``/``.mhd`` file (strings, as written)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(_MAX_HEADER)
    return _parse_header(head, path)[0]


def data_file(path: str | Path) -> Path | None:
    """The separate pixel-data file a ``.mhd`` header names (``None`` for ``ElementDataFile = LOCAL``).

    Raises:
        MetaImageError: the name is a multi-file pattern (``LIST``, ``%d``), an absolute path, or resolves
            (after ``..`` and symlinks) outside the header's folder.
    """
    path = Path(path)
    return _contained_data_file(path, read_mha_header(path)["ElementDataFile"])


def _contained_data_file(path: Path, source: str) -> Path | None:
    if source.upper() == "LOCAL":
        return None
    if source.upper().startswith("LIST") or "%" in source:
        raise MetaImageError(f"{path}: multi-file ElementDataFile {source!r} is not supported")
    folder = path.parent.resolve()
    # a Windows drive or UNC name counts as absolute too: the same header may be read on either system
    windows = PureWindowsPath(source)
    if os.path.isabs(source) or windows.drive or windows.root:
        raise MetaImageError(f"{path}: ElementDataFile {source!r} is an absolute path; the data file must "
                             f"be inside the header's folder {folder}")
    resolved = (folder / source).resolve()  # follows symlinks and '..'
    if not resolved.is_relative_to(folder):
        raise MetaImageError(f"{path}: ElementDataFile {source!r} resolves to {resolved}, outside the header's "
                             f"folder {folder}; data files must be inside it")
    return resolved


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def declared_shape(header: dict[str, str], path: str | Path = "") -> tuple[tuple[int, ...], int]:
    """``(DimSize, channels)`` that a header declares (``DimSize`` fastest axis first), validated as
    positive integers. What a caller checks against a pixel cap before reading any pixel data."""
    try:
        dims = tuple(int(v) for v in header["DimSize"].split())
        ndims = int(header.get("NDims", len(dims)))
        channels = int(header.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError) as err:
        raise MetaImageError(f"{path}: header lacks or garbles {err}") from None
    if ndims != len(dims):
        raise MetaImageError(f"{path}: NDims = {ndims} but DimSize has {len(dims)} values")
    if not dims or min(dims) <= 0 or channels <= 0:
        raise MetaImageError(f"{path}: DimSize {header['DimSize']!r} / ElementNumberOfChannels {channels} "
                             "must be positive")
    return dims, channels


def read_mha(path: str | Path) -> np.ndarray:
    """Pixel array of a MetaImage file, raw values in the file's element type (see the module docstring)."""
    path = Path(path)
    data = path.read_bytes()
    header, offset = _parse_header(data, path)
    dims, channels = declared_shape(header, path)
    etype = header.get("ElementType")
    if etype not in MET_TYPES:
        raise MetaImageError(f"{path}: unsupported ElementType {etype!r}")
    msb = _truthy(header.get("BinaryDataByteOrderMSB", header.get("ElementByteOrderMSB", "False")))
    dtype = np.dtype(MET_TYPES[etype]).newbyteorder(">" if msb else "<")
    count = int(np.prod(dims, dtype=np.int64)) * channels
    need = count * dtype.itemsize
    compressed = _truthy(header.get("CompressedData"))
    raw_path = _contained_data_file(path, header["ElementDataFile"])
    if raw_path is None:
        raw = data[offset:]
    else:
        if not raw_path.is_file():
            raise MetaImageError(f"{path}: data file {raw_path} not found")
        raw = raw_path.read_bytes()
        skip = int(header.get("HeaderSize", "0"))
        if skip == -1 and not compressed:  # MetaImage convention: the pixels are the last bytes of the file
            skip = max(len(raw) - need, 0)
        if skip > 0:
            raw = raw[skip:]
    if compressed:
        raw = _inflate(raw, need, path)
    if len(raw) < need:
        raise MetaImageError(f"{path}: pixel data has {len(raw)} bytes, header needs {need}")
    arr = np.frombuffer(raw[:need], dtype=dtype).astype(dtype.newbyteorder("="))
    shape = tuple(reversed(dims)) + ((channels,) if channels > 1 else ())
    return arr.reshape(shape)


def _inflate(raw: bytes, need: int, path: Path) -> bytes:
    """zlib-inflate at most ``need`` bytes: a stream that expands beyond the declared image is cut there
    instead of being inflated whole (a few hundred kB of zlib can expand to gigabytes)."""
    try:
        return zlib.decompressobj().decompress(raw, need)
    except zlib.error as err:
        raise MetaImageError(f"{path}: compressed pixel data cannot be inflated ({err})") from None


def write_mha(path: str | Path, array: np.ndarray, spacing: tuple[float, ...] | None = None,
              compress: bool = False) -> Path:
    """Write ``array`` (``[rows, cols]`` or ``[z, rows, cols]``) as a single-file ``.mha`` (little endian)."""
    path = Path(path)
    arr = np.ascontiguousarray(array)
    if arr.dtype.newbyteorder("=") not in _DTYPE_TO_MET:
        raise MetaImageError(f"dtype {arr.dtype} has no MetaImage element type")
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    met = _DTYPE_TO_MET[arr.dtype.newbyteorder("=")]
    dims = list(reversed(arr.shape))
    spacing = tuple(spacing) if spacing is not None else (1.0,) * arr.ndim
    payload = arr.tobytes()
    if compress:
        payload = zlib.compress(payload)
    lines = [
        "ObjectType = Image",
        f"NDims = {arr.ndim}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {'True' if compress else 'False'}",
        *([f"CompressedDataSize = {len(payload)}"] if compress else []),
        "TransformMatrix = " + " ".join("1" if i == j else "0" for i in range(arr.ndim) for j in range(arr.ndim)),
        "Offset = " + " ".join("0" for _ in range(arr.ndim)),
        "CenterOfRotation = " + " ".join("0" for _ in range(arr.ndim)),
        "AnatomicalOrientation = " + ("RAI"[: arr.ndim]),
        "ElementSpacing = " + " ".join(repr(float(s)) for s in spacing),
        "DimSize = " + " ".join(str(d) for d in dims),
        f"ElementType = {met}",
        "ElementDataFile = LOCAL",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode("ascii") + payload)
    return path
