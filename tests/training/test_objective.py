"""The objective: task loss through the task's kind, consistency at named feature sites with their weights."""

from __future__ import annotations

import math

import pytest
import torch

from arkx.config import ArkConfig, ConfigError, config_from_dict
from arkx.training import objective as objective_mod
from arkx.training.identity import config_differences
from arkx.training.losses import combine
from arkx.training.objective import Objective, Terms
from arkx.training.schedule import build_schedule, cosine_ramp

from .test_engine import make_cfg, make_engine


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------- the formula
def test_one_site_is_bitwise_the_authors_combination_value_and_gradient():
    torch.manual_seed(0)
    for c in (0.0, 0.123456789, 0.37, 0.5, 1.0):
        # many values at once (the combination is elementwise), so a different rounding cannot pass by chance
        task = (torch.rand(4096) * 3).requires_grad_()
        cons = (torch.rand(4096) * 2).requires_grad_()
        ours = Objective.combine(Terms(task, {"projection": cons}), {"projection": c})
        theirs = combine(task, cons, c)  # (1 - c)·task + c·consistency
        assert torch.equal(ours, theirs), c
        g_ours = torch.autograd.grad(ours.sum(), (task, cons))
        g_theirs = torch.autograd.grad(theirs.sum(), (task, cons))
        assert all(torch.equal(a, b) for a, b in zip(g_ours, g_theirs))


def test_several_sites_share_the_weight_the_task_term_gives_up():
    task, a, b = torch.tensor(2.0), torch.tensor(5.0), torch.tensor(7.0)
    loss = Objective.combine(Terms(task, {"projection": a, "pooled": b}), {"projection": 0.3, "pooled": 0.2})
    assert float(loss) == pytest.approx((1 - 0.5) * 2.0 + 0.3 * 5.0 + 0.2 * 7.0)


def test_site_weights_follow_the_ramp_each_with_its_own_end_weight():
    steps = build_schedule("cyclic", ["a", "b"], rounds=3)
    objective = Objective({"projection": 0.4, "pooled": 0.1}, "cosine", len(steps))
    for step in steps:
        ramp = cosine_ramp(step.index / len(steps))
        assert objective.weights(step) == pytest.approx({"projection": 0.4 * ramp, "pooled": 0.1 * ramp})
    constant = Objective({"pooled": 0.25}, "constant", len(steps))
    assert all(constant.weights(s) == {"pooled": 0.25} for s in steps)


def test_unknown_site_is_refused():
    with pytest.raises(ValueError, match="unknown consistency site 'decoder'"):
        Objective({"decoder": 0.5}, "cosine", 4)


# ---------------------------------------------------------------------------------------------- config
def _raw(tmp_path, **consistency):
    return make_cfg(tmp_path, consistency=consistency).model_dump(mode="json")


def test_config_default_is_the_single_projection_site(tmp_path):
    cfg = make_cfg(tmp_path, consistency=dict(weight=0.3))
    assert cfg.training.consistency.sites is None
    assert cfg.training.consistency.site_weights == {"projection": 0.3}
    explicit = make_cfg(tmp_path, consistency=dict(sites={"projection": 0.2, "pooled": 0.1}))
    assert explicit.training.consistency.site_weights == {"projection": 0.2, "pooled": 0.1}


@pytest.mark.parametrize("sites, message", [({"decoder": 0.1}, "unknown consistency site"),
                                            ({"projection": 1.5}, "in \\[0, 1\\]"),
                                            ({"projection": 0.7, "pooled": 0.6}, "sum to")])
def test_config_rejects_bad_sites_naming_the_key(tmp_path, sites, message):
    raw = _raw(tmp_path)
    raw["training"]["consistency"]["sites"] = sites
    with pytest.raises(ConfigError, match=f"training.consistency.sites: .*{message}"):
        config_from_dict(raw)


def test_a_run_recorded_before_sites_existed_resumes_without_a_config_difference(tmp_path):
    # a checkpoint records the resolved config; one written before `sites` existed has no such key
    now = _raw(tmp_path)
    before = _raw(tmp_path)
    del before["training"]["consistency"]["sites"]
    assert config_differences(before, now) == []
    assert ArkConfig.model_validate(before).training.consistency.site_weights == {"projection": 0.5}


# ---------------------------------------------------------------------------------------------- through the engine
def test_a_second_site_of_weight_zero_changes_nothing(tmp_path, tiny_datasets, tiny_heads):
    torch.use_deterministic_algorithms(True, warn_only=True)
    common = dict(rounds=1, warmup_rounds=0.5, max_iters_per_epoch=2)
    plain = make_engine(tmp_path / "a", tiny_datasets, tiny_heads, consistency=dict(weight=0.5, ramp="constant"),
                        **common)
    with_zero = make_engine(tmp_path / "b", tiny_datasets, tiny_heads,
                            consistency=dict(ramp="constant", sites={"projection": 0.5, "pooled": 0.0}), **common)
    for eng in (plain, with_zero):
        eng.train_step(eng.schedule[0])
    a, b = _weights(plain.student), _weights(with_zero.student)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _site_parts(eng) -> list[dict]:
    """Per batch: the task term, each site's consistency term and the combined loss."""
    parts: list[dict] = []
    real_terms, real_batch_loss = eng.objective.terms, eng._batch_loss

    def terms(*args, **kwargs):
        out = real_terms(*args, **kwargs)
        parts.append(dict(task=float(out.task.detach()), **{k: float(v.detach()) for k, v in out.consistency.items()}))
        return out

    def batch_loss(*args, **kwargs):
        loss, rows = real_batch_loss(*args, **kwargs)
        parts[-1]["loss"] = float(loss.detach())
        return loss, rows

    eng.objective.terms, eng._batch_loss = terms, batch_loss
    return parts


def test_each_site_enters_the_loss_with_its_own_weight(tmp_path, tiny_datasets, tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, max_iters_per_epoch=1,
                      consistency=dict(ramp="constant", sites={"projection": 0.3, "pooled": 0.2}))
    parts = _site_parts(eng)
    eng.train_step(eng.schedule[0])
    (p,) = parts
    assert p["projection"] > 0 and p["pooled"] > 0 and not math.isclose(p["projection"], p["pooled"])
    assert p["loss"] == pytest.approx(0.5 * p["task"] + 0.3 * p["projection"] + 0.2 * p["pooled"], rel=1e-6)


def test_a_site_gives_gradient_to_the_student_only(tmp_path, tiny_datasets, tiny_heads):
    # the pooled site alone at weight 1: no task term, and the projector lies after the site
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, max_iters_per_epoch=1,
                      consistency=dict(ramp="constant", sites={"pooled": 1.0}))
    teacher_before = _weights(eng.teacher)
    eng.train_step(eng.schedule[0])
    backbone = [p.grad for p in eng.student.backbone.parameters()]
    assert all(g is not None for g in backbone)
    assert sum(bool(g.abs().sum() > 0) for g in backbone) >= 0.9 * len(backbone)
    assert all(p.grad is None or not p.grad.any() for p in eng.student.projector.parameters())
    assert all(p.grad is None or not p.grad.any() for p in eng.student.heads.parameters())
    assert all(p.grad is None for p in eng.teacher.parameters())
    after = eng.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in after)  # only the EMA moves the teacher


def test_targets_come_from_the_tasks_kind(tmp_path, tiny_datasets, tiny_heads, monkeypatch):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, max_iters_per_epoch=1)
    kinds = []
    real = objective_mod.get_kind

    def get_kind(name):
        kinds.append(name)
        return real(name)

    monkeypatch.setattr(objective_mod, "get_kind", get_kind)
    eng.train_step(eng.schedule[1])  # beta: multiclass
    assert kinds == ["multiclass"]
