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

The package is split along these concerns: :mod:`.rle` (Kaggle/SIIM, CheXmask and COCO run lengths),
:mod:`.polygon` (rasterising and tracing polygons), :mod:`.boxes` (boxes and connected components of
masks), :mod:`.decode` (one ``Records.masks`` row), and :mod:`.common` (the error, the column names and
the optional scipy). Every public name is importable from ``arkx.data.masks``.
"""

from __future__ import annotations

from .boxes import component_boxes, connected_components, mask_to_box, masks_to_boxes
from .common import HAVE_SCIPY, MASK_COLUMNS, RLE_ENCODINGS, MaskDecodeError
from .decode import decode_mask
from .polygon import mask_to_polygons, polygon_to_mask, polygons_to_mask
from .rle import (
    coco_counts_to_string,
    coco_string_to_counts,
    guess_kaggle_relative,
    kaggle_runs,
    rle_decode_chexmask,
    rle_decode_coco,
    rle_decode_kaggle,
    rle_encode_chexmask,
    rle_encode_coco,
    rle_encode_kaggle,
)

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
    "rle_decode_chexmask",
    "rle_encode_chexmask",
]
