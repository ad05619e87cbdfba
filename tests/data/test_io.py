"""arkx.data.io: every format decodes to float32 [H, W] in [0, 1] with 0 = black, failures name the file."""

from __future__ import annotations

import io as _io
import pickle

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from arkx.data.io import ImageReadError, is_dicom, load_resized, read_image, resize_uint8


def write_dicom(path, pixels, *, photometric="MONOCHROME2", bits_stored=12, signed=False, frames=1,
                preamble=True, **tags):
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128 if preamble else None)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    allocated = 8 if bits_stored <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for k, v in tags.items():
        setattr(ds, k, v)
    dtype = {(8, False): np.uint8, (16, False): np.uint16, (16, True): np.int16}[(allocated, signed)]
    ds.PixelData = pixels.astype(dtype).tobytes()
    ds.save_as(path, enforce_file_format=preamble)
    return ds


def ramp(h=40, w=50, top=4095):
    return (np.arange(h * w).reshape(h, w) * 7 % (top + 1)).astype(np.int64)


# --- PNG / JPEG ----------------------------------------------------------------------------------------


def test_png_8bit_round_trip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (40, 60)
    np.testing.assert_allclose(out, a / 255.0, atol=1e-6)
    assert out[a == 0].max(initial=0) == 0 and out[a == 255].min(initial=1) == 1


@pytest.mark.parametrize("mode,name", [("I;16", "a.png"), ("I", "a.tif")])
def test_png_16bit_round_trip(tmp_path, mode, name):
    a = np.random.default_rng(1).integers(0, 65536, (40, 60)).astype(np.uint16)
    a[0, 0], a[0, 1] = 0, 65535
    im = Image.fromarray(a) if mode == "I;16" else Image.fromarray(a.astype(np.int32))
    im.save(tmp_path / name)  # Pillow writes 16-bit gray PNG from I;16; mode I (int32) goes via TIFF
    with Image.open(tmp_path / name) as check:
        assert check.mode == mode
    out = read_image(tmp_path / name)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, a / 65535.0, atol=1e-6)
    assert out[0, 0] == 0 and out[0, 1] == 1


def _png16(path, values, significant_bits=None):
    """A 16-bit gray PNG of ``values``; with an sBIT chunk (inserted after IHDR) when asked."""
    import struct
    import zlib

    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)
    data = path.read_bytes()
    if significant_bits is not None:
        body = b"sBIT" + bytes([significant_bits])
        chunk = struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body))
        data = data[:33] + chunk + data[33:]  # signature (8) + IHDR (25)
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("bits", [12, 10])
def test_png16_sbit_scaled_as_the_png_spec_says(tmp_path, bits):
    """sBIT = b: samples were scaled up to 16 bits (shifted left); b-bit values come back / (2**b - 1)."""
    top = 2**bits - 1
    v = np.random.default_rng(4).integers(0, top + 1, (30, 40))
    v[0, 0], v[0, 1] = 0, top
    shifted = _png16(tmp_path / "shift.png", v << (16 - bits), bits)
    replicated = _png16(tmp_path / "repl.png", (v << (16 - bits)) | (v >> (2 * bits - 16)), bits)
    for path in (shifted, replicated):
        out = read_image(path)
        np.testing.assert_allclose(out, v / top, atol=1e-6)
        assert out[0, 1] == 1.0


def test_png16_sbit_with_unscaled_values(tmp_path, caplog):
    """sBIT = 12 but the 12-bit values written as they are (0..4095): still 12-bit data, / 4095."""
    v = np.random.default_rng(5).integers(0, 4096, (30, 40))
    v[0, 0] = 4095
    with caplog.at_level("WARNING", logger="arkx.data"):
        out = read_image(_png16(tmp_path / "a.png", v, 12))
    np.testing.assert_allclose(out, v / 4095, atol=1e-6)
    assert not caplog.records  # sBIT says what the data is: nothing to warn about


def test_png16_low_range_without_sbit_is_kept_and_reported_once(tmp_path, caplog, monkeypatch):
    from arkx.data import pillow_io

    monkeypatch.setattr(pillow_io, "_low_range_reported", set())  # the per-process budget of named files
    v = np.random.default_rng(6).integers(0, 4096, (30, 40))
    path = _png16(tmp_path / "twelve_bit.png", v)
    with caplog.at_level("WARNING", logger="arkx.data"):
        out = read_image(path)
        read_image(path)
        load_resized(path, 16)
    np.testing.assert_allclose(out, v / 65535, atol=1e-6)  # no per-image guess: contrast stays comparable
    named = [r for r in caplog.records if "twelve_bit.png" in r.getMessage()]
    assert len(named) == 1, caplog.text
    assert "sBIT" in named[0].getMessage() and str(int(v.max())) in named[0].getMessage()
    caplog.clear()
    full = v * 16 + 15  # same data, using the 16-bit range: nothing to report
    with caplog.at_level("WARNING", logger="arkx.data"):
        read_image(_png16(tmp_path / "full.png", full))
    assert not caplog.records


def test_jpeg(tmp_path):
    a = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (48, 64) and out.dtype == np.float32
    assert np.abs(out - a / 255.0).max() < 4 / 255


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_colour_becomes_luminance(tmp_path, mode):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    if mode == "LA":
        gray = rng.integers(0, 256, (30, 40), dtype=np.uint8)
        Image.fromarray(np.dstack([gray, np.full_like(gray, 7)]), mode="LA").save(tmp_path / "a.png")
        np.testing.assert_allclose(read_image(tmp_path / "a.png"), gray / 255.0, atol=1e-6)
        return
    im = Image.fromarray(rgb)
    if mode == "RGBA":
        im = Image.fromarray(np.dstack([rgb, np.full((30, 40), 10, np.uint8)]))
    if mode == "P":
        im = im.quantize(64)
        rgb = np.asarray(im.convert("RGB"))
    im.save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    expected = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255
    assert out.shape == (30, 40)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_gray_rgb_equals_gray(tmp_path):
    g = np.random.default_rng(3).integers(0, 256, (20, 20), dtype=np.uint8)
    Image.fromarray(np.dstack([g, g, g])).save(tmp_path / "rgb.png")
    Image.fromarray(g).save(tmp_path / "g.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png"), read_image(tmp_path / "g.png"), atol=1e-5)


# --- DICOM ---------------------------------------------------------------------------------------------


def test_dicom_12bit_scaled_by_4095(tmp_path):
    a = ramp()
    a[0, 0], a[0, 1] = 0, 4095
    write_dicom(tmp_path / "a.dcm", a, bits_stored=12)
    out = read_image(tmp_path / "a.dcm")
    assert out.dtype == np.float32 and out.shape == a.shape
    np.testing.assert_allclose(out, a / 4095.0, atol=1e-6)
    assert out[0, 1] == 1.0


def test_dicom_8bit(tmp_path):
    a = ramp(top=255)
    write_dicom(tmp_path / "a.dcm", a, bits_stored=8)
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm"), a / 255.0, atol=1e-6)


def test_monochrome1_equals_monochrome2_of_inverted_data(tmp_path):
    a = ramp()
    write_dicom(tmp_path / "m2.dcm", a, photometric="MONOCHROME2")
    write_dicom(tmp_path / "m1.dcm", 4095 - a, photometric="MONOCHROME1")
    m2, m1 = read_image(tmp_path / "m2.dcm"), read_image(tmp_path / "m1.dcm")
    np.testing.assert_allclose(m1, m2, atol=1e-6)
    np.testing.assert_allclose(m2, a / 4095.0, atol=1e-6)  # and neither is inverted


def test_monochrome1_with_window_equals_monochrome2(tmp_path):
    a = ramp()
    win = dict(WindowCenter=2000, WindowWidth=1000)
    write_dicom(tmp_path / "m2.dcm", a, photometric="MONOCHROME2", **win)
    write_dicom(tmp_path / "m1.dcm", 4095 - a, photometric="MONOCHROME1", WindowCenter=4095 - 2000 + 1,
                WindowWidth=1000)
    np.testing.assert_allclose(read_image(tmp_path / "m1.dcm"), read_image(tmp_path / "m2.dcm"), atol=2e-3)


def test_rescale_slope_intercept(tmp_path):
    # values rescaled to Hounsfield-like units; without a window, the rescaled stored range maps to [0, 1]
    a = ramp()
    write_dicom(tmp_path / "a.dcm", a, RescaleSlope=2, RescaleIntercept=-1024)
    out = read_image(tmp_path / "a.dcm")
    np.testing.assert_allclose(out, a / 4095.0, atol=1e-6)  # an affine map of the full range: unchanged
    # with a window in rescaled units the slope/intercept matter: modality value = 2*x - 1024
    write_dicom(tmp_path / "w.dcm", a, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=1001,
                WindowWidth=2001, VOILUTFunction="LINEAR")
    out = read_image(tmp_path / "w.dcm")
    mod = 2 * a - 1024.0
    expected = np.clip((mod - 1000.5) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    i = np.argwhere(a == 1012)[0]  # modality 1000 -> middle of the window
    assert abs(out[tuple(i)] - 0.5) < 1e-3


def test_windowing_applied(tmp_path):
    a = ramp()
    write_dicom(tmp_path / "a.dcm", a, WindowCenter=1000, WindowWidth=401)
    out = read_image(tmp_path / "a.dcm")
    # LINEAR (PS3.3 C.11.2.1.2.1): x <= c-0.5-(w-1)/2 -> 0; x > c-0.5+(w-1)/2 -> 1
    assert out[a <= 799].max() == 0.0 and out[a > 1199].min() == 1.0
    i = np.argwhere(a == 1001)[0]
    assert abs(out[tuple(i)] - ((1001 - 999.5) / 400 + 0.5)) < 1e-5


@pytest.mark.parametrize("func,slope,intercept,signed", [
    ("LINEAR", 1, 0, False), ("LINEAR_EXACT", 1.5, -100, False), ("SIGMOID", 1, 0, False),
    ("LINEAR", 1, -1024, True)])
def test_windowing_matches_pydicom(tmp_path, func, slope, intercept, signed):
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    a = ramp() - (2048 if signed else 0)
    ds = write_dicom(tmp_path / "a.dcm", a, signed=signed, RescaleSlope=slope, RescaleIntercept=intercept,
                     WindowCenter=[700, 10], WindowWidth=[900, 20], VOILUTFunction=func)
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    b = 2 ** 11 if signed else 0
    y_min, y_max = -b * slope + intercept, (4095 - b) * slope + intercept
    ref01 = (ref - y_min) / (y_max - y_min)
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm"), ref01, atol=1e-5)


def test_voi_lut_sequence(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    a = ramp(top=255)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = np.arange(255, -1, -1).astype("<u2").tobytes()  # an inverting LUT (OW words)
    write_dicom(tmp_path / "a.dcm", a, bits_stored=12, VOILUTSequence=Sequence([item]))
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm"), (255 - a) / 255.0, atol=1e-6)


def _lut_item(first, values, depth=16):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [len(values) % 65536, first, depth]
    item.LUTData = np.asarray(values).astype("<u2").tobytes()  # OW words, little endian like the file
    item["LUTData"].VR = "OW"
    return item


def _pydicom_pipeline(path):
    """pydicom's own modality -> VOI LUT -> MONOCHROME1 pipeline, scaled by the VOI LUT's output range."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    out = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    out = out / (2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    return 1 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


@pytest.mark.filterwarnings("ignore:Applying a VOI LUT on a float input")  # pydicom's, on its rescaled floats
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("modality", ["rescale", "rescale-slope", "modality-lut"])
def test_voi_lut_sequence_is_indexed_by_the_modality_output(tmp_path, modality, photometric):
    """PS3.3 C.11: the VOI LUT maps the output of the rescale / Modality LUT, not the stored values."""
    from pydicom.sequence import Sequence

    a = ramp()  # stored 0..4095
    tags = {}
    if modality == "rescale":
        tags.update(RescaleSlope=1, RescaleIntercept=1000)  # modality values 1000..5095
        voi_first, n = 1000, 4096
    elif modality == "rescale-slope":
        tags.update(RescaleSlope=2, RescaleIntercept=300)  # modality values 300..8490
        voi_first, n = 300, 8191
    else:  # a Modality LUT that folds the stored range onto 2000 + x // 2 (16-bit output)
        tags["ModalityLUTSequence"] = Sequence([_lut_item(0, 2000 + np.arange(4096) // 2)])
        voi_first, n = 2000, 2048
    # a non-linear VOI LUT over exactly the modality range: any other indexing is visibly wrong
    voi = np.round(65535 * (np.arange(n) / (n - 1)) ** 0.5).astype(np.int64)
    tags["VOILUTSequence"] = Sequence([_lut_item(voi_first, voi)])
    write_dicom(tmp_path / "a.dcm", a, photometric=photometric, **tags)
    ours = read_image(tmp_path / "a.dcm")
    expected = _pydicom_pipeline(tmp_path / "a.dcm")
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert ours.min() < 0.05 and ours.max() > 0.95  # the LUT spans the image: not clipped to one end


def test_deflated_explicit_vr_little_endian(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    a = ramp()
    ds = write_dicom(tmp_path / "a.dcm", a, photometric="MONOCHROME1")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "a.dcm")
    assert pydicom.dcmread(tmp_path / "a.dcm").file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm"), 1 - a / 4095.0, atol=1e-6)


def test_dicom_without_meta_header_or_preamble(tmp_path):
    from pydicom.dataset import FileMetaDataset

    a = ramp()
    ds = write_dicom(tmp_path / "a.dcm", a)
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=False, implicit_vr=False, little_endian=True)
    assert pydicom.dcmread(tmp_path / "a.dcm", force=True).file_meta.get("TransferSyntaxUID") is None
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm"), a / 4095.0, atol=1e-6)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("limit", [None, -1990])
def test_pixel_padding_is_black(tmp_path, photometric, limit):
    a = ramp() - 2048  # signed stored values; padding -2000 (and up to -1990 with a range limit)
    a[:5] = -2000
    a[5, :4] = -1995
    tags = dict(PixelPaddingValue=-2000, RescaleSlope=1, RescaleIntercept=-1024)
    if limit is not None:
        tags["PixelPaddingRangeLimit"] = limit
    write_dicom(tmp_path / "a.dcm", a, signed=True, photometric=photometric, **tags)
    write_dicom(tmp_path / "nopad.dcm", a, signed=True, photometric=photometric, RescaleSlope=1,
                RescaleIntercept=-1024)
    out, plain = read_image(tmp_path / "a.dcm"), read_image(tmp_path / "nopad.dcm")
    pad = (a == -2000) | ((a >= -2000) & (a <= -1990) if limit is not None else False)
    assert pad[5, :4].all() == (limit is not None)
    assert (out[pad] == 0).all() and (plain[pad] > 0).all()  # without the tag they are grey (or white)
    np.testing.assert_array_equal(out[~pad], plain[~pad])


def test_multiframe_first_frame(tmp_path):
    a = ramp()
    write_dicom(tmp_path / "a.dcm", np.stack([a, 4095 - a]), frames=2)
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm"), a / 4095.0, atol=1e-6)


def test_dicom_detected_by_magic_without_extension(tmp_path):
    a = ramp()
    write_dicom(tmp_path / "noext", a)
    assert is_dicom(tmp_path / "noext")
    np.testing.assert_allclose(read_image(tmp_path / "noext"), a / 4095.0, atol=1e-6)


def test_rle_compressed_dicom(tmp_path):
    a = ramp()
    ds = write_dicom(tmp_path / "a.dcm", a)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "a.dcm")
    assert pydicom.dcmread(tmp_path / "a.dcm").file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm"), a / 4095.0, atol=1e-6)


def _installed(*modules):
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


@pytest.mark.parametrize("tsyntax,packages,modules", [
    ("JPEGLSLossless", ["pylibjpeg-libjpeg", "pyjpegls", "python-gdcm"], ["libjpeg", "jpeg_ls", "gdcm"]),
    ("JPEGLosslessSV1", ["pylibjpeg-libjpeg", "python-gdcm"], ["libjpeg", "gdcm"]),
    ("JPEG2000Lossless", ["pylibjpeg-openjpeg", "python-gdcm"], ["openjpeg", "gdcm"]),
    ("HTJ2KLossless", ["pylibjpeg-openjpeg"], ["openjpeg"]),
])
def test_missing_decoder_names_package(tmp_path, tsyntax, packages, modules):
    if _installed(*modules):
        pytest.skip(f"a decoder for {tsyntax} is installed")
    from pydicom import uid
    from pydicom.encaps import encapsulate

    ds = write_dicom(tmp_path / "a.dcm", ramp())
    ds.file_meta.TransferSyntaxUID = getattr(uid, tsyntax)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7garbage\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "a.dcm")
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / "a.dcm")
    assert "install" in e.value.reason and "\n" not in e.value.reason
    for package in packages:
        if not _installed(modules[packages.index(package)]):
            assert package in e.value.reason
    assert getattr(uid, tsyntax).name in e.value.reason


def test_jpeg_extended_12bit_names_the_plugin():
    """pydicom's own 12-bit JPEG Extended file: Pillow (installed) cannot decode 12-bit JPEG."""
    if _installed("libjpeg") or _installed("gdcm"):
        pytest.skip("a 12-bit JPEG decoder is installed")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("JPGExtended.dcm", download=False)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert "JPEG Extended" in e.value.reason and "12-bit" in e.value.reason
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in e.value.reason and "python-gdcm" in e.value.reason


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_nan_pixels_rejected(tmp_path):
    ds = write_dicom(tmp_path / "a.dcm", ramp(), RescaleSlope=1)
    ds.RescaleIntercept = "NaN"
    ds.save_as(tmp_path / "a.dcm")
    with pytest.raises(ImageReadError, match="a.dcm"):
        read_image(tmp_path / "a.dcm")


def test_constant_image_is_fine(tmp_path):
    write_dicom(tmp_path / "a.dcm", np.full((20, 20), 100))
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm"), 100 / 4095, atol=1e-6)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "z.png")
    assert read_image(tmp_path / "z.png").max() == 0


# --- failures ------------------------------------------------------------------------------------------


def _png_bytes(shape=(64, 64)):
    buf = _io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes(shape=(64, 64)):
    buf = _io.BytesIO()
    Image.fromarray(np.random.default_rng(6).integers(0, 256, shape, dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("name,content,fragment", [
    ("trunc.png", _png_bytes()[: len(_png_bytes()) // 2], "truncated"),
    ("trunc.jpg", _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated"),
    ("empty.png", b"", "empty"),
    ("junk.png", b"this is not an image at all" * 10, "not a recognised image"),
])
def test_bad_files_raise_naming_the_path(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert e.value.path == str(path)
    assert fragment in e.value.reason
    assert str(path) in str(e.value) and e.value.reason in str(e.value)
    with pytest.raises(ImageReadError):
        load_resized(path, 16)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / "nope.png")
    assert e.value.reason == "file not found" and "nope.png" in str(e.value)


def test_dicom_without_pixel_data(tmp_path):
    ds = write_dicom(tmp_path / "a.dcm", ramp())
    del ds.PixelData
    ds.save_as(tmp_path / "a.dcm")
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / "a.dcm")
    assert "no pixel data" in e.value.reason and "a.dcm" in str(e.value)


def test_truncated_dicom(tmp_path):
    write_dicom(tmp_path / "a.dcm", ramp())
    data = (tmp_path / "a.dcm").read_bytes()
    (tmp_path / "a.dcm").write_bytes(data[:-1000])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(tmp_path / "a.dcm")


def test_empty_dicom_and_garbage_dicom(tmp_path):
    (tmp_path / "e.dcm").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "e.dcm")
    (tmp_path / "g.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 50)
    with pytest.raises(ImageReadError, match="g.dcm"):
        read_image(tmp_path / "g.dcm")


def test_error_pickles():
    e = pickle.loads(pickle.dumps(ImageReadError("/x/y.png", "file not found")))
    assert e.path == "/x/y.png" and e.reason == "file not found" and "/x/y.png" in str(e)


# --- resize / draft ------------------------------------------------------------------------------------


def test_resize_shape_dtype_rounding():
    img = np.full((30, 50), 0.5, np.float32)
    out = resize_uint8(img, 16)
    assert out.shape == (16, 16) and out.dtype == np.uint8
    assert (out == 128).all()  # rint(127.5) -> 128 (half to even)
    assert (resize_uint8(np.ones((8, 8)), 8) == 255).all() and (resize_uint8(np.zeros((80, 8)), 8) == 0).all()
    same = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    np.testing.assert_array_equal(resize_uint8(same, 24), np.rint(same * 255).astype(np.uint8))


def test_resize_is_antialiased():
    checker = (np.indices((240, 240)).sum(0) % 2).astype(np.float32)  # 1-px checkerboard
    out = resize_uint8(checker, 32)
    # aliased (nearest / point-sampled) output would be all-black or all-white or stripy
    assert abs(out.astype(float).mean() - 127.5) < 3
    assert out.min() >= 110 and out.max() <= 145


def test_resize_keeps_whole_image():
    img = np.zeros((60, 40), np.float32)
    img[:, :4] = 1  # a bright band at the left edge survives (no crop)
    img[-6:, :] = 1  # and at the bottom
    out = resize_uint8(img, 20)
    assert out[:, 0].min() > 200 and out[-1, :].min() > 200 and out[5:15, 8:18].max() == 0


def _chest_like(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = 0.3 + 0.4 * np.exp(-((x - 0.5) ** 2 / 0.1 + (y - 0.5) ** 2 / 0.3))
    for cx in (0.3, 0.7):
        img -= 0.25 / (1 + np.exp(np.clip(-80 * (1 - ((x - cx) ** 2 / 0.02 + (y - 0.5) ** 2 / 0.08)), -50, 50)))
    img += np.random.default_rng(seed).normal(0, 0.02, (h, w))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("colour", [False, True])
def test_jpeg_draft_close_to_full_decode(tmp_path, monkeypatch, colour):
    a = _chest_like(1040, 960)
    im = Image.fromarray(np.dstack([a, a, a]) if colour else a)
    im.save(tmp_path / "big.jpg", quality=92)
    full = resize_uint8(read_image(tmp_path / "big.jpg"), 64)

    from PIL import JpegImagePlugin

    drafted = []
    orig = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        r = orig(self, mode, size)
        drafted.append((size, r))
        return r

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast = load_resized(tmp_path / "big.jpg", 64)
    assert drafted and drafted[0][1] is not None, "draft was not used for a 15x reduction"
    d = np.abs(fast.astype(int) - full.astype(int))
    assert d.mean() < 1.0 and np.percentile(d, 99) <= 3 and d.max() <= 8
    # no draft for a small reduction (the decoder's scaling would leave < 2x for the antialiased resize)
    drafted.clear()
    load_resized(tmp_path / "big.jpg", 400)
    assert not drafted or drafted[0][1] is None


def test_load_resized_equals_read_then_resize(tmp_path):
    a = ramp()
    write_dicom(tmp_path / "a.dcm", a, photometric="MONOCHROME1")
    np.testing.assert_array_equal(load_resized(tmp_path / "a.dcm", 24), resize_uint8(read_image(tmp_path / "a.dcm"), 24))
    Image.fromarray(_chest_like(100, 90)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_resized(tmp_path / "a.png", 32), resize_uint8(read_image(tmp_path / "a.png"), 32))


def test_metaimage_and_jsrt_raw_are_read(tmp_path):
    from arkx.data.mha import write_mha
    from arkx.data.raw_img import write_jsrt_img

    ramp = np.tile(np.arange(64, dtype=np.uint16) * 50, (32, 1))
    write_mha(tmp_path / "n.mha", ramp)
    img = read_image(tmp_path / "n.mha")
    assert img.shape == (32, 64) and img.min() == 0.0 and img.max() == 1.0
    assert np.all(np.diff(img[0]) > 0)
    bright_bone = np.zeros((16, 16), np.float32)
    bright_bone[4:8] = 1.0
    write_jsrt_img(tmp_path / "JPCLN001.IMG", bright_bone)
    back = read_image(tmp_path / "JPCLN001.IMG")
    assert back.shape == (16, 16)
    assert back[4:8].mean() > 0.9 and back[10:].mean() < 0.1  # polarity kept: bone bright
    (tmp_path / "bad.IMG").write_bytes(b"\x00" * 7)
    with pytest.raises(ImageReadError, match="bad.IMG"):
        read_image(tmp_path / "bad.IMG")
