import pytest
import torch

from arkx.errors import ArkxValueError
from arkx.models.ark import ArkModel
from arkx.tasks import Task

from ..conftest import tiny_model


def test_heads_read_the_projection_and_keep_label_order(tiny_heads):
    model = tiny_model(tiny_heads).eval()
    x = torch.randn(3, 3, 32, 32)
    z, logits = model(x, "alpha")
    assert z.shape == (3, 24) and logits.shape == (3, 3)
    torch.testing.assert_close(logits, model.heads["alpha"](model.embed(x)))
    assert model.head_specs["beta"].label_names == ("b1", "b2")
    assert model.head_config()[0] == dict(name="alpha", kind="multilabel", label_names=["a1", "a2", "a3"])


def test_add_head_for_incremental_pretraining(tiny_heads):
    model = tiny_model(tiny_heads)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.add_head(Task("covid", "multilabel", ("COVID-19",)))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert after["heads.covid.weight"].shape == (1, 24)
    try:
        model.add_head(Task("covid", "multilabel", ("x",)))
    except ValueError as err:
        assert "exists" in str(err)
    else:
        raise AssertionError


def test_mlp_and_no_projector(tiny_heads):
    from arkx.models.backbones import create_backbone

    bb = create_backbone("test_convnext")
    mlp = ArkModel(bb, tiny_heads, projector="mlp", projector_dim=10)
    assert mlp.embed(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # MICCAI Ark-6: Linear(enc -> proj) - ReLU - Linear(proj -> proj), so their released weights load
    first, relu, second = mlp.projector
    assert (first.in_features, first.out_features) == (bb.num_features, 10)
    assert isinstance(relu, torch.nn.ReLU) and (second.in_features, second.out_features) == (10, 10)
    none = ArkModel(create_backbone("test_convnext"), tiny_heads, projector="none")
    assert none.embed_dim == none.backbone.num_features


SEG = Task("jsrt", "segmentation", ("lung", "heart"))
SMALL_DECODER = {"seg_decoder": dict(channels=8, pool_scales=(1, 2))}


def _with_seg(tiny_heads, *extra: Task) -> ArkModel:
    model = tiny_model(tiny_heads)
    model.branch_options.update(SMALL_DECODER)
    for task in (SEG, *extra):
        model.add_task(task)
    return model


def test_ark_model_is_built_exactly_as_before(tiny_heads):
    """Same random draws in the same order, same keys: backbone, projector, then the heads in order."""
    from arkx.models.backbones import create_backbone

    from ..conftest import TINY_SWIN

    model = tiny_model(tiny_heads)
    torch.manual_seed(0)  # the construction the Ark path always had
    reference = {**{f"backbone.{k}": v for k, v in
                    create_backbone("swin_tiny_patch4_window7_224", **TINY_SWIN).state_dict().items()}}
    for prefix, layer in [("projector", torch.nn.Linear(128, 24)), ("heads.alpha", torch.nn.Linear(24, 3)),
                          ("heads.beta", torch.nn.Linear(24, 2))]:
        reference.update({f"{prefix}.{k}": v for k, v in layer.state_dict().items()})
    state = model.state_dict()
    assert list(state) == list(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    x = torch.randn(2, 3, 32, 32)
    z, logits = model.eval()(x, "beta")
    features, output = model.run_task(x, tiny_heads[1])
    assert torch.equal(features.projection, z) and torch.equal(output, logits)


def test_add_task_puts_each_kind_in_its_own_dict_with_one_shared_decoder(tiny_heads):
    second = Task("montgomery", "segmentation", ("lung",))
    model = _with_seg(tiny_heads, second, Task("gamma", "multilabel", ("g",)))
    assert list(model.heads) == ["alpha", "beta", "gamma"] and list(model.seg_heads) == ["jsrt", "montgomery"]
    assert model.branches() == ["seg_decoder"] and model.seg_decoder.channels == 8
    assert [(t.name, t.kind) for t in model.tasks()] == [
        ("alpha", "multilabel"), ("beta", "multiclass"), ("gamma", "multilabel"),
        ("jsrt", "segmentation"), ("montgomery", "segmentation")]
    assert model.head_config()[3] == dict(name="jsrt", kind="segmentation", label_names=["lung", "heart"])
    assert model.branch_config() == {"seg_decoder": dict(channels=8, pool_scales=[1, 2])}
    features, logits = model.eval().run_task(torch.randn(2, 3, 32, 32), SEG)
    assert logits.shape == (2, 2, 32, 32) and len(features.pyramid) == 4
    with pytest.raises(ValueError, match="exists already"):
        model.add_task(Task("jsrt", "segmentation", ("x",)))
    with pytest.raises(ValueError, match="use add_task"):
        model.add_head(Task("nih", "segmentation", ("x",)))
    with pytest.raises(ArkxValueError, match="no segmentation head 'nih'"):
        model.run_task(torch.randn(1, 3, 32, 32), Task("nih", "segmentation", ("x",)))


def test_ensure_branch_builds_once():
    backbone = torch.nn.Linear(1, 1)
    backbone.num_features = 1
    model = ArkModel(backbone, [], projector="none")
    calls = []

    def factory():
        calls.append(1)
        return torch.nn.Linear(2, 2)

    first = model.ensure_branch("det_encoder", factory)
    assert model.ensure_branch("det_encoder", factory) is first and len(calls) == 1
    with pytest.raises(ValueError, match="not a branch"):
        model.ensure_branch("projector", factory)


def test_rebuilt_from_head_and_branch_config_the_state_dict_fits(tiny_heads):
    from arkx.models.backbones import create_backbone

    from ..conftest import TINY_SWIN

    model = _with_seg(tiny_heads)
    tasks = [Task(h["name"], h["kind"], tuple(h["label_names"])) for h in model.head_config()]
    rebuilt = ArkModel(create_backbone("swin_tiny_patch4_window7_224", **TINY_SWIN), tasks, projector="linear",
                       projector_dim=24, branch_options=model.branch_config())
    rebuilt.load_state_dict(model.state_dict())  # strict: same keys and shapes
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(rebuilt.eval().run_task(x, SEG)[1], model.eval().run_task(x, SEG)[1])


def test_every_parameter_is_in_exactly_one_group_chosen_by_module_path():
    from arkx.models.backbones import create_backbone

    from ..conftest import TINY_SWIN

    # heads named like other groups: a substring match would put them in the wrong group
    heads = [Task("backbone", "multilabel", ("x",)), Task("seg_decoder", "multilabel", ("y",))]
    model = ArkModel(create_backbone("swin_tiny_patch4_window7_224", **TINY_SWIN), heads, projector_dim=8,
                     branch_options=SMALL_DECODER)
    model.add_task(Task("backbone", "segmentation", ("lung",)))
    model.ensure_branch("det_encoder", lambda: torch.nn.Linear(4, 4))
    model.det_heads["vindr"] = torch.nn.Linear(4, 2)
    groups = model.parameter_groups()
    assert list(groups) == ["backbone", "projector", "heads/backbone", "heads/seg_decoder", "seg_heads/backbone",
                            "det_heads/vindr", "seg_decoder", "det_encoder"]
    names = [n for members in groups.values() for n in members]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # all, and each once
    assert groups["heads/backbone"] == ["heads.backbone.weight", "heads.backbone.bias"]
    assert groups["seg_heads/backbone"] == ["seg_heads.backbone.classifier.weight", "seg_heads.backbone.classifier.bias"]
    assert all(n.startswith("backbone.") for n in groups["backbone"])
    assert all(n.startswith("seg_decoder.") for n in groups["seg_decoder"])


def test_freeze_and_unfreeze_select_groups_by_name(tiny_heads):
    model = _with_seg(tiny_heads)
    frozen = model.freeze(["backbone", "seg_decoder"])
    groups = model.parameter_groups()
    assert frozen == groups["backbone"] + groups["seg_decoder"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(groups["projector"] + groups["heads/alpha"] + groups["heads/beta"] + groups["seg_heads/jsrt"])
    model.unfreeze("seg_decoder")
    assert all(p.requires_grad for _, p in model.group_parameters(["seg_decoder"]))
    assert not any(p.requires_grad for _, p in model.group_parameters(["backbone"]))
    with pytest.raises(ArkxValueError, match="unknown parameter group"):
        model.freeze(["heads"])


def test_a_projector_without_parameters_is_an_empty_group(tiny_heads):
    from arkx.models.backbones import create_backbone

    model = ArkModel(create_backbone("test_convnext"), tiny_heads, projector="none")
    assert model.parameter_groups()["projector"] == [] and model.freeze(["projector"]) == []


def test_branch_config_keeps_head_options_and_the_defaults_a_branch_was_built_with(tiny_heads):
    model = tiny_model(tiny_heads)
    model.branch_options.update({"seg_decoder": {"channels": 8}, "det_decoder": {"num_queries": 5}})
    assert model.branch_config() == {"seg_decoder": {"channels": 8}, "det_decoder": {"num_queries": 5}}
    model.add_task(SEG)
    assert model.branch_config() == {"seg_decoder": {"channels": 8, "pool_scales": [1, 2, 3, 6]},
                                     "det_decoder": {"num_queries": 5}}
