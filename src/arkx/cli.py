"""The ``arkx`` command line: parses arguments and calls :mod:`arkx.api`, nothing more.

Expected failures (a config typo, a dataset folder in the wrong layout, a missing file) print one
clear message and exit with status 2; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic datasets in the providers' official layouts")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=200, help="images per dataset")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--datasets", nargs="*", default=None, help="subset of layouts (default: all)")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="synthesize data, pretrain Ark on the CPU, print the comparison table")
    p.add_argument("--out", type=Path, default=Path("arkx-demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=500, help="images per synthetic dataset")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--no-baselines", action="store_true", help="skip the single-dataset baselines")


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="Ark pretraining from a YAML config")
    p.add_argument("config", nargs="?", type=Path, help="YAML config (omit with --resume)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its last checkpoint")


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="decode datasets once into the prepared cache (a config, or one folder)")
    p.add_argument("target", type=Path, help="a YAML config, or a dataset folder with --type")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the config")
    p.add_argument("--type", dest="type_", help="adapter of the dataset folder TARGET")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--size", type=int, default=256, help="cache image side (with --type)")
    p.add_argument("--cache-dir", type=Path, default=Path("arkx-cache"), help="cache root (with --type)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (with --type)")
    p.add_argument("--fail-fraction", type=float, default=0.05, help="unreadable images tolerated (with --type)")
    p.add_argument("--verify", action="store_true", help="re-check every cached image's checksum")


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="dataset adapters: list them, inspect a folder")
    dsub = p.add_subparsers(dest="datasets_command", required=True)
    dsub.add_parser("list", help="known dataset types and the folder each expects")
    ins = dsub.add_parser("inspect", help="what an adapter reads from a dataset folder")
    ins.add_argument("root", type=Path)
    ins.add_argument("--type", required=True, dest="type_")
    ins.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    ins.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arkx", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"arkx {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_synth, _add_demo, _add_pretrain, _add_prepare, _add_datasets):
        add(sub)
    return parser


def _parse_options(items: list[str]) -> dict:
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


def _cmd_synth(args) -> int:
    from .api import synthesize

    roots = synthesize(args.out, seed=args.seed, n=args.n, size=args.size, datasets=args.datasets)
    for name, root in roots.items():
        print(f"{name:<12} {root}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import format_table, run_demo

    result = run_demo(args.out, seed=args.seed, n=args.n, rounds=args.rounds, baselines=not args.no_baselines,
                      progress=not args.quiet)
    print("\nTest mean AUC per dataset (teacher), Ark-6 vs the same budget on one dataset:")
    print(format_table(result.table))
    print(f"\nwall time {result.seconds:.0f} s; runs, metrics.csv and TensorBoard logs in {result.out}")
    return 0


def _cmd_pretrain(args) -> int:
    from . import api

    if args.resume:
        # With a CONFIG too, it must match the run's own config (checked by resume); without, the run's is used.
        summary = api.resume(args.resume, args.config, overrides=args.overrides, progress=not args.quiet)
    else:
        if args.config is None:
            raise ValueError("a CONFIG file is required (or --resume DIR)")
        summary = api.pretrain(args.config, overrides=args.overrides, progress=not args.quiet)
    print(f"steps {summary.steps_done}/{summary.total_steps}, {summary.images_seen} images in "
          f"{summary.train_seconds:.1f} s; run folder {summary.out}")
    for model, per in summary.final.items():
        for name, auc in per.items():
            print(f"  test mean AUC  {model:<8} {name:<14} {auc:.4f}")
    for name, count in summary.skipped_images.items():
        if count:
            print(f"  {name}: {count} unreadable image(s) skipped (see the log)")
    return 0


def _cmd_prepare(args) -> int:
    from .data.adapters import read_dataset
    from .data.loaders import prepare_images

    quiet = args.quiet
    if args.type_:
        records = read_dataset(args.type_, args.target, **_parse_options(args.option))
        jobs = [(args.type_, records, args.cache_dir, args.size, args.workers, args.fail_fraction)]
    else:
        from .api import as_config

        cfg = as_config(args.target, args.overrides)
        cache_root = cfg.data.cache_dir or Path(cfg.run.out) / "cache"
        d = cfg.data
        jobs = [(ds.head_name, read_dataset(ds.type, ds.root, **ds.options), cache_root, d.resolved_cache_size,
                 d.prepare_workers, d.fail_fraction) for ds in cfg.datasets]
    status = 0
    for name, records, cache_root, size, workers, fail_fraction in jobs:
        images = prepare_images(records, cache_root, size, workers, fail_fraction, progress=not quiet)
        print(f"{name:<14} {len(records)} images, {len(images.failures)} skipped -> {images.folder}")
        if args.verify:
            bad = images.verify()
            print(f"{'':<14} verify: {len(bad)} image(s) with a wrong checksum" + (f", e.g. row {bad[0]}" if bad else ""))
            status = status or (1 if bad else 0)
    return status


def _cmd_datasets(args) -> int:
    from .data.adapters import adapter_names, get_adapter

    if args.datasets_command == "list":
        for name in adapter_names():
            spec = get_adapter(name)
            print(f"{name}: {spec.summary}\n{spec.layout}\n")
        return 0
    from .api import inspect_dataset
    from .data.summary import format_summary

    summary = inspect_dataset(args.type_, args.root, **_parse_options(args.option))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


COMMANDS = {"synth": _cmd_synth, "demo": _cmd_demo, "pretrain": _cmd_pretrain, "prepare": _cmd_prepare,
            "datasets": _cmd_datasets}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .config import ConfigError
    from .data.records import DatasetFormatError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DatasetFormatError, FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"arkx {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
