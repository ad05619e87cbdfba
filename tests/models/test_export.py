"""A backbone export that plain timm loads (equal features), its config, and ``arkx info``."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from arkx.errors import ArkxError, ArkxValueError
from arkx.models.export import export_timm, format_info, model_info
from arkx.models.released import load_released

from ..conftest import TINY_SWIN, tiny_model
from .test_released import FIXTURES, tiny_variant


def _plain_timm(path, config: dict):
    """What a user without arkx runs: timm alone, from the config written beside the file."""
    return timm.create_model(config["architecture"], num_classes=0, pretrained=False, checkpoint_path=str(path),
                             **config["model_args"]).eval()


def test_plain_timm_loads_the_export_strictly_with_equal_features(tmp_path, tiny_heads):
    model = tiny_model(tiny_heads).eval()
    path = export_timm(model, tmp_path / "backbone.safetensors")
    config = json.loads(path.with_suffix(".json").read_text())
    assert config["architecture"] == "swin_tiny_patch4_window7_224" and config["model_args"] == json.loads(
        json.dumps(TINY_SWIN))
    other = _plain_timm(path, config)  # checkpoint_path loads with strict=True: every key fits
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model.features(x))


def test_timm_swin_checkpoint_filter_leaves_the_export_unchanged(tmp_path, tiny_heads):
    """timm's Swin filter remaps files in the old layout; an export must not look like one (else a
    ``pretrained_cfg_overlay=dict(file=...)`` load would shift its patch-merging layers)."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    model = tiny_model(tiny_heads)
    path = export_timm(model, tmp_path / "backbone.safetensors")
    state = load_file(str(path))
    filtered = checkpoint_filter_fn(dict(state), model.backbone)
    assert set(filtered) == set(state) and all(torch.equal(filtered[k], state[k]) for k in state)


def test_the_authors_checkpoint_exports_for_plain_timm(tmp_path):
    """timm 0.5.4 file -> arkx -> export -> current timm: the authors' pooled features, unchanged."""
    model = load_released(FIXTURES / "ark6_tiny_timm054.pth.tar", tiny_variant("ark6_tiny_timm054"))
    path = export_timm(model, tmp_path / "ark6.safetensors")
    config = json.loads(path.with_suffix(".json").read_text())
    ref = torch.load(FIXTURES / "ark6_tiny_timm054.ref.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(_plain_timm(path, config)(ref["input"]), ref["features"], rtol=1e-5, atol=1e-5)
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64] and config["source"] == "authors-ark"
    assert config["datasets"] == ["mimic_cxr", "chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen"]


def test_export_config_in_metadata_and_sidecar(tmp_path, tiny_heads):
    from arkx import __version__

    path = export_timm(tiny_model(tiny_heads), tmp_path / "b.safetensors")
    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["arkx"])
    assert meta == json.loads(path.with_suffix(".json").read_text())
    assert meta["pretrained_cfg"] == dict(input_size=[3, 32, 32], mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                                          num_classes=0)
    assert meta["heads"] == [dict(name="alpha", kind="multilabel", label_names=["a1", "a2", "a3"]),
                             dict(name="beta", kind="multiclass", label_names=["b1", "b2"])]
    assert meta["datasets"] == ["alpha", "beta"] and meta["arkx_version"] == __version__
    assert meta["num_features"] == 128


def test_export_refuses_a_backbone_arkx_did_not_build(tmp_path):
    with pytest.raises(ArkxValueError, match="not built by arkx"):
        export_timm(timm.create_model("test_convnext", num_classes=0), tmp_path / "b.safetensors")
    with pytest.raises(ArkxValueError, match="is a .safetensors file"):
        export_timm(timm.create_model("test_convnext", num_classes=0), tmp_path / "b.pt")


# ------------------------------------------------------------------------------------ arkx info
def test_info_on_a_timm_export(tmp_path, tiny_heads):
    path = export_timm(tiny_model(tiny_heads), tmp_path / "b.safetensors")
    text = format_info(model_info(path))
    assert "format:        arkx-timm-backbone/1 (backbone for plain timm)" in text
    assert "backbone:      swin_tiny_patch4_window7_224" in text and "input size:    32" in text
    assert "mean:          0.485, 0.456, 0.406" in text and "datasets:      alpha, beta" in text
    assert "  alpha (multilabel, 3): a1, a2, a3" in text


def _tiny_run_config(tmp_path):
    """The config of a tiny run (tiny Swin, 32 px) over an empty chexpert folder."""
    from arkx.config import config_from_dict

    (tmp_path / "data").mkdir()
    return config_from_dict(dict(datasets=[dict(type="chexpert", root=str(tmp_path / "data"))],
                                 model=dict(backbone="swin_tiny_patch4_window7_224", backbone_kwargs=TINY_SWIN,
                                            projector_dim=24),
                                 data=dict(image_size=32, cache_size=32), training=dict(rounds=4, warmup_rounds=1)))


def test_info_on_an_arkx_export_and_its_run_folder(tmp_path, tiny_heads):
    from arkx.api import export_model

    cfg = _tiny_run_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    export_model(tiny_model(tiny_heads), cfg, run / "teacher.safetensors")
    info = model_info(run)
    assert info["format"].startswith("arkx-model/1") and info["run_folder"] == str(run)
    assert info["backbone"] == "swin_tiny_patch4_window7_224" and info["input_size"] == 32
    assert info["projector"] == "linear 24" and info["datasets"] == ["alpha", "beta"]
    assert info["heads"][1]["label_names"] == ["b1", "b2"]
    # the CLI exports the run's teacher for plain timm
    from arkx.cli import main

    assert main(["export", str(run), str(tmp_path / "b.safetensors")]) == 0
    config = json.loads((tmp_path / "b.json").read_text())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(_plain_timm(tmp_path / "b.safetensors", config)(x), tiny_model(tiny_heads).eval().features(x))


def test_info_on_a_run_checkpoint(tmp_path, tiny_heads):
    from arkx.training.state import save_checkpoint

    cfg = _tiny_run_config(tmp_path)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    model = tiny_model(tiny_heads)
    save_checkpoint(run / "checkpoints", step_done=3, student=model, teacher=model,
                    optimizer=torch.optim.SGD(model.parameters(), lr=0.1), extra={"heads": model.head_config()})
    info = model_info(run)
    assert info["format"] == "arkx-checkpoint/1 (arkx run checkpoint, step 3)"
    assert info["backbone"] == "swin_tiny_patch4_window7_224" and info["input_size"] == 32
    assert info["datasets"] == ["alpha", "beta"] and info["projector"] == "linear 24"


def test_info_on_the_authors_checkpoint_names_its_heads():
    info = model_info(FIXTURES / "ark6_tiny_timm054.pth.tar")
    assert info["format"].startswith("authors' Ark checkpoint (teacher, timm 0.5.4 layout)")
    assert info["input_size"] == 64 and info["projector"] == "mlp 24"
    assert "embed_dim 8, depths [2, 2, 1, 1], window 4" in info["backbone"]
    assert info["datasets"] == ["mimic_cxr", "chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen"]
    assert info["heads"][3]["label_names"] == ["Normal", "No Lung Opacity/Not Normal", "Lung Opacity"]
    plus = model_info(FIXTURES / "arkplus_tiny_timm054.pth.tar")
    assert plus["format"].startswith("authors' Ark checkpoint (state dict") and plus["input_size"] == 96


def test_info_on_a_plain_state_dict_and_on_nothing(tmp_path):
    torch.save(timm.create_model("test_convnext", num_classes=0).state_dict(), tmp_path / "w.pth")
    assert model_info(tmp_path / "w.pth")["format"].startswith("torch state dict (")
    torch.save({"epoch": 3, "lossMIN": [0.1]}, tmp_path / "no_weights.pth.tar")
    with pytest.raises(ArkxError, match="no_weights.pth.tar: not a model file arkx recognises"):
        model_info(tmp_path / "no_weights.pth.tar")
    with pytest.raises(ArkxError, match="not an arkx run folder"):
        model_info(tmp_path)
    with pytest.raises(ArkxError, match="no model file"):
        model_info(tmp_path / "missing.pt")


def test_cli_info_and_export(tmp_path, capsys):
    from arkx.cli import main

    assert main(["info", str(FIXTURES / "ark6_tiny_timm054.pth.tar")]) == 0
    out = capsys.readouterr().out
    assert "input size:    64" in out and "  nih14 (omni_heads.2, by its size) (multilabel, 14): Atelectasis" in out
    assert main(["info", str(FIXTURES / "arkplus_tiny_timm054.pth.tar"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["projector"] == "linear 20"
    # a tiny authors' file matches no released variant: the CLI says so (exit 2), naming what to pass
    assert main(["export", str(FIXTURES / "ark6_tiny_timm054.pth.tar"), str(tmp_path / "b.safetensors")]) == 2
    assert "no released variant matches" in capsys.readouterr().err
