"""Data commands of the ``arkx`` command line: ``synth`` (synthetic datasets in the providers' layouts),
``datasets`` (list the adapters, inspect a folder), ``prepare`` (decode images once into the prepared cache,
verify or repair it) and ``cache`` (remove old cache folders). Each command is an ``_add_*`` function that
declares its subparser and a ``_cmd_*`` function that runs it over :mod:`arkx.api` and :mod:`arkx.data`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._common import _examples, _parse_options


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic datasets in the providers' official layouts",
                       description="Write synthetic chest X-ray datasets in the providers' official layouts.",
                       **_examples("arkx synth synth --n 200 --datasets chexpert shenzhen"))
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=200, help="images per dataset")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--datasets", nargs="*", default=None, help="subset of layouts (default: all)")


def _cmd_synth(args) -> int:
    from ..api import synthesize

    roots = synthesize(args.out, seed=args.seed, n=args.n, size=args.size, datasets=args.datasets)
    for name, root in roots.items():
        print(f"{name:<12} {root}")
    return 0


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="dataset adapters: list them, inspect a folder",
                       **_examples("arkx datasets list", "arkx datasets inspect data/NIH --type nih14"))
    dsub = p.add_subparsers(dest="datasets_command", required=True)
    dsub.add_parser("list", help="known dataset types and the folder each expects", **_examples("arkx datasets list"))
    ins = dsub.add_parser("inspect", help="what an adapter reads from a dataset folder",
                          **_examples("arkx datasets inspect data/CheXpert-v1.0-small --type chexpert --json"))
    ins.add_argument("root", type=Path)
    ins.add_argument("--type", required=True, dest="type_")
    ins.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    ins.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd_datasets(args) -> int:
    from ..data.adapters import adapter_names, get_adapter

    if args.datasets_command == "list":
        for name in adapter_names():
            spec = get_adapter(name)
            print(f"{name}: {spec.summary}\n{spec.layout}\n")
        return 0
    from ..api import inspect_dataset
    from ..data.summary import format_summary

    summary = inspect_dataset(args.type_, args.root, **_parse_options(args.option))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="decode datasets once into the prepared cache (a config, or one folder)",
                       description="Decode every image once into the prepared cache that training reads.",
                       **_examples("arkx prepare my-config.yaml",
                                   "arkx prepare data/CheXpert-v1.0-small --type chexpert --cache-dir arkx-cache"))
    p.add_argument("target", type=Path, help="a YAML config, or a dataset folder with --type")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the config")
    p.add_argument("--type", dest="type_", help="adapter of the dataset folder TARGET")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--size", type=int, default=256, help="cache image side (with --type)")
    p.add_argument("--cache-dir", type=Path, default=Path("arkx-cache"), help="cache root (with --type)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (with --type)")
    p.add_argument("--fail-fraction", type=float, default=0.05, help="unreadable images tolerated (with --type)")
    p.add_argument("--verify", action="store_true",
                   help="re-check every cached image's checksum and re-read the originals to find changed ones")
    p.add_argument("--repair", action="store_true",
                   help="re-decode cached images that fail their checksum or whose original changed")


def _cmd_prepare(args) -> int:
    from ..data.adapters import read_dataset
    from ..data.loaders import prepare_images

    quiet = args.quiet
    if args.type_:
        records = read_dataset(args.type_, args.target, **_parse_options(args.option))
        jobs = [(args.type_, records, args.cache_dir, args.size, args.workers, args.fail_fraction)]
    else:
        from ..api import as_config

        cfg = as_config(args.target, args.overrides)
        cache_root = cfg.data.cache_dir or Path(cfg.run.out) / "cache"
        d = cfg.data
        jobs = [(ds.head_name, read_dataset(ds.type, ds.root, **ds.options), cache_root, d.resolved_cache_size,
                 d.prepare_workers, d.fail_fraction) for ds in cfg.datasets]
    status = 0
    for name, records, cache_root, size, workers, fail_fraction in jobs:
        images = prepare_images(records, cache_root, size, workers, fail_fraction, progress=not quiet,
                                repair=args.repair)
        print(f"{name:<14} {len(records)} images, {len(images.failures)} skipped -> {images.folder}")
        if args.repair:
            print(_repair_line(images))
        if args.verify:
            status = _verify_cache(images, workers, quiet) or status
    return status


def _repair_line(images) -> str:
    rows = images.repaired
    shown = f": rows {', '.join(map(str, rows[:10]))}{', ...' if len(rows) > 10 else ''}" if rows else ""
    return f"{'':<14} repair: {len(rows)} image(s) decoded again{shown}"


def _verify_cache(images, workers: int, quiet: bool) -> int:
    """Print what ``prepare --verify`` found in one cache; 1 when anything is wrong, else 0."""
    bad = images.verify()
    print(f"{'':<14} verify: {len(bad)} image(s) with a wrong checksum" + (f", e.g. row {bad[0]}" if bad else ""))
    changed = images.verify_sources(workers, progress=not quiet)
    example = f", e.g. {images.root / images.paths[changed[0]]}" if changed else ""
    print(f"{'':<14} verify: {len(changed)} image(s) whose original changed since prepare{example}")
    if bad or changed:
        print(f"{'':<14} run the same command with --repair to decode them again")
    return 1 if bad or changed else 0


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="manage prepared caches (remove old versions)",
                       description="Manage the folders of the prepared cache.",
                       **_examples("arkx cache clean arkx-cache --dry-run"))
    csub = p.add_subparsers(dest="cache_command", required=True)
    cl = csub.add_parser(
        "clean", help="remove old cache folders (all but the newest of each dataset and size; --all: every one)",
        description="Remove prepared-cache folders under CACHE_ROOT. By default the newest complete folder of each "
                    "dataset and size stays, and superseded, incomplete and old-format folders go; with --all "
                    "every cache folder goes (each is prepared again when needed). Folders being prepared are "
                    "kept; clean between runs, not while one trains from an old folder.",
        **_examples("arkx cache clean arkx-cache --dry-run", "arkx cache clean runs/ark6/cache --all"))
    cl.add_argument("cache_root", nargs="?", type=Path, default=Path("arkx-cache"),
                    help="the cache root (data.cache_dir, or prepare's --cache-dir; default arkx-cache)")
    cl.add_argument("--all", dest="remove_all", action="store_true",
                    help="remove every cache folder, the newest ones too")
    cl.add_argument("--dry-run", action="store_true", help="only list what would be removed")


def _cmd_cache(args) -> int:
    from ..data.cache import clean_cache, human_bytes

    results = clean_cache(args.cache_root, keep_latest=not args.remove_all, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    freed = 0
    for r in results:
        action = verb if r.remove else "kept"
        freed += r.nbytes if r.remove else 0
        print(f"{action:<13} {human_bytes(r.nbytes):>9}  {r.folder.name}  ({r.reason})")
    count = sum(r.remove for r in results)
    print(f"{verb} {count} folder(s), {human_bytes(freed)}; kept {len(results) - count}")
    return 0

