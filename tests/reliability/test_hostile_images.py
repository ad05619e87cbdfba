"""Hostile image files (issue 19, items 5 and 8).

* A MetaImage ``.mhd`` names its data file: an absolute path, a ``..`` that climbs out of the header's
  folder, or a symlink that resolves outside it is refused, by the reader and by ``source_files`` (what
  the cache hashes), so a crafted header cannot copy an arbitrary file's bytes into the cache.
* Decompression bombs: every format's *declared* size is checked against one pixel cap before any pixel
  is decoded. Each file here is a few bytes to a few kB on disk and declares ~20000 x 20000 pixels; the
  test checks the message (file, declared size, cap) and that the refusal allocated next to nothing
  (``tracemalloc`` sees numpy's and Python's allocations, so a decoder that started on the 400 M pixels
  would show). Nothing here allocates more than a few MB.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arkx.data.io import (MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, ImageReadError, load_resized, max_image_pixels,
                          read_image, source_files)
from arkx.data.mha import MetaImageError, read_mha, write_mha
from arkx.errors import ArkxValueError

CAP_TEXT = f"cap of {MAX_IMAGE_PIXELS:,}"


@pytest.fixture(autouse=True)
def _default_cap(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)


# ------------------------------------------------------------------------------------------ .mhd paths


SECRET = b"top secret bytes, not pixels!!!!"  # 32 bytes = a 4 x 4 MET_USHORT image


def _mhd(folder: Path, data_file: str, name: str = "x.mhd") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_USHORT\n"
                    f"ElementDataFile = {data_file}\n")
    return path


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "outside" / "secret.raw"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _escapes(tmp_path: Path, secret: Path) -> dict[str, Path]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "link.raw").symlink_to(secret)
    (data / "linked_dir").symlink_to(secret.parent, target_is_directory=True)
    return {
        "absolute": _mhd(data, str(secret), "abs.mhd"),
        "dotdot": _mhd(data, "../outside/secret.raw", "dotdot.mhd"),
        "dotdot-inside-first": _mhd(data, "sub/../../outside/secret.raw", "dotdot2.mhd"),
        "symlink-file": _mhd(data, "link.raw", "link.mhd"),
        "symlink-folder": _mhd(data, "linked_dir/secret.raw", "linkdir.mhd"),
        "windows-drive": _mhd(data, "C:\\outside\\secret.raw", "win.mhd"),
    }


@pytest.mark.parametrize("case", ["absolute", "dotdot", "dotdot-inside-first", "symlink-file", "symlink-folder",
                                  "windows-drive"])
def test_mhd_data_file_outside_the_header_folder_is_refused(tmp_path, secret, case):
    header = _escapes(tmp_path, secret)[case]
    reasons = []
    for read in (read_image, lambda p: load_resized(p, 8), source_files):  # reader, cache decode, cache hash
        with pytest.raises(ImageReadError) as e:
            read(header)
        assert e.value.path == str(header)
        assert "absolute path" in e.value.reason or "outside the header's folder" in e.value.reason
        reasons.append(e.value.reason)
    assert len(set(reasons)) == 1  # one rule, one message
    with pytest.raises(MetaImageError, match="absolute path|outside the header's folder"):
        read_mha(header)  # the library-level reader refuses too


def test_mhd_data_file_inside_the_folder_is_read(tmp_path):
    data = tmp_path / "data"
    pixels = (np.arange(16, dtype=np.uint16) * 100).reshape(4, 4)
    (data / "raw").mkdir(parents=True)
    (data / "raw" / "x.raw").write_bytes(pixels.tobytes())
    (data / "same.raw").write_bytes(pixels.tobytes())
    (data / "alias.raw").symlink_to(data / "raw" / "x.raw")  # a symlink that stays inside is fine
    for name, source in [("a.mhd", "same.raw"), ("b.mhd", "raw/x.raw"), ("c.mhd", "alias.raw"),
                         ("d.mhd", "raw/../same.raw")]:
        header = _mhd(data, source, name)
        np.testing.assert_array_equal(read_mha(header), pixels)
        assert read_image(header).max() == 1.0
        files = source_files(header)
        assert files[0] == header and len(files) == 2 and files[1].read_bytes() == pixels.tobytes()


def test_source_files_of_other_formats_is_the_file_itself(tmp_path):
    write_mha(tmp_path / "a.mha", np.zeros((4, 4), np.uint16))
    assert source_files(tmp_path / "a.mha") == [tmp_path / "a.mha"]
    assert source_files(tmp_path / "b.png") == [tmp_path / "b.png"]


# ------------------------------------------------------------------------------------------ bombs


def _refused_cheaply(path: Path, declared: str, cap_text: str = CAP_TEXT, **kwargs) -> ImageReadError:
    """Read ``path``; it must fail naming the file, ``declared`` and the cap, allocating < 16 MB."""
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError) as e:
            read_image(path, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.path == str(path)
    assert declared in e.value.reason and cap_text in e.value.reason, e.value.reason
    assert MAX_PIXELS_ENV in e.value.reason
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MB allocated before refusing"
    return e.value


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """An 8-bit gray PNG declaring width x height, with one row of data (a few hundred bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
                     + chunk(b"IEND", b""))
    return path


def _jpeg_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny baseline JPEG whose frame header (SOF0) is patched to declare width x height."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def _tiff_declaring(path: Path, width: int, height: int) -> Path:
    """A little-endian uncompressed 8-bit gray TIFF declaring width x height, with 16 bytes of data."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, height), (279, 4, width * height)]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    entries[5] = (273, 4, data_offset)
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", tag, kind, 1, value)
                                                    for tag, kind, value in entries) + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(16))
    return path


@pytest.mark.parametrize("width,height", [(20000, 20000), (8000, 8000)])
def test_png_bomb(tmp_path, width, height):
    # 20000^2 is also above Pillow's own limit (it refuses while opening); 8000^2 = 64 M is above ours only
    path = _png_header_only(tmp_path / "bomb.png", width, height)
    assert path.stat().st_size < 1000
    _refused_cheaply(path, f"{width * height:,}")


@pytest.mark.parametrize("width,height", [(20000, 20000), (8000, 8000)])
def test_jpeg_bomb(tmp_path, width, height):
    path = _jpeg_declaring(tmp_path / "bomb.jpg", width, height)
    _refused_cheaply(path, f"{width * height:,}")
    with pytest.raises(ImageReadError, match="cap"):
        load_resized(path, 16)  # the draft (reduced-scale) decode path is guarded too


@pytest.mark.parametrize("width,height", [(20000, 20000), (8000, 8000)])
def test_tiff_bomb(tmp_path, width, height):
    path = _tiff_declaring(tmp_path / "bomb.tif", width, height)
    _refused_cheaply(path, f"{width * height:,}")


def _dicom_declaring(path: Path, rows: int, cols: int, *, samples: int = 1, rle: bool = False) -> Path:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = RLELossless if rle else ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if rle:
        # one RLE segment: header (segment count + 15 offsets), then "repeat 0 x 128" runs
        segment = b"\x81\x00" * 512
        ds.PixelData = encapsulate([struct.pack("<16I", 1, 64, *([0] * 14)) + segment])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = bytes(64)
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).Rows == rows
    return path


def test_dicom_rle_bomb(tmp_path):
    path = _dicom_declaring(tmp_path / "bomb.dcm", 20000, 20000, rle=True)
    assert path.stat().st_size < 5000
    _refused_cheaply(path, "20000x20000")


def test_dicom_uncompressed_declaring_huge_size(tmp_path):
    _refused_cheaply(_dicom_declaring(tmp_path / "big.dcm", 20000, 20000), "20000x20000")


def test_dicom_samples_per_pixel_count(tmp_path):
    # 5000 x 5000 x 3 = 75 M values > 60 M; 4000 x 4000 x 3 = 48 M is under the cap (and then fails as
    # truncated, its pixel data being 64 bytes)
    _refused_cheaply(_dicom_declaring(tmp_path / "rgb.dcm", 5000, 5000, samples=3), "5000x5000 x 3 samples")
    with pytest.raises(ImageReadError, match="truncated") as e:
        read_image(_dicom_declaring(tmp_path / "ok.dcm", 4000, 4000, samples=3))
    assert "cap" not in e.value.reason


def test_mha_zlib_bomb(tmp_path):
    path = tmp_path / "bomb.mha"
    payload = zlib.compress(bytes(1 << 20))  # 1 MiB of zeros: ~1 kB; a real bomb would inflate to 800 MB
    path.write_bytes(b"ObjectType = Image\nNDims = 2\nDimSize = 20000 20000\nElementType = MET_USHORT\n"
                     b"CompressedData = True\nElementDataFile = LOCAL\n" + payload)
    _refused_cheaply(path, "20000x20000")


def test_mha_3d_and_mhd_declaring_huge_sizes(tmp_path):
    path = tmp_path / "vol.mha"
    path.write_bytes(b"NDims = 3\nDimSize = 1000 1000 100\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
                     + bytes(100))
    _refused_cheaply(path, "1000x1000x100")
    (tmp_path / "x.raw").write_bytes(bytes(100))
    header = tmp_path / "x.mhd"
    header.write_text("NDims = 2\nDimSize = 20000 20000\nElementNumberOfChannels = 1\nElementType = MET_UCHAR\n"
                      "ElementDataFile = x.raw\n")
    _refused_cheaply(header, "20000x20000")


def test_mha_inflates_no_more_than_it_declares(tmp_path):
    """A small declared image whose zlib stream expands to 20 MB: only the declared 4 kB are inflated."""
    path = tmp_path / "long.mha"
    payload = zlib.compress(bytes(20 << 20))
    path.write_bytes(b"NDims = 2\nDimSize = 64 64\nElementType = MET_UCHAR\nCompressedData = True\n"
                     b"ElementDataFile = LOCAL\n" + payload)
    tracemalloc.start()
    try:
        arr = read_mha(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert arr.shape == (64, 64) and not arr.any()
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MB"


def test_jsrt_raw_declaring_huge_size(tmp_path):
    path = tmp_path / "JPCLN999.IMG"
    with open(path, "wb") as f:  # sparse: the length of a 20000 x 20000 16-bit raw image, no blocks used
        f.truncate(2 * 20000 * 20000)
    _refused_cheaply(path, "20000x20000")


# ------------------------------------------------------------------------------------------ the cap


def test_cap_override_by_environment_and_argument(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png").shape == (40, 50)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1_000")
    assert max_image_pixels() == 1000
    _refused_cheaply(tmp_path / "small.png", "50x40", cap_text="cap of 1,000")
    with pytest.raises(ImageReadError, match="cap of 1,000"):
        load_resized(tmp_path / "small.png", 8)  # cache workers read the variable at every call
    assert read_image(tmp_path / "small.png", max_pixels=2000).shape == (40, 50)  # the argument wins
    _refused_cheaply(tmp_path / "small.png", "50x40", cap_text="cap of 100", max_pixels=100)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ArkxValueError, match=f"{MAX_PIXELS_ENV}='lots'"):
        read_image(tmp_path / "small.png")
    monkeypatch.delenv(MAX_PIXELS_ENV)
    with pytest.raises(ArkxValueError, match="max_pixels=0"):
        read_image(tmp_path / "small.png", max_pixels=0)


def test_cap_leaves_real_radiograph_sizes_alone():
    # the largest detectors: 4300 x 4300 (DR chest), 4096 x 5355 (mammography), colour 3000 x 3000 x 3
    assert max(4300 * 4300, 4096 * 5355, 3000 * 3000 * 3) < MAX_IMAGE_PIXELS <= 100_000_000
