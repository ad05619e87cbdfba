"""Binary masks: the run-length and polygon encodings the providers ship, boxes of masks, and the
decoder of one :attr:`Records.masks <arkx.data.records.Records>` row.

Every function returns / accepts a mask as a ``bool`` numpy array ``[height, width]`` (row = y,
column = x) in the pixel grid of the image file. The encodings:

``kaggle-siim`` (SIIM-ACR ``train-rle.csv``; CANDID-PTX) -- :func:`rle_decode_kaggle` ``relative=True``
    Space-separated ``start length`` pairs over the pixels in **column-major** order (flat index
    ``k = x * height + y``: the mask is stored transposed). Starts are **relative**: the first is the
    0-based index of the first pixel of the first run, every later one is the number of background
    pixels between the end of the previous run and the start of this one. ``"-1"`` (or an empty
    string) = no mask. Example for a 4x4 mask whose pixels (y=1..2, x=1) are set: ``"5 2"``.
``kaggle`` (standard Kaggle RLE; the SIIM stage-2 announcement used it) -- ``relative=False``
    Same pixel order, but every start is the **absolute 1-based** flat index.
``coco`` / ``coco-compressed`` -- :func:`rle_decode_coco`, :func:`rle_encode_coco`
    COCO RLE: ``counts`` alternate background / foreground run lengths (starting with background,
    possibly 0) over the pixels in column-major order; ``size = [height, width]``. ``coco`` holds the
    counts as a list of ints (in ``Records.masks.rle``: space-separated), ``coco-compressed`` as the
    COCO ASCII string (pycocotools' ``frPyObjects`` / ``encode`` output). Both are implemented here
    in numpy; pycocotools is never required (the tests compare with it when it is installed).
polygon -- :func:`polygon_to_mask`
    Vertices in continuous pixel coordinates where pixel ``(y, x)`` covers ``[x, x+1) x [y, y+1)``
    (COCO's convention). A pixel is inside when its **centre** ``(x + .5, y + .5)`` is inside the
    polygon (even-odd rule), so the polygon ``(x0,y0) (x1,y0) (x1,y1) (x0,y1)`` with integer corners
    fills exactly columns ``x0..x1-1`` and rows ``y0..y1-1``. (Pillow's ``ImageDraw.polygon`` was not
    used: it also fills the pixels the outline passes through, making a ``w x h`` rectangle
    ``(w+1) x (h+1)`` and shifting masks by half a pixel.)

Boxes (:func:`mask_to_box`, :func:`masks_to_boxes`, :func:`component_boxes`) are
``(x_min, y_min, x_max, y_max)`` with **inclusive minimum and exclusive maximum** in pixel units:
the box of a single pixel at ``(y, x)`` is ``(x, y, x + 1, y + 1)``, ``x_max - x_min`` is the width
in pixels. This is the convention of ``Records.boxes`` for boxes derived from masks and of the
synthetic generator.

:func:`decode_mask` turns one ``Records.masks`` row (``kind`` file / rle / polygon) into a mask.
"""

from __future__ import annotations

from ..errors import ArkxValueError

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "HAVE_SCIPY",
    "MASK_COLUMNS",
    "RLE_ENCODINGS",
    "MaskDecodeError",
    "component_boxes",
    "connected_components",
    "decode_mask",
    "guess_kaggle_relative",
    "kaggle_runs",
    "mask_to_box",
    "mask_to_polygons",
    "masks_to_boxes",
    "polygon_to_mask",
    "polygons_to_mask",
    "rle_decode_coco",
    "rle_decode_kaggle",
    "rle_encode_coco",
    "rle_encode_kaggle",
    "coco_string_to_counts",
    "coco_counts_to_string",
]

try:  # scipy is optional here (connected components, hole filling); synth needs it anyway
    from scipy import ndimage as _ndimage

    HAVE_SCIPY = True
except ImportError:  # pragma: no cover - exercised only where scipy is absent
    _ndimage = None
    HAVE_SCIPY = False

#: columns of a ``Records.masks`` frame as written by the adapters of this package (any subset is
#: enough for :func:`decode_mask`: ``kind`` and the columns of that kind)
MASK_COLUMNS = ("image_id", "label", "kind", "path", "rle", "encoding", "polygon", "height", "width")
#: values of ``Records.masks.encoding`` understood by :func:`decode_mask`
RLE_ENCODINGS = ("kaggle-siim", "kaggle", "coco", "coco-compressed", "chexmask")


class MaskDecodeError(ArkxValueError):
    """A mask string / polygon / file is malformed (the message says what and where)."""


# ------------------------------------------------------------------------------------ Kaggle RLE


def _parse_ints(text: str, what: str) -> np.ndarray:
    try:
        return np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise MaskDecodeError(f"{what}: {text[:60]!r} is not a list of integers") from None


def _is_empty_kaggle(rle: object) -> bool:
    if rle is None or (isinstance(rle, float) and math.isnan(rle)):
        return True
    text = str(rle).strip()
    return text in ("", "-1")


def kaggle_runs(rle: str, height: int, width: int, relative: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, lengths)`` of a Kaggle RLE string as absolute **0-based** column-major indices.

    Raises :class:`MaskDecodeError` when the string has an odd number of values, a non-positive
    length, a negative start, overlapping / unordered runs (absolute form) or runs past the last
    pixel. ``"-1"`` / empty gives two empty arrays.
    """
    if _is_empty_kaggle(rle):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    values = _parse_ints(str(rle), "Kaggle RLE")
    if values.size % 2:
        raise MaskDecodeError(f"Kaggle RLE has an odd number of values ({values.size}): {str(rle)[:60]!r}")
    starts, lengths = values[0::2], values[1::2]
    if (lengths <= 0).any():
        raise MaskDecodeError(f"Kaggle RLE has a run length <= 0: {str(rle)[:60]!r}")
    if relative:
        if (starts < 0).any():
            raise MaskDecodeError(f"relative Kaggle RLE has a negative offset: {str(rle)[:60]!r}")
        ends_before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        absolute = np.cumsum(starts) + ends_before
    else:
        absolute = starts - 1
        if (absolute < 0).any():
            raise MaskDecodeError(f"absolute Kaggle RLE has a start < 1 (starts are 1-based): {str(rle)[:60]!r}")
        if (absolute[1:] < absolute[:-1] + lengths[:-1]).any():
            raise MaskDecodeError(f"absolute Kaggle RLE has overlapping or unordered runs: {str(rle)[:60]!r}")
    total = int(height) * int(width)
    if absolute.size and int(absolute[-1] + lengths[-1]) > total:
        raise MaskDecodeError(
            f"Kaggle RLE runs past the last pixel of a {height}x{width} mask "
            f"({'relative' if relative else 'absolute'} starts): {str(rle)[:60]!r}")
    return absolute, lengths


def _fill_runs(starts: np.ndarray, lengths: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool mask from ordered, non-overlapping runs (0-based column-major starts)."""
    n = int(height) * int(width)
    edges = np.zeros(n + 1, dtype=np.int8)
    if starts.size:
        edges[starts] += 1  # starts are distinct, and so are ends: plain fancy indexing is enough
        edges[starts + lengths] -= 1
        flat = np.cumsum(edges[:n], dtype=np.int8).view(bool)
    else:
        flat = edges[:n].view(bool)
    # column-major: flat index k = x * height + y  (the transposed view is returned, Fortran-ordered)
    return flat.reshape(int(width), int(height)).T


def rle_decode_kaggle(rle: str, height: int, width: int, relative: bool = True) -> np.ndarray:
    """Decode a SIIM/Kaggle RLE string to a bool mask ``[height, width]`` (see the module docstring).

    ``relative=True``: SIIM-ACR ``train-rle.csv`` form (relative offsets, first start 0-based);
    ``relative=False``: standard Kaggle form (absolute 1-based starts). ``"-1"`` -> all False.
    """
    starts, lengths = kaggle_runs(rle, height, width, relative)
    return _fill_runs(starts, lengths, height, width)


def _runs_of(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based starts and lengths of the runs of True in a flat bool array."""
    padded = np.concatenate([[False], flat, [False]])
    change = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = change[0::2], change[1::2]
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


def rle_encode_kaggle(mask: np.ndarray, relative: bool = True) -> str:
    """Encode a bool mask ``[height, width]`` as a SIIM (``relative=True``) or standard Kaggle RLE string.

    An empty mask gives ``"-1"`` (the SIIM "no pneumothorax" value). Inverse of
    :func:`rle_decode_kaggle` with the same ``relative``.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    starts, lengths = _runs_of(mask.T.reshape(-1))
    if starts.size == 0:
        return "-1"
    if relative:
        prev_end = np.concatenate([[0], (starts + lengths)[:-1]])
        starts = starts - prev_end
    else:
        starts = starts + 1
    out = np.empty(2 * starts.size, dtype=np.int64)
    out[0::2], out[1::2] = starts, lengths
    return " ".join(map(str, out.tolist()))


def guess_kaggle_relative(rles: Iterable[str], height: int | Sequence[int], width: int | Sequence[int]) -> bool:
    """Whether a file's Kaggle RLE strings are in the relative (SIIM) form rather than absolute.

    Relative if every string decodes relatively within its mask; otherwise absolute if every string
    is a valid absolute RLE; otherwise a :class:`MaskDecodeError` naming the first string that fits
    neither. Strings with a single run fit both (they differ by one pixel): a file of only such
    strings is taken as relative. ``height`` / ``width`` may be one value or one per string.
    """
    rles = list(rles)
    n = len(rles)
    hs = [height] * n if np.isscalar(height) else list(height)
    ws = [width] * n if np.isscalar(width) else list(width)

    def fits(rel: bool) -> int | None:
        for i, (r, h, w) in enumerate(zip(rles, hs, ws)):
            try:
                kaggle_runs(r, h, w, rel)
            except MaskDecodeError:
                return i
        return None

    bad_rel = fits(True)
    if bad_rel is None:
        return True
    bad_abs = fits(False)
    if bad_abs is None:
        return False
    raise MaskDecodeError(
        f"Kaggle RLE string {bad_rel} fits neither the relative (SIIM) nor the absolute form: "
        f"{str(rles[bad_rel])[:60]!r}")


# ------------------------------------------------------------------------------------ COCO RLE


# --- CheXmask RLE: 1-based absolute starts, row-major ---------------------------------------------


def rle_decode_chexmask(rle: object, height: int, width: int) -> np.ndarray:
    """CheXmask RLE -> bool mask ``[height, width]`` (empty / missing string -> all False)."""
    n = int(height) * int(width)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)) or not str(rle).strip():
        return np.zeros((int(height), int(width)), dtype=bool)
    try:
        runs = np.asarray(str(rle).split(), dtype=np.int64)
    except ValueError:
        raise ValueError(f"CheXmask RLE holds a non-integer token: {str(rle)[:60]!r}") from None
    if runs.size % 2:
        raise ValueError(f"CheXmask RLE has an odd number of values ({runs.size})")
    starts, lengths = runs[0::2] - 1, runs[1::2]
    if (starts < 0).any() or (lengths < 0).any():
        raise ValueError("CheXmask RLE has a start < 1 or a negative length (starts are 1-based)")
    ends = starts + lengths
    if ends.size and int(ends.max()) > n:
        raise ValueError(f"CheXmask RLE runs past the end of a {height}x{width} mask ({int(ends.max())} > {n})")
    edges = np.zeros(n + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    return (np.cumsum(edges[:-1]) > 0).reshape(int(height), int(width))


def rle_encode_chexmask(mask: np.ndarray) -> str:
    """Bool / nonzero mask ``[h, w]`` -> CheXmask RLE (1-based absolute starts, row-major); ``""`` if empty."""
    flat = (np.asarray(mask) != 0).ravel(order="C").astype(np.int8)
    padded = np.concatenate([[0], flat, [0]])
    change = np.flatnonzero(padded[1:] != padded[:-1]) + 1  # 1-based positions where a run starts / ends
    starts, stops = change[0::2], change[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts.tolist(), stops.tolist()))


def coco_counts_to_string(counts: Sequence[int]) -> str:
    """COCO's compressed ASCII form of uncompressed counts (what pycocotools' ``encode`` writes)."""
    chars: list[str] = []
    counts = [int(c) for c in counts]
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def coco_string_to_counts(text: str) -> list[int]:
    """Uncompressed counts of a COCO compressed RLE string (inverse of :func:`coco_counts_to_string`)."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(text):
                raise MaskDecodeError(f"truncated COCO RLE string {text[:60]!r}")
            c = ord(text[p]) - 48
            if c < 0 or c > 63:
                raise MaskDecodeError(f"COCO RLE string has an invalid character {text[p]!r}: {text[:60]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _coco_parts(rle: Any, height: int | None, width: int | None) -> tuple[list[int], int, int]:
    if isinstance(rle, Mapping):
        counts = rle.get("counts")
        size = rle.get("size")
        if size is not None:
            height, width = int(size[0]), int(size[1])
    else:
        counts = rle
    if height is None or width is None:
        raise MaskDecodeError("COCO RLE needs its size: pass {'size': [h, w], 'counts': ...} or height and width")
    if isinstance(counts, (str, bytes)):  # a string is COCO's compressed form, as in pycocotools
        counts = coco_string_to_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    if counts is None:
        raise MaskDecodeError("COCO RLE has no counts")
    counts = [int(c) for c in counts]
    return counts, int(height), int(width)


def rle_decode_coco(rle: Any, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Decode COCO RLE to a bool mask ``[height, width]``.

    ``rle``: a dict ``{"size": [h, w], "counts": ...}`` (its size wins over ``height``/``width``) or
    bare counts. Counts are a list of ints (uncompressed) or a ``str``/``bytes`` in COCO's compressed
    form (as in pycocotools). Counts must sum to ``h * w``.
    """
    counts, h, w = _coco_parts(rle, height, width)
    arr = np.asarray(counts, dtype=np.int64)
    if (arr < 0).any():
        raise MaskDecodeError("COCO RLE has a negative count")
    if int(arr.sum()) != h * w:
        raise MaskDecodeError(f"COCO RLE counts sum to {int(arr.sum())}, expected {h}*{w} = {h * w}")
    ends = np.cumsum(arr)
    starts = ends - arr
    fg = np.arange(arr.size) % 2 == 1
    keep = fg & (arr > 0)
    return _fill_runs(starts[keep], arr[keep], h, w)


def rle_encode_coco(mask: np.ndarray, compressed: bool = False) -> dict:
    """COCO RLE of a bool mask: ``{"size": [h, w], "counts": [...]}`` (``compressed=True``: the ASCII string)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    h, w = mask.shape
    flat = mask.T.reshape(-1)
    starts, lengths = _runs_of(flat)
    counts: list[int] = []
    pos = 0
    for s, n in zip(starts.tolist(), lengths.tolist()):
        counts.append(s - pos)
        counts.append(n)
        pos = s + n
    if pos < flat.size or not counts:
        counts.append(flat.size - pos)
    return {"size": [int(h), int(w)], "counts": coco_counts_to_string(counts) if compressed else counts}


# ------------------------------------------------------------------------------------ polygons


def _as_points(polygon: Any) -> np.ndarray:
    arr = np.asarray(polygon, dtype=np.float64)
    if arr.ndim == 1:
        if arr.size % 2:
            raise MaskDecodeError(f"flat polygon has an odd number of coordinates ({arr.size})")
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise MaskDecodeError(f"polygon must be flat [x0, y0, x1, y1, ...] or [[x, y], ...], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MaskDecodeError("polygon has non-finite coordinates")
    return arr


def polygon_to_mask(polygon_xy: Any, height: int, width: int) -> np.ndarray:
    """Rasterise one polygon (flat ``[x0, y0, x1, y1, ...]`` or ``[[x, y], ...]``) to a bool mask.

    Pixel-centre sampling with the even-odd rule (see the module docstring); polygons with fewer than
    3 vertices give an empty mask. Parts outside the image are clipped.
    """
    pts = _as_points(polygon_xy)
    h, w = int(height), int(width)
    out = np.zeros((h, w), dtype=bool)
    if len(pts) < 3 or h == 0 or w == 0:
        return out
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    keep = y0 != y1
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    if x0.size == 0:
        return out
    yc = np.arange(h, dtype=np.float64)[:, None] + 0.5  # [h, 1]
    lo, hi = np.minimum(y0, y1)[None], np.maximum(y0, y1)[None]
    crosses = (yc >= lo) & (yc < hi)  # half-open: a vertex is counted once
    with np.errstate(invalid="ignore", divide="ignore"):
        xs = x0[None] + (yc - y0[None]) * ((x1 - x0) / (y1 - y0))[None]
    xs = np.where(crosses, xs, np.inf)
    xs.sort(axis=1)
    starts, ends = xs[:, 0::2], xs[:, 1::2]
    if ends.shape[1] < starts.shape[1]:
        starts = starts[:, : ends.shape[1]]
    valid = np.isfinite(starts) & np.isfinite(ends)
    rows = np.broadcast_to(np.arange(h)[:, None], starts.shape)[valid]
    cs = np.clip(np.ceil(starts[valid] - 0.5), 0, w).astype(np.int64)
    ce = np.clip(np.ceil(ends[valid] - 0.5), 0, w).astype(np.int64)
    diff = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(diff, (rows, cs), 1)
    np.add.at(diff, (rows, ce), -1)
    return np.cumsum(diff[:, :w], axis=1) > 0


def polygons_to_mask(polygons: Iterable[Any], height: int, width: int) -> np.ndarray:
    """Union of several polygons (each as accepted by :func:`polygon_to_mask`)."""
    out = np.zeros((int(height), int(width)), dtype=bool)
    for poly in polygons:
        out |= polygon_to_mask(poly, height, width)
    return out


def _trace_outer(filled: np.ndarray) -> list[float]:
    """Outer boundary of a hole-free 4-connected region along pixel edges, as a flat polygon."""
    p = np.pad(filled, 1)
    inside = p[1:-1, 1:-1]
    nxt: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(sides: np.ndarray, d0: tuple[int, int], d1: tuple[int, int]) -> None:
        ys, xs = np.nonzero(sides)
        for y, x in zip(ys.tolist(), xs.tolist()):
            nxt.setdefault((x + d0[0], y + d0[1]), []).append((x + d1[0], y + d1[1]))

    add(inside & ~p[:-2, 1:-1], (0, 0), (1, 0))  # top side, left -> right
    add(inside & ~p[1:-1, 2:], (1, 0), (1, 1))  # right side, top -> bottom
    add(inside & ~p[2:, 1:-1], (1, 1), (0, 1))  # bottom side, right -> left
    add(inside & ~p[1:-1, :-2], (0, 1), (0, 0))  # left side, bottom -> top
    if not nxt:
        return []
    start = min(nxt)  # top-left vertex: always on the outer boundary
    loop = [start]
    prev, cur = None, start
    while True:
        options = nxt[cur]
        if len(options) == 1:
            step = options.pop()
        else:  # a pinch vertex: turn right (keeps the region on the right of the walk)
            dx, dy = (cur[0] - prev[0], cur[1] - prev[1]) if prev else (1, 0)
            right = (-dy, dx)
            step = next((o for o in options if (o[0] - cur[0], o[1] - cur[1]) == right), options[0])
            options.remove(step)
        if not options:
            del nxt[cur]
        prev, cur = cur, step
        if cur == start:
            break
        loop.append(cur)
    pts = np.array(loop, dtype=np.float64)
    # drop vertices in the middle of straight runs
    before, after = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    cross = (pts[:, 0] - before[:, 0]) * (after[:, 1] - pts[:, 1]) - (pts[:, 1] - before[:, 1]) * (after[:, 0] - pts[:, 0])
    pts = pts[cross != 0]
    return pts.reshape(-1).tolist()


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """One flat polygon per 4-connected component: its outer boundary along pixel edges (needs scipy).

    Holes are not represented (a component is filled first), so
    ``polygon_to_mask(poly, h, w)`` gives back exactly the hole-filled component. Components come in
    the order of their first pixel in row-major order.
    """
    if not HAVE_SCIPY:
        raise ImportError("mask_to_polygons needs scipy (scipy.ndimage)")
    mask = np.asarray(mask, dtype=bool)
    labels, n = _ndimage.label(mask)
    out = []
    for k, sl in enumerate(_ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = _ndimage.binary_fill_holes(labels[sl] == k)
        poly = _trace_outer(comp)
        oy, ox = sl[0].start, sl[1].start
        out.append([v + (ox if i % 2 == 0 else oy) for i, v in enumerate(poly)])
    return out


# ------------------------------------------------------------------------------------ boxes


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x_min, y_min, x_max, y_max)`` of the True pixels, max exclusive; ``None`` for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Boxes of a stack of masks ``[n, h, w]`` -> float ``[n, 4]`` (max exclusive; NaN rows for empty masks).

    Uses ``torchvision.ops.masks_to_boxes`` (whose maxima are inclusive; 1 is added here).
    """
    import torch
    from torchvision.ops import masks_to_boxes as _tv_masks_to_boxes

    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [n, h, w], got shape {masks.shape}")
    out = np.full((masks.shape[0], 4), np.nan, dtype=np.float64)
    nonempty = masks.reshape(masks.shape[0], -1).any(axis=1)
    if nonempty.any():
        boxes = _tv_masks_to_boxes(torch.from_numpy(masks[nonempty])).double().numpy()
        boxes[:, 2:] += 1.0
        out[nonempty] = boxes
    return out


def connected_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """``(labels, n)``: 8- (default) or 4-connected components of a mask (needs scipy)."""
    if not HAVE_SCIPY:
        raise ImportError("connected components need scipy (scipy.ndimage)")
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    labels, n = _ndimage.label(np.asarray(mask, dtype=bool), structure=structure)
    return labels, int(n)


def component_boxes(mask: np.ndarray, connectivity: int = 8, min_pixels: int = 1) -> list[tuple[int, int, int, int]]:
    """One box (max exclusive) per connected component with at least ``min_pixels`` pixels (needs scipy).

    Sorted by (y_min, x_min). The mask is cropped to its bounding box first, so large sparse masks
    are cheap.
    """
    box = mask_to_box(mask)
    if box is None:
        return []
    x0, y0, x1, y1 = box
    crop = np.asarray(mask, dtype=bool)[y0:y1, x0:x1]
    labels, n = connected_components(crop, connectivity)
    out = []
    sizes = np.bincount(labels.reshape(-1), minlength=n + 1)
    for k, sl in enumerate(_ndimage.find_objects(labels), start=1):
        if sl is None or sizes[k] < min_pixels:
            continue
        out.append((x0 + sl[1].start, y0 + sl[0].start, x0 + sl[1].stop, y0 + sl[0].stop))
    return sorted(out, key=lambda b: (b[1], b[0], b[3], b[2]))


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
        from .mha import read_mha

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
                rle = [int(v) for v in _parse_ints(rle, "COCO RLE counts").tolist()]
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
