"""arkx.data.cache: prepare once (resumable, invalidated by change, bad files skipped), read many times."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import arkx.data.cache as cache_mod
from arkx.data.cache import (CacheNotReady, PreparedImages, TooManyBadImages, cache_key, open_cache,
                             prepare)
from arkx.data.io import load_resized
from arkx.data.records import IMAGE_COLUMNS, Records

SIZE = 24


def _write_dicom(path, pixels):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def make_records(root, n=12, seed=0, dataset="toy"):
    """n tiny images (PNG 8/16-bit, JPEG, DICOM in turn) of 40-80 px and their Records."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        h, w = rng.integers(40, 81, size=2)
        kind = i % 4
        sub = root / f"p{i % 3}"
        sub.mkdir(exist_ok=True)
        if kind == 0:
            name = f"img{i}.png"
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(sub / name)
        elif kind == 1:
            name = f"img{i}.png"
            Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16)).save(sub / name)
        elif kind == 2:
            name = f"img{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(sub / name, quality=90)
        else:
            name = f"img{i}.dcm"
            _write_dicom(sub / name, rng.integers(0, 4096, (h, w)))
        rows.append(dict(image_id=f"{dataset}{i:03d}", path=f"{sub.name}/{name}", patient_id=f"pt{i % 5}",
                         split="train", view="PA", sex=None, age=np.nan))
    images = pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
    return Records(dataset=dataset, root=root, images=images, task=None, labels=np.zeros((n, 0)))


class Counter:
    """Stands in for arkx.data.cache.load_resized: counts calls, optionally raises at call ``stop_at``."""

    def __init__(self, stop_at=None, exc=KeyboardInterrupt):
        self.calls = []
        self.stop_at, self.exc = stop_at, exc

    def __call__(self, path, size):
        if self.stop_at is not None and len(self.calls) >= self.stop_at:
            raise self.exc()
        self.calls.append(str(path))
        return load_resized(path, size)


def index_of(folder):
    return json.loads((folder / "index.json").read_text())


def test_prepare_then_read_back(tmp_path):
    rec = make_records(tmp_path / "data")
    out = prepare(rec, tmp_path / "c", SIZE, progress=False)
    assert isinstance(out, PreparedImages) and len(out) == len(rec) and out.size == SIZE
    assert out.image_ids == list(rec.images["image_id"]) and out.ok.all() and out.failures == []
    for i, path in enumerate(rec.absolute_paths()):
        x = out[i]
        assert x.dtype == np.uint8 and x.shape == (SIZE, SIZE)
        np.testing.assert_array_equal(x, load_resized(path, SIZE))
    assert not out[0].flags.writeable  # a read-only view
    np.testing.assert_array_equal(out[-1], out[len(out) - 1])
    with pytest.raises(IndexError):
        out[len(out)]
    # file formats
    folder = tmp_path / "c"
    assert (folder / "images.u8").stat().st_size == len(rec) * SIZE * SIZE
    raw = np.fromfile(folder / "images.u8", dtype=np.uint8).reshape(len(rec), SIZE, SIZE)
    np.testing.assert_array_equal(raw[5], out[5])
    idx = index_of(folder)
    assert idx["complete"] is True and idx["version"] == cache_mod.FORMAT_VERSION and idx["n"] == len(rec)
    assert idx["size"] == SIZE and idx["dataset"] == "toy" and len(idx["fingerprint"]) == 64
    assert [e["image_id"] for e in idx["images"]] == list(rec.images["image_id"])
    assert [e["path"] for e in idx["images"]] == list(rec.images["path"])
    import zlib

    assert all(e["crc32"] == zlib.crc32(raw[i].tobytes()) for i, e in enumerate(idx["images"]))
    assert not (folder / "done.npy").exists() and not (folder / "crc.npy").exists()
    assert open_cache(folder).image_ids == out.image_ids
    assert out.verify() == []


@pytest.mark.parametrize("start_method", [None, "spawn"])
def test_workers_give_identical_bytes(tmp_path, start_method):
    rec = make_records(tmp_path / "data", n=10)
    prepare(rec, tmp_path / "c0", SIZE, workers=0, progress=False)
    prepare(rec, tmp_path / "c2", SIZE, workers=2, progress=False, chunk_size=3, start_method=start_method)
    assert (tmp_path / "c0" / "images.u8").read_bytes() == (tmp_path / "c2" / "images.u8").read_bytes()
    assert index_of(tmp_path / "c0")["images"] == index_of(tmp_path / "c2")["images"]


def test_corrupt_file_is_skipped_counted_and_logged(tmp_path, caplog):
    rec = make_records(tmp_path / "data", n=24)
    bad = rec.absolute_paths()[4]
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        out = prepare(rec, tmp_path / "c", SIZE, progress=False, fail_fraction=0.05)
    assert out.ok.tolist() == [i != 4 for i in range(24)]
    assert len(out.failures) == 1
    image_id, path, reason = out.failures[0]
    assert image_id == "toy004" and path == str(bad) and reason
    assert any(str(bad) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert (out[4] == 0).all()
    entry = index_of(tmp_path / "c")["images"][4]
    assert entry["ok"] is False and entry["reason"] == reason
    np.testing.assert_array_equal(out[5], load_resized(rec.absolute_paths()[5], SIZE))


def test_missing_files_are_failures(tmp_path):
    rec = make_records(tmp_path / "data", n=24)
    rec.absolute_paths()[7].unlink()
    out = prepare(rec, tmp_path / "c", SIZE, progress=False, fail_fraction=0.05)
    assert not out.ok[7] and out.ok.sum() == 23
    assert out.failures == [("toy007", str(rec.absolute_paths()[7]), "file not found")]


def test_too_many_bad_images_raises(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data", n=10)
    for i in (1, 2, 3):
        rec.absolute_paths()[i].write_bytes(b"garbage")
    with pytest.raises(TooManyBadImages) as e:
        prepare(rec, tmp_path / "c", SIZE, progress=False, fail_fraction=0.2)
    msg = str(e.value)
    assert isinstance(e.value, RuntimeError) and "3 of 10" in msg and str(rec.absolute_paths()[1]) in msg
    assert len(e.value.failures) == 3 and "stopped early" in msg  # 3 > 2 allowed: no point going on
    assert np.load(tmp_path / "c" / "done.npy").tolist() == [True] * 4 + [False] * 6
    # a higher tolerance keeps the work already done and decodes only the rest
    counter = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", counter)
    out = prepare(rec, tmp_path / "c", SIZE, progress=False, fail_fraction=0.5)
    assert len(out.failures) == 3 and counter.calls == [str(p) for p in rec.absolute_paths()[4:]]
    assert [f[0] for f in out.failures] == ["toy001", "toy002", "toy003"]
    # complete now: asking again with the strict tolerance raises without decoding anything
    counter.calls.clear()
    with pytest.raises(TooManyBadImages):
        prepare(rec, tmp_path / "c", SIZE, progress=False, fail_fraction=0.2)
    assert counter.calls == []


def test_too_many_missing_fails_before_decoding(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data", n=8)
    for p in rec.absolute_paths()[:4]:
        p.unlink()
    counter = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", counter)
    with pytest.raises(TooManyBadImages, match="file not found"):
        prepare(rec, tmp_path / "c", SIZE, progress=False)
    assert counter.calls == []


def test_resume_after_interrupt_processes_only_the_rest(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data", n=20)
    clean = prepare(rec, tmp_path / "clean", SIZE, progress=False)

    first = Counter(stop_at=10)
    monkeypatch.setattr(cache_mod, "load_resized", first)
    with pytest.raises(KeyboardInterrupt):
        prepare(rec, tmp_path / "c", SIZE, progress=False, chunk_size=4)
    done = np.load(tmp_path / "c" / "done.npy")
    assert done.sum() == 8 and done[:8].all()  # two whole chunks of 4 were recorded, the third was lost
    assert index_of(tmp_path / "c")["complete"] is False
    with pytest.raises(CacheNotReady, match="incomplete"):
        open_cache(tmp_path / "c")

    second = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", second)
    out = prepare(rec, tmp_path / "c", SIZE, progress=False, chunk_size=4)
    assert sorted(second.calls) == sorted(str(p) for p in rec.absolute_paths()[8:])
    assert (tmp_path / "c" / "images.u8").read_bytes() == (tmp_path / "clean" / "images.u8").read_bytes()
    assert index_of(tmp_path / "c")["images"] == index_of(tmp_path / "clean")["images"]
    assert out.verify() == [] and clean.verify() == []

    third = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", third)
    prepare(rec, tmp_path / "c", SIZE, progress=False)  # complete + same fingerprint: no work
    assert third.calls == []


_KILL_SCRIPT = textwrap.dedent("""
    import pickle, sys, time
    import arkx.data.cache as cache_mod
    from arkx.data.io import load_resized
    rec = pickle.load(open(sys.argv[1], "rb"))
    def slow(path, size):
        time.sleep(0.05)
        return load_resized(path, size)
    cache_mod.load_resized = slow
    cache_mod.prepare(rec, sys.argv[2], int(sys.argv[3]), progress=False, chunk_size=2)
""")


def test_resume_after_sigkill(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data", n=30)
    (tmp_path / "rec.pkl").write_bytes(pickle.dumps(rec))
    folder = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "rec.pkl"), str(folder), str(SIZE)])
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if np.load(folder / "done.npy").sum() >= 6:
                    break
            except (OSError, ValueError, EOFError):
                pass
            time.sleep(0.02)
        else:
            pytest.fail("the preparing subprocess made no progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = np.load(folder / "done.npy")
    assert 6 <= done.sum() < 30
    counter = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", counter)
    out = prepare(rec, folder, SIZE, progress=False)
    assert len(counter.calls) == 30 - done.sum()
    clean = prepare(rec, tmp_path / "clean", SIZE, progress=False)
    for i in range(30):
        np.testing.assert_array_equal(out[i], clean[i])
    assert out.verify() == []


def test_changed_file_invalidates(tmp_path, monkeypatch, caplog):
    rec = make_records(tmp_path / "data", n=8)
    key = cache_key(rec, SIZE)
    assert key.startswith(f"toy-{SIZE}-") and len(key.split("-")[-1]) == 12
    assert cache_key(rec, SIZE) == key and cache_key(rec, SIZE + 1) != key
    prepare(rec, tmp_path / "c", SIZE, progress=False)
    before = np.array(open_cache(tmp_path / "c")[3])
    path = rec.absolute_paths()[3]  # a 12-bit MONOCHROME1 DICOM: overwrite pixels in place, same file size
    data = path.read_bytes()
    st = path.stat()
    path.write_bytes(data[: len(data) - 2000] + bytes(2000))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert path.stat().st_size == st.st_size  # only the modification time tells
    assert cache_key(rec, SIZE) != key
    counter = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", counter)
    with caplog.at_level(logging.INFO, logger="arkx.data"):
        out = prepare(rec, tmp_path / "c", SIZE, progress=False)
    assert counter.calls == [str(path)]  # updated: only the changed file is decoded, the others copied
    np.testing.assert_array_equal(out[3], load_resized(path, SIZE))
    prepare(rec, tmp_path / "clean", SIZE, progress=False)
    assert (tmp_path / "c" / "images.u8").read_bytes() == (tmp_path / "clean" / "images.u8").read_bytes()
    assert index_of(tmp_path / "c")["images"] == index_of(tmp_path / "clean")["images"]
    assert not (tmp_path / "c" / "previous.u8").exists() and not (tmp_path / "c" / "previous.json").exists()
    assert not np.array_equal(out[3], before)
    assert any("rebuilding" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


def test_changed_records_invalidate(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data", n=8)
    prepare(rec, tmp_path / "c", SIZE, progress=False)
    sub = rec.subset(np.arange(8) != 3)
    counter = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", counter)
    before = {i: np.array(open_cache(tmp_path / "c")[i]) for i in range(8)}
    out = prepare(sub, tmp_path / "c", SIZE, progress=False)
    assert len(out) == 7 and counter.calls == []  # every remaining row is copied from the previous version
    assert out.image_ids == list(sub.images["image_id"])
    for new, old in enumerate(i for i in range(8) if i != 3):
        np.testing.assert_array_equal(out[new], before[old])
    assert out.verify() == []


def test_incomplete_or_other_version_cannot_be_opened(tmp_path):
    with pytest.raises(CacheNotReady):
        open_cache(tmp_path / "nothing")
    rec = make_records(tmp_path / "data", n=4)
    prepare(rec, tmp_path / "c", SIZE, progress=False)
    idx = index_of(tmp_path / "c")
    idx["version"] = cache_mod.FORMAT_VERSION + 1
    (tmp_path / "c" / "index.json").write_text(json.dumps(idx))
    with pytest.raises(CacheNotReady, match="version"):
        open_cache(tmp_path / "c")
    idx["version"] = cache_mod.FORMAT_VERSION
    idx["complete"] = False
    (tmp_path / "c" / "index.json").write_text(json.dumps(idx))
    with pytest.raises(CacheNotReady, match="incomplete"):
        open_cache(tmp_path / "c")
    idx["complete"] = True
    (tmp_path / "c" / "index.json").write_text(json.dumps(idx))
    with open(tmp_path / "c" / "images.u8", "r+b") as f:
        f.truncate(10)
    with pytest.raises(CacheNotReady, match="bytes"):
        open_cache(tmp_path / "c")


def test_verify_detects_a_flipped_byte(tmp_path):
    rec = make_records(tmp_path / "data", n=6)
    out = prepare(rec, tmp_path / "c", SIZE, progress=False)
    assert out.verify() == []
    with open(tmp_path / "c" / "images.u8", "r+b") as f:
        f.seek(3 * SIZE * SIZE + 100)
        b = f.read(1)
        f.seek(3 * SIZE * SIZE + 100)
        f.write(bytes([b[0] ^ 0x01]))
    assert open_cache(tmp_path / "c").verify() == [3]


def test_empty_records(tmp_path):
    rec = make_records(tmp_path / "data", n=0)
    out = prepare(rec, tmp_path / "c", SIZE, progress=False)
    assert len(out) == 0 and out.verify() == []


def test_progress_bar_does_not_break_without_tty(tmp_path):
    rec = make_records(tmp_path / "data", n=4)
    out = prepare(rec, tmp_path / "c", SIZE, progress=True)
    assert out.ok.all()


class _Rows:
    """A module-level Dataset (picklable for any start method) over a PreparedImages."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        import torch

        return torch.from_numpy(np.array(self.images[i], copy=True)), i


def test_pickles_and_works_in_dataloader(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    rec = make_records(tmp_path / "data", n=10)
    out = prepare(rec, tmp_path / "c", SIZE, progress=False)
    _ = out[0]  # open the memmap here; it must not travel in the pickle
    blob = pickle.dumps(out)
    assert len(blob) < 10 * SIZE * SIZE
    back = pickle.loads(blob)
    assert back._array is None
    np.testing.assert_array_equal(back[3], out[3])
    loader = DataLoader(_Rows(out), batch_size=3, num_workers=2, shuffle=False)
    seen = {}
    for batch, idx in loader:
        for x, i in zip(batch, idx.tolist()):
            seen[i] = x.numpy()
    assert sorted(seen) == list(range(10))
    for i in range(10):
        np.testing.assert_array_equal(seen[i], out[i])
    assert isinstance(torch.from_numpy(np.array(out[0])), torch.Tensor)


def test_interrupted_update_in_place_resumes_and_still_copies(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data", n=12)
    folder = tmp_path / "c"
    prepare(rec, folder, SIZE, progress=False)
    path = rec.absolute_paths()[0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a new version, same bytes
    sub = rec.subset(np.arange(12) != 5)
    # the update stops after two chunks; copying needs no decoder, so make the copy path fail instead
    real_chunk = cache_mod._prepare_chunk
    calls = []

    def stop_after_two(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real_chunk(*args)

    monkeypatch.setattr(cache_mod, "_prepare_chunk", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        prepare(sub, folder, SIZE, progress=False, chunk_size=3)
    assert (folder / "previous.json").exists() and (folder / "previous.u8").exists()
    assert np.load(folder / "done.npy").sum() == 6
    monkeypatch.setattr(cache_mod, "_prepare_chunk", real_chunk)
    counter = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", counter)
    out = prepare(sub, folder, SIZE, progress=False, chunk_size=3)
    assert counter.calls == []  # the other 5 rows were copied from the kept previous version too
    assert not (folder / "previous.json").exists() and not (folder / "previous.u8").exists()
    monkeypatch.setattr(cache_mod, "load_resized", load_resized)
    prepare(sub, tmp_path / "clean", SIZE, progress=False)
    assert (folder / "images.u8").read_bytes() == (tmp_path / "clean" / "images.u8").read_bytes()
    assert out.verify() == []
