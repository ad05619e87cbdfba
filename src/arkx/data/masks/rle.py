"""Run-length encodings of binary masks as the providers ship them (see :mod:`arkx.data.masks`):
Kaggle / SIIM RLE (column-major, relative or absolute starts), CheXmask RLE (row-major, 1-based
absolute starts) and COCO RLE (uncompressed counts or COCO's compressed ASCII string), each with its
encoder. Plain numpy; pycocotools is never required."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .common import MaskDecodeError, parse_ints

# ------------------------------------------------------------------------------------ Kaggle RLE


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
    values = parse_ints(str(rle), "Kaggle RLE")
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


# ------------------------------------------------------------------------------------ COCO RLE


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

