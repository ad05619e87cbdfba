"""Data path and training step on the CPU: loader, augmentation, `arkx prepare` and one profiled step.

    python benchmarks/bench_data.py                 # full run (a few minutes on 2 cores)
    python benchmarks/bench_data.py --tiny          # smoke run (seconds)
    python benchmarks/bench_data.py --only loader prepare --json figures.json

Four parts, each printing its figures:

* loader: images/s read from the prepared cache (synthetic NIH-14 at ``--cache-size``) by
  ``make_loader`` at ``--batch``, for each number of DataLoader workers; per core = rate / max(workers, 1).
  The cores a GPU host needs to feed ``--target`` images/s follow from the one-worker rate (one worker
  process on its own core), and, conservatively, from the slowest per-core rate measured.
* augment: the student view (``sample_augment_params`` + ``student_view`` at ``--image-size``) on one CPU
  thread. On a GPU host this runs on the GPU, so it is reported apart from the loader.
* prepare: decoding realistic originals (``--original-size`` px PNG 8/16-bit, JPEG, 16-bit DICOM
  MONOCHROME2 and MONOCHROME1, generated here) into the cache: per image with the function each cache
  worker runs per row (``content_hash`` + ``load_resized``), then the whole ``prepare`` of the folder
  with 1 and 2 decoding processes.
* step: one training step of a tiny model (``Engine.train_step``) under ``torch.profiler`` and
  ``cProfile``: top operators by self CPU time, top Python functions, and the per-iteration counts of
  what does not belong in the hot path (host read-backs and who makes them, uint8 -> float conversions,
  loader, optimizer and Python time). One torch thread by default (``--step-threads``): a per-core figure,
  and on a shared machine more threads than free cores spin and wait.

Timings are wall-clock on a machine that may be shared: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PARTS = ("loader", "augment", "prepare", "step")
FORMATS = ("png8", "png16", "jpeg", "dicom_m2", "dicom_m1")
SUFFIX = {"png8": ".png", "png16": ".png", "jpeg": ".jpg", "dicom_m2": ".dcm", "dicom_m1": ".dcm"}
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------- loader


def prepared_nih14(work: Path, n: int, synth_size: int, cache_size: int, image_size: int):
    """Synthetic NIH-14 prepared at ``cache_size`` (a :class:`PreparedDataset`)."""
    import arkx
    from arkx.config import config_from_dict
    from arkx.data.loaders import prepare_dataset

    roots = arkx.synthesize(work / "data", seed=0, n=n, size=synth_size, datasets=["nih14"])
    cfg = config_from_dict(dict(
        run=dict(out=str(work / "run"), device="cpu"),
        datasets=[dict(type="nih14", root=str(roots["nih14"]))],
        data=dict(image_size=image_size, cache_size=cache_size, prepare_workers=0, cache_dir=str(work / "cache")),
    ))
    return prepare_dataset(cfg.datasets[0], cfg.data, cfg.data.cache_dir, progress=False), cfg


def bench_loader(prepared, batch: int, workers_list: list[int], epochs: int) -> dict:
    """images/s of a train loader over the cache, per worker count (first epoch = warm-up, not timed)."""
    from arkx.data.loaders import make_loader

    out = {}
    for workers in workers_list:
        loader = make_loader(prepared, "train", batch, workers, train=True)
        loader.sampler.set_seed(0)
        for _ in loader:  # warm-up: starts the persistent workers, pages the cache in
            pass
        images = 0
        start = time.perf_counter()
        for epoch in range(epochs):
            loader.sampler.set_seed(epoch + 1)
            for b in loader:
                images += b.images.shape[0]
        rate = images / (time.perf_counter() - start)
        out[workers] = dict(images_per_s=rate, per_core=rate / max(workers, 1), images=images)
        del loader  # ends its workers before the next count starts
    return out


def bench_augment(prepared, cfg, batch: int, repeats: int) -> dict:
    """images/s of the student view on one CPU thread (params drawn per batch, as the engine does)."""
    from arkx.data.transforms import sample_augment_params, student_view

    rows = prepared.indices("train")[:batch]
    images = torch.stack([torch.from_numpy(prepared.images.read(int(r))) for r in rows]).unsqueeze(1)
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        student_view(images, cfg.data.image_size, sample_augment_params(len(rows), cfg.augment, gen))  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            student_view(images, cfg.data.image_size, sample_augment_params(len(rows), cfg.augment, gen))
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return dict(images_per_s=repeats * len(rows) / seconds, batch=len(rows))


def headline_per_core(loader: dict) -> tuple[float, str]:
    """The per-core rate a GPU host can count on: one worker process on its own core (workers=1; the main
    process only receives the batches). More workers than free cores on a shared machine measure contention,
    and workers=0 leaves out the transfer between processes; they are used only when workers=1 was not run."""
    if 1 in loader:
        return loader[1]["per_core"], "one worker process"
    workers = max(loader)
    return loader[workers]["per_core"], f"{workers} worker(s)"


def print_loader(loader: dict, augment: dict | None, target: float, host_cores: int, args) -> dict:
    print(f"\n== loader: prepared cache {args.cache_size}px -> batches of {args.batch} (load avg {load_average()})")
    print(f"{'workers':>7} {'images/s':>10} {'images/s/core':>14}")
    for workers, r in loader.items():
        print(f"{workers:>7} {r['images_per_s']:>10.0f} {r['per_core']:>14.0f}")
    per_core, basis = headline_per_core(loader)
    slowest = min(r["per_core"] for r in loader.values())
    cores = target / per_core
    print(f"to feed {target:.0f} images/s from the cache: {cores:.1f} worker cores at {per_core:.0f} images/s/core "
          f"({basis}); {target / slowest:.1f} at the slowest per-core rate measured ({slowest:.0f}); a "
          f"{host_cores}-core GPU host {'has enough' if target / slowest <= host_cores - 1 else 'does NOT have enough'}"
          " (one core kept for the main process)")
    summary = dict(loader_per_core=per_core, loader_cores_for_target=cores, loader_per_core_slowest=slowest)
    if augment is not None:
        a = augment["images_per_s"]
        both = 1.0 / (1.0 / per_core + 1.0 / a)
        print(f"student view {args.image_size}px on one CPU thread: {a:.0f} images/s "
              f"(runs on the GPU there; on the CPU, loader + view = {both:.0f} images/s/core "
              f"-> {target / both:.1f} cores for {target:.0f} images/s)")
        summary.update(augment_per_core=a, loader_and_augment_per_core=both)
    return summary


# ---------------------------------------------------------------------------------------------- prepare


def smooth_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float32 ``[H, W]`` image in [0, 1] that looks like a radiograph to a compressor: smooth large
    structures (a few bright blobs on a darker background, a vignette) plus fine sensor noise."""
    from PIL import Image

    coarse = rng.random((12, 12)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    yy, xx = np.ogrid[-1:1:complex(height), -1:1:complex(width)]
    vignette = 1.0 - 0.35 * (xx**2 + yy**2)
    x = 0.15 + 0.6 * field * vignette
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def write_original(path: Path, fmt: str, image: np.ndarray, rng: np.random.Generator, key: int) -> None:
    """Write ``image`` (float [0, 1]) as ``fmt`` with realistic noise for its bit depth."""
    from PIL import Image

    if fmt in ("png8", "jpeg"):
        u8 = np.clip(image * 255 + rng.normal(0, 1.5, image.shape), 0, 255).astype(np.uint8)
        if fmt == "png8":
            Image.fromarray(u8).save(path, compress_level=6)
        else:
            Image.fromarray(u8).save(path, quality=95)
        return
    # 12 significant bits, as CR/DR detectors make them: in 16-bit DICOM words as stored (BitsStored 12),
    # scaled to the full 16-bit range in a PNG (as 16-bit PNG exports are; no sBIT chunk needed)
    u16 = np.clip(image * 4095 + rng.normal(0, 6.0, image.shape), 0, 4095).astype(np.uint16)
    if fmt == "png16":
        Image.fromarray(u16 * np.uint16(16)).save(path)  # Pillow writes mode I;16 as a 16-bit grayscale PNG
        return
    from arkx.synth.dicom import write_dicom

    photometric = "MONOCHROME1" if fmt == "dicom_m1" else "MONOCHROME2"
    pixels = (4095 - u16) if photometric == "MONOCHROME1" else u16  # MONOCHROME1 stores bone dark
    write_dicom(path, pixels.astype(np.uint16), sop_class=CR_STORAGE, uid_key=("bench", key),
                photometric=photometric, bits_stored=12, tags=dict(Modality="CR", PatientID=f"P{key:04d}"))


def generate_originals(folder: Path, per_format: int, side: int, seed: int) -> list[tuple[str, Path]]:
    """``per_format`` originals of each of :data:`FORMATS`, ``side`` to ``1.25 * side`` px, non-square."""
    rng = np.random.default_rng(seed)
    files = []
    for fmt in FORMATS:
        for k in range(per_format):
            height = int(rng.integers(side, int(side * 1.25) + 1))
            width = int(height * rng.uniform(0.8, 1.0))
            path = folder / f"{fmt}_{k:03d}{SUFFIX[fmt]}"
            write_original(path, fmt, smooth_field(rng, height, width), rng, len(files))
            files.append((fmt, path))
    return files


def folder_records(root: Path, files: list[tuple[str, Path]]):
    """The generated folder as :class:`Records` without labels (what ``prepare`` needs)."""
    import pandas as pd

    from arkx.data.records import Records

    rows = [dict(image_id=p.stem, path=p.name, patient_id=p.stem, split="train", view=None, sex=None, age=math.nan)
            for _, p in files]
    return Records(dataset="bench_originals", root=root, images=pd.DataFrame(rows), task=None,
                   labels=np.zeros((len(rows), 0), np.float32))


def bench_prepare(work: Path, per_format: int, side: int, cache_size: int, workers_list: list[int]) -> dict:
    from arkx.data.cache import content_hash, prepare
    from arkx.data.io import load_resized, read_image, resize_uint8

    folder = work / "originals"
    folder.mkdir(parents=True)
    start = time.perf_counter()
    files = generate_originals(folder, per_format, side, seed=0)
    generated = time.perf_counter() - start
    per_format_rates = {}
    for fmt in FORMATS:
        paths = [p for f, p in files if f == fmt]
        load_resized(paths[0], cache_size)  # warm-up: imports the decoder
        start = time.perf_counter()
        for p in paths:
            content_hash(p)  # what the cache worker does per row: hash, then decode + resize
            load_resized(p, cache_size)
        seconds = time.perf_counter() - start
        decoded = [read_image(p) for p in paths]  # full resolution (a JPEG's draft decode would be smaller)
        pixels = [d.size for d in decoded]
        start = time.perf_counter()
        for d in decoded:
            resize_uint8(d, cache_size)
        resize_s = time.perf_counter() - start
        per_format_rates[fmt] = dict(images_per_s=len(paths) / seconds, ms_per_image=1000 * seconds / len(paths),
                                     resize_ms=1000 * resize_s / len(paths),
                                     mb_per_image=sum(p.stat().st_size for p in paths) / len(paths) / 2**20,
                                     mpix_per_image=sum(pixels) / len(pixels) / 1e6)
    records = folder_records(folder, files)
    whole = {}
    for workers in workers_list:
        start = time.perf_counter()
        prepared = prepare(records, work / f"prepare_cache_{workers}", cache_size, workers=workers, progress=False)
        rate = len(records) / (time.perf_counter() - start)
        if not bool(np.all(prepared.ok)):
            raise RuntimeError(f"prepare failed on {int((~prepared.ok).sum())} generated image(s): {prepared.failures[:2]}")
        whole[workers] = dict(images_per_s=rate, per_core=rate / max(workers, 1))
    return dict(formats=per_format_rates, whole=whole, n=len(files), per_format=per_format, generate_s=generated)


def print_prepare(r: dict, args) -> dict:
    print(f"\n== prepare: {r['n']} generated originals ({r['per_format']} per format, {args.original_size}-"
          f"{int(args.original_size * 1.25)} px tall), decoded into a {args.cache_size}px cache "
          f"(load avg {load_average()}; generating them took {r['generate_s']:.0f} s)")
    print(f"{'format':<10} {'MB/image':>9} {'Mpixel':>7} {'ms/image':>9} {'images/s/core':>14} {'resize ms':>10}")
    for fmt, f in r["formats"].items():
        print(f"{fmt:<10} {f['mb_per_image']:>9.3f} {f['mpix_per_image']:>7.3f} {f['ms_per_image']:>9.1f} "
              f"{f['images_per_s']:>14.2f} {f['resize_ms']:>10.2f}")
    print("(ms/image: hash + decode + resize, as a cache worker does per row; resize ms: the float resize of the "
          "full-resolution image alone, which a JPEG's reduced-scale decode mostly avoids)")
    print(f"{'workers':>7} {'images/s':>10} {'images/s/core':>14}   (whole prepare of the mixed folder; files "
          "already in the page cache)")
    for workers, w in r["whole"].items():
        print(f"{workers:>7} {w['images_per_s']:>10.2f} {w['per_core']:>14.2f}")
    summary = {f"prepare_{fmt}_per_core": f["images_per_s"] for fmt, f in r["formats"].items()}
    summary.update({f"prepare_whole_{w}_workers": v["images_per_s"] for w, v in r["whole"].items()})
    return summary


# ---------------------------------------------------------------------------------------------- step


def build_engine(work: Path, args, prepared_cfg_overrides: dict):
    """An Engine on synthetic NIH-14 with a tiny model (see ``--step-backbone``)."""
    import arkx
    from arkx.api import heads_for
    from arkx.config import config_from_dict
    from arkx.data.loaders import prepare_dataset
    from arkx.demo import TINY_SWIN
    from arkx.models.ark import build_model
    from arkx.training.engine import Engine

    roots = arkx.synthesize(work / "step_data", seed=0, n=args.step_images, size=96, datasets=["nih14"])
    kwargs = dict(TINY_SWIN) if args.step_backbone == "tiny_swin" else {}
    backbone = "swin_tiny_patch4_window7_224" if args.step_backbone == "tiny_swin" else args.step_backbone
    cfg = config_from_dict(dict(
        run=dict(out=str(work / "step_run"), device="cpu", deterministic=False),
        datasets=[dict(type="nih14", root=str(roots["nih14"]))],
        data=dict(image_size=64, batch_size=args.step_batch, workers=0, prepare_workers=0,
                  cache_dir=str(work / "step_cache")),
        model=dict(backbone=backbone, backbone_kwargs=kwargs),
        training=dict(rounds=3, warmup_rounds=0, optimizer="adamw", lr=1e-4, amp="off",
                      max_iters_per_epoch=args.step_iters, **prepared_cfg_overrides),
        eval=dict(every="end", test_at_end=False),
    ))
    prepared = {d.head_name: prepare_dataset(d, cfg.data, cfg.data.cache_dir, progress=False) for d in cfg.datasets}
    return Engine(cfg, prepared, build_model(cfg.model, heads_for(prepared)), cfg.run.out, progress=False)


def bench_step(work: Path, args) -> dict:
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.step_threads)  # on a shared machine, more threads than free cores spin and wait
    engine = build_engine(work, args, {})
    engine.train_step(engine.schedule[0])  # warm-up
    seen = engine.images_seen
    start = time.perf_counter()
    engine.train_step(engine.schedule[1])
    plain_s = time.perf_counter() - start
    images = engine.images_seen - seen
    iters = images // args.step_batch
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.train_step(engine.schedule[2])
    events = prof.key_averages()
    conversions = count_uint8_conversions()
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        engine.train_step(engine.schedule[1])
    finally:
        profiler.disable()
        conversions.undo()
    stats = pstats.Stats(profiler)
    return dict(images_per_s=images / plain_s, iters=iters, seconds=plain_s, events=events, stats=stats,
                uint8_conversions=conversions.count)


class count_uint8_conversions:
    """Counts the calls of ``arkx.data.transforms.to_unit`` that convert a uint8 batch (the others pass a
    float batch through), wherever the name was imported; ``undo()`` puts the originals back."""

    def __init__(self):
        import sys

        from arkx.data import transforms

        self.count = 0
        self.original = transforms.to_unit
        self.patched = [m for m in list(sys.modules.values())
                        if getattr(m, "__name__", "").startswith("arkx") and getattr(m, "to_unit", None) is self.original]

        def counting(images, *a, **k):
            if not images.is_floating_point():
                self.count += 1
            return self.original(images, *a, **k)

        for module in self.patched:
            module.to_unit = counting

    def undo(self) -> None:
        for module in self.patched:
            module.to_unit = self.original


def sync_callers(stats: pstats.Stats, top: int = 4) -> list[tuple[str, int]]:
    """Who calls ``Tensor.item`` / ``Tensor.tolist`` (host read-backs), with call counts, most first."""
    counts: dict[str, int] = {}
    for (filename, _, name), (_, _, _, _, callers) in stats.stats.items():
        if filename == "~" and ("'item'" in name or "'tolist'" in name):
            for (cfile, cline, cname), caller in callers.items():
                where = f"{'/'.join(Path(cfile).parts[-2:])}:{cline}({cname}) -> {name.split()[1]}"
                counts[where] = counts.get(where, 0) + caller[0]
    return sorted(counts.items(), key=lambda kv: -kv[1])[:top]


def _count(events, name: str) -> int:
    return sum(e.count for e in events if e.key == name)


def _self_ms(events, name: str) -> float:
    return sum(e.self_cpu_time_total for e in events if e.key == name) / 1000


def _python(stats: pstats.Stats, file_part: str, func: str) -> tuple[int, float]:
    """(calls, cumulative seconds) of the functions named ``func`` in files containing ``file_part``."""
    calls, cum = 0, 0.0
    for (filename, _, name), (_, ncalls, _, cumtime, _) in stats.stats.items():
        if name == func and file_part in filename.replace(os.sep, "/"):
            calls += ncalls
            cum += cumtime
    return calls, cum


def print_step(r: dict, args, top: int) -> dict:
    iters, events, stats = r["iters"], r["events"], r["stats"]
    print(f"\n== step: {args.step_backbone} 64px, batch {args.step_batch}, {iters} iterations per train_step, "
          f"{torch.get_num_threads()} torch threads (load avg {load_average()})")
    print(f"train_step without profiler: {r['images_per_s']:.1f} images/s ({1000 * r['seconds'] / iters:.0f} ms/iteration)")
    print(f"\ntop {top} operators by self CPU time (torch.profiler, one train_step):")
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    print(f"{'operator':<44} {'self ms':>9} {'calls':>7}")
    for e in rows:
        print(f"{e.key[:44]:<44} {e.self_cpu_time_total / 1000:>9.1f} {e.count:>7}")
    print(f"\ntop {top} Python functions by own time (cProfile, one train_step):")
    buf = io.StringIO()
    stats.stream = buf
    stats.sort_stats("tottime").print_stats(top)
    print("\n".join(line for line in buf.getvalue().splitlines()[-top - 2:] if line.strip()))
    total_s = stats.total_tt
    syncs = _count(events, "aten::_local_scalar_dense")
    to_unit_calls, to_unit_s = _python(stats, "arkx/data/transforms", "to_unit")
    next_calls, next_s = _python(stats, "torch/utils/data/dataloader", "__next__")
    _, aug_s = _python(stats, "arkx/data/transforms", "sample_augment_params")
    lr_calls, lr_s = _python(stats, "arkx/training/schedule", "learning_rate")
    arkx_own = sum(v[2] for k, v in stats.stats.items() if "/arkx/" in k[0].replace(os.sep, "/"))
    print("\nwhat does not belong in the hot path (per iteration):")
    print(f"  host syncs (aten::_local_scalar_dense: .item()/.tolist()/bool of a tensor): {syncs / iters:.2f} "
          f"({syncs} in {iters} iterations)")
    for where, calls in sync_callers(stats):
        print(f"    {calls / iters:6.1f} x {where}")
    conversions = r["uint8_conversions"] / iters
    print(f"  uint8 -> float conversions of a batch: {conversions:.2f} (to_unit: {to_unit_calls / iters:.2f} calls, "
          f"{1000 * to_unit_s / iters:.2f} ms)")
    print(f"  loader next(): {1000 * next_s / max(next_calls, 1):.1f} ms per batch "
          f"({100 * next_s / total_s:.0f}% of the step, workers=0)")
    print(f"  augmentation draws (sample_augment_params): {1000 * aug_s / iters:.2f} ms; LR schedule "
          f"(learning_rate): {1000 * lr_s / max(lr_calls, 1):.3f} ms")
    adam = {f: _python(stats, "torch/optim/adam", f) for f in ("_single_tensor_adam", "_multi_tensor_adam", "_fused_adam")}
    used = [f for f, (calls, _) in adam.items() if calls]
    adam_s = sum(cum for _, cum in adam.values())
    print(f"  optimizer update ({', '.join(used) or 'not seen'}): {1000 * adam_s / iters:.1f} ms "
          f"({100 * adam_s / total_s:.0f}% of the step; the single-tensor path loops over parameters in Python)")
    print(f"  Python own time inside arkx/*: {1000 * arkx_own / iters:.1f} ms "
          f"({100 * arkx_own / total_s:.1f}% of the step)")
    print(f"  aten::copy_ self time: {_self_ms(events, 'aten::copy_') / iters:.2f} ms, "
          f"aten::to calls: {_count(events, 'aten::to') / iters:.1f}")
    return dict(step_images_per_s=r["images_per_s"], step_syncs_per_iter=syncs / iters,
                step_uint8_conversions_per_iter=conversions, step_loader_fraction=next_s / total_s,
                step_optimizer_fraction=adam_s / total_s)


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=PARTS, default=list(PARTS))
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--cache-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--images", type=int, default=1500, help="synthetic NIH-14 images for the loader")
    p.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2, help="timed loader epochs (after one warm-up)")
    p.add_argument("--augment-repeats", type=int, default=5)
    p.add_argument("--target", type=float, default=2000.0, help="images/s the GPU must be fed")
    p.add_argument("--host-cores", type=int, default=16)
    p.add_argument("--per-format", type=int, default=4, help="generated originals per format")
    p.add_argument("--original-size", type=int, default=2400, help="height of the shortest original (px)")
    p.add_argument("--prepare-workers", type=int, nargs="*", default=[1, 2])
    p.add_argument("--step-backbone", default="tiny_swin", help="tiny_swin or a timm name (e.g. resnet10t)")
    p.add_argument("--step-batch", type=int, default=32)
    p.add_argument("--step-iters", type=int, default=10)
    p.add_argument("--step-images", type=int, default=500)
    p.add_argument("--step-threads", type=int, default=1, help="torch threads for the step (1: a per-core figure)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--tiny", action="store_true", help="everything in seconds (smoke run)")
    p.add_argument("--json", type=Path, help="write the summary figures to this file")
    args = p.parse_args()
    if args.tiny:
        args.batch, args.cache_size, args.image_size, args.images, args.workers = 8, 64, 56, 40, [0, 1]
        args.epochs, args.augment_repeats, args.per_format, args.original_size = 1, 2, 1, 160
        args.prepare_workers, args.step_batch, args.step_iters, args.step_images, args.top = [1], 8, 2, 60, 8
    print(f"bench_data: {os.cpu_count()} CPUs, load average {load_average()}, torch {torch.__version__}")
    summary: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "loader" in args.only or "augment" in args.only:
            synth_size = max(args.cache_size, 64)
            prepared, cfg = prepared_nih14(work, args.images, synth_size, args.cache_size, args.image_size)
            loader = bench_loader(prepared, args.batch, args.workers, args.epochs) if "loader" in args.only else None
            augment = bench_augment(prepared, cfg, args.batch, args.augment_repeats) if "augment" in args.only else None
            if loader is not None:
                summary.update(print_loader(loader, augment, args.target, args.host_cores, args))
            elif augment is not None:
                print(f"\n== student view {args.image_size}px on one CPU thread: {augment['images_per_s']:.0f} images/s")
                summary["augment_per_core"] = augment["images_per_s"]
        if "prepare" in args.only:
            r = bench_prepare(work, args.per_format, args.original_size, args.cache_size, args.prepare_workers)
            summary.update(print_prepare(r, args))
        if "step" in args.only:
            summary.update(print_step(bench_step(work, args), args, args.top))
    if args.json:
        args.json.write_text(json.dumps(dict(figures=summary, load_average=os.getloadavg(), args=vars(args)),
                                        default=str, indent=1))


if __name__ == "__main__":
    main()
