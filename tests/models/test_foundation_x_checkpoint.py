"""The authors' Foundation X checkpoints (github.com/jlianglab/Foundation_X, commit 5e0b473) in arkx.

The files are built here, tiny, in the authors' exact key layout (:func:`authors_file`), and the backbone's
outputs are compared with an independent re-implementation of THEIR Swin's forward (:func:`their_swin`),
written from ``models/dino/swin_transformer_CyclicSegmentation.py``:

- ``backbone.0.`` is ``DINO.backbone`` (``models/dino/dino_F6.py``), a ``Joiner`` (``models/dino/backbone.py``,
  an ``nn.Sequential(swin, position_encoding)``) whose item 0 is ``SwinTransformer`` of
  ``swin_transformer_CyclicSegmentation.py``: ``patch_embed.{proj,norm}``, ``layers.<i>.blocks.<j>.{norm1,
  attn.{relative_position_bias_table,relative_position_index,qkv,proj},norm2,mlp.{fc1,fc2}}`` and
  ``layers.<i>.downsample.{norm,reduction}`` (``BasicLayer``, ``SwinTransformerBlock``, ``WindowAttention``,
  ``PatchMerging``: Swin-Transformer-Object-Detection's classes), then in the same ``__init__``:
  ``Locnorm<i>``, ``Segnorm<i>``, ``norm``, ``head``, ``classification_heads.<i>`` (11 Linears, sizes from
  their comments), ``segmentation_PPN`` (``PSPModule``: ``stages.<k>.{1: conv, 2: BatchNorm}``,
  ``bottleneck.{0: conv, 1: BatchNorm}``), ``segmentation_FPN`` (``FPN_fuse``: ``conv1x1.<k>``,
  ``smooth_conv.<k>``, ``conv_fusion.{0,1}``) and ``segmentation_heads.<i>`` (6 convs 3x3);
- ``transformer.*`` is ``DeformableTransformer`` (``models/dino/deformable_transformer_F6.py``: ``level_embed``,
  ``encoder.layers.<l>...``, ``decoder.<dataset>.layers...``, ``tgt_embed``, ``enc_output.<dataset>``,
  ``enc_out_class_embed.<dataset>``); ``input_proj``, ``label_enc``, ``class_embed``, ``bbox_embed``,
  ``class_embed_``, ``bbox_embed_`` are ``DINO``'s own (``dino_F6.py``);
- the file is ``{'model', 'teacher_model', 'optimizer', 'epoch'}`` (``save_model`` in ``utils_segmentation.py``).
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from arkx.errors import ArkxValueError
from arkx.models.foundation_x_checkpoint import (
    AUTHORS_CLASSIFICATION_HEADS,
    FoundationXLoadReport,
    is_foundation_x_checkpoint,
    load_foundation_x,
)
from arkx.tasks import Task

P = "backbone.0."
#: a tiny Swin in their geometry: at 128 px the stage maps are 32, 16, 8 and 4 = the window, where their Swin
#: still shifts windows (as Swin-B's 7x7 last stage at 224 px) and timm's default does not
TINY = dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window=4, patch=4, image=128)
#: output sizes of their classification_heads (swin_transformer_CyclicSegmentation.py, in order)
CLS_SIZES = (1, 1, 1, 3, 13, 1, 14, 14, 6, 1, 14)


def relative_position_index(window: int) -> torch.Tensor:
    """The official Swin's index of each (query, key) pair of a window into the bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def authors_swin(g: torch.Generator, embed_dim, depths, num_heads, window, patch, **_) -> dict:
    """Their ``SwinTransformer`` backbone tensors (random values, their names and shapes)."""
    def rnd(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    def norm(name, dim):
        return {f"{name}.weight": 1 + rnd(dim, scale=0.1), f"{name}.bias": rnd(dim, scale=0.1)}

    s = {"patch_embed.proj.weight": rnd(embed_dim, 3, patch, patch), "patch_embed.proj.bias": rnd(embed_dim),
         **norm("patch_embed.norm", embed_dim)}
    dims = [embed_dim * 2 ** i for i in range(len(depths))]
    for i, (depth, heads, dim) in enumerate(zip(depths, num_heads, dims)):
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            s.update(norm(b + "norm1", dim))
            s[b + "attn.relative_position_bias_table"] = rnd((2 * window - 1) ** 2, heads, scale=1.0)
            s[b + "attn.relative_position_index"] = relative_position_index(window)
            s.update({b + "attn.qkv.weight": rnd(3 * dim, dim, scale=0.4), b + "attn.qkv.bias": rnd(3 * dim),
                      b + "attn.proj.weight": rnd(dim, dim), b + "attn.proj.bias": rnd(dim)})
            s.update(norm(b + "norm2", dim))
            s.update({b + "mlp.fc1.weight": rnd(4 * dim, dim), b + "mlp.fc1.bias": rnd(4 * dim),
                      b + "mlp.fc2.weight": rnd(dim, 4 * dim), b + "mlp.fc2.bias": rnd(dim)})
        if i < len(depths) - 1:  # patch merging at the end of a stage (their BasicLayer)
            s.update(norm(f"layers.{i}.downsample.norm", 4 * dim))
            s[f"layers.{i}.downsample.reduction.weight"] = rnd(2 * dim, 4 * dim)
    for i, dim in enumerate(dims):
        s.update(norm(f"Locnorm{i}", dim))
        s.update(norm(f"Segnorm{i}", dim))
    s.update(norm("norm", dims[-1]))
    s.update({"head.weight": rnd(14, dims[-1]), "head.bias": rnd(14)})
    for i, n in enumerate(CLS_SIZES):
        s.update({f"classification_heads.{i}.weight": rnd(n, dims[-1]), f"classification_heads.{i}.bias": rnd(n)})
    return {P + k: v for k, v in s.items()} | authors_upernet(g, dims)


def batchnorm(name: str, dim: int) -> dict:
    return {f"{name}.weight": torch.ones(dim), f"{name}.bias": torch.zeros(dim), f"{name}.running_mean":
            torch.zeros(dim), f"{name}.running_var": torch.ones(dim), f"{name}.num_batches_tracked": torch.tensor(0)}


def authors_upernet(g: torch.Generator, dims: list[int]) -> dict:
    """Their ``PSPModule`` + ``FPN_fuse`` + ``segmentation_heads`` (inside the Swin module)."""
    top, out = dims[-1], dims[0]
    s = {}
    for k in range(4):  # bin sizes [1, 2, 4, 6]
        s[f"segmentation_PPN.stages.{k}.1.weight"] = torch.randn(top // 4, top, 1, 1, generator=g)
        s.update(batchnorm(f"segmentation_PPN.stages.{k}.2", top // 4))
    s["segmentation_PPN.bottleneck.0.weight"] = torch.randn(top, 2 * top, 3, 3, generator=g)
    s.update(batchnorm("segmentation_PPN.bottleneck.1", top))
    for k, dim in enumerate(dims[1:]):
        s.update({f"segmentation_FPN.conv1x1.{k}.weight": torch.randn(out, dim, 1, 1, generator=g),
                  f"segmentation_FPN.conv1x1.{k}.bias": torch.zeros(out)})
    shared = torch.randn(out, out, 3, 3, generator=g)  # [conv] * 3: one module, saved under three names
    for k in range(3):
        s.update({f"segmentation_FPN.smooth_conv.{k}.weight": shared, f"segmentation_FPN.smooth_conv.{k}.bias":
                  torch.zeros(out)})
    s["segmentation_FPN.conv_fusion.0.weight"] = torch.randn(out, 4 * out, 3, 3, generator=g)
    s.update(batchnorm("segmentation_FPN.conv_fusion.1", out))
    for i in range(6):
        classes = 13 if i == 4 else 1
        s.update({f"segmentation_heads.{i}.weight": torch.randn(classes, out, 3, 3, generator=g),
                  f"segmentation_heads.{i}.bias": torch.zeros(classes)})
    return {P + k: v for k, v in s.items()}


def authors_dino(g: torch.Generator, dims: list[int], d_model: int = 16, datasets: int = 2) -> dict:
    """A few tensors of each part of their localization branch (names from dino_F6 / deformable_transformer_F6)."""
    s = {"transformer.level_embed": torch.randn(4, d_model, generator=g),
         "transformer.encoder.layers.0.self_attn.sampling_offsets.weight": torch.randn(64, d_model, generator=g),
         "transformer.encoder.layers.0.linear1.weight": torch.randn(32, d_model, generator=g),
         "transformer.tgt_embed.weight": torch.randn(10, d_model, generator=g),
         "label_enc.weight": torch.randn(92, d_model, generator=g)}
    for k in range(datasets):
        s[f"transformer.decoder.{k}.layers.0.norm1.weight"] = torch.ones(d_model)
        s[f"transformer.enc_output.{k}.weight"] = torch.randn(d_model, d_model, generator=g)
        s[f"transformer.enc_out_class_embed.{k}.weight"] = torch.randn(3, d_model, generator=g)
        s[f"class_embed_.{k}.0.weight"] = torch.randn(3, d_model, generator=g)
        s[f"bbox_embed_.{k}.0.layers.0.weight"] = torch.randn(d_model, d_model, generator=g)
    for level, dim in enumerate(dims):
        s[f"input_proj.{level}.0.weight"] = torch.randn(d_model, dim, 1, 1, generator=g)
        s[f"input_proj.{level}.1.weight"] = torch.ones(d_model)
    s["class_embed.0.weight"] = torch.randn(3, d_model, generator=g)
    s["bbox_embed.0.layers.0.weight"] = torch.randn(d_model, d_model, generator=g)
    return s


def authors_model(seed: int, geometry: dict = TINY) -> dict:
    g = torch.Generator().manual_seed(seed)
    swin = authors_swin(g, **geometry)
    dims = [geometry["embed_dim"] * 2 ** i for i in range(len(geometry["depths"]))]
    return swin | authors_dino(g, dims)


def authors_file(path, *, module_prefix: bool = False, geometry: dict = TINY) -> tuple[dict, dict]:
    """Their ``save_model`` output: student and (different) teacher; returns (student, teacher)."""
    student, teacher = authors_model(1, geometry), authors_model(2, geometry)
    prefix = "module." if module_prefix else ""
    torch.save({"model": {prefix + k: v for k, v in student.items()},
                "teacher_model": {prefix + k: v for k, v in teacher.items()},
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, path)
    return student, teacher


# ---------------------------------------------------------------------------- their forward, re-implemented
def _ln(x, s, name):
    return F.layer_norm(x, x.shape[-1:], s[name + ".weight"], s[name + ".bias"], eps=1e-5)


def _windows(x, w):
    b, h, wd, c = x.shape
    return x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def _unwindows(x, w, b, h, wd):
    c = x.shape[-1]
    return x.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, wd, c)


def _shift_mask(hp, wp, w, shift):
    """Their BasicLayer's mask: regions of the padded map, -100 between tokens of different regions."""
    img = torch.zeros(1, hp, wp, 1)
    count = 0
    for hs in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
        for ws in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = count
            count += 1
    m = _windows(img, w).squeeze(-1)
    m = m[:, None, :] - m[:, :, None]
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def _block(x, s, b, h, wd, heads, w, shift):
    """Their SwinTransformerBlock: pad to whole windows, THEN cyclic shift."""
    batch, _, c = x.shape
    y = _ln(x, s, b + "norm1").view(batch, h, wd, c)
    pad_b, pad_r = (w - h % w) % w, (w - wd % w) % w
    y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = y.shape[1:3]
    if shift:
        y = torch.roll(y, (-shift, -shift), (1, 2))
    win = _windows(y, w)
    n = w * w
    qkv = F.linear(win, s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"])
    q, k, v = qkv.view(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    table = s[b + "attn.relative_position_bias_table"][s[b + "attn.relative_position_index"].reshape(-1)]
    attn = attn + table.view(n, n, heads).permute(2, 0, 1)[None]
    if shift:
        mask = _shift_mask(hp, wp, w, shift)
        attn = (attn.view(batch, -1, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
    out = F.linear(out, s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
    y = _unwindows(out, w, batch, hp, wp)
    if shift:
        y = torch.roll(y, (shift, shift), (1, 2))
    x = x + y[:, :h, :wd].reshape(batch, h * wd, c)
    hidden = F.gelu(F.linear(_ln(x, s, b + "norm2"), s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"]))
    return x + F.linear(hidden, s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"])


def _merge(x, s, name, h, wd):
    batch, _, c = x.shape
    x = x.view(batch, h, wd, c)
    x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1).view(batch, -1, 4 * c)
    return F.linear(_ln(x, s, name + ".norm"), s[name + ".reduction.weight"])


@torch.no_grad()
def their_swin(state: dict, x: torch.Tensor, depths, num_heads, window, patch, **_):
    """Their ``extra_features`` (pooled, before a head) and the stage outputs ``extra_features_seg`` reads."""
    s = {k[len(P):]: v for k, v in state.items() if k.startswith(P)}
    x = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=patch)
    batch, _, h, wd = x.shape
    x = _ln(x.flatten(2).transpose(1, 2), s, "patch_embed.norm")
    stages = []
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        for j in range(depth):
            x = _block(x, s, f"layers.{i}.blocks.{j}.", h, wd, heads, window, 0 if j % 2 == 0 else window // 2)
        stages.append(x.transpose(1, 2).reshape(batch, -1, h, wd))
        if i < len(depths) - 1:
            x = _merge(x, s, f"layers.{i}.downsample", h, wd)
            h, wd = (h + 1) // 2, (wd + 1) // 2
    return _ln(x, s, "norm").mean(1), stages


# ---------------------------------------------------------------------------- tests
@pytest.fixture()
def fx_file(tmp_path):
    path = tmp_path / "foundation_x.pth"
    student, teacher = authors_file(path)
    return path, student, teacher


def _input(seed=0):
    return torch.randn(2, 3, TINY["image"], TINY["image"], generator=torch.Generator().manual_seed(seed))


def test_backbone_outputs_equal_their_swin(fx_file):
    path, _, teacher = fx_file
    model = load_foundation_x(path, image_size=TINY["image"])
    x = _input()
    pooled, stages = their_swin(teacher, x, **TINY)
    with torch.no_grad():
        features = model.forward_features(x, pyramid=True)
    torch.testing.assert_close(features.pooled, pooled, rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(features.pyramid, stages, strict=True):  # what their segmentation branch reads
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(pooled[0], pooled[1], atol=1e-3)  # the outputs depend on the image


def test_the_last_stage_shifts_windows_as_theirs_does(fx_file):
    """The comparison above is sensitive to what the loader must get right: timm's default Swin (no shift
    where a stage's map fits in one window) computes something else from the same weights."""
    import timm

    path, _, teacher = fx_file
    model = load_foundation_x(path, image_size=TINY["image"])
    plain = timm.create_model("swin_base_patch4_window7_224", num_classes=0, img_size=TINY["image"],
                              embed_dim=8, depths=TINY["depths"], num_heads=TINY["num_heads"], window_size=4)
    plain.load_state_dict(model.backbone.state_dict(), strict=False)
    x = _input()
    pooled, _ = their_swin(teacher, x, **TINY)
    with torch.no_grad():
        assert not torch.allclose(plain(x), pooled, atol=1e-3)
        torch.testing.assert_close(model.features(x), pooled, rtol=1e-4, atol=1e-5)


def test_teacher_by_default_student_on_request(fx_file):
    path, student, teacher = fx_file
    key = "backbone.layers.0.blocks.0.attn.qkv.weight"
    torch.testing.assert_close(load_foundation_x(path, image_size=128).state_dict()[key],
                               teacher[P + "layers.0.blocks.0.attn.qkv.weight"])
    torch.testing.assert_close(load_foundation_x(path, "student", image_size=128).state_dict()[key],
                               student[P + "layers.0.blocks.0.attn.qkv.weight"])
    with pytest.raises(ArkxValueError, match="which"):
        load_foundation_x(path, "ema", image_size=128)


def test_module_prefixes_of_ddp_are_stripped(tmp_path):
    path = tmp_path / "ddp.pth"
    _, teacher = authors_file(path, module_prefix=True)
    model = load_foundation_x(path, image_size=128)
    torch.testing.assert_close(model.state_dict()["backbone.norm.weight"], teacher[P + "norm.weight"])


def test_patch_merging_moves_to_timms_next_stage(fx_file):
    path, _, teacher = fx_file
    model = load_foundation_x(path, image_size=128)
    torch.testing.assert_close(model.state_dict()["backbone.layers.1.downsample.reduction.weight"],
                               teacher[P + "layers.0.downsample.reduction.weight"])
    report = model.load_report
    assert report.loaded[P + "layers.0.downsample.reduction.weight"] == "backbone.layers.1.downsample.reduction.weight"


def test_classification_heads_land_where_named(fx_file):
    path, _, teacher = fx_file
    rsna = Task("rsna", "multiclass", ("Normal", "No Lung Opacity/Not Normal", "Lung Opacity"))
    heads = [None] * 3 + [rsna] + [None] * 4 + ["vindr_cxr"]  # index 3: RSNA (3), index 8: VinDr-CXR (6)
    model = load_foundation_x(path, heads=heads, image_size=128)
    assert list(model.heads) == ["rsna", "vindr_cxr"]
    mine = model.state_dict()
    torch.testing.assert_close(mine["heads.rsna.weight"], teacher[P + "classification_heads.3.weight"])
    torch.testing.assert_close(mine["heads.vindr_cxr.bias"], teacher[P + "classification_heads.8.bias"])
    # no projector: their heads read the pooled features
    x = _input()
    pooled, _ = their_swin(teacher, x, **TINY)
    with torch.no_grad():
        logits = model(x, "rsna")[1]
    expected = F.linear(pooled, teacher[P + "classification_heads.3.weight"], teacher[P + "classification_heads.3.bias"])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    unused = model.load_report.unused
    assert P + "classification_heads.0.weight" in unused and P + "classification_heads.3.weight" not in unused


def test_a_head_of_the_wrong_size_is_refused(fx_file):
    path, _, _ = fx_file
    with pytest.raises(ArkxValueError, match=r"classification_heads\.0 has 1 outputs.*needs 3"):
        load_foundation_x(path, heads=[Task("rsna", "multiclass", ("a", "b", "c"))], image_size=128)


def test_every_tensor_is_accounted_for_and_unmapped_ones_are_reported_by_name(fx_file, caplog):
    path, _, teacher = fx_file
    with caplog.at_level(logging.INFO, logger="arkx.models"):
        model = load_foundation_x(path, image_size=128)
    report: FoundationXLoadReport = model.load_report
    assert set(report.loaded) | set(report.unused) | set(report.recomputed) == set(teacher)
    assert not (set(report.loaded) & set(report.unused)) and report.missing == []
    assert len(report.recomputed) == sum(TINY["depths"])  # relative_position_index, checked not loaded
    # the branches arkx has no counterpart for, each named with why
    assert "localization" in report.unused["transformer.encoder.layers.0.linear1.weight"]
    assert "UperNet" in report.unused[P + "segmentation_PPN.bottleneck.0.weight"]
    assert "label names" in report.unused[P + "classification_heads.10.bias"]
    assert "LayerNorms" in report.unused[P + "Locnorm2.weight"]
    assert "bbox_embed_.1.0.layers.0.weight" in report.unused
    # every model tensor came from the file
    assert set(report.loaded.values()) == set(model.state_dict())
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for part in (P + "segmentation_PPN.*", "transformer.*", P + "classification_heads.*", "input_proj.*"):
        assert part in warned
    assert report.as_dict()["counts"]["unused"] == len(report.unused)


def test_strict_unused_refuses_a_file_with_unloaded_parts(fx_file):
    path, _, _ = fx_file
    with pytest.raises(ArkxValueError, match="not loaded"):
        load_foundation_x(path, image_size=128, strict_unused=True)


def test_a_missing_backbone_weight_is_an_error_naming_it(tmp_path):
    path = tmp_path / "cut.pth"
    _, teacher = authors_file(path)
    del teacher[P + "layers.2.blocks.1.mlp.fc2.weight"]
    torch.save({"teacher_model": teacher}, path)
    with pytest.raises(ArkxValueError, match=r"backbone\.layers\.2\.blocks\.1\.mlp\.fc2\.weight"):
        load_foundation_x(path, image_size=128)


def test_an_image_size_needing_padding_is_refused(fx_file):
    path, _, _ = fx_file
    with pytest.raises(ArkxValueError, match="not a multiple of the window"):
        load_foundation_x(path, image_size=96)  # stage maps 24, 12, 6, 3: 6 and 3 need padding


def test_the_file_kind_is_recognised(fx_file, tmp_path):
    path, _, teacher = fx_file
    assert is_foundation_x_checkpoint(torch.load(path, weights_only=True))
    assert is_foundation_x_checkpoint(teacher)
    assert not is_foundation_x_checkpoint({"teacher": {"patch_embed.proj.weight": torch.zeros(1)}})
    assert len(AUTHORS_CLASSIFICATION_HEADS) == len(CLS_SIZES)


def test_load_any_model_and_embed_read_foundation_x_files(fx_file):
    from arkx.models.released import load_any_model

    path, _, teacher = fx_file
    model = load_any_model(path, image_size=128)
    assert model.arkx_source["format"] == "authors-foundation-x"
    torch.testing.assert_close(model.state_dict()["backbone.norm.bias"], teacher[P + "norm.bias"])
    student = load_any_model(path, "student", image_size=128)
    assert student.arkx_source["which"] == "student"


def test_model_checkpoint_loads_the_backbone_and_asks_for_their_window_shifts(fx_file):
    from arkx.models.backbones import create_backbone

    path, _, teacher = fx_file
    sizes = dict(img_size=128, embed_dim=8, depths=TINY["depths"], num_heads=TINY["num_heads"], window_size=4)
    with pytest.raises(ArkxValueError, match="always_partition"):
        create_backbone("swin_base_patch4_window7_224", path, **sizes)
    backbone = create_backbone("swin_base_patch4_window7_224", path, always_partition=True, **sizes)
    x = _input()
    pooled, _ = their_swin(teacher, x, **TINY)
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(x), pooled, rtol=1e-4, atol=1e-5)


def test_embed_reads_a_foundation_x_file(fx_file, tmp_path):
    import numpy as np
    from PIL import Image

    import arkx

    path, _, _ = fx_file
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):  # a class-folder dataset of 6 images
        for label in ("a", "b"):
            (tmp_path / "data" / split / label).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "data" / split / label /
                                                                                 f"{split}{label}.png")
    table = arkx.embed(path, "folder", tmp_path / "data", image_size=128, device="cpu", cache_dir=tmp_path / "c",
                       progress=False, features="backbone")
    assert table.embeddings.shape == (6, 64) and table.meta["image_size"] == 128  # Swin stage 4: 8 x 8 channels
    assert not np.allclose(table.embeddings[0], table.embeddings[1])


def test_info_describes_the_file_and_the_timm_export_computes_their_features(fx_file, tmp_path, capsys):
    import json

    import timm

    from arkx.cli import main
    from arkx.models.export import export_timm, model_info

    path, _, teacher = fx_file
    info = model_info(path)
    assert "Foundation X" in info["format"] and "teacher_model" in info["format"] and "epoch 3" in info["format"]
    assert len(info["heads"]) == 11 and len(info["heads"][4]["label_names"]) == 13
    assert info["parts"]["transformer."] == 10 and info["tensors"] == len(teacher)
    assert main(["info", str(path)]) == 0 and "Foundation X" in capsys.readouterr().out
    out = export_timm(load_foundation_x(path, image_size=128), tmp_path / "fx.safetensors")
    meta = json.loads(out.with_suffix(".json").read_text())
    plain = timm.create_model(meta["architecture"], num_classes=0, checkpoint_path=str(out), **meta["model_args"])
    x = _input()
    pooled, _ = their_swin(teacher, x, **TINY)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), pooled, rtol=1e-4, atol=1e-5)
