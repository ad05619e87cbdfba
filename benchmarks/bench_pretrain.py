"""Pretraining throughput: the authors' plain loop vs arkx's real training path, side by side.

    python benchmarks/bench_pretrain.py                       # Ark-6-like: Swin-B 224, on the GPU
    python benchmarks/bench_pretrain.py --tiny --device cpu   # a smoke run anywhere

Baseline = the loop as the authors write it: student forward+backward, head, projector, teacher
forward, BCE + MSE consistency, AdamW, fp32, on tensors already on the device (the model step alone).
arkx = the real path end to end: synthetic datasets in official layouts -> prepared cache on disk ->
DataLoader -> device augmentation -> step -> EMA at dataset boundaries (evaluation excluded).
Prints images/s, peak GPU memory and the ratio; ``--json`` writes the figures to a file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def baseline_loop(backbone: str, image_size: int, batch: int, steps: int, device: str, kwargs: dict) -> dict:
    import copy

    import timm

    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, num_classes=0, **kwargs).to(device)
    projector = torch.nn.Linear(model.num_features, 1376).to(device)
    head = torch.nn.Linear(1376, 14).to(device)
    teacher = copy.deepcopy(torch.nn.Sequential(model, projector)).to(device)
    params = list(model.parameters()) + list(projector.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = (torch.rand(batch, 14, device=device) > 0.7).float()

    def step():
        z = projector(model(x))
        with torch.no_grad():
            zt = teacher(x)
        loss = F.binary_cross_entropy_with_logits(head(z), y) + F.mse_loss(z, zt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _time(step, steps, batch, device)


def _time(step, steps: int, batch: int, device: str) -> dict:
    warm = max(2, steps // 5)
    for _ in range(warm):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return dict(images_per_s=steps * batch / seconds, seconds=seconds, peak_gib=mem)


def arkx_path(args, kwargs: dict, work: Path) -> dict:
    import arkx
    from arkx.api import heads_for
    from arkx.config import config_from_dict
    from arkx.data.loaders import prepare_dataset
    from arkx.models.ark import build_model
    from arkx.training.engine import Engine

    roots = arkx.synthesize(work / "data", seed=0, n=args.images_per_dataset, size=args.synth_size)
    names = ["mimic_cxr", "chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen"]
    datasets = []
    for name in names:
        entry = dict(type=name, root=str(roots[name]))
        if name == "mimic_cxr":
            entry["options"] = dict(patients_file=str(Path(roots[name]).parent.parent / "mimic-iv/hosp/patients.csv.gz"))
        datasets.append(entry)
    cfg = config_from_dict(dict(
        run=dict(out=str(work / "run"), device=args.device, deterministic=False),
        datasets=datasets,
        data=dict(image_size=args.image_size, batch_size=args.batch, workers=args.workers,
                  prepare_workers=args.workers, cache_dir=str(work / "cache")),
        model=dict(backbone=args.backbone, backbone_kwargs=kwargs),
        training=dict(rounds=args.rounds, warmup_rounds=0, optimizer="adamw", lr=1e-4, amp=args.amp,
                      compile=args.compile, channels_last=args.channels_last),
        eval=dict(every="end", test_at_end=False),
    ))
    prepared = {d.head_name: prepare_dataset(d, cfg.data, cfg.data.cache_dir, progress=False) for d in cfg.datasets}
    engine = Engine(cfg, prepared, build_model(cfg.model, heads_for(prepared)), cfg.run.out, progress=False)
    engine.run(stop_after_steps=len(names))  # warm-up round: workers, compile, cuDNN autotune
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seen = engine.images_seen
    start = time.perf_counter()
    engine.run(start_step=len(names))
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    mem = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
    return dict(images_per_s=(engine.images_seen - seen) / seconds, seconds=seconds, peak_gib=mem)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="swin_base_patch4_window7_224")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="timed steps of the baseline")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the arkx run (first one is warm-up)")
    p.add_argument("--images-per-dataset", type=int, default=2000)
    p.add_argument("--synth-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--amp", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--tiny", action="store_true", help="tiny Swin at 64 px (smoke run on a CPU)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    kwargs = {}
    if args.tiny:
        from arkx.demo import TINY_SWIN

        args.backbone, args.image_size = "swin_tiny_patch4_window7_224", 64
        args.batch, args.steps, args.images_per_dataset, args.synth_size = 32, 5, 120, 80
        args.rounds, args.workers = 2, 0
        kwargs = dict(TINY_SWIN)
    base = baseline_loop(args.backbone, args.image_size, args.batch, args.steps, args.device, kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        ours = arkx_path(args, kwargs, Path(tmp))
    ratio = ours["images_per_s"] / base["images_per_s"]
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}), "
          f"{args.backbone} {args.image_size}px, batch {args.batch}")
    print(f"{'path':<34} {'images/s':>10} {'peak GiB':>9}")
    print(f"{'baseline fp32 loop (model step)':<34} {base['images_per_s']:>10.1f} {base['peak_gib']:>9.2f}")
    print(f"{'arkx end to end (cache->step)':<34} {ours['images_per_s']:>10.1f} {ours['peak_gib']:>9.2f}")
    print(f"ratio arkx / baseline: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(dict(baseline=base, arkx=ours, ratio=ratio, args=vars(args)), default=str))


if __name__ == "__main__":
    main()
