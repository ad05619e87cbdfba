"""The detection kind: targets from a batch's pixel boxes on its grid, predictions in input pixels, mAP score;
and the registry every kind goes through."""

from __future__ import annotations

import pytest
import torch

from arkx.data.batch import Batch
from arkx.errors import ArkxError
from arkx.models.ark import ArkModel
from arkx.models.backbones import create_backbone
from arkx.tasks import Task, TaskScore, get_kind
from arkx.tasks.detection import DetectionKind

TINY_CNN = dict(layers=(1, 1, 1, 1), channels=(8, 16, 16, 32))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread
TASK = Task("toy", "detection", ("a", "b"))


def tiny_detector() -> ArkModel:
    torch.manual_seed(0)
    model = ArkModel(create_backbone("resnet18", **TINY_CNN), [], projector_dim=8,
                     branch_options=dict(det_encoder=dict(d_model=16, n_layers=1), det_decoder=dict(num_queries=5,
                                                                                                 n_layers=2)))
    model.add_task(TASK)
    return model


def test_registry_gives_each_kind_its_plug_in_and_refuses_unknown_ones():
    assert isinstance(get_kind("detection"), DetectionKind)
    kind = get_kind("detection")
    assert (kind.head_attr, kind.needs_pyramid, kind.loader_targets) == ("det_heads", True, ("boxes",))
    assert [get_kind(k).head_attr for k in ("multilabel", "multiclass", "segmentation")] == ["heads", "heads",
                                                                                               "seg_heads"]
    with pytest.raises(ValueError, match="unknown task kind 'keypoints'"):
        get_kind("keypoints")
    with pytest.raises(ValueError, match="unknown kind 'keypoints'"):
        Task("toy", "keypoints", ("x",))


def test_targets_are_the_batch_boxes_normalised_on_the_batch_grid():
    boxes = [torch.tensor([[8.0, 16.0, 24.0, 48.0]]), torch.zeros((0, 4))]
    batch = Batch(images=torch.zeros(2, 1, 96, 96, dtype=torch.uint8), rows=torch.arange(2), boxes=boxes,
                  box_labels=[torch.tensor([1]), torch.zeros(0, dtype=torch.int64)], target_size=64)
    targets = get_kind("detection").batch_targets(batch)
    # on a 64-px grid (not the 96-px images'): centre (16, 32) -> (0.25, 0.5), size (16, 32) -> (0.25, 0.5)
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[0.25, 0.5, 0.25, 0.5]]))
    assert targets[0]["labels"].tolist() == [1] and targets[1]["boxes"].shape == (0, 4)
    with pytest.raises(ArkxError, match="the batch has no boxes"):
        get_kind("detection").batch_targets(Batch(images=batch.images, rows=batch.rows))


def test_model_output_loss_predictions_and_score():
    model = tiny_detector()
    x = torch.randn(2, 3, 40, 40)
    kind = get_kind("detection")
    targets = kind.batch_targets(Batch(images=torch.zeros(2, 1, 40, 40, dtype=torch.uint8), rows=torch.arange(2),
                                       boxes=[torch.tensor([[4.0, 4.0, 20.0, 30.0]]), torch.zeros((0, 4))],
                                       box_labels=[torch.tensor([0]), torch.zeros(0, dtype=torch.int64)]))
    features, output = model.train().run_task(x, TASK, targets)  # training: targets reach the head
    assert features.pyramid is not None and output["image_size"] == (40, 40)
    assert output["logits"].shape == (2, 5, 2) and len(output["aux"]) == 1
    assert {"enc", "dn"} <= set(output)  # the two-stage proposals and the denoising part, for the loss
    loss = kind.loss(output, targets)
    loss.backward()
    head = model.det_heads["toy"]
    for part in (head.class_heads, head.box_heads, head.proposals, head.label_embedding):
        assert all(p.grad is not None for p in part.parameters())  # the authors' defect: never again
    assert all(p.grad is not None for p in model.det_encoder.parameters())
    _, output = model.eval().run_task(x, TASK)  # inference: the keys evaluation has always read
    assert set(output) == {"logits", "boxes", "aux", "image_size"}
    predictions = kind.predict(output)
    assert len(predictions) == 2 and predictions[0]["boxes"].shape[-1] == 4
    top = predictions[0]["boxes"]
    assert float(top.max()) <= 40.0 and float(top.max()) > 1.0  # in input pixels, not normalised
    # a perfect prediction of the one box scores mAP40 1 (class b has no ground truth: left out)
    perfect = [dict(boxes=torch.tensor([[4.0, 4.0, 20.0, 30.0]]), scores=torch.tensor([0.9]), labels=torch.tensor([0])),
               dict(boxes=torch.zeros((0, 4)), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.int64))]
    eval_targets = [dict(boxes=torch.tensor([[4.0, 4.0, 20.0, 30.0]]), labels=torch.tensor([0])),
                    dict(boxes=torch.zeros((0, 4)), labels=torch.zeros(0, dtype=torch.int64))]
    score = kind.score([perfect], [eval_targets], TASK)  # per-batch lists, as the evaluation loop gives them
    assert isinstance(score, TaskScore) and score.metric == "map40"
    assert score.mean == pytest.approx(1.0) and score.per_label["a"] == pytest.approx(1.0)
    assert set(score.details) == {"map50", "map50_95"}


def test_the_detector_sizes_are_recorded_so_the_model_rebuilds():
    model = tiny_detector()
    config = model.branch_config()
    assert config["det_encoder"]["d_model"] == 16 and config["det_decoder"]["num_queries"] == 5
    # the defaults used are recorded too: a later change of the defaults cannot break loading this model
    assert config["det_encoder"]["n_heads"] == 8 and config["det_decoder"]["n_points"] == 4
    assert {k: config["det_decoder"][k] for k in ("two_stage", "dn_number", "dn_label_noise", "dn_box_noise",
                                                  "anchor_side")} == dict(two_stage=True, dn_number=20,
                                                                          dn_label_noise=0.5, dn_box_noise=0.4,
                                                                          anchor_side=0.05)
    rebuilt = ArkModel(create_backbone("resnet18", **TINY_CNN), [TASK], projector_dim=8, branch_options=config)
    rebuilt.load_state_dict(model.state_dict())  # strict: same architecture
    # a single-stage decoder without denoising, chosen by options, is recorded and rebuilt as such
    config["det_decoder"].update(two_stage=False, dn_number=0)
    single = ArkModel(create_backbone("resnet18", **TINY_CNN), [TASK], projector_dim=8, branch_options=config)
    assert not hasattr(single.det_heads["toy"], "proposals") and hasattr(single.det_heads["toy"], "reference_logits")
    assert single.branch_config()["det_decoder"]["two_stage"] is False
    reloaded = ArkModel(create_backbone("resnet18", **TINY_CNN), [TASK], projector_dim=8,
                        branch_options=single.branch_config())
    reloaded.load_state_dict(single.state_dict())


def test_a_kind_missing_a_method_cannot_be_made_or_registered():
    from arkx.tasks import TaskKind

    class Incomplete(TaskKind):  # no score(): the loops could not evaluate it
        name, head_attr = "incomplete", "heads"

        def build_head(self, task, model): ...
        def head_output(self, model, features, task): ...
        def batch_targets(self, batch, data, generator=None): ...
        def loss(self, output, targets): ...
        def predict(self, output): ...
        def eval_targets(self, batch): ...

    with pytest.raises(TypeError, match="score"):
        Incomplete()


class _OneBatchLoader(list):
    """What the fine-tuning loop reads of a loader: iteration, len and a sampler it reseeds."""

    class sampler:  # lower case: mirrors the loader attribute
        @staticmethod
        def set_seed(seed):
            pass


def test_finetuning_gives_the_head_its_targets_in_training_and_none_in_evaluation(tmp_path, monkeypatch):
    """The denoising queries need the targets at forward time: the fine-tuning loop passes them when it trains."""
    from arkx.transfer.finetune import FinetuneConfig
    from arkx.transfer.finetune.loop import evaluate, train_one_epoch

    model = tiny_detector()
    batch = Batch(images=torch.zeros(2, 1, 32, 32, dtype=torch.uint8), rows=torch.arange(2),
                  boxes=[torch.tensor([[4.0, 4.0, 20.0, 30.0]]), torch.zeros((0, 4))],
                  box_labels=[torch.tensor([0]), torch.zeros(0, dtype=torch.int64)])
    seen = set()
    head_output = DetectionKind.head_output

    def spy(self, model, features, task, targets=None):
        seen.add((model.training, targets is not None))
        return head_output(self, model, features, task, targets=targets)

    monkeypatch.setattr(DetectionKind, "head_output", spy)
    cfg = FinetuneConfig(init="scratch", dataset_type="montgomery", root=tmp_path, out=tmp_path, epochs=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    train_one_epoch(model, _OneBatchLoader([batch]), None, TASK, optimizer, cfg, 32, 0, torch.device("cpu"))
    evaluate(model, _OneBatchLoader([batch]), None, 32, torch.device("cpu"), task=TASK)
    assert seen == {(True, True), (False, False)}  # (training, targets given)


def test_a_decoder_saved_before_the_dino_options_rebuilds_as_it_was():
    """A saved ``det_decoder`` without ``two_stage`` (written by an older arkx) is the plain deformable decoder:
    its weights load strictly into the rebuilt model; today's defaults (two-stage) would not fit them."""
    from arkx.tasks.detection import saved_branch_options

    old_options = dict(num_queries=4, n_layers=1, n_heads=2, n_points=2, ffn_dim=16)
    task = Task("d", "detection", ("a", "b"))

    def model(branches):
        torch.manual_seed(0)
        backbone = create_backbone("resnet18", None, layers=[1, 1, 1, 1], channels=[8, 8, 8, 8])
        return ArkModel(backbone, [task], projector_dim=4, branch_options=branches)

    legacy = model({"det_encoder": dict(d_model=8, n_layers=1, n_heads=2, n_points=2, ffn_dim=16),
                    "det_decoder": dict(old_options, two_stage=False, dn_number=0)})
    saved = {"det_encoder": dict(d_model=8, n_layers=1, n_heads=2, n_points=2, ffn_dim=16), "det_decoder": old_options}
    rebuilt = model(saved_branch_options(saved))
    rebuilt.load_state_dict(legacy.state_dict(), strict=True)
    with pytest.raises(RuntimeError):
        model(saved).load_state_dict(legacy.state_dict(), strict=True)
    assert saved_branch_options(dict(saved, det_decoder=dict(old_options, two_stage=True)))["det_decoder"]["two_stage"]
