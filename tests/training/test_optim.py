import torch

from arkx.config import TrainingConfig
from arkx.training.optim import build_optimizer, check_param_groups, param_groups

from ..conftest import tiny_model


def test_every_trainable_parameter_in_exactly_one_group(tiny_heads):
    model = tiny_model(tiny_heads)
    for name in ("sgd", "adamw"):
        opt = build_optimizer(model, TrainingConfig(optimizer=name, weight_decay=0.05, rounds=2, warmup_rounds=1))
        ids = [id(p) for g in opt.param_groups for p in g["params"]]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
        head_ids = {id(p) for p in model.heads.parameters()} | {id(p) for p in model.projector.parameters()}
        assert head_ids <= set(ids)


def test_check_param_groups_catches_a_missing_head(tiny_heads):
    model = tiny_model(tiny_heads)
    groups = param_groups(model.backbone, 0.0)  # the Foundation X defect: heads left out
    opt = torch.optim.SGD(groups, lr=0.1)
    try:
        check_param_groups(model, opt)
    except RuntimeError as err:
        assert "heads." in str(err) or "projector" in str(err)
    else:
        raise AssertionError("missing parameters were not detected")


def test_norms_and_biases_do_not_decay(tiny_heads):
    model = tiny_model(tiny_heads)
    groups = {g["name"]: g for g in param_groups(model, 0.1)}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim > 1 for p in groups["decay"]["params"])
    assert any("norm" in names[id(p)] for p in groups["no_decay"]["params"])
    assert groups["no_decay"]["weight_decay"] == 0.0
