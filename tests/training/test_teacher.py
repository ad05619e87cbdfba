import torch
from torch import nn

from arkx.training.teacher import ema_update, make_teacher

from ..conftest import tiny_model


class WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.lin(x))


def test_teacher_starts_as_exact_copy_and_never_has_gradients(tiny_heads):
    student = tiny_model(tiny_heads)
    teacher = make_teacher(student)
    for (name, s), (_, t) in zip(student.state_dict().items(), teacher.state_dict().items()):
        assert torch.equal(s, t), name
    assert not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    z_s, logits = student(x, "alpha")
    z_t = teacher.embed(x)
    (logits.sum() + ((z_s - z_t) ** 2).mean()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_ema_moves_parameters_and_buffers_with_momentum():
    student, teacher_src = WithBatchNorm(), WithBatchNorm()
    teacher = make_teacher(teacher_src)
    student.train()
    student(torch.randn(8, 4) * 3 + 1)  # changes BatchNorm running stats of the student
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    m = 0.75
    ema_update(teacher, student, m)
    for key, value in teacher.state_dict().items():
        s = student.state_dict()[key]
        if value.is_floating_point():
            torch.testing.assert_close(value, m * before[key] + (1 - m) * s)
        else:
            assert torch.equal(value, s)  # integer buffers (num_batches_tracked) are copied
    assert not torch.equal(teacher.bn.running_mean, before["bn.running_mean"])


def test_ema_momentum_one_keeps_teacher_and_zero_copies_student():
    student, teacher = WithBatchNorm(), make_teacher(WithBatchNorm())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in teacher.state_dict().items())
