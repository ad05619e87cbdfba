import torch

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
