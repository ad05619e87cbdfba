"""The authors' Ark / Ark+ checkpoints, proven on files made by REAL timm 0.5.4 (tests/fixtures, made by
scripts/make_timm054_fixture.py): every weight used, equal outputs, head order and label names."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.models.released import (ARK6_ORDER, AUTHORS_DATASETS, VARIANTS, describe_authors_state, detect_variant,
                                  load_released)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REPO = Path(__file__).resolve().parents[2]
#: fixture -> the released variant whose layout (projector kind, storage) it reproduces at tiny size
MADE = {"ark6_tiny_timm054": "ark6", "arkplus_tiny_timm054": "ark_plus"}


def tiny_variant(fixture: str, **changes):
    """The released variant of ``fixture`` with the fixture's tiny Swin (from its .json)."""
    meta = json.loads((FIXTURES / f"{fixture}.json").read_text())
    swin = meta["swin"]
    return dataclasses.replace(VARIANTS[MADE[fixture]], name=f"{fixture}", backbone="swin_tiny_patch4_window7_224",
                               backbone_kwargs=dict(swin), image_size=swin["img_size"],
                               projector_dim=meta["projector_dim"], **changes)


def reference(fixture: str) -> dict:
    return torch.load(FIXTURES / f"{fixture}.ref.pt", weights_only=True)


def file_tensors(fixture: str) -> dict:
    obj = torch.load(FIXTURES / f"{fixture}.pth.tar", weights_only=True)
    return obj.get("teacher", obj)


@pytest.mark.parametrize("fixture", sorted(MADE))
def test_timm054_checkpoint_loads_with_equal_outputs(fixture):
    model = load_released(FIXTURES / f"{fixture}.pth.tar", tiny_variant(fixture))
    ref = reference(fixture)
    x = ref["input"]
    with torch.no_grad():
        features, z = model.features(x), model.embed(x)
        torch.testing.assert_close(features, ref["features"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(z, ref["embedding"], rtol=1e-5, atol=1e-5)
        for i, name in enumerate(model.heads):
            torch.testing.assert_close(model(x, name)[1], ref[f"logits.{i}"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(z[0], z[1], atol=1e-3)  # the outputs depend on the image: a real comparison


@pytest.mark.parametrize("fixture", sorted(MADE))
def test_every_weight_of_the_file_is_used(fixture):
    """All tensors of the file except timm's never-called ImageNet classifier and the buffers timm
    recomputes end up in the model: the element counts match exactly."""
    model = load_released(FIXTURES / f"{fixture}.pth.tar", tiny_variant(fixture))
    state = {k.removeprefix("module."): v for k, v in file_tensors(fixture).items()}
    used = {k: v for k, v in state.items()
            if not k.startswith("head.") and not k.endswith(("attn_mask", "relative_position_index"))}
    assert sum(v.numel() for v in model.state_dict().values()) == sum(v.numel() for v in used.values())
    mine = model.state_dict()
    torch.testing.assert_close(mine["projector.0.weight" if MADE[fixture] == "ark6" else "projector.weight"],
                               used["projector.0.weight" if MADE[fixture] == "ark6" else "projector.weight"])
    torch.testing.assert_close(mine["heads.vindr_cxr.weight"], used["omni_heads.4.weight"])
    # timm 0.5.4 put patch merging at the end of stage 0; current timm at the start of stage 1
    torch.testing.assert_close(mine["backbone.layers.1.downsample.reduction.weight"],
                               used["layers.0.downsample.reduction.weight"])


def test_heads_in_the_authors_order_with_their_label_names():
    model = load_released(FIXTURES / "ark6_tiny_timm054.pth.tar", tiny_variant("ark6_tiny_timm054"))
    assert list(model.heads) == ["mimic_cxr", "chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen"]
    assert [AUTHORS_DATASETS[d][0] for d in ARK6_ORDER] == list(model.heads)
    specs = model.head_specs
    assert specs["nih14"].label_names[2] == "Effusion" and specs["nih14"].label_names[-1] == "Hernia"
    assert specs["rsna"].label_names == ("Normal", "No Lung Opacity/Not Normal", "Lung Opacity")
    assert specs["rsna"].kind == "multiclass" and specs["shenzhen"].label_names == ("TB",)
    assert [len(s.label_names) for s in specs.values()] == [14, 14, 14, 3, 6, 1]


def test_teacher_by_default_student_on_request():
    path = FIXTURES / "ark6_tiny_timm054.pth.tar"
    ref = reference("ark6_tiny_timm054")
    with torch.no_grad():
        teacher = load_released(path, tiny_variant("ark6_tiny_timm054")).embed(ref["input"])
        student = load_released(path, tiny_variant("ark6_tiny_timm054"), which="student").embed(ref["input"])
    torch.testing.assert_close(teacher, ref["embedding"], rtol=1e-5, atol=1e-5)  # the reference is the teacher's
    assert not torch.allclose(student, ref["embedding"], atol=1e-3)
    with pytest.raises(ArkxValueError, match="holds one model"):  # a teacher shared alone has no student
        load_released(FIXTURES / "arkplus_tiny_timm054.pth.tar", tiny_variant("arkplus_tiny_timm054"), which="student")


def test_an_unknown_tensor_in_the_file_is_an_error_naming_it(tmp_path):
    ckpt = torch.load(FIXTURES / "ark6_tiny_timm054.pth.tar", weights_only=True)
    ckpt["teacher"]["module.aux_head.weight"] = torch.zeros(2, 2)
    torch.save(ckpt, tmp_path / "extra.pth.tar")
    with pytest.raises(ArkxValueError, match=r"not in model \(1\): aux_head\.weight"):
        load_released(tmp_path / "extra.pth.tar", tiny_variant("ark6_tiny_timm054"))


def test_another_architecture_is_refused_naming_the_mismatched_keys():
    path = FIXTURES / "ark6_tiny_timm054.pth.tar"
    # an Ark+ (linear projector) layout for an Ark-6 (MLP projector) file
    with pytest.raises(ArkxValueError) as err:
        load_released(path, tiny_variant("ark6_tiny_timm054", projector="linear"))
    message = str(err.value)
    assert "does not fit this architecture" in message
    assert "missing in file (2): projector.bias, projector.weight" in message
    assert "not in model (4): projector.0.bias, projector.0.weight, projector.2.bias, projector.2.weight" in message
    # a wider Swin
    wider = tiny_variant("ark6_tiny_timm054")
    wider = dataclasses.replace(wider, backbone_kwargs=dict(wider.backbone_kwargs, embed_dim=16))
    with pytest.raises(ArkxValueError, match=r"shape differs \(88\): .*backbone\.layers\.0\.blocks\.0\.norm1\.weight "
                                             r"file \(8,\) vs model \(16,\)"):
        load_released(path, wider)


def test_a_file_for_another_image_size_is_refused():
    variant = tiny_variant("ark6_tiny_timm054")
    smaller = dataclasses.replace(variant, backbone_kwargs=dict(variant.backbone_kwargs, img_size=32))
    with pytest.raises(ArkxValueError, match=r"made for another image or window size: .*layers\.0\.blocks\.1\.attn_mask "
                                             r"file \(16, 16, 16\) vs model \(4, 16, 16\)"):
        load_released(FIXTURES / "ark6_tiny_timm054.pth.tar", smaller)


def test_heads_override_and_a_head_count_mismatch():
    path = FIXTURES / "ark6_tiny_timm054.pth.tar"
    order = ["Shenzhen", "VinDrCXR", "RSNAPneumonia", "ChestXray14", "CheXpert", "MIMIC"]
    with pytest.raises(ArkxValueError, match=r"heads\.shenzhen\.weight file \(14, 24\) vs model \(1, 24\)"):
        load_released(path, tiny_variant("ark6_tiny_timm054"), heads=order)
    with pytest.raises(ArkxValueError, match=r"not in model \(2\): omni_heads\.5\.bias, omni_heads\.5\.weight"):
        load_released(path, tiny_variant("ark6_tiny_timm054"), heads=list(ARK6_ORDER[:5]))
    with pytest.raises(ArkxValueError, match="unknown dataset 'Padchest'"):
        load_released(path, tiny_variant("ark6_tiny_timm054"), heads=["Padchest"])


def test_the_file_describes_itself():
    info = describe_authors_state({k.removeprefix("module."): v for k, v in file_tensors("ark6_tiny_timm054").items()})
    assert info == dict(embed_dim=8, patch_size=4, depths=[2, 2, 1, 1], window_size=4, timm_054_layout=True,
                        image_size=64, projector="mlp", projector_dim=24, head_sizes=[14, 14, 14, 3, 6, 1])
    plus = describe_authors_state(file_tensors("arkplus_tiny_timm054"))
    assert (plus["window_size"], plus["image_size"], plus["projector"], plus["projector_dim"]) == (6, 96, "linear", 20)


def _released_shapes(width: int, window: int, mlp: bool, heads=(14, 14, 14, 3, 6, 1)) -> dict:
    """The tensors ``detect_variant`` reads, at the released sizes (empty tensors: shapes only)."""
    state = {"patch_embed.proj.weight": torch.empty(width, 3, 4, 4),
             "layers.0.blocks.0.attn.relative_position_bias_table": torch.empty((2 * window - 1) ** 2, 4)}
    if mlp:
        state.update({"projector.0.weight": torch.empty(1376, 8 * width), "projector.2.weight": torch.empty(1376, 1376)})
    else:
        state["projector.weight"] = torch.empty(1376, 8 * width)
    state.update({f"omni_heads.{i}.weight": torch.empty(n, 1376) for i, n in enumerate(heads)})
    return state


def test_released_variants_are_recognised_from_their_shapes():
    assert detect_variant(_released_shapes(128, 7, mlp=True)).name == "ark6"
    assert detect_variant(_released_shapes(192, 12, mlp=False)).name == "ark_plus"
    assert detect_variant(_released_shapes(192, 12, mlp=False, heads=(14, 14, 14, 3, 6, 1, 3))).name == "ark_plus_covidx"
    assert detect_variant(_released_shapes(192, 12, mlp=True)) is None
    with pytest.raises(ArkxValueError, match="no released variant matches .*embed_dim 8, window 4, projector mlp"):
        load_released(FIXTURES / "ark6_tiny_timm054.pth.tar")


def _timm054_python() -> str | None:
    """A Python with timm 0.5.4 (ARKX_TIMM054_PYTHON, or /tmp/timm054 as the script's docstring makes it)."""
    for candidate in (os.environ.get("ARKX_TIMM054_PYTHON"), "/tmp/timm054/bin/python"):
        if candidate and shutil.which(candidate):
            probe = subprocess.run([candidate, "-c", "import timm; print(timm.__version__)"], capture_output=True,
                                   text=True)
            if probe.returncode == 0 and probe.stdout.strip() == "0.5.4":
                return candidate
    return None


@pytest.mark.slow
def test_the_committed_fixtures_are_what_the_script_makes_with_timm054(tmp_path):
    python = _timm054_python()
    if python is None:
        pytest.skip("no Python with timm 0.5.4 (set ARKX_TIMM054_PYTHON; see scripts/make_timm054_fixture.py)")
    done = subprocess.run([python, str(REPO / "scripts" / "make_timm054_fixture.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for fixture in MADE:
        fresh = torch.load(tmp_path / f"{fixture}.ref.pt", weights_only=True)
        for key, value in reference(fixture).items():
            torch.testing.assert_close(fresh[key], value, rtol=1e-6, atol=1e-6)
        model = load_released(tmp_path / f"{fixture}.pth.tar", tiny_variant(fixture))
        with torch.no_grad():
            torch.testing.assert_close(model.embed(fresh["input"]), fresh["embedding"], rtol=1e-5, atol=1e-5)


def test_fixture_files_stay_small():
    sizes = {p.name: p.stat().st_size for p in FIXTURES.iterdir()}
    assert len(sizes) == 6 and max(sizes.values()) < 1024 * 1024, sizes


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
