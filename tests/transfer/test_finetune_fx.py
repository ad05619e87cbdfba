"""Fine-tuning from a Foundation X model: the pretrained branches (and the dataset's own head) are the starting
point, head-only mode trains the dataset head only, authors' Foundation X files work as ``released:`` inits,
and few-shot segmentation trains on exactly K seeded, recorded images."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml

import arkx
import arkx.transfer.finetune as ft
from arkx.cli import main
from arkx.errors import ArkxError
from arkx.tasks import Task
from tests.conftest import TINY_SWIN, tiny_model
from tests.reliability.conftest import tiny_config

SIZE = 32
SCR = ("Right Lung", "Left Lung", "Heart", "Right Clavicle", "Left Clavicle")
LUNGS = ("Left Lung", "Right Lung")
SMALL_DETECTOR = dict(det_encoder=dict(d_model=32, n_layers=1, n_heads=2, ffn_dim=32),
                      det_decoder=dict(num_queries=5, n_layers=1, n_heads=2, ffn_dim=32))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return arkx.synthesize(tmp_path_factory.mktemp("ft-fx"), seed=0, n=40, size=48,
                           datasets=["jsrt", "montgomery", "shenzhen"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ft-fx-cache")


@pytest.fixture(scope="module")
def fx_export(tmp_path_factory, roots):
    """A tiny X-CLS model as a run exports it: a classification head, JSRT segmentation (UperNet + head) and
    Montgomery localization (encoder + decoder); every weight moved off its initial value, so a fresh
    head or branch cannot equal it by chance."""
    from arkx.api import as_config, export_model

    folder = tmp_path_factory.mktemp("ft-fx-export")
    cfg = as_config(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), roots["shenzhen"]), folder / "run",
                                datasets=("shenzhen",), model=dict(backbone_kwargs=TINY_SWIN, projector_dim=24)))
    model = tiny_model([], seed=3)
    model.branch_options.update(SMALL_DETECTOR)
    for task in (Task("shenzhen", "multilabel", ("Tuberculosis",)), Task("jsrt", "segmentation", SCR),
                 Task("montgomery", "detection", LUNGS)):
        model.add_task(task)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return export_model(model, cfg, folder / "teacher.safetensors")


def run(init, dataset, roots, cache, out, **kw):
    settings = dict(image_size=SIZE, cache_size=36, batch_size=8, lr=1e-2, device="cpu", cache_dir=cache,
                    progress=False, patience=None, seed=0, epochs=1)
    settings.update(kw)
    return arkx.finetune(init, dataset, roots[dataset], out=out, **settings)


def spy_start(monkeypatch) -> dict:
    """The whole model's state when training starts (after the head is built and maybe reused)."""
    seen = {}
    real = ft.start_from_pretrained_head

    def spy(model, task, pretrained):
        model = real(model, task, pretrained)
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(ft, "start_from_pretrained_head", spy)
    return seen


def pretrained(export) -> dict:
    from safetensors.torch import load_file

    return load_file(str(export))


def _part(state: dict, prefix: str) -> dict:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def assert_same(state: dict, reference: dict, prefix: str) -> None:
    part = _part(reference, prefix)
    assert part, prefix
    for key, value in part.items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("mode", ["full", "head"])
def test_segmentation_starts_from_the_pretrained_upernet_and_dataset_head(fx_export, roots, cache, tmp_path,
                                                                          monkeypatch, mode):
    start = spy_start(monkeypatch)
    result = run(f"run:{fx_export}", "jsrt", roots, cache, tmp_path / mode, task="segmentation", mode=mode)
    before = pretrained(fx_export)
    for prefix in ("backbone.", "seg_decoder.", "seg_heads.jsrt."):
        assert_same(start, before, prefix)
    final = result.model.state_dict()
    if mode == "head":  # only the dataset's head trains: the backbone and the pretrained UperNet stay
        assert_same(final, before, "backbone.")
        assert_same(final, before, "seg_decoder.")
        assert not torch.equal(final["seg_heads.jsrt.classifier.weight"], before["seg_heads.jsrt.classifier.weight"])
        groups = result.model.parameter_groups()
        trainable = {g for g, names in groups.items() if names and all(
            dict(result.model.named_parameters())[n].requires_grad for n in names)}
        assert trainable == {"seg_heads/jsrt"}
    else:
        assert not torch.equal(final["seg_decoder.fuse.0.weight"], before["seg_decoder.fuse.0.weight"])
    # the other pretraining heads are left out; the other branch stays (unused by this task)
    assert not [k for k in final if k.startswith(("heads.", "det_heads."))] and _part(final, "det_encoder.")


def test_a_new_dataset_gets_a_new_head_on_the_pretrained_decoder(fx_export, roots, cache, tmp_path, monkeypatch):
    start = spy_start(monkeypatch)
    result = run(f"run:{fx_export}", "montgomery", roots, cache, tmp_path / "mont", task="segmentation",
                 mode="head")
    before = pretrained(fx_export)
    assert_same(start, before, "seg_decoder.")
    assert result.task == Task("montgomery", "segmentation", LUNGS)
    assert set(_part(start, "seg_heads.")) == {"seg_heads.montgomery.classifier.weight",
                                               "seg_heads.montgomery.classifier.bias"}
    assert_same(result.model.state_dict(), before, "seg_decoder.")  # head mode: the pretrained decoder is frozen


def test_reuse_head_false_starts_the_dataset_head_afresh(fx_export, roots, cache, tmp_path, monkeypatch):
    start = spy_start(monkeypatch)
    run(f"run:{fx_export}", "jsrt", roots, cache, tmp_path / "fresh", task="segmentation", reuse_head=False)
    before = pretrained(fx_export)
    assert_same(start, before, "seg_decoder.")
    assert not torch.equal(start["seg_heads.jsrt.classifier.weight"], before["seg_heads.jsrt.classifier.weight"])


def test_a_head_with_other_labels_is_not_reused(fx_export, roots, cache, tmp_path):
    from arkx.transfer.finetune import FinetuneConfig, load_initial_model, parse_init, reusable_head

    cfg = FinetuneConfig(init=f"run:{fx_export}", dataset_type="jsrt", root=roots["jsrt"], out=tmp_path)
    initial = load_initial_model(parse_init(cfg.init), cfg)
    assert reusable_head(initial, Task("jsrt", "segmentation", SCR)) is not None
    assert reusable_head(initial, Task("jsrt", "segmentation", SCR[:3])) is None
    assert reusable_head(initial, Task("montgomery", "detection", LUNGS)) is not None
    assert reusable_head(initial, Task("montgomery", "segmentation", LUNGS)) is None
    assert initial.model.tasks() == [] and initial.model.branches() == ["seg_decoder", "det_encoder"]


def test_localization_starts_from_the_pretrained_encoder_and_decoder_head_mode_trains_the_decoder(
        fx_export, roots, cache, tmp_path, monkeypatch):
    start = spy_start(monkeypatch)
    result = run(f"run:{fx_export}", "montgomery", roots, cache, tmp_path / "det", task="detection", mode="head")
    before = pretrained(fx_export)
    for prefix in ("backbone.", "det_encoder.", "det_heads.montgomery."):
        assert_same(start, before, prefix)
    final = result.model.state_dict()
    assert_same(final, before, "det_encoder.")  # frozen in head mode
    decoder = _part(before, "det_heads.montgomery.")
    assert any(not torch.equal(final[k], v) for k, v in decoder.items())  # the dataset's decoder trained
    assert "seg_decoder.fuse.0.weight" in final  # the other branch is kept (unused by this task)


# ---------------------------------------------------------------------------- an authors' Foundation X file
@pytest.fixture(scope="module")
def authors_fx(tmp_path_factory):
    from tests.models.test_foundation_x_checkpoint import TINY, authors_file

    path = tmp_path_factory.mktemp("authors-fx") / "fx.pth"
    geometry = dict(TINY, image=64, window=2)  # stage maps 16, 8, 4, 2: multiples of the window
    student, teacher = authors_file(path, geometry=geometry)
    return path, student, teacher


def test_an_authors_foundation_x_file_is_a_released_init(authors_fx, roots, cache, tmp_path, monkeypatch):
    """(teacher_model is the default, proven in tests/models/test_foundation_x_checkpoint.py; here the option
    reaches the loader)"""
    path, student, teacher = authors_fx
    which = "student"
    start = spy_start(monkeypatch)
    result = run(f"released:{path}", "jsrt", roots, cache, tmp_path / which, task="segmentation", image_size=64,
                 cache_size=72, which=which)
    source = teacher if which == "teacher" else student
    torch.testing.assert_close(start["backbone.layers.0.blocks.1.attn.qkv.weight"],
                               source["backbone.0.layers.0.blocks.1.attn.qkv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(start["backbone.norm.weight"], source["backbone.0.norm.weight"], rtol=0, atol=0)
    assert result.model.backbone.arkx_backbone["kwargs"]["always_partition"] is True
    assert yaml.safe_load((tmp_path / which / "finetune.yaml").read_text())["which"] == which
    reloaded = arkx.load_model(result.best_path)  # the export rebuilds the same Swin (always_partition kept)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.features(x), result.model.features(x))


# ---------------------------------------------------------------------------- few-shot
def _train_rows_seen(monkeypatch) -> list:
    """The rows of every train loader made (what the fine-tuning trains on)."""
    from arkx.data import loaders

    seen, real = [], loaders.make_loader

    def spy(dataset, split, *args, **kw):
        loader = real(dataset, split, *args, **kw)
        seen.append((split, sorted(int(r) for r in loader.dataset.indices)))
        return loader

    monkeypatch.setattr(loaders, "make_loader", spy)
    return seen


def _shots(out) -> list[dict]:
    return list(csv.DictReader(open(out / ft.SHOTS_FILE)))


def test_few_shot_trains_on_exactly_k_seeded_recorded_images_and_evaluates_on_whole_splits(
        fx_export, roots, cache, tmp_path, monkeypatch):
    seen = _train_rows_seen(monkeypatch)
    result = run(f"run:{fx_export}", "jsrt", roots, cache, tmp_path / "k5", task="segmentation", shots=5)
    loaders = dict(seen)
    recorded = _shots(tmp_path / "k5")
    assert len(recorded) == 5 and len(loaders["train"]) == 5
    assert sorted(int(r["row"]) for r in recorded) == loaders["train"]
    data = arkx.read_dataset("jsrt", roots["jsrt"])
    images = data.images.set_index("image_id")
    train_ids = set(data.images.loc[data.images["split"] == "train", "image_id"])
    assert {r["image_id"] for r in recorded} <= train_ids
    assert all(images.loc[r["image_id"], "path"] == r["path"] for r in recorded)
    assert len(loaders["val"]) == int((data.images["split"] == "val").sum())  # val and test: whole
    assert len(loaders["test"]) == int((data.images["split"] == "test").sum())
    assert yaml.safe_load((tmp_path / "k5" / "finetune.yaml").read_text())["shots"] == 5
    assert result.metric == "dice"

    seen.clear()
    run(f"run:{fx_export}", "jsrt", roots, cache, tmp_path / "k5-again", task="segmentation", shots=5)
    assert _shots(tmp_path / "k5-again") == recorded  # the same seed draws the same images
    run(f"run:{fx_export}", "jsrt", roots, cache, tmp_path / "k5-seed1", task="segmentation", shots=5, seed=1)
    assert _shots(tmp_path / "k5-seed1") != recorded


def test_few_shot_draws_only_annotated_images(roots):
    from arkx.transfer.finetune.few_shot import labelled_train_rows, shot_rows

    class Data:  # a prepared dataset whose masks cover only some training images
        def __init__(self, records):
            self.records = records

        def indices(self, split):
            import numpy as np

            return np.flatnonzero(self.records.images["split"].to_numpy() == split)

    records = arkx.read_dataset("jsrt", roots["jsrt"])
    train_ids = list(records.images.loc[records.images["split"] == "train", "image_id"])
    keep = set(train_ids[:3])
    partial = records.masks[records.masks["image_id"].isin(keep)]
    import dataclasses

    data = Data(dataclasses.replace(records, masks=partial, masks_exhaustive=False))
    task = Task("jsrt", "segmentation", SCR)
    rows = labelled_train_rows(data, task)
    assert set(records.images["image_id"].iloc[rows]) == keep
    assert set(records.images["image_id"].iloc[shot_rows(data, task, 2, seed=0)]) <= keep
    with pytest.raises(ArkxError, match="shots=4 but the train split has 3 image"):
        shot_rows(data, task, 4, seed=0)


def test_cli_few_shot(fx_export, roots, cache, tmp_path):
    out = tmp_path / "cli"
    assert main(["--quiet", "finetune", "--init", f"run:{fx_export}", "--type", "jsrt", "--root", str(roots["jsrt"]),
                 "--task", "segmentation", "--shots", "3", "--epochs", "1", "--image-size", str(SIZE),
                 "--cache-size", "36", "--cache-dir", str(cache), "--device", "cpu", "--out", str(out)]) == 0
    assert len(_shots(out)) == 3
    settings = yaml.safe_load((out / "finetune.yaml").read_text())
    assert settings["shots"] == 3 and settings["which"] == "teacher" and settings["reuse_head"] is True


def test_head_mode_keeps_the_frozen_pretrained_branch_in_eval_mode(fx_export):
    from arkx.api import load_model

    model = load_model(fx_export)
    model.remove_heads()
    model.add_task(Task("jsrt", "segmentation", SCR))
    ft.trainable_parameters(model, "head", ("backbone", "projector", "seg_decoder", "det_encoder"))
    ft.set_train_mode(model, "head")
    assert not model.seg_decoder.training and not model.backbone.training and not model.det_encoder.training
    assert model.seg_heads.training and model.seg_heads["jsrt"].training
    assert not any(p.requires_grad for p in model.seg_decoder.parameters())
    ft.set_train_mode(model, "full")
    assert model.seg_decoder.training
