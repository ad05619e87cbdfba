"""What every part of :mod:`arkx.data.masks` shares: the decode error, the ``Records.masks`` column
names and RLE encodings, integer-list parsing, and scipy's ``ndimage`` when it is installed (connected
components and hole filling need it; the rest of the package is plain numpy)."""

from __future__ import annotations

import numpy as np

from ...errors import ArkxValueError

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


def parse_ints(text: str, what: str) -> np.ndarray:
    try:
        return np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise MaskDecodeError(f"{what}: {text[:60]!r} is not a list of integers") from None
