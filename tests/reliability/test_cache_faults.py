"""The prepared cache under faults: killed preparers, locks, read-only and full disks, stale or damaged
rows, updates and clean-up (issue 19: items 1, 9, 10, 11, 12, 18)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import arkx.data.cache as cache_mod
import arkx.data.cache_files as cache_files
from arkx.data.cache import (CacheDiskFull, CacheNotReady, CacheNotWritable, CorruptCacheRow, cache_key,
                             clean_cache, open_cache, prepare)
from arkx.data.cache_lock import LockBusy, folder_lock
from arkx.data.io import load_resized
from arkx.data.batch import collate
from arkx.data.loaders import CachedImages, prepare_images
from arkx.data.records import IMAGE_COLUMNS, Records

SIZE = 32


def make_records(root: Path, n: int = 12, seed: int = 0, dataset: str = "toy") -> Records:
    """n small 8-bit PNGs (36-60 px) and their Records."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        h, w = rng.integers(36, 61, size=2)
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(root / f"img{i}.png")
        rows.append(dict(image_id=f"{dataset}{i:03d}", path=f"img{i}.png", patient_id=f"pt{i}", split="train",
                         view="PA", sex=None, age=np.nan))
    return _records(root, rows, dataset)


def _records(root: Path, rows: list[dict], dataset: str = "toy") -> Records:
    images = pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
    return Records(dataset=dataset, root=root, images=images, task=None, labels=np.zeros((len(rows), 0)))


def write_raw_pair(folder: Path, name: str, pixels: np.ndarray) -> Path:
    """A MetaImage header ``name.mhd`` with its pixels in ``name.raw`` (uint8)."""
    h, w = pixels.shape
    (folder / f"{name}.raw").write_bytes(pixels.astype(np.uint8).tobytes())
    header = (f"ObjectType = Image\nNDims = 2\nDimSize = {w} {h}\nElementType = MET_UCHAR\n"
              f"ElementDataFile = {name}.raw\n")
    (folder / f"{name}.mhd").write_text(header)
    return folder / f"{name}.mhd"


class Counter:
    """Stands in for arkx.data.cache.load_resized and records which files were decoded."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, path, size):
        self.calls.append(str(path))
        return load_resized(path, size)


def replace_keeping_stat(path: Path, data: bytes) -> None:
    """Overwrite ``path`` with ``data`` (same length) and put its modification time back."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def flip_byte(folder: Path, row: int, size: int = SIZE, offset: int = 100) -> None:
    with open(folder / "images.u8", "r+b") as f:
        f.seek(row * size * size + offset)
        b = f.read(1)
        f.seek(row * size * size + offset)
        f.write(bytes([b[0] ^ 0x01]))


def index_of(folder: Path) -> dict:
    return json.loads((folder / "index.json").read_text())


# ----------------------------------------------------------------------------------------------------
# 1. killed preparers: no orphaned worker, no lock left behind; a waiter names the holder

_SLOW_PREPARE = textwrap.dedent("""
    import pickle, sys, time
    import arkx.data.cache as cache_mod
    from arkx.data.io import load_resized
    rec = pickle.load(open(sys.argv[1], "rb"))
    def slow(path, size):
        time.sleep(0.1)
        return load_resized(path, size)
    cache_mod.load_resized = slow  # inherited by the forked decoding workers
    cache_mod.prepare(rec, sys.argv[2], int(sys.argv[3]), workers=2, progress=False, chunk_size=2)
""")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a container's init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_prepare_leaves_no_worker_and_no_lock(tmp_path, sig):
    rec = make_records(tmp_path / "data", n=40)
    (tmp_path / "rec.pkl").write_bytes(pickle.dumps(rec))
    folder = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_PREPARE, str(tmp_path / "rec.pkl"), str(folder), str(SIZE)])
    workers: list[int] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with contextlib.suppress(OSError, ValueError, EOFError):
                if np.load(folder / "done.npy").sum() >= 4:
                    break
            time.sleep(0.02)
        else:
            pytest.fail("the preparing subprocess made no progress")
        workers = _children(proc.pid)
        assert len(workers) >= 2, "expected two decoding workers"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and any(_running(w) for w in workers):
            time.sleep(0.05)
        survivors = [w for w in workers if _running(w)]
        assert not survivors, f"decoding workers {survivors} outlived their parent"
        # the lock died with its holder: a new prepare (another process) finishes at once
        done = subprocess.run([sys.executable, "-c", _SLOW_PREPARE.replace("time.sleep(0.1)", "pass"),
                               str(tmp_path / "rec.pkl"), str(folder), str(SIZE)], timeout=60)
        assert done.returncode == 0
    finally:
        proc.kill()
        for w in workers:  # only the workers this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)
    out = open_cache(folder)
    assert out.verify() == [] and len(out) == 40
    for i, path in enumerate(rec.absolute_paths()):
        np.testing.assert_array_equal(out[i], load_resized(path, SIZE))


_FORK_THEN_DIE = textwrap.dedent("""
    import os, sys, time
    from arkx.data.cache_lock import folder_lock
    with folder_lock(sys.argv[1]):
        child = os.fork()
        if child == 0:          # a child that outlives its parent, as an orphaned worker would
            time.sleep(30)
            os._exit(0)
        print("forked", child, flush=True)
        os._exit(0)             # the parent dies holding the lock
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_the_lock_is_not_inherited_by_forked_children(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _FORK_THEN_DIE, str(folder)], stdout=subprocess.PIPE, text=True)
    word, child = proc.stdout.readline().split()  # (the orphan keeps the pipe open: read one line, no EOF)
    assert word == "forked"
    assert proc.wait(timeout=30) == 0
    try:
        assert _running(int(child))  # the orphan lives on, with the lock file open
        with folder_lock(folder, blocking=False) as held:  # but it does not keep the lock
            assert held is True
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)


_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from arkx.data.cache_lock import folder_lock
    with folder_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_a_waiting_prepare_names_the_holder_at_warning_level(tmp_path, caplog):
    rec = make_records(tmp_path / "data", n=4)
    folder = tmp_path / "c"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder), "1.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match=f"pid {holder.pid}"):
            with folder_lock(folder, blocking=False):
                pass
        with caplog.at_level(logging.WARNING, logger="arkx.data"):
            out = prepare(rec, folder, SIZE, progress=False)  # waits ~1.5 s, then prepares
    finally:
        holder.kill()
        holder.wait()
    assert len(out) == 4 and out.verify() == []
    waits = [r.getMessage() for r in caplog.records if "waiting for the lock" in r.getMessage()]
    assert waits and all(r.levelno == logging.WARNING for r in caplog.records if "waiting" in r.getMessage())
    msg = waits[0]
    assert f"pid {holder.pid} on {socket.gethostname()}" in msg and "since" in msg
    assert "from arkx.data.cache_lock import folder_lock" in msg and "\n" not in msg  # its command, on one line


# ----------------------------------------------------------------------------------------------------
# 9. a complete cache on a read-only file system is read without writing


@contextlib.contextmanager
def read_only_bind_mount(folder: Path):
    """``folder`` made read-only in place by a bind mount; skips the test where mounting is not allowed."""
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        pytest.skip("needs Linux mount")
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"bind mounts are not permitted here: {bind.stderr.decode().strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"read-only remounts are not permitted here: {ro.stderr.decode().strip()}")
        yield folder
    finally:
        _unmount(folder)


def _unmount(folder: Path) -> None:
    import gc

    gc.collect()  # memory maps of files in there keep the mount busy
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # detach it anyway


def test_complete_cache_on_a_read_only_mount_is_read(tmp_path):
    """Real read-only file system (a read-only bind mount: root ignores permission bits)."""
    rec = make_records(tmp_path / "data", n=6)
    root = tmp_path / "cache"
    first = prepare_images(rec, root, SIZE, progress=False)
    expected = [np.array(first[i]) for i in range(6)]
    with read_only_bind_mount(root):
        with pytest.raises(OSError, match="Read-only"):
            (root / "probe").write_text("x")
        again = prepare_images(rec, root, SIZE, progress=False)  # no traceback on .lock
        assert again.folder == first.folder
        for i in range(6):
            np.testing.assert_array_equal(again.read(i), expected[i])
        assert again.verify() == [] and again.verify_sources() == []
        # what must write says so in one line
        with pytest.raises(CacheNotWritable, match="cannot write the cache in .*Read-only file system"):
            prepare_images(rec, root, SIZE, progress=False, repair=True)
        (tmp_path / "data" / "img0.png").touch()  # the cache is now out of date, and cannot be updated here
        with pytest.raises(CacheNotWritable, match=r"Read-only file system"):
            prepare_images(rec, root, SIZE, progress=False)


def test_complete_cache_is_opened_without_writing_anything(tmp_path, monkeypatch):
    """Simulated read-only folder (every open for writing inside it fails with EROFS): works where mounts don't."""
    import builtins

    rec = make_records(tmp_path / "data", n=5)
    folder = tmp_path / "c"
    prepare(rec, folder, SIZE, progress=False)
    inside = str(folder)
    real_open, real_os_open = builtins.open, os.open

    def refuse(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    def guarded_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(inside) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if str(path).startswith(inside) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    out = prepare(rec, folder, SIZE, progress=False)
    assert len(out) == 5 and out.read(2).shape == (SIZE, SIZE)
    with pytest.raises(CacheNotWritable, match="Read-only file system"):
        prepare(rec, folder, SIZE, progress=False, repair=True)


# ----------------------------------------------------------------------------------------------------
# 10. content hashes: replaced pixels with the same size and mtime are found, for both files of a pair


def test_verify_finds_an_image_replaced_with_the_same_size_and_mtime(tmp_path):
    rec = make_records(tmp_path / "data", n=6)
    folder = tmp_path / "c"
    first = prepare(rec, folder, SIZE, progress=False)
    assert all(len(e["sha256"]) == 64 for e in index_of(folder)["images"])
    key = cache_key(rec, SIZE)
    # img4 gets img4's size but other pixels: a PNG of the same byte length is hard to make, so rewrite the
    # bytes of the IDAT payload region in place (the file stays a valid-length file, its content changes)
    path = rec.absolute_paths()[4]
    other = np.full((40, 50), 200, np.uint8)
    Image.fromarray(other).save(tmp_path / "other.png")
    data = bytearray(path.read_bytes())
    replacement = (tmp_path / "other.png").read_bytes()
    data[: len(replacement)] = replacement  # a valid PNG followed by junk that decoders ignore
    replace_keeping_stat(path, bytes(data))
    assert cache_key(rec, SIZE) == key  # size and mtime cannot tell
    assert prepare(rec, folder, SIZE, progress=False).verify() == []  # the rows themselves are intact
    assert first.verify_sources() == [4]
    assert open_cache(folder).verify_sources(workers=2) == [4]


def test_both_files_of_a_metaimage_pair_are_fingerprinted_and_hashed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(3):
        write_raw_pair(data, f"scan{i}", rng.integers(0, 256, (40, 48)))
        rows.append(dict(image_id=f"s{i}", path=f"scan{i}.mhd", patient_id=f"p{i}", split="train", view="PA",
                         sex=None, age=np.nan))
    rec = _records(data, rows, "pairs")
    folder = tmp_path / "c"
    out = prepare(rec, folder, SIZE, progress=False)
    assert out.ok.all()
    entries = index_of(folder)["images"]
    assert all(len(e["files"]) == 2 for e in entries)  # header and data file
    key = cache_key(rec, SIZE)
    raw = data / "scan1.raw"
    replace_keeping_stat(raw, bytes(255 - b for b in raw.read_bytes()))  # the header is untouched
    assert out.verify_sources() == [1]
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    assert cache_key(rec, SIZE) != key  # the data file's mtime is part of the fingerprint
    again = prepare(rec, folder, SIZE, progress=False)
    np.testing.assert_array_equal(again[1], load_resized(data / "scan1.mhd", SIZE))
    assert again.verify_sources() == []


def test_a_format_1_cache_is_refused_with_a_message_and_rebuilt(tmp_path, caplog):
    rec = make_records(tmp_path / "data", n=4)
    folder = tmp_path / "c"
    prepare(rec, folder, SIZE, progress=False)
    idx = index_of(folder)
    idx["version"] = 1
    (folder / "index.json").write_text(json.dumps(idx))
    with pytest.raises(CacheNotReady, match=f"version 1, this arkx reads version {cache_mod.FORMAT_VERSION}"):
        open_cache(folder)
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        out = prepare(rec, folder, SIZE, progress=False)
    assert index_of(folder)["version"] == cache_mod.FORMAT_VERSION and out.verify() == []
    assert any("rebuilding" in r.getMessage() and "format version 1" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------------------------
# 11. a damaged row is never trained on; repair re-decodes it


def test_a_row_failing_its_checksum_stops_the_loader_and_repair_fixes_it(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    rec = make_records(tmp_path / "data", n=8)
    folder = tmp_path / "c"
    prepare(rec, folder, SIZE, progress=False)
    flip_byte(folder, 3)
    images = open_cache(folder)
    data = CachedImages(images, np.zeros((8, 1), np.float32), np.arange(8))
    with pytest.raises(CorruptCacheRow, match=r"cache row 3 of .*toy003.*fails its checksum.*--repair"):
        for i in range(8):
            data[i]
    # through DataLoader workers the message stays one line (torch re-raises with the worker's traceback)
    with pytest.raises(CorruptCacheRow) as err:
        for _ in DataLoader(data, batch_size=4, num_workers=2):
            pass
    assert "\n" not in str(err.value) and str(err.value).startswith("cache row 3 of")

    repaired = prepare(rec, folder, SIZE, progress=False, repair=True)
    assert repaired.repaired == [3] and repaired.verify() == []
    np.testing.assert_array_equal(repaired.read(3), load_resized(rec.absolute_paths()[3], SIZE))
    batches = [b.images for b in DataLoader(CachedImages(repaired, np.zeros((8, 1), np.float32), np.arange(8)),
                                        batch_size=4, collate_fn=collate)]
    assert torch.cat(batches).shape == (8, 1, SIZE, SIZE)


def test_repair_decodes_rows_whose_source_changed(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data", n=6)
    folder = tmp_path / "c"
    prepare(rec, folder, SIZE, progress=False)
    path = rec.absolute_paths()[2]
    Image.fromarray(np.full((40, 50), 90, np.uint8)).save(tmp_path / "other.png")
    data = bytearray(path.read_bytes())
    data[: len((tmp_path / "other.png").read_bytes())] = (tmp_path / "other.png").read_bytes()
    replace_keeping_stat(path, bytes(data))
    counter = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", counter)
    out = prepare(rec, folder, SIZE, progress=False, repair=True)
    assert out.repaired == [2] and counter.calls == [str(path)]
    np.testing.assert_array_equal(out[2], load_resized(path, SIZE))
    assert out.verify_sources() == [] and out.verify() == []


def test_cli_verify_reports_changed_originals_and_repair_fixes_them(tmp_path, capsys):
    from arkx.cli import main

    root = tmp_path / "data"
    rec = make_records(root, n=5)
    pd.DataFrame({"path": rec.images["path"], "label": [0, 1, 0, 1, 0]}).to_csv(root / "labels.csv", index=False)
    # the generic csv adapter reads that folder
    args = ["--quiet", "prepare", str(root), "--type", "csv", "--option", "csv=labels.csv", "--size", str(SIZE),
            "--cache-dir", str(tmp_path / "cache"), "--workers", "0"]
    rc = main(args + ["--verify"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "verify: 0 image(s) with a wrong checksum" in out.out
    assert "verify: 0 image(s) whose original changed" in out.out
    folder = next((tmp_path / "cache").iterdir())
    flip_byte(folder, 1)
    assert main(args + ["--verify"]) == 1
    text = capsys.readouterr().out
    assert "verify: 1 image(s) with a wrong checksum, e.g. row 1" in text and "--repair" in text
    assert main(args + ["--repair"]) == 0
    assert "repair: 1 image(s) decoded again: rows 1" in capsys.readouterr().out
    assert main(args + ["--verify"]) == 0
    capsys.readouterr()
    path = root / "img3.png"  # an original replaced, same size and mtime: only its content tells
    data = bytearray(path.read_bytes())
    data[-20:-12] = bytes(8)
    replace_keeping_stat(path, bytes(data))
    assert main(args + ["--verify"]) == 1
    assert f"verify: 1 image(s) whose original changed since prepare, e.g. {path}" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------
# 12. a full disk is one line, never a bus error; what was written is kept


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str = "1M"):
    """A real small file system at ``folder``; skips the test where mounting is not allowed."""
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        pytest.skip("needs Linux mount")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"tmpfs mounts are not permitted here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        _unmount(folder)


def test_too_little_space_is_refused_before_writing(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data", n=80)  # 80 x 128 x 128 = 1.3 MB > 1 MB
    allocated = []
    monkeypatch.setattr(cache_files, "_allocate", lambda path, nbytes: allocated.append(path))
    with tiny_tmpfs(tmp_path / "small"):
        with pytest.raises(CacheDiskFull) as err:
            prepare(rec, tmp_path / "small" / "c", 128, progress=False)
        assert allocated == []  # refused on the free-space check, before any file was made
        msg = str(err.value)
        assert "\n" not in msg and str(tmp_path / "small" / "c") in msg and "needs about 1." in msg
        assert not (tmp_path / "small" / "c" / "images.u8").exists()


_FILL_THEN_PREPARE = textwrap.dedent("""
    import pickle, sys
    import arkx.data.cache as cache_mod
    from arkx.errors import ArkxError
    rec = pickle.load(open(sys.argv[1], "rb"))
    folder, filler = sys.argv[2], sys.argv[3]
    real_write_index = cache_mod._write_index
    def write_index_then_fill(cache_dir, data):
        real_write_index(cache_dir, data)
        if not data["complete"]:  # the folder is set up: now another program takes every block left
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(bytes(4096))
                except OSError:
                    pass
    cache_mod._write_index = write_index_then_fill
    try:
        cache_mod.prepare(rec, folder, int(sys.argv[4]), progress=False, chunk_size=4)
    except ArkxError as e:
        print(type(e).__name__, e)
        sys.exit(3)
""")


def test_disk_filling_up_during_prepare_is_one_line_and_keeps_the_rows(tmp_path, monkeypatch):
    """The rows go into blocks allocated up front (a sparse file here gets SIGBUS: exit -7); the index
    write that fails is one line; after freeing space, prepare finishes without decoding again."""
    rec = make_records(tmp_path / "data", n=24)
    (tmp_path / "rec.pkl").write_bytes(pickle.dumps(rec))
    with tiny_tmpfs(tmp_path / "small", "512k"):
        folder = tmp_path / "small" / "c"
        filler = tmp_path / "small" / "filler"
        proc = subprocess.run([sys.executable, "-c", _FILL_THEN_PREPARE, str(tmp_path / "rec.pkl"), str(folder),
                               str(filler), "64"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 3, (proc.returncode, proc.stderr[-2000:])
        assert proc.stdout.startswith("CacheDiskFull no space left for the cache in") and str(folder) in proc.stdout
        assert "Traceback" not in proc.stderr
        assert np.load(folder / "done.npy").all()  # every row was decoded and kept
        filler.unlink()
        counter = Counter()
        monkeypatch.setattr(cache_mod, "load_resized", counter)
        out = prepare(rec, folder, 64, progress=False)
        assert counter.calls == [] and out.verify() == []
        for i, path in enumerate(rec.absolute_paths()):
            np.testing.assert_array_equal(out[i], load_resized(path, 64))


def test_failed_allocation_is_one_line_and_gives_the_space_back(tmp_path, monkeypatch):
    """Simulated (works without mount): free space looks sufficient, the allocation then finds none."""
    rec = make_records(tmp_path / "data", n=4)
    folder = tmp_path / "c"
    monkeypatch.setattr(cache_files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 0, 10**12))

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_files.os, "posix_fallocate", no_space, raising=False)
    with pytest.raises(CacheDiskFull, match=r"no space left for the cache in .*images\.u8.*needs about"):
        prepare(rec, folder, SIZE, progress=False)
    assert not (folder / "images.u8").exists()


def test_cli_full_disk_is_one_line(roots, tmp_path, capsys):
    from arkx.cli import main

    with tiny_tmpfs(tmp_path / "small"):
        rc = main(["--quiet", "prepare", str(roots["shenzhen"]), "--type", "shenzhen", "--size", "256",
                   "--cache-dir", str(tmp_path / "small"), "--workers", "0"])
        err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no space left for the cache in" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------
# 18. updates copy unchanged rows; `cache clean` removes old versions


def test_an_update_copies_unchanged_rows_from_the_previous_folder(tmp_path, monkeypatch, caplog):
    root = tmp_path / "data"
    rec = make_records(root, n=10)
    cache_root = tmp_path / "cache"
    first = prepare_images(rec, cache_root, SIZE, progress=False)
    # one file rewritten with other pixels, one touched only (same bytes), one removed, one added
    Image.fromarray(np.full((44, 44), 33, np.uint8)).save(root / "img2.png")
    p5 = root / "img5.png"
    os.utime(p5, ns=(p5.stat().st_atime_ns, p5.stat().st_mtime_ns + 10**9))
    Image.fromarray(np.full((50, 40), 120, np.uint8)).save(root / "img10.png")
    rows = [r for r in rec.images.to_dict("records") if r["image_id"] != "toy007"]
    rows.append(dict(image_id="toy010", path="img10.png", patient_id="pt10", split="train", view="PA", sex=None,
                     age=np.nan))
    updated = _records(root, rows)
    counter = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", counter)
    with caplog.at_level(logging.INFO, logger="arkx.data"):
        second = prepare_images(updated, cache_root, SIZE, progress=False)
    assert second.folder != first.folder and first.folder.exists()
    assert sorted(counter.calls) == sorted([str(root / "img2.png"), str(root / "img10.png")])
    assert any("8 row(s) copied" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(cache_mod, "load_resized", load_resized)
    clean = prepare(updated, tmp_path / "clean", SIZE, progress=False)
    assert (second.folder / "images.u8").read_bytes() == (clean.folder / "images.u8").read_bytes()
    assert index_of(second.folder)["images"] == index_of(clean.folder)["images"]


def test_a_damaged_previous_row_is_decoded_not_copied(tmp_path, monkeypatch):
    root = tmp_path / "data"
    rec = make_records(root, n=6)
    cache_root = tmp_path / "cache"
    first = prepare_images(rec, cache_root, SIZE, progress=False)
    flip_byte(first.folder, 4)
    sub = rec.subset(np.arange(6) != 0)  # a new version: rows 1..5 may be copied
    counter = Counter()
    monkeypatch.setattr(cache_mod, "load_resized", counter)
    second = prepare_images(sub, cache_root, SIZE, progress=False)
    assert counter.calls == [str(rec.absolute_paths()[4])]
    assert second.verify() == []
    np.testing.assert_array_equal(second[3], load_resized(rec.absolute_paths()[4], SIZE))


def _versions(tmp_path):
    """A cache root with two versions of toy (old, new), an incomplete folder, a format-1 folder and a
    folder that is not a cache."""
    root = tmp_path / "data"
    rec = make_records(root, n=4)
    cache_root = tmp_path / "cache"
    old = prepare_images(rec, cache_root, SIZE, progress=False).folder
    time.sleep(0.01)
    Image.fromarray(np.full((44, 44), 33, np.uint8)).save(root / "img1.png")
    new = prepare_images(rec, cache_root, SIZE, progress=False).folder
    incomplete = cache_root / "toy-32-incomplete"
    shutil.copytree(new, incomplete)
    idx = index_of(incomplete)
    idx["complete"] = False
    (incomplete / "index.json").write_text(json.dumps(idx))
    v1 = cache_root / "toy-32-formatone"
    shutil.copytree(new, v1)
    idx["complete"], idx["version"] = True, 1
    (v1 / "index.json").write_text(json.dumps(idx))
    other = cache_root / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("not a cache")
    return cache_root, old, new, incomplete, v1, other


def test_cache_clean_keep_latest_removes_superseded_incomplete_and_old_format(tmp_path):
    cache_root, old, new, incomplete, v1, other = _versions(tmp_path)
    dry = clean_cache(cache_root, keep_latest=True, dry_run=True)
    assert {r.folder.name: r.remove for r in dry} == {old.name: True, new.name: False, incomplete.name: True,
                                                     v1.name: True}
    assert all(r.folder.exists() for r in dry) and all(r.nbytes >= 4 * SIZE * SIZE for r in dry)
    assert "superseded by " + new.name in next(r.reason for r in dry if r.folder == old)
    done = clean_cache(cache_root, keep_latest=True)
    assert sorted(p.name for p in cache_root.iterdir()) == sorted([new.name, other.name])
    assert [r.removed for r in done if r.folder == new] == [False]
    assert open_cache(new).verify() == []


def test_cache_clean_keeps_a_folder_being_prepared_and_cli_reports_sizes(tmp_path, capsys):
    from arkx.cli import main

    cache_root, old, new, incomplete, v1, other = _versions(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(incomplete), "30"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["cache", "clean", str(cache_root), "--all"]) == 0
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert sorted(p.name for p in cache_root.iterdir()) == sorted([incomplete.name, other.name])
    assert f"pid {holder.pid}" in out and "removed 3 folder(s)" in out and " KB" in out


def test_cache_clean_cli_keeps_the_newest_folder_unless_all_is_given(tmp_path, capsys):
    from arkx.cli import main

    cache_root, old, new, incomplete, v1, other = _versions(tmp_path)
    assert main(["cache", "clean", str(cache_root)]) == 0
    assert sorted(p.name for p in cache_root.iterdir()) == sorted([new.name, other.name])
    assert main(["cache", "clean", str(cache_root), "--all"]) == 0
    assert sorted(p.name for p in cache_root.iterdir()) == [other.name]


# ----------------------------------------------------------------------------------------------------
# issue 12 §7: one progress helper


def test_prepare_logs_progress_lines_without_a_terminal(tmp_path, caplog):
    rec = make_records(tmp_path / "data", n=20)
    with caplog.at_level(logging.INFO, logger="arkx.data"):
        prepare(rec, tmp_path / "c", SIZE, progress=True, chunk_size=2)
    lines = [r.getMessage() for r in caplog.records if "images (" in r.getMessage()]
    assert len(lines) == 10 and lines[-1].startswith(f"preparing toy ({SIZE}px): 20/20 images")
    caplog.clear()
    rec2 = make_records(tmp_path / "data2", n=6)
    with caplog.at_level(logging.INFO, logger="arkx.data"):
        prepare(rec2, tmp_path / "c2", SIZE, progress=False)
    assert not [r for r in caplog.records if "images (" in r.getMessage()]


def test_pretrain_refuses_damaged_cache_rows_in_one_line(roots, tmp_path, capsys):
    """A row that fails its checksum stops the run with one line naming it (read in a DataLoader worker),
    never trains; `prepare --repair` then makes the same run go through."""
    import yaml

    from arkx.cli import main

    from .conftest import tiny_config

    cfg = tiny_config(roots, tmp_path / "run", datasets=("shenzhen",), rounds=1, data=dict(workers=2))
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--quiet", "prepare", str(path)]) == 0
    (folder,) = (tmp_path / "cache").iterdir()
    n = len(open_cache(folder))
    size = open_cache(folder).size
    for row in range(n):  # every row: whichever the first batch draws is damaged
        flip_byte(folder, row, size=size, offset=7)
    capsys.readouterr()
    assert main(["--quiet", "pretrain", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fails its checksum" in err and str(folder) in err and "--repair" in err
    assert main(["--quiet", "prepare", str(path), "--repair"]) == 0
    assert f"repair: {n} image(s) decoded again" in capsys.readouterr().out
    assert main(["--quiet", "pretrain", str(path), "run.out=" + str(tmp_path / "run2")]) == 0
