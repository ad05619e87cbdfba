"""Zero-shot transfer: the AUC of a pretrained head's mapped label on a target dataset equals the AUC of that
label's probability computed by hand image by image; the map decides which output scores which label; names
outside the head or the dataset are refused before any image is read; shipped maps name real labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import arkx
from arkx.api import as_config, export_model
from arkx.cli import main
from arkx.data.adapters.chexpert import CHEXPERT_LABELS
from arkx.data.adapters.nih14 import NIH14_LABELS
from arkx.data.adapters.rsna import RSNA_CLASSES
from arkx.data.adapters.vindr_cxr import ALL_LABELS, GLOBAL_LABELS
from arkx.data.loaders import prepare_images
from arkx.data.transforms import eval_view
from arkx.errors import ArkxValueError
from arkx.models.ark import build_model
from arkx.tasks import Task
from arkx.models.released import AUTHORS_DATASETS
from arkx.transfer.label_maps import LABEL_MAPS, match_labels
from arkx.transfer.zeroshot import zeroshot
from tests.conftest import tiny_model
from tests.reliability.conftest import tiny_config

IMAGE, CACHE = 32, 36


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("zeroshot-synth")
    return arkx.synthesize(out, seed=2, n=40, size=40, datasets=["nih14"])["nih14"]


@pytest.fixture(scope="module")
def model():
    """CheXpert and RSNA heads; label j of the CheXpert head reads embedding dimension j (set by hand), so
    every label scores the images differently."""
    m = tiny_model([Task("chexpert", "multilabel", CHEXPERT_LABELS),
                    Task("rsna", "multiclass", RSNA_CLASSES)], seed=4).eval()
    with torch.no_grad():
        head = m.heads["chexpert"]
        head.weight.zero_()
        head.weight[:, :len(CHEXPERT_LABELS)] = 5.0 * torch.eye(len(CHEXPERT_LABELS))
        head.bias.zero_()
    return m


def probabilities_by_hand(model, head, root, cache_dir, split="test"):
    """``(probabilities [N, labels], nih labels [N, 14])``: each cached test image alone through the model."""
    records = arkx.read_dataset("nih14", root)
    images = prepare_images(records, cache_dir, CACHE, progress=False)
    probs, labels = [], []
    with torch.no_grad():
        for row in np.flatnonzero(records.images["split"].to_numpy() == split):
            x = eval_view(torch.from_numpy(np.array(images[row]))[None, None], IMAGE)
            logits = model(x, head)[1][0]
            probs.append((logits.softmax(0) if model.head_specs[head].kind == "multiclass" else logits.sigmoid())
                         .numpy())
            labels.append(records.labels[row])
    return np.array(probs), np.array(labels)


def run(model, root, tmp_path, head="chexpert", **kwargs):
    return zeroshot(model, head, "nih14", root, image_size=IMAGE, cache_size=CACHE, cache_dir=tmp_path / "cache",
                    device="cpu", progress=False, batch_size=4, **kwargs)


def test_auc_equals_the_hand_computed_auc_of_the_mapped_probability(model, nih_root, tmp_path):
    result = run(model, nih_root, tmp_path)  # the shipped chexpert_to_nih14 map
    probs, labels = probabilities_by_hand(model, "chexpert", nih_root, tmp_path / "cache")
    pairs = dict(result.pairs)
    assert pairs["Effusion"] == "Pleural Effusion" and len(pairs) == 7
    assert len(result.ids) == len(labels) == 9
    for target, source in result.pairs:
        y = labels[:, NIH14_LABELS.index(target)]
        expected = roc_auc_score(y, probs[:, CHEXPERT_LABELS.index(source)])
        assert result.auc.as_dict()[target] == pytest.approx(expected, abs=1e-9), target
    assert len(set(np.round(result.auc.per_label, 6))) > 1  # the labels really are scored differently


def test_the_map_decides_which_output_scores_which_label(model, nih_root, tmp_path):
    shipped = run(model, nih_root, tmp_path, label_map={"Effusion": "Pleural Effusion"})
    swapped = run(model, nih_root, tmp_path, label_map={"Effusion": "Atelectasis"})
    probs, labels = probabilities_by_hand(model, "chexpert", nih_root, tmp_path / "cache")
    y = labels[:, NIH14_LABELS.index("Effusion")]
    pleural = probs[:, CHEXPERT_LABELS.index("Pleural Effusion")]
    assert shipped.auc.per_label[0] == pytest.approx(roc_auc_score(y, pleural))
    assert swapped.auc.per_label[0] == pytest.approx(roc_auc_score(y, probs[:, CHEXPERT_LABELS.index("Atelectasis")]))
    assert shipped.auc.per_label[0] != pytest.approx(swapped.auc.per_label[0])


def test_a_multiclass_head_scores_with_the_softmax_probability_of_the_mapped_class(model, nih_root, tmp_path):
    result = run(model, nih_root, tmp_path, head="rsna", label_map={"Pneumonia": "Lung Opacity", "Mass": "Normal"})
    probs, labels = probabilities_by_hand(model, "rsna", nih_root, tmp_path / "cache")
    for j, (target, source) in enumerate(result.pairs):
        np.testing.assert_allclose(result.scores[:, j], probs[:, RSNA_CLASSES.index(source)], rtol=1e-5, atol=1e-6)
        expected = roc_auc_score(labels[:, NIH14_LABELS.index(target)], probs[:, RSNA_CLASSES.index(source)])
        assert result.auc.per_label[j] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("kwargs,named,listed", [
    (dict(label_map={"Effusions": "Pleural Effusion"}), "'Effusions'", "Pleural_Thickening"),
    (dict(label_map={"Effusion": "Pleural Effusions"}), "'Pleural Effusions'", "Support Devices"),
    (dict(head="shenzhen"), "'shenzhen'", "chexpert"),
    (dict(label_map="chexpert_to_nowhere"), "'chexpert_to_nowhere'", "chexpert_to_nih14"),
    (dict(head="rsna"), "'rsna_to_nih14'", "chexpert_to_nih14"),  # no shipped map for this pair
])
def test_unknown_names_are_refused_before_any_image_is_read(model, nih_root, tmp_path, kwargs, named, listed):
    with pytest.raises(ArkxValueError) as err:
        run(model, nih_root, tmp_path, **kwargs)
    message = str(err.value)
    assert named in message and listed in message and "\n" not in message
    assert not (tmp_path / "cache").exists()


def test_a_yaml_map_file_is_read(model, nih_root, tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("labels:\n  Edema: Edema\n  Effusion: [Pleural effusion, Pleural Effusion]\n")
    result = run(model, nih_root, tmp_path, label_map=path)
    assert result.pairs == [("Edema", "Edema"), ("Effusion", "Pleural Effusion")]


# every shipped map names labels its source head and its target adapter really have
_HEADS = {"chexpert": CHEXPERT_LABELS, "mimic_cxr": CHEXPERT_LABELS, "nih14": NIH14_LABELS, "rsna": RSNA_CLASSES,
          "vindr_cxr": GLOBAL_LABELS, "shenzhen": ("Tuberculosis",)}
_TARGETS = {**_HEADS, "vindr_cxr_all28": ALL_LABELS}
_AUTHORS = {name: labels for name, _, labels in AUTHORS_DATASETS.values()}


@pytest.mark.parametrize("name", sorted(LABEL_MAPS))
def test_shipped_maps_name_real_labels_of_arkx_and_authors_heads(name):
    source, target = name.split("_to_")
    for head_labels in (_HEADS[source], _AUTHORS[source]):
        pairs = match_labels(LABEL_MAPS[name], head_labels, _TARGETS[target], source, target)
        assert len(pairs) == len(LABEL_MAPS[name])


def test_cli_writes_the_per_label_table(nih_root, tmp_path, capsys):
    cfg = as_config(tiny_config(dict.fromkeys(("chexpert", "shenzhen", "rsna"), nih_root), tmp_path / "run",
                                datasets=("shenzhen",)))
    torch.manual_seed(0)
    model = build_model(cfg.model, [Task("chexpert", "multilabel", CHEXPERT_LABELS)])
    export = export_model(model, cfg, tmp_path / "teacher.safetensors")
    out = tmp_path / "zs.csv"
    assert main(["--quiet", "zeroshot", str(export), "--head", "chexpert", "--type", "nih14", "--root",
                 str(nih_root), "--out", str(out), "--device", "cpu", "--cache-dir", str(tmp_path / "c")]) == 0
    import pandas as pd

    frame = pd.read_csv(out)
    assert list(frame["target_label"])[:3] == ["Atelectasis", "Cardiomegaly", "Effusion"]
    assert frame.loc[frame["target_label"] == "Effusion", "source_label"].item() == "Pleural Effusion"
    assert frame["auc"].between(0, 1).all()
    assert "Pleural Effusion" in capsys.readouterr().out
    assert main(["--quiet", "zeroshot", str(export), "--head", "chexpert", "--type", "nih14", "--root",
                 str(nih_root), "--map", "nih14_to_chexpert", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "c")]) == 2  # a map for the other direction: refused
