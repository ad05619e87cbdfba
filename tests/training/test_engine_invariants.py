"""Method invariants checked through the engine itself (a real ``train_step`` on tiny data).

Each test here was seen to fail with its invariant broken in a scratch copy of the package (see the
closing note of issue 12); a helper-level test alone cannot catch the engine wiring a helper wrongly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from arkx.data.transforms import eval_view, sample_augment_params, student_view
from arkx.models.ark import ArkModel
from arkx.training import objective as objective_mod
from arkx.training.engine import Engine, derive_seed

from ..conftest import tiny_model
from .test_engine import make_cfg, make_engine


def capture_batches(engine) -> list:
    """Record ``(dataset, images, targets, rows)`` of every batch the engine trains on."""
    seen = []
    real = engine._batch_loss

    def batch_loss(name, batch, *args, **kwargs):
        images, targets, rows = batch.images, batch.labels, batch.rows
        seen.append((name, images.clone(), targets.clone(), rows.clone()))
        return real(name, batch, *args, **kwargs)

    engine._batch_loss = batch_loss
    return seen


def capture_inputs(module: nn.Module) -> list:
    inputs = []
    module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    return inputs


# ---------------------------------------------------------------------------------------------- views
def test_teacher_sees_the_resized_original_and_the_student_its_augmented_view(tmp_path, tiny_datasets,
                                                                               tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, max_iters_per_epoch=2)
    batches = capture_batches(eng)
    student_in, teacher_in = capture_inputs(eng.student.backbone), capture_inputs(eng.teacher.backbone)
    step = eng.schedule[0]
    eng.train_step(step)
    assert len(batches) == len(student_in) == len(teacher_in) == 2
    size, augment = eng.cfg.data.image_size, eng.cfg.augment
    # the engine's augmentation stream for this step, replayed
    aug_gen = torch.Generator().manual_seed(derive_seed(eng.cfg.run.seed, step.index, 1))
    for (_, images, _, _), x_student, x_teacher in zip(batches, student_in, teacher_in):
        assert images.shape[-1] == 36 and x_teacher.shape[-1] == size
        assert torch.equal(x_teacher, eval_view(images, size))
        params = sample_augment_params(images.shape[0], augment, aug_gen)
        torch.testing.assert_close(x_student, student_view(images, size, params, augment.border), rtol=0, atol=0)
        assert (x_student - x_teacher).abs().mean() > 0.05  # really a different view


def test_both_views_share_one_conversion_of_the_batch(tmp_path, tiny_datasets, tiny_heads, monkeypatch):
    from arkx.data import transforms as transforms_mod
    from arkx.training import engine as engine_mod

    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, max_iters_per_epoch=2)
    conversions = []
    real = transforms_mod.to_unit

    def to_unit(images):
        if not images.is_floating_point():
            conversions.append(images.shape[0])
        return real(images)

    monkeypatch.setattr(transforms_mod, "to_unit", to_unit)
    monkeypatch.setattr(engine_mod, "to_unit", to_unit)
    eng.train_step(eng.schedule[0])
    assert conversions == [8, 8]  # one uint8 -> float conversion per batch, not one per view


# ---------------------------------------------------------------------------------------------- teacher
class ConvBNBackbone(nn.Module):
    """A tiny backbone with BatchNorm buffers (running statistics, num_batches_tracked)."""

    num_features = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


def _lived_in(model: ArkModel) -> ArkModel:
    """Weights and buffers that differ from any fresh initialisation."""
    torch.manual_seed(3)
    model.train()
    for _ in range(2):
        model.backbone(torch.randn(4, 3, 32, 32) * 2 + 0.5)  # moves BatchNorm statistics
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("backbone", ["conv_bn", "swin"])
def test_teacher_built_by_the_engine_is_an_exact_copy_of_the_student(tmp_path, tiny_datasets, tiny_heads, backbone):
    if backbone == "swin":
        student = tiny_model(tiny_heads)
    else:
        student = ArkModel(ConvBNBackbone(), tiny_heads, projector="mlp", projector_dim=12)
    student = _lived_in(student)
    cfg = make_cfg(tmp_path)
    eng = Engine(cfg, tiny_datasets, student, cfg.run.out, progress=False)
    s_state, t_state = eng.student.state_dict(), eng.teacher.state_dict()
    assert list(s_state) == list(t_state)
    assert any(k.startswith("projector.") for k in s_state) and any(k.startswith("heads.beta") for k in s_state)
    buffers = [k for k, _ in eng.student.named_buffers()]
    assert buffers  # BatchNorm statistics or Swin's relative-position index
    for key, value in s_state.items():
        assert torch.equal(value, t_state[key]) and value.dtype == t_state[key].dtype, key
        assert value.data_ptr() != t_state[key].data_ptr(), f"{key} is shared, not copied"
    assert not any(p.requires_grad for p in eng.teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    eng.student.eval()
    torch.testing.assert_close(eng.teacher.embed(x), eng.student.embed(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- consistency
def test_consistency_loss_alone_trains_the_students_backbone_and_projector(tmp_path, tiny_datasets, tiny_heads):
    # c = 1: the task term has weight 0, so every gradient comes from the consistency term
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, max_iters_per_epoch=1,
                      consistency=dict(weight=1.0, ramp="constant"))
    before = {k: v.clone() for k, v in eng.student.state_dict().items()}
    eng.train_step(eng.schedule[0])

    def grads(module):
        return [p.grad for p in module.parameters()]

    backbone_grads = grads(eng.student.backbone)
    assert all(g is not None for g in backbone_grads)
    assert sum(bool(g.abs().sum() > 0) for g in backbone_grads) >= 0.9 * len(backbone_grads)
    assert all(g is not None and g.abs().sum() > 0 for g in grads(eng.student.projector))
    assert all(g is None or not g.any() for g in grads(eng.student.heads))  # no task gradient
    after = eng.student.state_dict()
    assert not torch.equal(before["projector.weight"], after["projector.weight"])
    assert not torch.equal(before["backbone.patch_embed.proj.weight"], after["backbone.patch_embed.proj.weight"])
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("heads."))
    assert all(p.grad is None for p in eng.teacher.parameters())


def _weights_in_use(eng, iterations: int) -> list[float]:
    """The consistency weight c of each iteration, solved from loss = (1 - c)·task + c·consistency."""
    parts = []
    real_task, real_cons = objective_mod.task_loss, objective_mod.consistency_loss

    def task_loss(*args):
        value = real_task(*args)
        parts.append(["task", value.detach()])
        return value

    def consistency_loss(*args):
        value = real_cons(*args)
        parts[-1].append(value.detach())
        return value

    real_batch_loss = eng._batch_loss

    def batch_loss(*args, **kwargs):
        loss, rows = real_batch_loss(*args, **kwargs)
        parts[-1].append(loss.detach())
        return loss, rows

    objective_mod.task_loss, objective_mod.consistency_loss, eng._batch_loss = task_loss, consistency_loss, batch_loss
    try:
        for step in eng.schedule:
            eng.train_step(step)
    finally:
        objective_mod.task_loss, objective_mod.consistency_loss = real_task, real_cons
    assert len(parts) == len(eng.schedule) * iterations
    return [float((loss - task) / (cons - task)) for _, task, cons, loss in parts]


@pytest.mark.parametrize("ramp", ["cosine", "constant"])
def test_consistency_weight_follows_its_ramp_step_by_step(tmp_path, tiny_datasets, tiny_heads, ramp):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=2, max_iters_per_epoch=2,
                      consistency=dict(weight=0.5, ramp=ramp))
    used = _weights_in_use(eng, iterations=2)
    steps = len(eng.schedule)  # 2 rounds x 2 datasets
    if ramp == "cosine":  # from 0 at the first step towards 0.5, along half a cosine; fixed within a step
        per_step = [0.5 * 0.5 * (1 - math.cos(math.pi * i / steps)) for i in range(steps)]
    else:
        per_step = [0.5] * steps
    assert used == pytest.approx([c for c in per_step for _ in range(2)], abs=2e-4)


# ---------------------------------------------------------------------------------------------- labels
def _with_uncertain_labels(datasets, fraction: float = 0.3):
    labels = datasets["alpha"].records.labels
    rng = np.random.default_rng(0)
    labels[rng.random(labels.shape) < fraction] = -1.0
    return labels.copy()


@pytest.mark.parametrize("policy", ["ones", "zeros", "ignore", "lsr-ones", "lsr-zeros"])
def test_uncertain_policy_is_applied_before_the_task_loss(tmp_path, tiny_datasets, tiny_heads, monkeypatch, policy):
    raw = _with_uncertain_labels(tiny_datasets)
    alpha = tiny_datasets["alpha"]
    alpha.uncertain, alpha.lsr_ones_range, alpha.lsr_zeros_range = policy, (0.6, 0.8), (0.1, 0.25)
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, max_iters_per_epoch=3)
    batches = capture_batches(eng)
    targets_seen = []
    real = objective_mod.task_loss

    def task_loss(kind, logits, targets):
        targets_seen.append(targets.detach().clone())
        return real(kind, logits, targets)

    monkeypatch.setattr(objective_mod, "task_loss", task_loss)
    eng.train_step(eng.schedule[0])  # alpha's dataset epoch
    assert len(targets_seen) == len(batches) == 3
    values = []
    for (_, _, _, rows), targets in zip(batches, targets_seen):
        original = torch.from_numpy(raw[rows.numpy()])
        uncertain = original == -1
        assert not (targets == -1).any()
        assert torch.equal(targets[~uncertain], original[~uncertain])  # labelled entries untouched
        values.append(targets[uncertain])
    values = torch.cat(values)
    assert values.numel() > 10
    if policy == "ones":
        assert (values == 1).all()
    elif policy == "zeros":
        assert (values == 0).all()
    elif policy == "ignore":
        assert torch.isnan(values).all()
    else:
        lo, hi = (0.6, 0.8) if policy == "lsr-ones" else (0.1, 0.25)
        assert values.min() >= lo and values.max() <= hi
        assert values.unique().numel() > values.numel() // 2  # drawn, not one constant


# ---------------------------------------------------------------------------------------------- cyclic heads
@pytest.mark.parametrize("optimizer", [dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.05),
                                       dict(optimizer="adamw", lr=3e-3, weight_decay=0.05)])
def test_head_not_trained_in_a_step_stays_bitwise_unchanged(tmp_path, tiny_datasets, tiny_heads, optimizer):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, rounds=2, max_iters_per_epoch=2, warmup_rounds=0,
                      lr_schedule="constant", **optimizer)

    def head(name):
        return {k: v.clone() for k, v in eng.student.heads[name].state_dict().items()}

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    alpha_step, beta_step, alpha_again = eng.schedule[0], eng.schedule[1], eng.schedule[2]
    assert (alpha_step.dataset, beta_step.dataset, alpha_again.dataset) == ("alpha", "beta", "alpha")
    eng.train_step(alpha_step)
    alpha_0, beta_0 = head("alpha"), head("beta")
    # alpha now has optimizer state (momentum / Adam moments) that could move it if it were stepped
    assert all(eng.optimizer.state[p] for p in eng.student.heads["alpha"].parameters())
    eng.train_step(beta_step)
    assert same(head("alpha"), alpha_0), "the alpha head moved during beta's dataset epoch"
    assert not same(head("beta"), beta_0)
    beta_1 = head("beta")
    eng.train_step(alpha_again)
    assert same(head("beta"), beta_1), "the beta head moved during alpha's dataset epoch"
    assert not same(head("alpha"), alpha_0)
