"""Fine-tuning for segmentation and detection: the same loop as classification, through the task kinds.

Each learning test trains a tiny CNN from scratch on a synthetic dataset in its provider's layout and checks
the test split against a baseline that needs no learning (a constant mask; random boxes), so it fails when
the targets, the geometry, the loss or the head are wrong, not only when the code crashes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import yaml

import arkx
from arkx.cli import main
from arkx.errors import ArkxError
from arkx.evaluation.detection import mean_average_precision
from arkx.evaluation.segmentation import dice_iou
from arkx.tasks import Task
from tests.conftest import TINY_SWIN, tiny_model
from tests.reliability.conftest import tiny_config

SIZE = 48
TINY_CNN = dict(backbone="resnet18", backbone_kwargs=dict(layers=[1, 1, 1, 1], channels=[8, 16, 16, 32]))
SCR = ("Right Lung", "Left Lung", "Heart", "Right Clavicle", "Left Clavicle")
ORGANS = ("Right Lung", "Left Lung", "Heart")  # the clavicles are 2-3 px wide at 48 px: not learnt in this budget


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return arkx.synthesize(tmp_path_factory.mktemp("ft-tasks"), seed=0, n=60, size=SIZE,
                           datasets=["jsrt", "montgomery", "shenzhen"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ft-tasks-cache")


def settings(cache, **kw) -> dict:
    out = dict(TINY_CNN, image_size=SIZE, cache_size=SIZE, batch_size=8, lr=1e-2, device="cpu", cache_dir=cache,
               progress=False, patience=None, seed=0)
    out.update(kw)
    return out


def test_segmentation_finetune_learns_the_organs(roots, cache, tmp_path):
    result = arkx.finetune("scratch", "jsrt", roots["jsrt"], out=tmp_path / "seg", task="segmentation", epochs=24,
                           **settings(cache))
    assert result.task == Task("jsrt", "segmentation", SCR) and result.metric == "dice"
    assert list(result.test_per_label) == list(SCR)
    # what a constant "everything is this organ" mask scores on the same test images
    data = arkx.read_dataset("jsrt", roots["jsrt"]).split("test")
    masks = _test_masks(result.model, roots["jsrt"], cache)
    constant = dice_iou(torch.ones_like(masks, dtype=torch.float32), masks, SCR).per_class_dice
    assert len(data) == masks.shape[0]
    for organ in ORGANS:
        assert result.test_per_label[organ] > 0.7, result.test_per_label
        assert result.test_per_label[organ] > constant[organ] + 0.4, (organ, constant)
    rows = list(csv.DictReader(open(result.metrics_path)))
    assert [float(r["val_mean_dice"]) for r in rows] == pytest.approx(result.val_history, abs=1e-6)
    assert "val_dice_Heart" in rows[0]

    # the saved best weights rebuild the same segmenter (decoder options included)
    loaded = arkx.load_model(result.best_path)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = result.model.run_task(x, result.task)[1]
        np.testing.assert_allclose(loaded.run_task(x, result.task)[1], expected, atol=1e-5)


def _test_masks(model, root, cache) -> torch.Tensor:
    """The test split's masks at the model input size, as the fine-tuning evaluation sees them."""
    from arkx.data.geometry import resize_batch
    from arkx.data.loaders import PreparedDataset, make_loader, prepare_images

    records = arkx.read_dataset("jsrt", root)
    data = PreparedDataset("jsrt", records, prepare_images(records, cache, SIZE, progress=False))
    loader = make_loader(data, "test", 64, 0, train=False, targets=("masks",))
    return torch.cat([resize_batch(b, SIZE).masks for b in loader])


def test_detection_finetune_beats_random_boxes_on_boxes_derived_from_masks(roots, cache, tmp_path):
    # Montgomery ships lung masks only: its detection task is the lungs' boxes, derived from the masks
    result = arkx.finetune("scratch", "montgomery", roots["montgomery"], out=tmp_path / "det", task="detection",
                           epochs=10, **settings(cache, lr=3e-3))
    assert result.task == Task("montgomery", "detection", ("Left Lung", "Right Lung")) and result.metric == "map40"
    assert set(result.test_details) == {"map50", "map50_95"}
    random_map = _random_boxes_map40(roots["montgomery"], cache)
    assert random_map < 0.1
    assert result.test_score > 0.5 and result.test_score > random_map + 0.4, (result.test_score, random_map)


def _random_boxes_map40(root, cache, per_image: int = 20) -> float:
    from arkx.data.geometry import resize_batch
    from arkx.data.loaders import PreparedDataset, make_loader, prepare_images

    records = arkx.read_dataset("montgomery", root)
    data = PreparedDataset("montgomery", records, prepare_images(records, cache, SIZE, progress=False))
    targets = [dict(boxes=b, labels=lab) for batch in make_loader(data, "test", 64, 0, train=False, targets=("boxes",))
               for b, lab in zip(resize_batch(batch, SIZE).boxes, batch.box_labels)]
    g = torch.Generator().manual_seed(0)
    predictions = []
    for _ in targets:
        corners = torch.rand(per_image, 2, 2, generator=g) * SIZE
        boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
        predictions.append(dict(boxes=boxes, scores=torch.rand(per_image, generator=g),
                                labels=torch.randint(0, 2, (per_image,), generator=g)))
    return mean_average_precision(predictions, targets, ("Left Lung", "Right Lung")).map40


@pytest.fixture(scope="module")
def export(tmp_path_factory, roots):
    """A tiny Ark model (a Shenzhen classification head) exported as a run exports its teacher."""
    from arkx.api import as_config, export_model

    folder = tmp_path_factory.mktemp("ft-tasks-export")
    cfg = as_config(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), roots["shenzhen"]), folder / "run",
                                datasets=("shenzhen",), model=dict(backbone_kwargs=TINY_SWIN, projector_dim=24)))
    model = tiny_model([Task("shenzhen", "multilabel", ("Tuberculosis",))], seed=7)
    return export_model(model, cfg, folder / "teacher.safetensors")


def test_head_mode_trains_the_new_decoder_and_head_only_from_a_pretrained_run(export, roots, cache, tmp_path):
    from safetensors.torch import load_file

    result = arkx.finetune(f"run:{export}", "jsrt", roots["jsrt"], out=tmp_path / "head", task="segmentation",
                           mode="head", epochs=1, image_size=32, cache_size=36, batch_size=8, lr=1e-2, device="cpu",
                           cache_dir=cache, progress=False)
    pretrained = load_file(str(export))
    state = result.model.state_dict()
    backbone = [k for k in pretrained if k.startswith(("backbone.", "projector."))]
    assert backbone and all(torch.equal(state[k], pretrained[k]) for k in backbone)  # frozen: unchanged
    assert "heads.shenzhen.weight" not in state  # the pretraining head was removed
    groups = result.model.parameter_groups()
    assert groups["seg_decoder"] and groups["seg_heads/jsrt"]
    fresh = tiny_model([], seed=0)
    fresh.add_task(result.task)  # what an untrained decoder + head would hold
    assert any(not torch.equal(state[k], v) for k, v in fresh.state_dict().items() if k.startswith("seg_"))


def test_cli_runs_a_config_file_with_options_over_it(roots, cache, tmp_path, capsys):
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(dict(init="released:nowhere.pth", type="montgomery", root=str(roots["montgomery"]),
                                          task="detection", epochs=1, image_size=SIZE, cache_size=SIZE, batch_size=8,
                                          cache_dir=str(cache), device="cpu", **TINY_CNN,
                                          branch_options=dict(det_encoder=dict(d_model=32, n_layers=1),
                                                              det_decoder=dict(num_queries=7)))))
    assert main(["--quiet", "finetune", str(config), "--from", "scratch", "--out", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("detection montgomery: best epoch 1 of 1 (val mean mAP40 ") and "map50_95" in printed
    written = yaml.safe_load((tmp_path / "cli" / "finetune.yaml").read_text())
    assert written["init"] == "scratch" and written["dataset_type"] == "montgomery"
    assert written["resolved_task"] == dict(name="montgomery", kind="detection", label_names=["Left Lung", "Right Lung"])
    loaded = arkx.load_model(tmp_path / "cli" / "best.safetensors")  # the configured detector sizes, rebuilt
    assert loaded.det_encoder.d_model == 32 and len(loaded.det_encoder.layers) == 1
    assert loaded.det_heads["montgomery"].num_queries == 7


def test_a_typo_in_the_config_file_names_the_key(roots, tmp_path, capsys):
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(dict(init="scratch", type="montgomery", root=str(roots["montgomery"]),
                                          out=str(tmp_path / "o"), epoch=3)))
    assert main(["finetune", str(config)]) != 0
    err = capsys.readouterr().err
    assert "epoch" in err and "Extra inputs are not permitted" in err and "\n" not in err.strip()


def test_a_task_the_dataset_does_not_have_is_a_one_line_error(roots, cache, tmp_path):
    with pytest.raises(ArkxError, match=r"no segmentation targets to fine-tune on \(the adapter read: classification\)"):
        arkx.finetune("scratch", "shenzhen", roots["shenzhen"], out=tmp_path / "x", task="segmentation", epochs=1,
                      **settings(cache))


def test_the_pretraining_heads_left_out_are_named(export, roots, cache, tmp_path, caplog):
    from arkx.transfer.finetune import FinetuneConfig, load_initial_model, parse_init

    cfg = FinetuneConfig(init=f"run:{export}", dataset_type="jsrt", root=roots["jsrt"], out=tmp_path)
    with caplog.at_level("INFO", logger="arkx.transfer"):
        model = load_initial_model(parse_init(cfg.init), cfg).model
    assert model.tasks() == []
    assert "its pretraining heads are not used: shenzhen (multilabel)" in caplog.text
