import math

import torch

from arkx.training.losses import combine, consistency_loss, masked_bce, masked_cross_entropy


def test_masked_labels_give_zero_loss_and_zero_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([[1.0, float("nan"), 0.0]] * 4)
    masked_bce(logits, targets).backward()
    assert torch.all(logits.grad[:, 1] == 0)
    assert torch.all(logits.grad[:, [0, 2]] != 0)


def test_masked_bce_is_mean_over_labelled_entries_only():
    logits = torch.zeros(2, 2)
    targets = torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")]])
    # only one labelled entry: loss = BCE(0, 1) = log 2, not log2 / 4
    assert math.isclose(masked_bce(logits, targets).item(), math.log(2), rel_tol=1e-6)
    assert masked_bce(logits, torch.full((2, 2), float("nan"))).item() == 0.0


def test_missing_is_not_negative():
    logits = torch.full((1, 1), 5.0)
    assert masked_bce(logits, torch.tensor([[float("nan")]])).item() == 0.0
    assert masked_bce(logits, torch.tensor([[0.0]])).item() > 4.0


def test_masked_cross_entropy_skips_unlabelled_rows():
    logits = torch.randn(3, 3, requires_grad=True)
    targets = torch.tensor([[0.0, 1.0, 0.0], [float("nan")] * 3, [1.0, 0.0, 0.0]])
    loss = masked_cross_entropy(logits, targets)
    loss.backward()
    assert torch.all(logits.grad[1] == 0)
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]].detach(), torch.tensor([1, 0]))
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-5)


def test_consistency_gradient_reaches_student_only():
    s = torch.randn(4, 8, requires_grad=True)
    t = torch.randn(4, 8, requires_grad=True)
    consistency_loss(s, t).backward()
    assert s.grad.abs().sum() > 0
    assert t.grad is None


def test_combine_weights():
    assert combine(torch.tensor(2.0), torch.tensor(4.0), 0.25).item() == 0.75 * 2 + 0.25 * 4
