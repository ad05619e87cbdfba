"""Corrupt and unusable image files in a dataset: skipped with a warning naming the file, counted in
the run summary (RunSummary, summary.json, CLI), never seen by a batch; above data.fail_fraction the
run stops with TooManyBadImages naming counts and files, and the last checkpoint is untouched."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import arkx
from arkx.cli import main
from arkx.data.cache import TooManyBadImages
from arkx.data.loaders import CachedImages
from arkx.training.state import load_checkpoint

from .conftest import tiny_config


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern))


def truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "truncated"


def zero_bytes(path: Path) -> str:
    path.write_bytes(b"")
    return "empty"


def float_tiff_with_nan(path: Path) -> str:
    arr = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    arr[3:9, 3:9] = np.nan
    Image.fromarray(arr, mode="F").save(path, format="TIFF")  # a 32-bit float TIFF named .png
    return "floating-point"


def int32_tiff(path: Path) -> str:
    Image.fromarray(np.full((40, 40), 300_000, dtype=np.int32), mode="I").save(path, format="TIFF")
    return "32-bit integer"


def garbage(path: Path) -> str:
    path.write_bytes(b"this is not an image\n" * 20)
    return "not a recognised image format"


def dicom_without_pixels(path: Path) -> str:
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    return "no pixel data"


def float_dicom_with_nan(path: Path) -> str:
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    arr = np.full((int(ds.Rows), int(ds.Columns)), np.nan, dtype=np.float32)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    for tag in ("PixelRepresentation", "WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        if tag in ds:
            delattr(ds, tag)
    ds.FloatPixelData = arr.tobytes()
    ds.save_as(path)
    return "float"


#: (dataset, file pattern, damage) -- one distinct fault per entry
DAMAGE = [
    ("chexpert", "*.jpg", truncate),            # truncated JPEG
    ("chexpert", "*.jpg", garbage),             # text renamed .jpg
    ("shenzhen", "*.png", truncate),            # truncated PNG
    ("shenzhen", "*.png", zero_bytes),          # zero-byte file
    ("shenzhen", "*.png", float_tiff_with_nan),  # 32-bit float TIFF with NaN pixels, renamed .png
    ("shenzhen", "*.png", int32_tiff),          # 32-bit integer pixels out of any 8/16-bit range
    ("rsna", "*.dcm", dicom_without_pixels),    # DICOM without PixelData
    ("rsna", "*.dcm", float_dicom_with_nan),    # float DICOM (NaN pixels)
]


def damage(roots: dict[str, Path], entries=DAMAGE, offset: int = 3) -> dict[str, list[tuple[Path, str]]]:
    """Apply each damage to a different file; returns dataset -> [(file, expected reason fragment)]."""
    done: dict[str, list[tuple[Path, str]]] = {}
    used: dict[str, int] = {}
    for dataset, pattern, fn in entries:
        k = used.get(dataset, 0)
        used[dataset] = k + 1
        path = _files(roots[dataset], pattern)[offset + 7 * k]
        done.setdefault(dataset, []).append((path, fn(path)))
    return done


def test_damaged_files_are_skipped_named_and_counted(roots, tmp_path, caplog, capsys, monkeypatch):
    bad = damage(roots)
    fetched: list[tuple[str, int]] = []  # (dataset, cache row) of every image a batch received
    getitem = CachedImages.__getitem__

    def spy(self, i):
        out = getitem(self, i)
        fetched.append((self.images.dataset, int(out["row"])))
        return out

    monkeypatch.setattr(CachedImages, "__getitem__", spy)
    run = tmp_path / "run"
    cfg = tiny_config(roots, run, datasets=("chexpert", "shenzhen", "rsna"), rounds=1,
                      data=dict(fail_fraction=0.1), eval=dict(every="end", test_at_end=True, models=["teacher"]))
    with caplog.at_level(logging.WARNING, logger="arkx"):
        summary = arkx.pretrain(cfg, progress=False)
    assert summary.finished
    expected = {name: len(bad.get(name, [])) for name in ("chexpert", "shenzhen", "rsna")}
    assert summary.skipped_images == expected
    assert json.loads((run / "summary.json").read_text())["skipped_images"] == expected
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for dataset, items in bad.items():
        for path, reason in items:
            hits = [m for m in warnings if str(path) in m]
            assert hits, f"no warning names {path}"
            assert any(reason in m for m in hits), (reason, hits)
    # the skipped rows are marked in the cache and never reached a batch (train, val or test)
    from arkx.data.cache import open_cache

    assert fetched, "no batch was read"
    for folder in (tmp_path / "cache").iterdir():
        prepared = open_cache(folder)
        bad_rows = set(np.flatnonzero(~prepared.ok).tolist())
        assert len(bad_rows) == expected[prepared.dataset]
        assert not bad_rows & {row for name, row in fetched if name == prepared.dataset}
        assert {prepared.image_ids[r] for r in bad_rows} == {
            i for i, p, _ in prepared.failures}
    # the CLI reports the counts too (same data: the cache is reused)
    cfg["run"]["out"] = str(tmp_path / "run-cli")
    cfg_path = tmp_path / "cfg.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["--quiet", "pretrain", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    for name, count in expected.items():
        assert f"{name}: {count} unreadable image(s) skipped" in out


def test_too_many_bad_images_stops_with_counts_and_files_and_keeps_the_checkpoint(roots, tmp_path, capsys):
    import yaml

    run = tmp_path / "run"
    cfg = tiny_config(roots, run, datasets=("shenzhen",), rounds=3)
    arkx.pretrain(cfg, progress=False, stop_after_steps=1)
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    pngs = _files(roots["shenzhen"], "*.png")
    damaged = [pngs[i] for i in range(0, 60, 6)]  # 10 of 60 > fail_fraction 0.05
    for path in damaged:
        truncate(path)
    with pytest.raises(TooManyBadImages) as err:  # (the files changed since the checkpoint: accept that)
        arkx.resume(run, progress=False, accept_data_change=True)
    message = str(err.value)
    import re

    count = int(re.search(r"shenzhen: (\d+) of 60 images \(", message).group(1))  # stops as soon as certain
    assert 3 < count <= 10 and "fail_fraction=0.05" in message and "data.fail_fraction" in message
    assert str(damaged[0]) in message and "truncated" in message
    assert len(err.value.failures) == count and err.value.n == 60
    assert last.read_bytes() == before and load_checkpoint(last)["step_done"] == 1
    # the CLI: one clear line, exit status 2, no traceback; a fresh run stops before any checkpoint
    cfg["run"]["out"] = str(tmp_path / "fresh")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["--quiet", "pretrain", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert re.search(r"arkx pretrain: error: shenzhen: \d+ of 60 images", stderr) and "Traceback" not in stderr
    assert not (tmp_path / "fresh" / "checkpoints").exists()


def test_bad_files_surface_in_the_main_process_never_in_a_loader_worker(roots, tmp_path, caplog, monkeypatch):
    """Decoding happens once, in prepare (worker processes return a reason, the main process logs it);
    DataLoader workers only copy cache rows: originals deleted after prepare do not matter, and a
    decoder crashing with an unexpected exception is one more skipped file, not a traceback."""
    import arkx.api as api
    import arkx.data.cache as cache_mod

    pngs = _files(roots["shenzhen"], "*.png")
    truncate(pngs[5])
    crashing = pngs[11]
    real = cache_mod.load_resized

    def flaky_decoder(path, size):  # inherited by the forked decoding workers
        if str(path) == str(crashing):
            raise ZeroDivisionError("decoder bug")
        return real(path, size)

    monkeypatch.setattr(cache_mod, "load_resized", flaky_decoder)
    prepare = api.prepare_dataset

    def prepare_then_delete_originals(*args, **kwargs):
        ds = prepare(*args, **kwargs)
        shutil.rmtree(ds.records.root / "CXR_png")  # training must not need them
        return ds

    monkeypatch.setattr(api, "prepare_dataset", prepare_then_delete_originals)
    cfg = tiny_config(roots, tmp_path / "run", datasets=("shenzhen",), rounds=1,
                      data=dict(workers=2, prepare_workers=2),
                      eval=dict(every="end", test_at_end=True, models=["teacher"]))
    with caplog.at_level(logging.WARNING, logger="arkx"):
        summary = arkx.pretrain(cfg, progress=False)
    assert summary.finished and summary.skipped_images == {"shenzhen": 2}
    named = {str(pngs[5]): "truncated", str(crashing): "unexpected error while decoding: ZeroDivisionError"}
    for path, reason in named.items():
        records = [r for r in caplog.records if path in r.getMessage()]
        assert records and any(reason in r.getMessage() for r in records), path
        assert all(r.process == os.getpid() for r in records)
