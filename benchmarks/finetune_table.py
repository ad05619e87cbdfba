"""Fine-tuning table on synthetic data: an Ark run's weights vs random initialisation, per target task.

What it measures: for each target (datasets the run was NOT pretrained on) it fine-tunes, with
:func:`arkx.finetune`, once from ``run:<pretrained>`` and once from ``scratch`` with the SAME architecture
(the run's backbone and projector), the same settings, the same fixed budget (epochs, no early stop:
the best val epoch is kept and scored on test once), over several seeds, and prints the test score
(mean ± std over seeds) of each init and their difference:

* JSRT segmentation (lungs, heart, clavicles): mean Dice over structures,
* Montgomery detection (lung boxes derived from the masks): COCO mAP at IoU 0.4,
* TBX11K and/or NODE21 detection (TB / nodule boxes): mAP at IoU 0.4,
* Montgomery classification (tuberculosis): AUROC.

``--modes full head`` also fine-tunes the pretrained init with its backbone and projector frozen
(head only; no scratch counterpart: a frozen random backbone is not a baseline worth the time).

Run (from the repository root; a CPU table in ~15 minutes on 2 cores)::

    arkx demo --no-baselines --out arkx-demo            # makes arkx-demo/ark, the Ark-6 run (if you have none)
    python benchmarks/finetune_table.py --pretrained arkx-demo/ark --data ft-data --out ft-table

The targets are synthesized into ``--data`` (``arkx.synthesize``) when that folder has none of them.
Every fine-tuning run's folder (metrics.csv, finetune.yaml, best.safetensors) is kept under ``--out``,
and the table is written to ``<out>/finetune_table.csv`` as well as printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml

DEFAULT_PRETRAINED = Path("arkx-demo/ark")


@dataclass(frozen=True)
class Target:
    """One row of the table: a dataset and which of its tasks to fine-tune on."""

    label: str  # the row's name
    dataset: str  # adapter / synthetic dataset name
    task: str  # classification | segmentation | detection
    # the budget, the same for every init of this target. Segmentation needs more, smaller steps at a
    # higher LR: at 64 px the decoder predicts empty masks for the first ~6 epochs (measured).
    epochs: int
    lr: float
    batch_size: int


TARGETS = {
    "jsrt-seg": Target("JSRT", "jsrt", "segmentation", epochs=12, lr=1e-2, batch_size=8),
    "montgomery-det": Target("Montgomery", "montgomery", "detection", epochs=3, lr=1e-3, batch_size=16),
    "tbx11k-det": Target("TBX11K", "tbx11k", "detection", epochs=3, lr=1e-3, batch_size=16),
    "node21-det": Target("NODE21", "node21", "detection", epochs=3, lr=1e-3, batch_size=16),
    "montgomery-cls": Target("Montgomery", "montgomery", "classification", epochs=4, lr=1e-3, batch_size=16),
}


# ---------------------------------------------------------------------------- inputs
def pretrained_run(path: Path) -> dict:
    """The run's resolved config (its architecture and input sizes); a missing run says how to make one."""
    config = path / "config.yaml"
    if not config.exists() or not (path / "teacher.safetensors").exists():
        sys.exit(f"{path} is not a finished arkx run (no config.yaml / teacher.safetensors).\n"
                 f"Make one with:  arkx demo --no-baselines --out {path.parent}   (writes {path.parent}/ark)")
    return yaml.safe_load(config.read_text())


def pretraining_datasets(run_config: dict) -> set[str]:
    return {entry["type"] for entry in run_config["datasets"]}


def target_roots(data: Path, names: list[str], *, n: int, size: int, seed: int) -> dict[str, Path]:
    """The synthetic targets under ``data``: reused if a previous call wrote them all, else synthesized."""
    import arkx

    manifest = data / "SYNTH.json"
    if manifest.exists():
        roots = json.loads(manifest.read_text())["roots"]
        if all(name in roots for name in names):
            return {name: data / roots[name] for name in names}
    print(f"synthesizing {', '.join(names)} into {data} (n={n}, size={size}, seed={seed})", flush=True)
    return arkx.synthesize(data, seed=seed, n=n, size=size, datasets=names)


# ---------------------------------------------------------------------------- one fine-tuning run
def architecture(run_config: dict) -> dict:
    """The settings that give a ``scratch`` init the run's own architecture."""
    model = run_config["model"]
    return dict(backbone=model["backbone"], backbone_kwargs=model.get("backbone_kwargs") or {},
                projector=model["projector"], projector_dim=model["projector_dim"])


def finetune_once(init: str, target: Target, root: Path, out: Path, mode: str, seed: int,
                  settings: dict) -> dict:
    """One :func:`arkx.finetune` run; returns its test score, best epoch and wall seconds."""
    import arkx

    started = time.perf_counter()
    result = arkx.finetune(init, target.dataset, root, out=out, task=target.task, mode=mode, seed=seed,
                           progress=False, **settings)
    seconds = time.perf_counter() - started
    return dict(metric=result.metric, score=float(result.test_score), best_epoch=result.best_epoch,
                seconds=seconds, details=result.test_details)


def budget(target: Target, args: argparse.Namespace) -> dict:
    """The target's epochs / LR / batch size, unless the command line sets them for every target."""
    return dict(epochs=args.epochs or target.epochs, lr=args.lr or target.lr,
                batch_size=args.batch_size or target.batch_size)


def run_target(key: str, target: Target, root: Path, inits: list[tuple[str, str, str]], seeds: list[int],
               settings: dict, scratch_settings: dict, out: Path) -> list[dict]:
    """Every (init, mode) of one target over the seeds, as flat records."""
    print(f"{key}: {target.task} on {target.dataset}, {settings['epochs']} epochs, lr {settings['lr']}, "
          f"batch {settings['batch_size']}", flush=True)
    records = []
    for name, init, mode in inits:
        extra = scratch_settings if init == "scratch" else {}
        for seed in seeds:
            run_out = out / "runs" / key / f"{name}-seed{seed}"
            found = finetune_once(init, target, root, run_out, mode, seed, {**settings, **extra})
            print(f"  {key:<15} {name:<16} seed {seed}: test {found['metric']} {found['score']:.4f} "
                  f"(best epoch {found['best_epoch']}, {found['seconds']:.0f} s)", flush=True)
            records.append(dict(key=key, target=target.label, task=target.task, init=name, seed=seed, **found))
    return records


# ---------------------------------------------------------------------------- the table
def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(records: list[dict], init_names: list[str]) -> pd.DataFrame:
    """One row per target: mean and std over seeds of each init, Δ = first init - scratch, seconds in all."""
    frame = pd.DataFrame(records)
    rows = []
    for key, group in frame.groupby("key", sort=False):
        row = dict(target=group.target.iloc[0], task=group.task.iloc[0], metric=group.metric.iloc[0])
        for name in init_names:
            scores = group[group.init == name].score.tolist()
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std(scores)
        row["delta"] = row[f"{init_names[0]}_mean"] - row["scratch_mean"]
        row["seconds"] = group.seconds.sum()
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame, init_names: list[str]) -> str:
    head = f"{'target':<11} {'task':<15} {'metric':<6}"
    head += "".join(f" {name:>16}" for name in init_names) + f" {'Δ (pre-scratch)':>16} {'seconds':>8}"
    lines = [head]
    for row in table.to_dict("records"):
        line = f"{row['target']:<11} {row['task']:<15} {row['metric']:<6}"
        line += "".join(f" {row[f'{n}_mean']:>8.3f} ± {row[f'{n}_std']:.3f}" for n in init_names)
        lines.append(line + f" {row['delta']:>+16.3f} {row['seconds']:>8.0f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", type=Path, default=DEFAULT_PRETRAINED,
                        help="an arkx run folder (default: %(default)s, from `arkx demo --no-baselines`)")
    parser.add_argument("--data", type=Path, default=Path("finetune-data"),
                        help="synthetic target datasets (synthesized here if absent)")
    parser.add_argument("--out", type=Path, default=Path("finetune-table"))
    parser.add_argument("--targets", nargs="+", default=["jsrt-seg", "montgomery-det", "montgomery-cls", "tbx11k-det",
                                                         "node21-det"], choices=list(TARGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, help="epochs for every target (default: each target's own)")
    parser.add_argument("--modes", nargs="+", default=["full"], choices=["full", "head"],
                        help="fine-tuning modes of the pretrained init (scratch is always full)")
    parser.add_argument("--lr", type=float, help="LR for every target (default: each target's own)")
    parser.add_argument("--batch-size", type=int, help="batch size for every target (default: each target's own)")
    parser.add_argument("--n", type=int, default=100, help="images per synthetic target dataset")
    parser.add_argument("--size", type=int, default=96, help="side of the synthetic images")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("arkx").setLevel(logging.WARNING)
    run_config = pretrained_run(args.pretrained)
    targets = {key: TARGETS[key] for key in args.targets}
    overlap = {t.dataset for t in targets.values()} & pretraining_datasets(run_config)
    if overlap:
        sys.exit(f"targets {sorted(overlap)} were among the pretraining datasets of {args.pretrained}")
    roots = target_roots(args.data, sorted({t.dataset for t in targets.values()}), n=args.n, size=args.size,
                         seed=args.data_seed)
    data_cfg = run_config["data"]
    settings = dict(eval_batch_size=128, patience=None, device="cpu", image_size=data_cfg["image_size"],
                    cache_size=data_cfg["cache_size"], cache_dir=args.out / "cache", workers=0)
    init = f"run:{args.pretrained}"
    inits = [(f"pretrained-{mode}", init, mode) for mode in args.modes] + [("scratch", "scratch", "full")]
    init_names = [name for name, _, _ in inits]
    print(f"pretrained: {args.pretrained} ({run_config['model']['backbone']}); settings: {settings}; "
          f"seeds {args.seeds}", flush=True)
    started = time.perf_counter()
    records = []
    for key, target in targets.items():
        records += run_target(key, target, roots[target.dataset], inits, args.seeds,
                              {**settings, **budget(target, args)}, architecture(run_config), args.out)
        table = write_table(records, init_names, args.out)  # after every target: a partial table survives
    print()
    print(format_table(table, init_names))
    print(f"\nwall time {time.perf_counter() - started:.0f} s", flush=True)
    return table


def write_table(records: list[dict], init_names: list[str], out: Path) -> pd.DataFrame:
    table = summarise(records, init_names)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "finetune_table.csv", index=False)
    pd.DataFrame(records).drop(columns="details").to_csv(out / "finetune_runs.csv", index=False)
    return table


if __name__ == "__main__":
    main()
