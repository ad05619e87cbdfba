"""arkx predict: the probabilities the model gives each image read as training reads it, label names in head
order, folders scanned without OS junk, a per-head module, and Grad-CAM heatmaps for positive findings only."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import arkx
from arkx.api import as_config, export_model
from arkx.cli import main
from arkx.data.io import load_resized
from arkx.data.transforms import eval_view
from arkx.errors import ArkxRuntimeError, ArkxValueError
from arkx.models.ark import ArkModel
from arkx.tasks import Task
from arkx.models.backbones import create_backbone
from arkx.transfer.predict import CAM_ALPHA, HeadModule, predict
from tests.conftest import TINY_SWIN, tiny_model
from tests.data.test_io import write_dicom
from tests.reliability.conftest import tiny_config

IMAGE, CACHE = 32, 36
HEADS = [Task("alpha", "multilabel", ("a1", "Pleural Effusion", "a3")),
         Task("beta", "multiclass", ("b1", "b2"))]


@pytest.fixture(scope="module")
def swin():
    return tiny_model(HEADS, seed=4).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(5)
    return ArkModel(create_backbone("resnet10t"), HEADS, projector="linear", projector_dim=8).eval()


@pytest.fixture
def folder(tmp_path):
    """A PNG, a JPEG in a subfolder, a DICOM without suffix, and OS junk / non-image files to ignore."""
    rng = np.random.default_rng(0)
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(root / "chest.png")
    Image.fromarray(rng.integers(0, 256, (50, 40), dtype=np.uint8)).save(root / "sub" / "knee.jpg")
    write_dicom(root / "sub" / "study1", rng.integers(0, 4096, (44, 44)))
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(root / "._chest.png")  # readable junk
    (root / "__MACOSX").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(root / "__MACOSX" / "chest.png")
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "notes.txt").write_text("not an image")
    return root


def by_hand(model, path, head: str, cache: int = CACHE) -> np.ndarray:
    """The head's probabilities for one image: the cache's decode and resize, eval_view, the model."""
    x = eval_view(torch.from_numpy(load_resized(path, cache))[None, None], IMAGE)
    with torch.no_grad():
        logits = model(x, head)[1][0]
    kind = model.head_specs[head].kind
    return (torch.softmax(logits, 0) if kind == "multiclass" else torch.sigmoid(logits)).numpy()


def test_probabilities_equal_the_model_on_each_image_with_labels_in_head_order(swin, folder):
    table = predict(swin, folder, image_size=IMAGE, cache_size=CACHE, batch_size=2, device="cpu", progress=False)
    images = [str(folder / "chest.png"), str(folder / "sub" / "knee.jpg"), str(folder / "sub" / "study1")]
    assert sorted(table["image"].unique()) == sorted(images)  # DICOM by its magic bytes; junk and .txt left out
    assert list(table.columns) == ["image", "head", "label", "kind", "probability"]
    assert len(table) == len(images) * 5
    for image in images:
        for spec in HEADS:
            rows = table[(table["image"] == image) & (table["head"] == spec.name)]
            assert tuple(rows["label"]) == spec.label_names and set(rows["kind"]) == {spec.kind}
            np.testing.assert_allclose(rows["probability"].to_numpy(), by_hand(swin, image, spec.name),
                                       rtol=1e-5, atol=1e-6)
    beta = table[table["head"] == "beta"].groupby("image")["probability"].sum()
    np.testing.assert_allclose(beta.to_numpy(), 1.0, rtol=1e-5)  # softmax over the classes


def test_head_module_returns_that_heads_logits(swin):
    x = torch.randn(3, 3, IMAGE, IMAGE)
    module = HeadModule(swin, "beta")
    assert isinstance(module, torch.nn.Module)
    with torch.no_grad():
        assert torch.equal(module(x), swin(x, "beta")[1]) and module(x).shape == (3, 2)
    assert module.label_names == ("b1", "b2") and module.kind == "multiclass"
    with pytest.raises(ArkxValueError, match="unknown head 'gamma'"):
        HeadModule(swin, "gamma")


@pytest.mark.parametrize("name", ["swin", "resnet"])
def test_heatmaps_are_written_for_positive_findings_only(name, request, folder, tmp_path):
    model = request.getfixturevalue(name)
    plain = predict(model, folder, image_size=IMAGE, cache_size=CACHE, device="cpu", progress=False)
    threshold = float(np.median(plain["probability"]))  # some findings above, some below
    table = predict(model, folder, image_size=IMAGE, cache_size=CACHE, device="cpu", progress=False,
                    cam_dir=tmp_path / "cams", cam_threshold=threshold)
    positive = table[table["probability"] >= threshold]
    assert 0 < len(positive) < len(table)
    stems = {str(folder / "chest.png"): "chest", str(folder / "sub" / "knee.jpg"): "knee",
             str(folder / "sub" / "study1"): "study1"}
    expected = {f"{stems[r.image]}__{r.head}__{r.label.replace(' ', '_')}.png" for r in positive.itertuples()}
    assert {p.name for p in (tmp_path / "cams").iterdir()} == expected
    assert set(table.loc[table["probability"] < threshold, "cam"]) == {""}
    spread = []
    for image, cam in zip(positive["image"], positive["cam"]):
        pixels = np.asarray(Image.open(cam)).astype(np.float32)
        assert pixels.shape == (IMAGE, IMAGE, 3)
        # take the grayscale image the model saw out of the blend: what is left is the colour-mapped heatmap
        seen = load_resized(image, CACHE).astype(np.float32)
        seen = torch.nn.functional.interpolate(torch.from_numpy(seen)[None, None], size=(IMAGE, IMAGE),
                                               mode="bilinear", antialias=True)[0, 0].numpy()
        heat = (pixels - (1 - CAM_ALPHA) * seen[..., None]) / CAM_ALPHA
        spread.append(float(heat.std(axis=(0, 1)).max()))
    # a map, not a flat colour over the image (Grad-CAM's map is empty where a layer holds no positive
    # evidence for a label, which a random model gives for some labels, so not for every one)
    assert max(spread) > 20.0, spread
    # the probabilities are the same with or without heatmaps, and no gradient is left on the model
    np.testing.assert_allclose(table["probability"], plain["probability"], rtol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_cam_without_the_package_is_one_line_naming_pip_install(swin, folder, tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_grad_cam(name, *args, **kwargs):
        if name.split(".")[0] == "pytorch_grad_cam":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_grad_cam)
    with pytest.raises(ArkxRuntimeError, match="pip install grad-cam"):
        predict(swin, folder, image_size=IMAGE, cam_dir=tmp_path / "cams", progress=False)
    assert not (tmp_path / "cams").exists()
    export = _export(swin, tmp_path)
    assert main(["--quiet", "predict", str(export), str(folder), "--cam", str(tmp_path / "cams")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install grad-cam" in err


def _export(model, tmp_path):
    """``model`` (the tiny Swin of tests.conftest) as an arkx export, its input size in the metadata only."""
    cfg = as_config(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), tmp_path), tmp_path / "run",
                                datasets=("shenzhen",), model=dict(projector_dim=24, backbone_kwargs=TINY_SWIN)))
    (tmp_path / "export").mkdir(exist_ok=True)
    return export_model(model, cfg, tmp_path / "export" / "teacher.safetensors")


def test_cli_predicts_from_an_export_at_its_recorded_size_to_json_and_csv(swin, folder, tmp_path, capsys):
    export = _export(swin, tmp_path)
    out = tmp_path / "preds.json"
    assert main(["--quiet", "predict", str(export), str(folder / "chest.png"), str(folder / "sub"),
                 "--heads", "beta", "--out", str(out), "--device", "cpu"]) == 0
    records = json.loads(out.read_text())
    assert isinstance(records, list) and set(records[0]) == {"image", "head", "label", "kind", "probability"}
    rows = pd.DataFrame(records)
    expected = predict(swin, folder, heads=["beta"], image_size=IMAGE, cache_size=round(IMAGE * 8 / 7), device="cpu",
                       progress=False)
    assert set(rows["head"]) == {"beta"} and len(rows) == 3 * 2
    # the export records input size 32 and no cache size: read at the default cache size, 32 x 8/7
    chest = rows[rows["image"] == str(folder / "chest.png")]
    np.testing.assert_allclose(chest["probability"], by_hand(swin, folder / "chest.png", "beta", cache=37), rtol=1e-5)
    pd.testing.assert_frame_equal(rows.sort_values(["image", "label"]).reset_index(drop=True),
                                  expected.sort_values(["image", "label"]).reset_index(drop=True), rtol=1e-5)
    capsys.readouterr()
    assert main(["--quiet", "predict", str(export), str(folder / "chest.png"), "--device", "cpu"]) == 0
    printed = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert list(printed["label"]) == ["a1", "Pleural Effusion", "a3", "b1", "b2"]


def test_bad_inputs_are_refused_in_one_line(swin, folder, tmp_path):
    with pytest.raises(ArkxValueError, match="unknown head"):
        predict(swin, folder, heads=["gamma"], image_size=IMAGE, progress=False)
    with pytest.raises(ArkxValueError, match=r"\.csv or \.json"):
        predict(swin, folder, image_size=IMAGE, out=tmp_path / "p.parquet", progress=False)
    with pytest.raises(arkx.errors.ArkxFileNotFoundError, match="no image or folder"):
        predict(swin, tmp_path / "missing.png", image_size=IMAGE, progress=False)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(arkx.data.io.ImageReadError, match="broken.png"):  # a named file must be readable
        predict(swin, tmp_path / "broken.png", image_size=IMAGE, progress=False)


class BrightnessStage(torch.nn.Module):
    """A feature map whose channel 0 is the image's brightness and channel 1 its darkness (4x4 pooled),
    given as NHWC like a timm Swin stage or NCHW like a CNN stage."""

    def __init__(self, nhwc: bool):
        super().__init__()
        self.nhwc = nhwc
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        gray = torch.nn.functional.avg_pool2d(x[:, :1], 4) * self.scale
        maps = torch.cat([torch.relu(gray), torch.relu(-gray)], dim=1)
        return maps.permute(0, 2, 3, 1) if self.nhwc else maps


class BrightnessBackbone(torch.nn.Module):
    """The smallest timm-like backbone (``feature_info``, ``num_features``) whose evidence sits where it is bright."""

    num_features = 2

    def __init__(self, nhwc: bool):
        super().__init__()
        self.stage = BrightnessStage(nhwc)
        self.feature_info = [dict(module="stage", num_chs=2, reduction=4)]

    def forward(self, x):
        maps = self.stage(x)
        return maps.mean(dim=(1, 2)) if self.stage.nhwc else maps.mean(dim=(2, 3))


@pytest.mark.parametrize("nhwc", [True, False], ids=["swin-like NHWC", "cnn NCHW"])
def test_the_heatmap_peaks_where_the_evidence_is(nhwc):
    from arkx.transfer.predict import grad_cam

    model = ArkModel(BrightnessBackbone(nhwc), [Task("h", "multilabel", ("bright",))], projector="none").eval()
    with torch.no_grad():  # the finding is "bright": brightness for, darkness against
        model.heads["h"].weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.heads["h"].bias.zero_()
    image = np.full((IMAGE, IMAGE), 40, dtype=np.uint8)
    image[4:12, 20:28] = 230  # a bright square in the top-right quadrant only
    x = eval_view(torch.from_numpy(image)[None, None], IMAGE)
    cam = grad_cam(model, "h", x, [0])[0]
    assert cam.shape == (IMAGE, IMAGE)
    half = IMAGE // 2
    quadrants = {"top-left": cam[:half, :half], "top-right": cam[:half, half:],
                 "bottom-left": cam[half:, :half], "bottom-right": cam[half:, half:]}
    means = {name: float(q.mean()) for name, q in quadrants.items()}
    assert max(means, key=means.get) == "top-right", means
    row, col = np.unravel_index(np.argmax(cam), cam.shape)
    assert 4 <= row < 12 and 20 <= col < 28


def test_heatmap_names_stay_apart_when_images_share_a_stem(tmp_path):
    from arkx.transfer.predict import _cam_stems

    paths = [tmp_path / "study1" / "image.dcm", tmp_path / "study2" / "image.dcm", tmp_path / "study2" / "lateral.png"]
    for p in paths:
        p.parent.mkdir(exist_ok=True)
        p.touch()
    assert list(_cam_stems(paths).values()) == ["study1_image_dcm", "study2_image_dcm", "lateral"]
