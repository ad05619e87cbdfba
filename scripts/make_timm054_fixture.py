"""Make small checkpoints in the authors' Ark / Ark+ format with REAL timm 0.5.4 (their version).

Run it in a separate environment, never in arkx's (arkx needs a current timm):

    python3 -m venv /tmp/timm054
    /tmp/timm054/bin/pip install timm==0.5.4 torch torchvision
    /tmp/timm054/bin/python scripts/make_timm054_fixture.py tests/fixtures

It builds the authors' model class layout -- timm 0.5.4's ``SwinTransformer`` plus a ``projector``
(Linear, or Linear-ReLU-Linear for ``--use_mlp``) and ``omni_heads`` (one Linear per dataset) -- as a
tiny Swin, and saves it the way their training code does:

- ``ark6_tiny_timm054.pth.tar``: ``{'epoch', 'lossMIN', 'state_dict': student, 'teacher': teacher,
  'optimizer', 'scheduler'}`` of ``DataParallel``-wrapped models (``module.`` prefixes), MLP projector,
  the six Ark-6 heads (14, 14, 14, 3, 6, 1 outputs);
- ``arkplus_tiny_timm054.pth.tar``: the teacher state dict alone (how the released teachers are shared),
  linear projector, window 6 (Ark+ uses window 12 at 768 px), no prefix;

and beside each ``<name>.ref.pt``: a fixed input and the teacher's outputs (pooled backbone features,
embedding = projector output, logits of every head), and ``<name>.json``: the architecture and the
versions that made it. arkx's tests load the files and compare the outputs (tests/models/test_released.py).

Weights are random but far from timm's small initialisation, so every tensor (and every layout error)
changes the outputs. Output is deterministic for a given torch version.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import timm
import torch
from timm.models import swin_transformer as swin
from torch import nn

ARK6_HEADS = [14, 14, 14, 3, 6, 1]  # MIMIC, CheXpert, ChestXray14, RSNAPneumonia, VinDrCXR, Shenzhen

FIXTURES = {
    "ark6_tiny_timm054": dict(
        swin=dict(img_size=64, patch_size=4, window_size=4, embed_dim=8, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4)),
        projector="mlp", projector_dim=24, heads=ARK6_HEADS, layout="training checkpoint"),
    "arkplus_tiny_timm054": dict(
        swin=dict(img_size=96, patch_size=4, window_size=6, embed_dim=8, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4)),
        projector="linear", projector_dim=20, heads=ARK6_HEADS, layout="teacher state dict"),
}


class AuthorsArkSwin(swin.SwinTransformer):
    """The authors' model class layout on timm 0.5.4's Swin: a projector after the pooled features
    and one head per dataset; ``forward(x, i)`` returns (embedding, logits of head i)."""

    def __init__(self, heads: list[int], projector: str, projector_dim: int, **swin_kwargs):
        # Theirs keeps timm's 1000-class ImageNet ``head`` (created, never called); 10 classes keep the file small.
        super().__init__(num_classes=10, **swin_kwargs)
        width = self.num_features
        if projector == "mlp":
            self.projector = nn.Sequential(nn.Linear(width, projector_dim), nn.ReLU(inplace=True),
                                           nn.Linear(projector_dim, projector_dim))
        else:
            self.projector = nn.Linear(width, projector_dim)
        self.omni_heads = nn.ModuleList([nn.Linear(projector_dim, n) for n in heads])

    def embed(self, x):
        return self.projector(self.forward_features(x))

    def forward(self, x, head_n=None):
        z = self.embed(x)
        return (z, self.omni_heads[head_n](z)) if head_n is not None else [h(z) for h in self.omni_heads]


def randomise(model: nn.Module, seed: int) -> None:
    """Weights far from timm's init (std 0.02), so that each tensor matters to the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith(".weight") and p.ndim == 1:  # LayerNorm scales around 1
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(noise * (0.3 if p.ndim == 1 else 1.0 / max(1, p[0].numel()) ** 0.5))


def build(cfg: dict, seed: int) -> AuthorsArkSwin:
    torch.manual_seed(seed)
    model = AuthorsArkSwin(cfg["heads"], cfg["projector"], cfg["projector_dim"], **cfg["swin"])
    randomise(model, seed)
    return model.eval()


def make(name: str, cfg: dict, out: Path) -> None:
    teacher, student = build(cfg, seed=1), build(cfg, seed=2)
    if cfg["layout"] == "training checkpoint":
        teacher_dp, student_dp = nn.DataParallel(teacher), nn.DataParallel(student)  # module. prefixes
        optimizer = torch.optim.SGD(student_dp.parameters(), lr=0.3, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
        checkpoint = {"epoch": 199, "lossMIN": [0.1] * len(cfg["heads"]), "state_dict": student_dp.state_dict(),
                      "teacher": teacher_dp.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict()}
    else:
        checkpoint = teacher.state_dict()
    torch.save(checkpoint, out / f"{name}.pth.tar")

    side = cfg["swin"]["img_size"]
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        features = teacher.forward_features(x)
        reference = {"input": x, "features": features, "embedding": teacher.projector(features)}
        reference.update({f"logits.{i}": logits for i, logits in enumerate(teacher(x))})
    torch.save(reference, out / f"{name}.ref.pt")
    meta = dict(cfg, swin={k: list(v) if isinstance(v, tuple) else v for k, v in cfg["swin"].items()},
                timm=timm.__version__, torch=torch.__version__, script="scripts/make_timm054_fixture.py")
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{out / name}.pth.tar: {(out / f'{name}.pth.tar').stat().st_size} bytes")


def main(argv: list[str]) -> int:
    if timm.__version__ != "0.5.4":
        print(f"needs timm 0.5.4 (the authors' version), found {timm.__version__}", file=sys.stderr)
        return 2
    out = Path(argv[0] if argv else "tests/fixtures")
    out.mkdir(parents=True, exist_ok=True)
    for name, cfg in FIXTURES.items():
        make(name, cfg, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
