"""Loading local checkpoints: the authors' timm-0.5.4 Swin layout, wrappers, mismatches, safety."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.models.backbones import create_backbone

from ..conftest import TINY_SWIN


def _old_timm_layout(state: dict) -> dict:
    """What timm 0.5.4 (the authors' version) stored: downsample at the END of the previous stage,
    plus non-persistent buffers that newer timm no longer saves."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        out[k] = v
    out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    return out


def test_ark_checkpoint_in_timm_054_layout_loads_with_equal_outputs(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("swin_tiny_patch4_window7_224", **TINY_SWIN).eval()
    old = _old_timm_layout(source.state_dict())
    assert "layers.0.downsample.reduction.weight" in old  # really the old layout
    ckpt = {
        "epoch": 10,
        "teacher": {**{f"module.{k}": v for k, v in old.items()},
                    "module.omni_heads.0.weight": torch.randn(14, 16 * 8),
                    "module.projector.weight": torch.randn(1376, 16 * 8)},
    }
    path = tmp_path / "ark_teacher.pth.tar"
    torch.save(ckpt, path)
    torch.manual_seed(1)
    target = create_backbone("swin_tiny_patch4_window7_224", checkpoint=path, **TINY_SWIN).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(target(x), source(x))


def test_safetensors_and_plain_state_dicts_load(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_backbone("test_convnext").eval()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pt")
    x = torch.randn(1, 3, 32, 32)
    for name in ("w.safetensors", "w.pt"):
        model = create_backbone("test_convnext", checkpoint=tmp_path / name).eval()
        torch.testing.assert_close(model(x), source(x))


def test_other_architecture_fails_listing_mismatched_keys(tmp_path):
    torch.save(create_backbone("test_vit").state_dict(), tmp_path / "vit.pt")
    with pytest.raises(ValueError) as err:
        create_backbone("test_convnext", checkpoint=tmp_path / "vit.pt")
    message = str(err.value)
    assert "vit.pt does not fit this architecture" in message
    assert "missing in file" in message and "stages." in message
    assert "not in model" in message and "blocks" in message


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only"):
        create_backbone("test_convnext", checkpoint=tmp_path / "evil.pt")


def test_built_offline(monkeypatch):
    import timm

    calls = {}
    real = timm.create_model

    def spy(name, **kw):
        calls.update(kw)
        return real(name, **kw)

    monkeypatch.setattr(timm, "create_model", spy)
    create_backbone("test_convnext")
    assert calls["pretrained"] is False


# --- nothing dropped or reshaped silently --------------------------------------------------------------

def _authors_ark_checkpoint(backbone_state: dict, n_heads: int = 3, proj_dim: int = 12) -> dict:
    """A file laid out as the authors' Ark training code saves it: student under ``state_dict``, teacher
    under ``teacher``, DataParallel ``module.`` prefixes, the timm-0.5.4 backbone with its unused
    ImageNet classifier ``head``, a ``projector`` and ``omni_heads.<index>``, plus optimizer state."""
    feat = backbone_state["norm.weight"].shape[0]

    def model_state():
        parts = dict(_old_timm_layout(backbone_state))
        parts.update({"head.weight": torch.randn(10, feat), "head.bias": torch.zeros(10),
                      "projector.weight": torch.randn(proj_dim, feat), "projector.bias": torch.zeros(proj_dim)})
        for i in range(n_heads):
            parts.update({f"omni_heads.{i}.weight": torch.randn(2 + i, proj_dim),
                          f"omni_heads.{i}.bias": torch.zeros(2 + i)})
        return {f"module.{k}": v for k, v in parts.items()}

    return {"epoch": 3, "lossMIN": 0.5, "state_dict": model_state(), "teacher": model_state(),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            "scheduler": {"last_epoch": 3}}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "arkx.models" and r.levelno >= logging.WARNING]


def test_authors_ark_checkpoint_warns_naming_the_projector_and_heads_not_loaded(tmp_path, caplog):
    torch.manual_seed(0)
    source = create_backbone("swin_tiny_patch4_window7_224", **TINY_SWIN)
    path = tmp_path / "ark6_teacher.pth.tar"
    torch.save(_authors_ark_checkpoint(source.state_dict()), path)
    with caplog.at_level(logging.INFO, logger="arkx.models"):
        create_backbone("swin_tiny_patch4_window7_224", checkpoint=path, **TINY_SWIN)
    [warning] = _warnings(caplog)
    assert "ark6_teacher.pth.tar: only the backbone is loaded" in warning
    assert "projector.* (2 tensors)" in warning
    assert "omni_heads.* for 0, 1, 2 (6 tensors)" in warning
    assert "head.* (2 tensors)" in warning and "model.embed()" in warning
    assert any("using the weights stored under 'teacher'" in r.getMessage() for r in caplog.records)


def test_unused_parts_warning_lands_in_the_run_log(tmp_path):
    from arkx.training.runfolder import run_log

    path = tmp_path / "ark.pth.tar"
    torch.save(_authors_ark_checkpoint(create_backbone("swin_tiny_patch4_window7_224", **TINY_SWIN).state_dict()), path)
    with run_log(tmp_path) as log_file:
        create_backbone("swin_tiny_patch4_window7_224", checkpoint=path, **TINY_SWIN)
    text = log_file.read_text()
    assert "WARNING arkx.models: " in text and "not used: " in text and "projector.* (2 tensors)" in text


def test_arkx_export_as_backbone_checkpoint_warns_naming_its_heads(tmp_path, tiny_heads, caplog):
    from safetensors.torch import save_file

    from arkx.config import ModelConfig
    from arkx.models.ark import build_model

    from ..conftest import tiny_model

    save_file({k: v.contiguous() for k, v in tiny_model(tiny_heads).state_dict().items()},
              str(tmp_path / "teacher.safetensors"))
    cfg = ModelConfig(backbone="swin_tiny_patch4_window7_224", backbone_kwargs=TINY_SWIN,
                      checkpoint=tmp_path / "teacher.safetensors", projector_dim=24)
    with caplog.at_level(logging.WARNING, logger="arkx.models"):
        build_model(cfg, tiny_heads)
    [warning] = _warnings(caplog)
    assert "heads.* for 'alpha', 'beta' (4 tensors)" in warning and "projector.* (2 tensors)" in warning


def test_imagenet_classifier_dropped_is_logged_without_a_warning(tmp_path, caplog):
    import timm

    torch.save(timm.create_model("test_convnext", pretrained=False, num_classes=5).state_dict(), tmp_path / "in.pt")
    with caplog.at_level(logging.INFO, logger="arkx.models"):
        create_backbone("test_convnext", checkpoint=tmp_path / "in.pt")
    assert _warnings(caplog) == []
    assert any("not used (a backbone has no classifier): head.* (2 tensors)" in r.getMessage()
               for r in caplog.records)


WINDOW12 = dict(TINY_SWIN, window_size=12, img_size=96)  # tables 23x23 (stages 0-1), 11x11, 5x5
TABLE0 = "layers.0.blocks.0.attn.relative_position_bias_table"


@pytest.mark.parametrize("layout", ["timm", "authors"])
def test_checkpoint_of_another_window_size_is_refused_naming_keys_and_shapes(tmp_path, layout):
    state = create_backbone("swin_tiny_patch4_window7_224", **WINDOW12).state_dict()
    torch.save(state if layout == "timm" else _authors_ark_checkpoint(state), tmp_path / "w12.pth")
    with pytest.raises(ArkxValueError) as err:
        create_backbone("swin_tiny_patch4_window7_224", checkpoint=tmp_path / "w12.pth", **TINY_SWIN)
    message = str(err.value)
    assert "w12.pth does not fit this architecture" in message
    assert f"{TABLE0} file (529, 1) vs model (49, 1) (resizable)" in message
    assert "shape differs (4)" in message and "4 marked (resizable)" in message
    assert "model.checkpoint_resize: true" in message


def test_checkpoint_resize_option_interpolates_and_logs_each_table(tmp_path, tiny_heads, caplog):
    from arkx.config import ModelConfig
    from arkx.models.ark import build_model

    torch.manual_seed(0)
    source = create_backbone("swin_tiny_patch4_window7_224", **WINDOW12)
    path = tmp_path / "w12.pth"
    torch.save(_authors_ark_checkpoint(source.state_dict()), path)
    cfg = ModelConfig(backbone="swin_tiny_patch4_window7_224", backbone_kwargs=TINY_SWIN, checkpoint=path,
                      checkpoint_resize=True, projector_dim=24)
    with caplog.at_level(logging.WARNING, logger="arkx.models"):
        model = build_model(cfg, tiny_heads)
    interpolated = [m for m in _warnings(caplog) if "interpolated from" in m]
    assert len(interpolated) == 4
    assert f"{TABLE0} interpolated from (529, 1) to (49, 1)" in " ".join(interpolated)
    loaded = model.backbone.state_dict()
    torch.testing.assert_close(loaded["layers.0.blocks.0.norm1.weight"], source.state_dict()["layers.0.blocks.0.norm1.weight"])
    # the table is the checkpoint's, interpolated: its centre (zero offset) keeps the file's value
    torch.testing.assert_close(loaded[TABLE0].view(7, 7)[3, 3], source.state_dict()[TABLE0].view(23, 23)[11, 11],
                               atol=1e-3, rtol=0)


def test_checkpoint_resize_does_not_excuse_other_shape_differences(tmp_path):
    other = create_backbone("swin_tiny_patch4_window7_224", **dict(WINDOW12, embed_dim=24)).state_dict()
    torch.save(other, tmp_path / "wide.pth")
    with pytest.raises(ArkxValueError, match=r"layers\.0\.blocks\.0\.norm1\.weight file \(24,\) vs model \(16,\)"):
        create_backbone("swin_tiny_patch4_window7_224", checkpoint=tmp_path / "wide.pth", checkpoint_resize=True,
                        **TINY_SWIN)


@pytest.mark.parametrize("name, content", [("empty.safetensors", b""), ("cut.safetensors", b"\x10\0\0\0\0\0\0\0{\"a\":"),
                                           ("empty.pth", b""), ("missing.pth", None)])
def test_unreadable_weight_files_are_one_line_errors_naming_the_file(tmp_path, name, content):
    from arkx.errors import ArkxError

    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ArkxError, match=re.escape(name)) as err:
        create_backbone("test_convnext", checkpoint=tmp_path / name)
    assert "\n" not in str(err.value)


def test_arkx_last_pt_teacher_is_preferred_over_its_timm_view(tmp_path, caplog):
    """An arkx ``last.pt`` offers the teacher twice: whole (``teacher``) and as a timm backbone
    (``state_dict_ema``, for plain timm). arkx reads the whole one, so dropping its projector and heads
    is still said."""
    state = create_backbone("swin_tiny_patch4_window7_224", **TINY_SWIN).state_dict()
    teacher = {**{f"backbone.{k}": v for k, v in state.items()}, "projector.weight": torch.zeros(24, 128),
               "projector.bias": torch.zeros(24)}
    torch.save({"format": "arkx-checkpoint/1", "teacher": teacher, "state_dict_ema": state}, tmp_path / "last.pt")
    with caplog.at_level(logging.INFO, logger="arkx.models"):
        create_backbone("swin_tiny_patch4_window7_224", checkpoint=tmp_path / "last.pt", **TINY_SWIN)
    [warning] = _warnings(caplog)
    assert "projector.* (2 tensors)" in warning
