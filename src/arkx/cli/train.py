"""Training commands of the ``arkx`` command line: ``demo`` (synthetic data, a tiny CPU pretraining run and
the comparison table) and ``pretrain`` (Ark pretraining from a YAML config, or ``--resume`` of a run folder).
Each command is an ``_add_*`` function that declares its subparser and a ``_cmd_*`` function that runs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._common import _examples


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="synthesize data, pretrain Ark on the CPU, print the comparison table",
                       description="Synthesize six datasets, pretrain Ark on all of them on the CPU and compare "
                                   "with single-dataset runs, over three seeds (means with 95% CIs, paired "
                                   "differences). Running it again continues the folder.",
                       **_examples("arkx demo --out arkx-demo", "arkx demo --seeds 0 1 2 3 4 --rounds 8"))
    p.add_argument("--out", type=Path, default=Path("arkx-demo"))
    p.add_argument("--seed", type=int, default=0, help="first seed (seeds SEED, SEED+1, SEED+2)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="the seeds (default 0 1 2)")
    p.add_argument("--n", type=int, default=None, help="images per synthetic dataset (default 300; --foundation-x 200)")
    p.add_argument("--rounds", type=int, default=None, help="pretraining rounds (default 8; --foundation-x 12)")
    p.add_argument("--no-baselines", action="store_true", help="skip the single-dataset baselines")
    p.add_argument("--foundation-x", action="store_true",
                   help="Foundation X (X-CLS) on synthetic classification, localization and segmentation datasets, "
                        "next to single-task models (defaults: --n 200 --rounds 12)")


def _cmd_demo(args) -> int:
    from ..demo import DEMO_N, DEMO_ROUNDS, format_table, run_demo

    if args.foundation_x:
        return _foundation_x_demo(args)
    result = run_demo(args.out, seed=args.seed, seeds=args.seeds, n=args.n or DEMO_N, rounds=args.rounds or DEMO_ROUNDS,
                      baselines=not args.no_baselines, progress=not args.quiet)
    seeds = " ".join(map(str, result.experiment.seeds))
    _print_demo(f"Test mean AUC per dataset (teacher), Ark-6 vs the same budget on one dataset; mean over seeds "
                f"{seeds} [95% t-interval], Δ paired by seed (p: paired t-test):", format_table(result.table), result)
    return 0


def _foundation_x_demo(args) -> int:
    from ..demo_foundation_x import format_table, run_foundation_x_demo

    out = args.out if args.out != Path("arkx-demo") else Path("arkx-demo-fx")
    result = run_foundation_x_demo(out, seed=args.seed, n=args.n or 200, rounds=args.rounds or 12,
                                   baselines=not args.no_baselines, progress=not args.quiet)
    _print_demo("Test score per task (teacher): Foundation X (X-CLS) vs the same budget on one task of one dataset:",
                format_table(result.table), result)
    return 0


def _print_demo(title: str, table: str, result) -> None:
    print(f"\n{title}")
    print(table)
    print(f"\nwall time {result.seconds:.0f} s; runs, metrics.csv and TensorBoard logs in {result.out}")
    if result.report is not None:
        print(f"report (plots, ROC curves, t-SNE; opens offline in a browser): {result.report}")


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="Ark pretraining from a YAML config",
                       description="Pretrain from a YAML config, or continue a run from its last checkpoint.",
                       **_examples("arkx pretrain ark6-swinb224 training.rounds=50 run.out=runs/ark6",
                                   "arkx pretrain --resume runs/ark6"))
    p.add_argument("config", nargs="?", type=Path,
                   help="YAML config file, or the name of a shipped one (ark6-swinb224); omit with --resume")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--accept-data-change", action="store_true",
                   help="with --resume: continue although a dataset's records or images changed since the checkpoint")


def _cmd_pretrain(args) -> int:
    from .. import api

    from ..errors import ArkxValueError

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in str(config) and not config.exists():
        config, overrides = None, [str(config)] + overrides  # `--resume RUN key=val`: an override, not a file
    if args.resume:
        # With a CONFIG too, it must match the run's own config (checked by resume); without, the run's is
        # used, and overrides that would change it are refused with the keys they change.
        summary = api.resume(args.resume, config, overrides=overrides, progress=not args.quiet,
                             accept_data_change=args.accept_data_change)
    else:
        if config is None:
            raise ArkxValueError("a CONFIG file is required (or --resume DIR)")
        if args.accept_data_change:
            raise ArkxValueError("--accept-data-change applies to --resume only")
        summary = api.pretrain(config, overrides=overrides, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # torchrun: rank 0 prints the job's results
    print(f"steps {summary.steps_done}/{summary.total_steps}, {summary.images_seen} images in "
          f"{summary.train_seconds:.1f} s; run folder {summary.out}")
    for model, per in summary.final.items():
        for name, auc in per.items():
            print(f"  test mean AUC  {model:<8} {name:<14} {auc:.4f}")
    for name, count in summary.skipped_images.items():
        if count:
            print(f"  {name}: {count} unreadable image(s) skipped (see the log)")
    return 0

