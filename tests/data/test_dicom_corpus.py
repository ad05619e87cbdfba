"""Our DICOM reader against pydicom's own pipeline, file by file, on a corpus of real vendor files.

The corpus is every DICOM file that ``pydicom.data.get_testdata_files()`` lists: the test files bundled
with pydicom (~70 DICOMs), plus, when the ``pydicom-data`` package is installed (the test extra), its
~100 more (CT, MR, CR MONOCHROME1, JPEG 2000, JPEG-LS, RLE, Modality and VOI LUTs, palette, colour,
big endian, multi-frame...). Nothing is downloaded.

For each file:

* grayscale (MONOCHROME1/2): our ``read_image`` must equal pydicom's modality -> VOI -> MONOCHROME1
  pipeline on the first frame (``apply_modality_lut``, ``apply_voi_lut``, ``1 - x``), normalised the
  way the standard defines the output range of the last transform (VOI LUT: ``[0, 2**depth - 1]``;
  window or none: the stored range through the rescale / Modality LUT), clipped to ``[0, 1]``. Pixels
  equal to Pixel Padding Value are left out of the comparison: pydicom's pipeline ignores padding, we
  render it black;
* colour (RGB, YBR converted by pydicom): luminance of pydicom's RGB over ``2**BitsStored - 1``;
* a file we refuse must be one pydicom's pipeline cannot read either (and then, when a decoder plugin
  would help, our message names it), or a PALETTE COLOR image (not supported: said so);
* a file without pixel data is refused as such.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_files  # noqa: E402
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array  # noqa: E402

from arkx.data.io import ImageReadError, is_dicom, read_image  # noqa: E402

LUMA = np.array([0.299, 0.587, 0.114])
PLUGIN_NAMES = ("pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "python-gdcm", "pyjpegls")


def _corpus() -> list[str]:
    files = [f for f in get_testdata_files() if os.path.isfile(f) and is_dicom(f)]
    return sorted(files, key=_short)


def _short(path: str) -> str:
    return "/".join(Path(path).parts[-2:])


FILES = _corpus()


def _read_dataset(path: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" not in meta and ds.original_encoding[0] is not None:
        # the encoding pydicom detected, as our reader does for files without a meta header
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                          pydicom.uid.ExplicitVRLittleEndian if little else
                                          pydicom.uid.ExplicitVRBigEndian)
    return ds


def _output_range(ds) -> tuple[float, float]:
    """Range of the last transform of the standard's pipeline (PS3.3 C.11)."""
    if ds.get("VOILUTSequence"):
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    lo, hi = ((-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.get("PixelRepresentation", 0)) == 1
              else (0, 2**bits - 1))
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return float(lo), float(hi)


def _pydicom_unit(ds) -> tuple[np.ndarray, np.ndarray]:
    """(pydicom's pipeline in [0, 1], mask of the pixels to compare)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = pixel_array(ds, index=0)
        if stored.ndim == 3:  # colour
            return stored @ LUMA / (2 ** int(ds.BitsStored) - 1), np.ones(stored.shape[:2], bool)
        out = apply_voi_lut(apply_modality_lut(stored, ds), ds, index=0).astype(np.float64)
    lo, hi = _output_range(ds)
    unit = np.clip((out - lo) / (hi - lo), 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    compare = np.ones(stored.shape, bool)
    if ds.get("PixelPaddingValue") is not None:
        compare &= stored != int(ds.PixelPaddingValue)
    return unit, compare


def test_the_corpus_is_there():
    assert len(FILES) >= 60, f"only {len(FILES)} DICOM files from pydicom.data.get_testdata_files()"


@pytest.mark.parametrize("path", FILES, ids=_short)
def test_reader_matches_pydicom_pipeline(path):
    ds = _read_dataset(path)
    try:
        ours, refusal = read_image(path), None
    except ImageReadError as err:
        ours, refusal = None, err
    if "PixelData" not in ds:
        assert refusal is not None and "no pixel data" in refusal.reason
        return
    try:
        reference, compare = _pydicom_unit(ds)
        reference_error = None
    except Exception as err:  # noqa: BLE001  (whatever pydicom's pipeline raises on this file)
        reference, reference_error = None, err

    if refusal is not None:
        assert refusal.path == path and "\n" not in refusal.reason
        if str(ds.get("PhotometricInterpretation")) == "PALETTE COLOR":
            assert "PALETTE COLOR" in refusal.reason
            return
        assert reference_error is not None, f"we refuse a file pydicom's pipeline reads: {refusal.reason}"
        tsyntax = ds.file_meta.get("TransferSyntaxUID")
        if tsyntax is not None and tsyntax.is_compressed and "plugin" in str(reference_error).lower():
            assert any(name in refusal.reason for name in PLUGIN_NAMES), refusal.reason
            assert "pip install" in refusal.reason
        return

    assert reference_error is None, f"we read a file pydicom's pipeline fails on: {reference_error}"
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    assert 0.0 <= ours.min() and ours.max() <= 1.0
    np.testing.assert_allclose(ours[compare], reference[compare], atol=1e-4, rtol=0,
                               err_msg=f"{_short(path)}: {ds.get('PhotometricInterpretation')}")
