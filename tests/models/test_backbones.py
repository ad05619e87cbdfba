"""Loading local checkpoints: the authors' timm-0.5.4 Swin layout, wrappers, mismatches, safety."""

from __future__ import annotations

import re

import pytest
import torch

from arkx.models.backbones import create_backbone, load_backbone_weights

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
