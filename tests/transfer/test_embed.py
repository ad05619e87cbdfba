"""Embeddings of a dataset: the same numbers as the model gives the cached images by hand, rows aligned
with their records, unreadable images left out and reported, files that round-trip."""

from __future__ import annotations

import errno
import importlib
import logging
import shutil

import numpy as np
import pytest
import torch

import arkx
from arkx.api import as_config, build_from_config, export_model
from arkx.cli import main
from arkx.data.loaders import prepare_images
from arkx.data.transforms import eval_view
from arkx.errors import ArkxValueError
from arkx.tasks import Task
from arkx.transfer import EmbeddingTable, embed, load_embeddings, save_embeddings
from tests.conftest import tiny_model
from tests.reliability.conftest import tiny_config

IMAGE, CACHE = 32, 36


@pytest.fixture(scope="module")
def shenzhen_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer-synth")
    return arkx.synthesize(out, seed=2, n=12, size=40, datasets=["shenzhen"])["shenzhen"]


@pytest.fixture(scope="module")
def model():
    return tiny_model([Task("shenzhen", "multilabel", ("Tuberculosis",))], seed=3).eval()


def by_hand(model, root, cache_dir, forward: str) -> dict[str, np.ndarray]:
    """``{image_id: vector}``: each cached image alone through eval_view and the model."""
    records = arkx.read_dataset("shenzhen", root)
    images = prepare_images(records, cache_dir, CACHE, progress=False)
    out = {}
    with torch.no_grad():
        for row, image_id in enumerate(records.images["image_id"]):
            if images.ok[row]:
                x = eval_view(torch.from_numpy(np.array(images[row]))[None, None], IMAGE)
                out[image_id] = getattr(model, forward)(x)[0].numpy()
    return out


@pytest.mark.parametrize("features,forward", [("projector", "embed"), ("backbone", "features")])
def test_embeddings_equal_the_model_on_each_cached_image(model, shenzhen_root, tmp_path, features, forward):
    table = embed(model, "shenzhen", shenzhen_root, image_size=IMAGE, cache_size=CACHE, cache_dir=tmp_path / "c",
                  features=features, batch_size=5, device="cpu", progress=False)
    expected = by_hand(model, shenzhen_root, tmp_path / "c", forward)
    assert len(table) == len(expected) == 12
    assert table.embeddings.dtype == np.float32
    assert table.embeddings.shape[1] == (model.embed_dim if features == "projector" else model.backbone.num_features)
    for image_id, vector in zip(table.ids, table.embeddings):
        np.testing.assert_allclose(vector, expected[image_id], rtol=1e-4, atol=1e-5)


def test_rows_keep_their_own_ids_labels_and_metadata(model, shenzhen_root, tmp_path):
    table = embed(model, "shenzhen", shenzhen_root, image_size=IMAGE, cache_size=CACHE, cache_dir=tmp_path / "c",
                  batch_size=4, device="cpu", progress=False)
    records = arkx.read_dataset("shenzhen", shenzhen_root)
    frame = records.images
    assert table.label_names == ("Tuberculosis",)
    for k, image_id in enumerate(table.ids):
        row = int(np.flatnonzero(frame["image_id"] == image_id)[0])
        assert table.split[k] == frame["split"].iloc[row]
        assert table.patient_id[k] == frame["patient_id"].iloc[row]
        assert table.sex[k] == frame["sex"].iloc[row]
        assert table.age[k] == frame["age"].iloc[row]
        np.testing.assert_array_equal(table.labels[k], records.labels[row])
        # Shenzhen names its images ..._1 (tuberculosis) or ..._0: a known value per row
        assert table.labels[k, 0] == float(image_id.endswith("_1"))
    assert {0.0, 1.0} <= set(table.labels[:, 0])


def test_split_selection_keeps_only_those_rows(model, shenzhen_root, tmp_path):
    table = embed(model, "shenzhen", shenzhen_root, image_size=IMAGE, cache_size=CACHE, cache_dir=tmp_path / "c",
                  splits=["train"], device="cpu", progress=False)
    records = arkx.read_dataset("shenzhen", shenzhen_root)
    assert set(table.split) == {"train"}
    assert len(table) == int((records.images["split"] == "train").sum())


def test_unreadable_images_are_left_out_and_reported(model, shenzhen_root, tmp_path, caplog):
    root = tmp_path / "shenzhen"
    shutil.copytree(shenzhen_root, root)
    records = arkx.read_dataset("shenzhen", root)
    broken = records.images["image_id"].iloc[3]
    (root / records.images["path"].iloc[3]).write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="arkx.transfer"):
        table = embed(model, "shenzhen", root, image_size=IMAGE, cache_size=CACHE, cache_dir=tmp_path / "c",
                      device="cpu", progress=False, fail_fraction=0.5)
    assert len(table) == 11 and broken not in set(table.ids)
    assert [e["image_id"] for e in table.meta["excluded"]] == [broken]
    assert any(broken in r.getMessage() for r in caplog.records)
    # the rows around the hole still carry their own labels
    for k, image_id in enumerate(table.ids):
        assert table.labels[k, 0] == float(image_id.endswith("_1"))


def test_an_exported_model_is_embedded_at_its_recorded_size_and_the_file_round_trips(shenzhen_root, tmp_path):
    cfg = as_config(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), shenzhen_root), tmp_path / "run",
                                datasets=("shenzhen",)))
    model = build_from_config(cfg)
    export = export_model(model, cfg, tmp_path / "teacher.safetensors")  # not in a run folder: metadata only
    # a config.yaml of another run (another input size) beside the export must not be taken for its own
    other = as_config(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), shenzhen_root), tmp_path / "other",
                                  datasets=("shenzhen",), data=dict(image_size=64, cache_size=72)))
    (tmp_path / "config.yaml").write_text(other.to_yaml())
    out = tmp_path / "emb" / "shenzhen.npz"
    assert main(["--quiet", "embed", str(export), "--type", "shenzhen", "--root", str(shenzhen_root),
                 "--out", str(out), "--device", "cpu", "--batch-size", "3"]) == 0
    table = load_embeddings(out)
    assert table.meta["image_size"] == IMAGE and table.meta["cache_size"] == round(IMAGE * 8 / 7)
    assert table.meta["model"] == str(export.resolve())
    assert (table.meta["which"], table.meta["features"]) == ("teacher", "projector")
    assert table.meta["arkx_version"] == arkx.__version__ and table.label_names == ("Tuberculosis",)
    assert (tmp_path / "emb" / "cache").is_dir()  # the cache went beside the output
    assert sorted(p.name for p in out.parent.iterdir()) == ["cache", "shenzhen.npz"]  # no temporary left
    again = embed(export, "shenzhen", shenzhen_root, cache_dir=tmp_path / "emb" / "cache", device="cpu",
                  progress=False)
    np.testing.assert_allclose(table.embeddings, again.embeddings, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(table.ids, again.ids)
    np.testing.assert_array_equal(table.labels, again.labels)


def test_bad_arguments_are_refused_in_one_line(model, shenzhen_root, tmp_path):
    with pytest.raises(ArkxValueError, match="image_size"):
        embed(model, "shenzhen", shenzhen_root, cache_dir=tmp_path)
    with pytest.raises(ArkxValueError, match="features"):
        embed(model, "shenzhen", shenzhen_root, image_size=IMAGE, features="pooled", cache_dir=tmp_path)
    with pytest.raises(ArkxValueError, match=".npz"):
        embed(model, "shenzhen", shenzhen_root, image_size=IMAGE, cache_size=CACHE, cache_dir=tmp_path / "c",
              out=tmp_path / "x.parquet", device="cpu", progress=False)
    assert not (tmp_path / "c").exists()  # refused before any image was read


def test_a_run_folder_is_embedded_at_its_configured_sizes_from_its_own_cache(shenzhen_root, tmp_path):
    roots = dict.fromkeys(("chexpert", "shenzhen", "rsna"), shenzhen_root)
    run = tmp_path / "run"
    arkx.pretrain(tiny_config(roots, run, datasets=("shenzhen",), rounds=1), progress=False)
    caches_before = sorted((tmp_path / "cache").iterdir())
    for target, which in ((run, "teacher"), (run / "student.safetensors", "student"),
                          (run / "checkpoints" / "last.pt", "student")):
        table = embed(target, "shenzhen", shenzhen_root, which=which, device="cpu", progress=False)
        assert (table.meta["image_size"], table.meta["cache_size"]) == (32, 36)  # tiny_config's, not 32 * 8/7
        assert sorted((tmp_path / "cache").iterdir()) == caches_before  # the run's cache, reused
        expected = arkx.load_model(target, which)
        x = eval_view(torch.from_numpy(np.array(prepare_images(
            arkx.read_dataset("shenzhen", shenzhen_root), tmp_path / "cache", 36, progress=False)[0]))[None, None], 32)
        with torch.no_grad():
            np.testing.assert_allclose(table.embeddings[0], expected.embed(x)[0].numpy(), rtol=1e-4, atol=1e-5)


def small_table(offset: float) -> EmbeddingTable:
    ids = np.array(["a", "b", "c"])
    return EmbeddingTable(ids=ids, split=np.array(["train", "val", "test"]), patient_id=ids, sex=np.array(["F", "", "M"]),
                          age=np.array([30.0, np.nan, 50.0]), label_names=("x",),
                          labels=np.array([[1.0], [np.nan], [-1.0]], dtype=np.float32),
                          embeddings=np.full((3, 4), offset, dtype=np.float32), meta=dict(task_kind="multilabel"))


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = save_embeddings(small_table(1.0), tmp_path / "e.npz")

    def disk_fills_up(handle, **arrays):
        handle.write(b"PK\x03\x04 half a file")
        raise OSError(errno.EIO, "input/output error")

    monkeypatch.setattr(importlib.import_module("arkx.transfer.embed").np, "savez", disk_fills_up)
    with pytest.raises(OSError):
        save_embeddings(small_table(2.0), path)
    monkeypatch.undo()
    again = load_embeddings(path)
    np.testing.assert_array_equal(again.embeddings, small_table(1.0).embeddings)
    np.testing.assert_array_equal(again.labels, small_table(1.0).labels)  # NaN and -1 kept as written
    assert list(again.sex) == ["F", "", "M"] and np.isnan(again.age[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no GPU is there")
def test_cuda_without_a_gpu_is_one_line(model, shenzhen_root, tmp_path):
    with pytest.raises(ArkxValueError, match="cuda"):
        embed(model, "shenzhen", shenzhen_root, image_size=IMAGE, cache_size=CACHE, cache_dir=tmp_path / "c",
              device="cuda", progress=False)


@pytest.mark.gpu
def test_gpu_embeddings_match_the_cpu_ones(model, shenzhen_root, tmp_path):
    common = dict(image_size=IMAGE, cache_size=CACHE, cache_dir=tmp_path / "c", progress=False)
    on_cpu = embed(model, "shenzhen", shenzhen_root, device="cpu", **common)
    on_gpu = embed(model, "shenzhen", shenzhen_root, device="cuda", **common)
    np.testing.assert_array_equal(on_cpu.ids, on_gpu.ids)
    np.testing.assert_allclose(on_cpu.embeddings, on_gpu.embeddings, rtol=1e-3, atol=1e-4)
