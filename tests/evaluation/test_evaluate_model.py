"""``arkx evaluate`` / ``arkx.evaluate`` on a tiny model and synthetic NIH data: the table's AUROC is the
classification kind's own AUC of the same predictions, every label has its four metrics and the means, the
threshold rule is stated, the CLI writes the tidy CSV and prints the table, a missing head is one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import arkx
from arkx.api import as_config, export_model
from arkx.cli import main
from arkx.data.adapters.nih14 import NIH14_LABELS
from arkx.errors import ArkxValueError
from arkx.evaluation.metrics import task_auc
from arkx.evaluation.scoring import CLASSIFICATION_METRICS, MEAN_LABEL, TABLE_COLUMNS
from arkx.models.ark import build_model
from arkx.tasks import Task
from tests.conftest import tiny_model
from tests.reliability.conftest import tiny_config

IMAGE, CACHE = 32, 36


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory):
    return arkx.synthesize(tmp_path_factory.mktemp("eval-synth"), seed=3, n=60, size=40, datasets=["nih14"])["nih14"]


def _scoring_model():
    """A tiny NIH model whose label j reads embedding dimension j (set by hand), so labels score images differently."""
    model = tiny_model([Task("nih14", "multilabel", NIH14_LABELS)], seed=1).eval()
    with torch.no_grad():
        head = model.heads["nih14"]
        head.weight.zero_()
        head.weight[:, :len(NIH14_LABELS)] = 5.0 * torch.eye(len(NIH14_LABELS))
        head.bias.zero_()
    return model


def test_evaluate_reports_every_label_with_cis_and_matches_the_kinds_auc(nih_root, tmp_path):
    model = _scoring_model()
    result = arkx.evaluate(model, [f"nih14={nih_root}"], image_size=IMAGE, cache_size=CACHE,
                           cache_dir=tmp_path / "cache", bootstrap=30, device="cpu", progress=False, bias=True,
                           bias_folds=2, longtail=True, out=tmp_path / "ev.csv")
    table = result.table
    assert list(table.columns[:len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert set(table["metric"]) == set(CLASSIFICATION_METRICS)
    assert len(table) == len(CLASSIFICATION_METRICS) * (len(NIH14_LABELS) + 1)
    test = result.predictions["nih14", "test"]
    expected = task_auc("multilabel", test.scores, test.targets, NIH14_LABELS)
    mean = table[(table["label"] == MEAN_LABEL) & (table["metric"] == "auroc")].iloc[0]
    assert mean.value == pytest.approx(expected.mean)
    val = result.predictions["nih14", "val"]
    assert len(val.scores) and not np.allclose(np.std(test.scores, axis=0), 0)  # the scores vary: AUCs mean something
    per_label = table[table["metric"] == "auroc"].set_index("label")["value"].drop(MEAN_LABEL)
    np.testing.assert_allclose(per_label.to_numpy(), expected.per_label)
    assert (table.loc[table["metric"] == "sensitivity", "threshold_rule"] == "max-f1").all()
    assert (table["n_resamples"] == 30).all() and (table["undefined_resamples"] <= 30).all()
    assert not result.fnr.empty and set(result.fnr["attribute"]) <= {"sex", "age"}
    assert set(result.longtail["group"]) == {"head", "medium", "tail"}
    assert (tmp_path / "ev.csv").is_file() and (tmp_path / "ev.fnr.csv").is_file()
    with pytest.raises(ArkxValueError, match="no head"):
        arkx.evaluate(model, [f"chexpert={nih_root}"], image_size=IMAGE, cache_dir=tmp_path / "cache",
                      bootstrap=0, device="cpu", progress=False)


def test_cli_prints_the_table_and_writes_the_tidy_csv(nih_root, tmp_path, capsys):
    cfg = as_config(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), nih_root), tmp_path / "run",
                                datasets=("shenzhen",)))
    model = build_model(cfg.model, [Task("nih14", "multilabel", NIH14_LABELS)])
    export = export_model(model, cfg, tmp_path / "teacher.safetensors")
    out = tmp_path / "eval.csv"
    assert main(["--quiet", "evaluate", str(export), "--datasets", f"nih14={nih_root}", "--threshold", "youden",
                 "--bootstrap", "20", "--seed", "3", "--device", "cpu", "--cache-dir", str(tmp_path / "c"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "youden threshold chosen on val" in printed and "20 patient resamples" in printed
    frame = pd.read_csv(out)
    assert set(frame["label"]) == set(NIH14_LABELS) | {MEAN_LABEL}
    assert (frame.loc[frame["metric"] == "sensitivity", "threshold_rule"] == "youden").all()
    defined = frame.dropna(subset=["ci_low"])
    assert len(defined) and ((defined["ci_low"] <= defined["value"] + 1e-12)
                             & (defined["value"] <= defined["ci_high"] + 1e-12)).all()
    assert np.isfinite(frame.loc[frame["metric"] == "auroc", "value"]).any()


def test_segmentation_and_detection_reports_use_the_existing_metrics_with_patient_cis():
    from arkx.evaluation.detection import mean_average_precision
    from arkx.evaluation.runner import detection_report, segmentation_report
    from arkx.evaluation.segmentation import dice_iou

    rng = np.random.default_rng(0)
    masks = rng.random((12, 2, 8, 8)) < 0.5
    masks[:8, 1] = False  # the heart counts in 4 images only (empty ground truth is left out): macro != pooled mean
    probabilities = np.where(rng.random(masks.shape) < 0.8, masks, ~masks).astype(np.float32)
    dice = dice_iou(probabilities, masks, ("lung", "heart")).dice
    patients = np.repeat(np.arange(4), 3)
    seg = segmentation_report(dice, patients, ("lung", "heart"), dataset="d", head="d", n_resamples=50)
    expected = dice_iou(probabilities, masks, ("lung", "heart"))
    assert seg.set_index("label")["value"].to_dict() == pytest.approx(
        {MEAN_LABEL: expected.mean_dice, **expected.per_class_dice})
    assert (seg["ci_low"] <= seg["value"] + 1e-12).all() and (seg["n_patients"] == 4).all()

    targets = [dict(boxes=np.array([[2.0, 2, 10, 10]]), labels=np.array([i % 2])) for i in range(6)]
    predictions = [dict(boxes=np.array([[2.0, 2, 10 + i, 10]]), scores=np.array([0.9]), labels=np.array([i % 2]))
                   for i in range(6)]
    det = detection_report(predictions, targets, np.arange(6) // 2, ("a", "b"), dataset="d", head="d", n_resamples=20)
    point = mean_average_precision(predictions, targets, ("a", "b"))
    values = det.set_index(["label", "metric"])["value"]
    assert values[MEAN_LABEL, "map40"] == pytest.approx(point.map40)
    assert values[MEAN_LABEL, "map50_95"] == pytest.approx(point.map50_95)
    assert values["b", "ap40"] == pytest.approx(point.per_class_ap40["b"])
    assert (det["n_resamples"] == 20).all()


@pytest.mark.slow
def test_evaluate_scores_segmentation_and_detection_heads_with_patient_cis(tmp_path):
    roots = arkx.synthesize(tmp_path / "synth", seed=0, n=30, size=40, datasets=["jsrt", "montgomery"])
    seg = next(t for t in arkx.read_dataset("jsrt", roots["jsrt"]).tasks() if t.kind == "segmentation")
    det = next(t for t in arkx.read_dataset("montgomery", roots["montgomery"]).tasks() if t.kind == "detection")
    model = tiny_model([seg, det], seed=0).eval()
    result = arkx.evaluate(model, [f"jsrt={roots['jsrt']}", f"montgomery={roots['montgomery']}"], image_size=IMAGE,
                           cache_size=CACHE, cache_dir=tmp_path / "cache", bootstrap=10, device="cpu", progress=False)
    table = result.table
    assert set(table.loc[table["dataset"] == "jsrt", "metric"]) == {"dice"}
    assert set(table.loc[table["task"] == "detection", "metric"]) == {"map40", "map50", "map50_95", "ap40"}
    assert set(table.loc[table["metric"] == "dice", "label"]) == set(seg.label_names) | {MEAN_LABEL}
    assert (table["n_resamples"] == 10).all() and table["value"].between(0, 1).all()


def test_cli_compares_two_models_by_a_paired_patient_bootstrap(nih_root, tmp_path, capsys):
    cfg = as_config(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), nih_root), tmp_path / "run",
                                datasets=("shenzhen",)))
    exports = []
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        model = build_model(cfg.model, [Task("nih14", "multilabel", NIH14_LABELS)])
        exports.append(export_model(model, cfg, tmp_path / f"{name}.safetensors"))
    out = tmp_path / "paired.csv"
    common = ["--datasets", f"nih14={nih_root}", "--bootstrap", "30", "--device", "cpu", "--cache-dir",
              str(tmp_path / "c"), "--out", str(out)]
    assert main(["--quiet", "evaluate", str(exports[0]), "--baseline", str(exports[1]), *common]) == 0
    assert "paired patient bootstrap" in capsys.readouterr().out
    frame = pd.read_csv(out).set_index("label")
    defined = frame.dropna(subset=["diff"])
    np.testing.assert_allclose(defined["diff"], defined["value"] - defined["baseline_value"], atol=1e-9)
    assert len(defined) and (frame["n_resamples"] == 30).all() and frame["p_value"].dropna().between(0, 1).all()
    assert (defined["diff"].abs() > 1e-6).any()  # two different models: the baseline's own scores are used
