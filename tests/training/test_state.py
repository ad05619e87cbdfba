"""Checkpoint contents that other tools read."""

from __future__ import annotations

import timm
import torch

from arkx.tasks import Task
from arkx.training.state import save_checkpoint

from ..conftest import TINY_SWIN, tiny_model


def test_last_pt_offers_the_teacher_backbone_to_timm(tmp_path):
    """`last.pt` loads into a plain timm Swin (timm reads ``state_dict_ema``) and gives the teacher's features."""
    heads = [Task("alpha", "multilabel", ("a1", "a2", "a3"))]
    student, teacher = tiny_model(heads, seed=0), tiny_model(heads, seed=1).eval()
    last = save_checkpoint(tmp_path, step_done=2, student=student, teacher=teacher,
                           optimizer=torch.optim.SGD(student.parameters(), lr=0.1),
                           extra={"heads": teacher.head_config()})
    plain = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, pretrained=False,
                              checkpoint_path=str(last), **TINY_SWIN).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), teacher.features(x))
        assert not torch.allclose(plain(x), student.features(x))  # the teacher, not the student
