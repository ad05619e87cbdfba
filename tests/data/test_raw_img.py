from __future__ import annotations

import numpy as np
import pytest

from arkx.data.raw_img import JSRT_SIDE, RawImageError, jsrt_side, read_jsrt_img, write_jsrt_img


def test_bytes_are_big_endian_12bit_and_inverted(tmp_path):
    # 2x2 image: raw words 0, 4095, 1, 256 written big-endian by hand
    path = tmp_path / "JPCLN001.IMG"
    path.write_bytes(bytes([0x00, 0x00, 0x0F, 0xFF, 0x00, 0x01, 0x01, 0x00]))
    img = read_jsrt_img(path)
    assert img.shape == (2, 2) and img.dtype == np.float32
    # high stored value = dark film = dark pixel after inversion (bone bright)
    np.testing.assert_allclose(img, 1.0 - np.array([[0, 4095], [1, 256]]) / 4095, atol=1e-6)
    np.testing.assert_allclose(read_jsrt_img(path, invert=False), np.array([[0, 4095], [1, 256]]) / 4095, atol=1e-6)


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((16, 16)).astype(np.float32)
    path = write_jsrt_img(tmp_path / "a.IMG", img)
    assert path.stat().st_size == 16 * 16 * 2
    raw = np.fromfile(path, dtype=">u2")
    assert raw.max() <= 4095
    np.testing.assert_allclose(read_jsrt_img(path), img, atol=0.5 / 4095 + 1e-6)


def test_side_from_file_length(tmp_path):
    real = tmp_path / "real.IMG"
    with open(real, "wb") as f:  # sparse 8 MiB file, the size of a real JSRT image
        f.truncate(2 * JSRT_SIDE * JSRT_SIDE)
    assert jsrt_side(real) == 2048
    odd = tmp_path / "odd.IMG"
    odd.write_bytes(b"\0" * 30)
    with pytest.raises(RawImageError, match="odd.IMG"):
        read_jsrt_img(odd)


def test_little_endian_file_is_rejected(tmp_path):
    path = tmp_path / "le.IMG"
    np.array([1, 2, 3, 4095], dtype="<u2").tofile(path)  # 4095 little-endian reads as 65295 big-endian
    with pytest.raises(RawImageError, match="12 bits"):
        read_jsrt_img(path)


def test_write_rejects_non_square(tmp_path):
    with pytest.raises(ValueError, match="square"):
        write_jsrt_img(tmp_path / "x.IMG", np.zeros((4, 5)))
