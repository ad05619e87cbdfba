"""The ``segmentation`` kind: targets, BCE + soft Dice masked by annotation, predictions, scores, and learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arkx.data.batch import Batch
from arkx.errors import ArkxValueError
from arkx.models.ark import ArkModel
from arkx.models.backbones import create_backbone
from arkx.tasks import Task, get_kind
from arkx.training.losses import DICE_SMOOTH, masked_mask_bce, masked_soft_dice

KIND = get_kind("segmentation")
DISK = Task("disks", "segmentation", ("disk",))


@pytest.fixture
def one_thread():
    """One intra-op thread: several times faster for tiny models on a loaded shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_kind_is_registered_with_its_head_dict():
    assert KIND.name == "segmentation" and KIND.head_attr == "seg_heads" and KIND.needs_pyramid
    assert KIND.loader_targets == ("masks",)


def test_unannotated_structures_give_no_loss_and_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    masks = torch.rand(2, 3, 8, 8) > 0.5
    present = torch.tensor([[True, False, True], [True, True, True]])
    loss = KIND.loss(logits, (masks, present))
    other = masks.clone()
    other[0, 1] = ~other[0, 1]  # whatever the unannotated pair's mask says
    assert torch.equal(KIND.loss(logits, (other, present)), loss)
    loss.backward()
    assert not logits.grad[0, 1].any() and logits.grad[0, 0].any()
    # the mean is over the annotated pairs only: five of them here
    per_pair_bce = F.binary_cross_entropy_with_logits(logits, masks.float(), reduction="none").mean(dim=(2, 3))
    torch.testing.assert_close(masked_mask_bce(logits, masks, present), per_pair_bce[present].mean())
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert KIND.loss(logits, (masks, none)).item() == 0.0


def test_soft_dice_value_and_smoothing():
    """Logit 0 (p = 0.5) on a 4x4 image whose target has 4 pixels: 1 - (2*2 + s) / (8 + 4 + s)."""
    masks = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    masks[0, 0, :2, :2] = True
    present = torch.ones(1, 1, dtype=torch.bool)
    dice = masked_soft_dice(torch.zeros(1, 1, 4, 4), masks, present)
    assert DICE_SMOOTH == 1.0
    assert dice.item() == pytest.approx(1 - (4 + 1) / (12 + 1))
    # an empty structure predicted empty costs (almost) nothing; predicted full it costs (almost) everything
    empty = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    assert masked_soft_dice(torch.full((1, 1, 4, 4), -20.0), empty, present).item() == pytest.approx(0, abs=1e-6)
    assert masked_soft_dice(torch.full((1, 1, 4, 4), 20.0), empty, present).item() == pytest.approx(16 / 17)
    perfect = torch.where(masks, 20.0, -20.0)
    assert KIND.loss(perfect, (masks, present)).item() == pytest.approx(0, abs=1e-6)


def test_loss_refuses_targets_of_another_size():
    with pytest.raises(ValueError, match=r"masks \(1, 1, 4, 4\).*expected \[B, M, H, W\]"):
        KIND.loss(torch.zeros(1, 1, 8, 8), (torch.zeros(1, 1, 4, 4, dtype=torch.bool), torch.ones(1, 1, dtype=torch.bool)))


def test_targets_from_a_batch():
    masks = torch.rand(2, 2, 8, 8) > 0.5
    batch = Batch(images=torch.zeros(2, 1, 8, 8, dtype=torch.uint8), rows=torch.arange(2), masks=masks)
    got_masks, present = KIND.targets(batch)
    assert torch.equal(got_masks, masks) and present.all() and present.shape == (2, 2)
    flags = torch.tensor([[True, False], [False, True]])
    assert torch.equal(KIND.targets(batch.replace(mask_present=flags))[1], flags)
    assert all(torch.equal(a, b) for a, b in zip(KIND.batch_targets(batch, None), KIND.eval_targets(batch)))
    with pytest.raises(ArkxValueError, match="no masks"):
        KIND.batch_targets(batch.replace(masks=None), None)


def test_predict_and_score():
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masks[:, :, 2:6, 2:6] = True
    logits = torch.where(masks, 5.0, -5.0).requires_grad_()
    probabilities = KIND.predict(logits)
    assert not probabilities.requires_grad
    torch.testing.assert_close(probabilities, torch.sigmoid(logits.detach()))
    present = torch.ones(2, 1, dtype=torch.bool)
    score = KIND.score(probabilities, (masks, present), DISK)
    assert (score.metric, score.mean, score.per_label, score.details["iou"]) == ("dice", 1.0, {"disk": 1.0}, 1.0)
    half = probabilities.clone()
    half[0, :, 2:4] = 0.0  # half of the first square missed: Dice 2*8 / (8 + 16), IoU 8 / 16
    expected = (2 / 3 + 1) / 2
    assert KIND.score(half, (masks, present), DISK).mean == pytest.approx(expected)
    # per-batch lists (what evaluation collects) give the same score as one tensor
    by_batch = KIND.score([half[:1], half[1:]], [(masks[:1], present[:1]), (masks[1:], present[1:])], DISK)
    assert by_batch.mean == pytest.approx(expected) and by_batch.details["iou/disk"] == pytest.approx((0.5 + 1) / 2)
    assert by_batch.raw.n_images == 2
    # a structure not annotated in an image is not scored there
    assert KIND.score(half, (masks, torch.tensor([[False], [True]])), DISK).mean == 1.0


def disk_images(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images with one brighter disk each, and the disk's mask."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = (torch.randint(size // 4, 3 * size // 4, (n, 1, 1), generator=generator) for _ in range(2))
    radius = torch.randint(size // 8, size // 4, (n, 1, 1), generator=generator)
    masks = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    images = masks.float() + 0.3 * torch.randn(n, size, size, generator=generator)
    return images[:, None].expand(-1, 3, -1, -1), masks[:, None]


def test_a_tiny_segmenter_learns_the_disks(one_thread):
    """A tiny ResNet + UperNet trained 40 steps through the kind's API beats every constant prediction."""
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", layers=(1, 1, 1, 1), channels=(8, 16, 16, 32))
    model = ArkModel(backbone, [], projector="none", branch_options={"seg_decoder": dict(channels=16, pool_scales=(1, 2))})
    model.add_task(DISK)
    generator = torch.Generator().manual_seed(0)
    train_images, train_masks = disk_images(64, 32, generator)
    test_images, test_masks = disk_images(32, 32, generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        pick = torch.randint(0, 64, (8,), generator=generator)
        _, logits = model.run_task(train_images[pick], DISK)
        loss = KIND.loss(logits, (train_masks[pick], torch.ones(8, 1, dtype=torch.bool)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        _, logits = model.eval().run_task(test_images, DISK)
    targets = (test_masks, torch.ones(32, 1, dtype=torch.bool))
    dice = KIND.score(KIND.predict(logits), targets, DISK).mean
    everywhere = KIND.score(torch.ones_like(logits), targets, DISK).mean  # the best constant prediction
    nowhere = KIND.score(torch.zeros_like(logits), targets, DISK).mean
    assert nowhere == 0.0 and everywhere < 0.25
    assert dice > 0.75, dice
