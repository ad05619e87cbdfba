"""Classification fine-tuning: what each init starts from, what each mode trains, early stopping on val
with test scored once with the best weights, files written, learning on a learnable task, init errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import arkx
from arkx.api import as_config, export_model
from arkx.cli import main
from arkx.errors import ArkxError
from arkx.evaluation.metrics import AucResult
from arkx.transfer import finetune as ft
from arkx.tasks import Task
from tests.conftest import TINY_SWIN, tiny_model
from tests.reliability.conftest import tiny_config

N_TRAIN, N_VAL, N_TEST = 48, 16, 16
TINY_ARCH = dict(backbone="swin_tiny_patch4_window7_224", backbone_kwargs=TINY_SWIN, projector_dim=24)


def _write_learnable(folder, seed: int = 0):
    """A csv-adapter dataset whose one label is a bright square in the upper left quarter (learnable)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    rows = []
    splits = ["train"] * N_TRAIN + ["val"] * N_VAL + ["test"] * N_TEST
    for i, split in enumerate(splits):
        label = i % 2
        img = rng.integers(40, 90, (36, 36)).astype(np.uint8)
        if label:
            img[8:18, 8:18] = 220
        Image.fromarray(img).save(folder / "images" / f"{i:03d}.png")
        rows.append(dict(path=f"images/{i:03d}.png", split=split, Finding=label))
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "split", "Finding"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return _write_learnable(tmp_path_factory.mktemp("ft-target") / "learnable")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ft-cache")


@pytest.fixture(scope="module")
def export(tmp_path_factory, target):
    """A tiny arkx model (with another dataset's head) exported as a run exports its teacher."""
    folder = tmp_path_factory.mktemp("ft-export")
    cfg = as_config(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), target), folder / "run",
                                datasets=("shenzhen",), model=dict(backbone_kwargs=TINY_SWIN, projector_dim=24)))
    model = tiny_model([Task("shenzhen", "multilabel", ("Tuberculosis",))], seed=7)
    return export_model(model, cfg, folder / "teacher.safetensors")


def run_ft(init, target, cache, out, **kw):
    settings = dict(TINY_ARCH, image_size=32, cache_size=36, batch_size=8, epochs=1, lr=2e-3, device="cpu",
                    cache_dir=cache, options=dict(csv="labels.csv", split_column="split"), progress=False)
    settings.update(kw)
    return arkx.finetune(init, "csv", target, out=out, **settings)


def _settings(**kw):
    return ft.FinetuneConfig(init="scratch", dataset_type="csv", root=".", out=".", **{**TINY_ARCH, **kw})


def _spy_initial_state(monkeypatch) -> dict:
    """Record the whole model's state the moment its new head is added (before any training)."""
    seen = {}
    real = ft.with_new_head

    def spy(model, head, features):
        model = real(model, head, features)
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(ft, "with_new_head", spy)
    return seen


# ---------------------------------------------------------------------------- inits
def test_run_init_starts_from_the_run_teacher_and_scratch_does_not(export):
    from safetensors.torch import load_file

    teacher = load_file(str(export))
    from_run = ft.load_initial_model(ft.parse_init(f"run:{export}"), _settings()).model.state_dict()
    scratch = ft.load_initial_model(ft.parse_init("scratch"), _settings()).model.state_dict()
    shared = [k for k in teacher if k.startswith(("backbone.", "projector."))]
    assert shared and set(shared) == {k for k in from_run}  # the old heads are gone, nothing else
    for key in shared:
        assert torch.equal(from_run[key], teacher[key]), key
    matrices = [k for k in shared if k.endswith(".weight") and teacher[k].ndim > 1]  # drawn at random on init
    assert matrices and not any(torch.equal(scratch[k], teacher[k]) for k in matrices)


def test_a_pretrained_run_folder_gives_its_teacher_not_its_student(tmp_path, target):
    roots = arkx.synthesize(tmp_path / "synth", seed=1, n=20, size=40, datasets=["shenzhen"])
    run = tmp_path / "run"
    arkx.pretrain(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), roots["shenzhen"]), run,
                              datasets=("shenzhen",), rounds=1), progress=False)
    initial = ft.load_initial_model(ft.parse_init(f"run:{run}"), _settings())
    assert initial.image_size == 32 and initial.cache_size == 36  # the run's sizes, from its config
    state = initial.model.state_dict()
    teacher, student = arkx.load_model(run, "teacher").state_dict(), arkx.load_model(run, "student").state_dict()
    assert all(torch.equal(state[k], teacher[k]) for k in state)
    assert not all(torch.equal(state[k], student[k]) for k in state)


def test_timm_init_loads_the_backbone_file_with_a_fresh_projector(tmp_path):
    from safetensors.torch import save_file

    from arkx.models.backbones import create_backbone

    torch.manual_seed(11)
    source = create_backbone("swin_tiny_patch4_window7_224", **TINY_SWIN)
    weights = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(weights, str(tmp_path / "imagenet.safetensors"))
    initial = ft.load_initial_model(ft.parse_init(f"timm:{tmp_path / 'imagenet.safetensors'}"), _settings())
    own = initial.model.backbone.state_dict()
    learned = [k for k in weights if not k.endswith(("attn_mask", "relative_position_index"))]
    assert all(torch.equal(own[k], weights[k]) for k in learned)
    assert initial.model.embed_dim == 24 and initial.image_size is None  # the input size comes from the backbone


def test_released_init_loads_the_authors_backbone_and_projector():
    from tests.models.test_released import FIXTURES, tiny_variant

    path = FIXTURES / "ark6_tiny_timm054.pth.tar"
    variant = tiny_variant("ark6_tiny_timm054")
    initial = ft.load_initial_model(ft.parse_init(f"released:{path}"), _settings(), variant)
    expected = arkx.load_released(path, variant).state_dict()
    state = initial.model.state_dict()
    assert state and not any(k.startswith("heads.") for k in state)
    assert all(torch.equal(v, expected[k]) for k, v in state.items())
    assert initial.image_size == variant.image_size


@pytest.mark.parametrize("text", ["", "foo", "run:", "bogus:x", "scratch:x", "run:/no/such/run", "timm"])
def test_bad_init_strings_are_one_line_errors(text, target, tmp_path, capsys):
    with pytest.raises(ArkxError) as err:
        run_ft(text, target, tmp_path / "c", tmp_path / "out")
    assert "\n" not in str(err.value) and "init" in str(err.value)
    assert not (tmp_path / "c").exists()  # refused before any work
    assert main(["finetune", "--init", text, "--type", "csv", "--root", str(target), "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "init" in lines[0]


# ---------------------------------------------------------------------------- modes
def test_head_mode_trains_the_new_head_only(export, target, cache, tmp_path, monkeypatch):
    initial = _spy_initial_state(monkeypatch)
    result = run_ft(f"run:{export}", target, cache, tmp_path, mode="head", epochs=2, patience=None)
    final = result.model.state_dict()
    frozen = [k for k in final if not k.startswith("heads.")]
    assert frozen and all(torch.equal(final[k], initial[k]) for k in frozen)
    assert not torch.equal(final["heads.csv.weight"], initial["heads.csv.weight"])


def test_full_mode_trains_the_backbone_too(export, target, cache, tmp_path, monkeypatch):
    initial = _spy_initial_state(monkeypatch)
    result = run_ft(f"run:{export}", target, cache, tmp_path, mode="full")
    final = result.model.state_dict()
    changed = [k for k in final if k.startswith("backbone.") and not torch.equal(final[k], initial[k])]
    assert len(changed) > 10


def test_head_mode_keeps_frozen_parts_in_eval_mode():
    model = ft.load_initial_model(ft.parse_init("scratch"), _settings()).model
    ft.trainable_parameters(model, "head")
    ft.set_train_mode(model, "head")
    assert not model.backbone.training and not model.projector.training and model.heads.training
    ft.set_train_mode(model, "full")
    assert model.backbone.training


# ---------------------------------------------------------------------------- selection
def test_early_stopping_keeps_the_best_val_epoch_and_scores_test_once_with_it(export, target, cache, tmp_path,
                                                                             monkeypatch):
    forced_val = iter([0.6, 0.9, 0.7, 0.8, 0.95, 0.99])  # patience 2: stops after epoch 4, best is epoch 2
    calls = []

    def fake_evaluate(model, loader, data, image_size, device, task=None):
        split = "test" if np.array_equal(loader.dataset.indices, data.indices("test")) else "val"
        calls.append((split, model.heads["csv"].weight.detach().clone()))
        value = 0.123 if split == "test" else next(forced_val)
        return AucResult(("Finding",), np.array([value]), np.array([1]), np.array([1]))

    monkeypatch.setattr(ft, "evaluate", fake_evaluate)
    result = run_ft(f"run:{export}", target, cache, tmp_path, mode="head", epochs=6, patience=2)
    assert [s for s, _ in calls] == ["val"] * 4 + ["test"]
    assert (result.best_epoch, result.epochs_run, result.best_val_auc) == (2, 4, 0.9)
    assert result.val_history == [0.6, 0.9, 0.7, 0.8]
    assert result.test_auc == 0.123
    best_weights, tested_weights = calls[1][1], calls[-1][1]
    assert torch.equal(tested_weights, best_weights)
    assert not torch.equal(tested_weights, calls[3][1])  # the last epoch's weights differ: the best were restored
    assert torch.equal(result.model.heads["csv"].weight, best_weights)


def test_is_better_prefers_a_defined_auc():
    assert ft.is_better(0.5, None) and ft.is_better(0.5, float("nan")) and ft.is_better(0.6, 0.5)
    assert not ft.is_better(float("nan"), 0.5) and not ft.is_better(0.5, 0.5)
    assert not ft.is_better(float("nan"), float("nan"))  # an undefined epoch never replaces the first


# ---------------------------------------------------------------------------- files and learning
def test_files_record_every_epoch_the_settings_and_the_best_weights(export, target, cache, tmp_path):
    result = run_ft(f"run:{export}", target, cache, tmp_path, mode="head", epochs=2, patience=None)
    with open(result.metrics_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [float(r["val_mean_auc"]) for r in rows] == pytest.approx(result.val_history, abs=1e-6)
    settings = yaml.safe_load(result.settings_path.read_text())
    assert (settings["image_size"], settings["uncertain"], settings["init_kind"]) == (32, "ones", "run")
    reloaded = arkx.load_model(result.best_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x, "csv")[1], result.model(x, "csv")[1])


def test_fine_tuning_learns_a_learnable_task(target, cache, tmp_path):
    result = run_ft("scratch", target, cache, tmp_path, mode="full", epochs=2, lr=3e-3, seed=0)
    assert result.test_auc > 0.8, result


def test_cli_fine_tunes_from_an_export(export, target, cache, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--quiet", "finetune", "--init", f"run:{export}", "--type", "csv", "--root", str(target),
                 "--option", "csv=labels.csv", "--option", "split_column=split", "--out", str(out), "--mode", "head",
                 "--epochs", "1", "--batch-size", "8", "--cache-dir", str(cache), "--cache-size", "36",
                 "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test mean AUC" in printed and (out / "best.safetensors").is_file()
