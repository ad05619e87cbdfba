"""The mask of one ``Records.masks`` row, whatever its kind: a mask file (image, ``.npy``, ``.mha``), a
run-length string in one of :data:`~arkx.data.masks.RLE_ENCODINGS`, or a polygon."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .common import RLE_ENCODINGS, MaskDecodeError, parse_ints
from .polygon import polygon_to_mask, polygons_to_mask
from .rle import rle_decode_chexmask, rle_decode_coco, rle_decode_kaggle

# ------------------------------------------------------------------------------------ Records.masks rows


def _get(row: Any, key: str, default: Any = None) -> Any:
    try:
        value = row[key]
    except (KeyError, IndexError, TypeError):
        return default
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value


def _read_mask_file(path: Path, value: Any) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        arr = np.load(path)
    elif path.suffix.lower() in (".mha", ".mhd"):
        from ..mha import read_mha

        arr = read_mha(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "P", "LA"):
                im = im.convert("L") if value is None else im
            arr = np.asarray(im)
    arr = np.squeeze(arr)
    if arr.ndim == 3 and value is None:
        arr = arr.any(axis=-1)
    if value is not None:
        return np.asarray(arr == value, dtype=bool)
    return np.asarray(arr != 0, dtype=bool)


def decode_mask(row: Any, root: str | Path | None = None) -> np.ndarray:
    """The bool mask ``[height, width]`` of one ``Records.masks`` row (a pandas row, dict or namedtuple-like).

    * ``kind="file"``: ``root / path`` is read (PNG/GIF/BMP/TIFF via Pillow, ``.npy``, ``.mha``);
      nonzero = inside, or ``== value`` when the row has a ``value`` column (label maps).
    * ``kind="rle"``: ``rle`` decoded per ``encoding`` (:data:`RLE_ENCODINGS`) at ``height x width``.
    * ``kind="polygon"``: ``polygon`` (flat x, y list, or a list of such lists whose union is the mask)
      rasterised at ``height x width``.

    When ``height``/``width`` are given for a file mask, its shape must agree.
    """
    kind = _get(row, "kind")
    height, width = _get(row, "height"), _get(row, "width")
    if kind == "file":
        rel = _get(row, "path")
        if rel is None:
            raise MaskDecodeError("mask row of kind 'file' has no path")
        path = Path(rel) if root is None else Path(root) / rel
        if not path.is_file():
            raise MaskDecodeError(f"mask file {path} not found")
        mask = _read_mask_file(path, _get(row, "value"))
        if height is not None and width is not None and mask.shape != (int(height), int(width)):
            raise MaskDecodeError(f"mask file {path} is {mask.shape[0]}x{mask.shape[1]}, row says {height}x{width}")
        return mask
    if kind == "rle":
        rle, encoding = _get(row, "rle"), _get(row, "encoding", "kaggle-siim")
        if encoding in ("coco", "coco-compressed"):
            if encoding == "coco" and isinstance(rle, str):  # uncompressed counts stored as text
                rle = [int(v) for v in parse_ints(rle, "COCO RLE counts").tolist()]
            return rle_decode_coco(rle, None if height is None else int(height), None if width is None else int(width))
        if height is None or width is None:
            raise MaskDecodeError(f"mask row of encoding {encoding!r} needs height and width")
        if encoding == "chexmask":
            return rle_decode_chexmask(rle, int(_get(row, "height")), int(_get(row, "width")))
        if encoding == "kaggle-siim":
            return rle_decode_kaggle("" if rle is None else str(rle), int(height), int(width), relative=True)
        if encoding == "kaggle":
            return rle_decode_kaggle("" if rle is None else str(rle), int(height), int(width), relative=False)
        raise MaskDecodeError(f"unknown RLE encoding {encoding!r}; known: {RLE_ENCODINGS}")
    if kind == "polygon":
        poly = _get(row, "polygon")
        if poly is None or height is None or width is None:
            raise MaskDecodeError("mask row of kind 'polygon' needs polygon, height and width")
        if isinstance(poly, str):
            import json

            poly = json.loads(poly)
        poly = list(poly)
        if poly and isinstance(poly[0], (list, tuple, np.ndarray)) and len(poly[0]) != 2:
            return polygons_to_mask(poly, int(height), int(width))  # several flat parts
        if poly and isinstance(poly[0], (list, tuple, np.ndarray)) and len(poly[0]) == 2 and \
                isinstance(poly[0][0], (list, tuple, np.ndarray)):
            return polygons_to_mask(poly, int(height), int(width))  # several [[x, y], ...] parts
        return polygon_to_mask(poly, int(height), int(width))
    raise MaskDecodeError(f"unknown mask kind {kind!r}; expected 'file', 'rle' or 'polygon'")
