"""The ``arkx`` command line, a thin layer over :mod:`arkx.api`.

Expected failures (:class:`arkx.errors.ArkxError`: a config typo, a dataset folder in the wrong layout, a
missing file, a refused resume) print one line and exit with status 2; ``--debug`` shows the traceback.
Anything else is a bug and keeps its traceback. Ctrl-C during a run prints where to resume (status 130).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__

DESCRIPTION = """\
arkx pretrains one chest X-ray foundation model on many differently labelled public datasets
(Ark, Ark+, Foundation X): each dataset keeps its own labels and head, one backbone learns from all."""

EPILOG = """\
first steps:
  arkx demo                                  synthetic data, a tiny CPU run, the comparison table
  arkx datasets list                         the dataset types and the folder layout each expects
  arkx datasets inspect DIR --type chexpert  what arkx reads from your copy of a dataset
  arkx prepare CONFIG.yaml                   decode the images once into the cache (optional)
  arkx pretrain CONFIG.yaml                  train; the run folder is run.out in the config
  arkx pretrain --resume RUN_DIR             continue an interrupted run

Run `arkx COMMAND --help` for a command's options and an example."""


def _examples(*lines: str) -> dict:
    """add_parser keyword arguments for a subcommand whose help ends with examples."""
    return dict(epilog=("examples:\n" if len(lines) > 1 else "example:\n") + "\n".join(f"  {line}" for line in lines),
                formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic datasets in the providers' official layouts",
                       description="Write synthetic chest X-ray datasets in the providers' official layouts.",
                       **_examples("arkx synth data/synth --n 200 --datasets chexpert shenzhen"))
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=200, help="images per dataset")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--datasets", nargs="*", default=None, help="subset of layouts (default: all)")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="synthesize data, pretrain Ark on the CPU, print the comparison table",
                       description="Synthesize six datasets, pretrain Ark on all of them on the CPU and compare "
                                   "with single-dataset runs.",
                       **_examples("arkx demo --out arkx-demo --rounds 10"))
    p.add_argument("--out", type=Path, default=Path("arkx-demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=500, help="images per synthetic dataset")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--no-baselines", action="store_true", help="skip the single-dataset baselines")


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


def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="embeddings of a dataset from a trained model, to a .npz file",
                       description="Embed every usable image of a dataset with a trained model (images read as "
                                   "training reads them) and write ids, splits, labels and embeddings to a .npz file.",
                       **_examples("arkx embed runs/ark6 --type chexpert --root data/CheXpert-v1.0-small "
                                   "--out chexpert.npz",
                                   "arkx embed runs/ark6/teacher.safetensors --type shenzhen --root data/shenzhen "
                                   "--features backbone --split test --cache-dir arkx-cache --out sz.npz"))
    p.add_argument("model", type=Path, help="run folder, .safetensors export or checkpoints/last.pt")
    p.add_argument("--type", required=True, dest="type_", help="dataset adapter")
    p.add_argument("--root", required=True, type=Path, help="dataset folder")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--out", required=True, type=Path, help="output file (.npz)")
    p.add_argument("--which", choices=("teacher", "student"), default="teacher")
    p.add_argument("--features", choices=("projector", "backbone"), default="projector",
                   help="projector output (the embedding heads read) or pooled backbone features")
    p.add_argument("--split", nargs="+", choices=("train", "val", "test"), default=None, help="default: all")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache root (default: the run's cache, else a cache folder beside --out)")


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="linear probes on embeddings at data fractions and k-shot, over seeds",
                       description="Logistic-regression probes on frozen embeddings: trained on subsets of train, "
                                   "C chosen on val, AUC on test; mean ± std over seeds.",
                       **_examples("arkx probe chexpert.npz --fractions 0.01 0.1 1.0 --seeds 0 1 2 --out probe.csv",
                                   "arkx probe chexpert.npz --fractions --shots 1 5 10 --balanced"))
    p.add_argument("embeddings", type=Path, help="a file written by arkx embed")
    p.add_argument("--fractions", type=float, nargs="*", default=[0.01, 0.1, 1.0])
    p.add_argument("--shots", type=int, nargs="*", default=[])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--balanced", action="store_true", help="class-balanced logistic regression")
    p.add_argument("--uncertain", choices=("ignore", "ones", "zeros"), default="ignore",
                   help="what an uncertain (-1) training label becomes")
    p.add_argument("--out", type=Path, default=None, help="per-label CSV (a .summary.csv is written beside it)")


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model (or train from scratch) on one dataset's labels",
                       description="A new head for the dataset on the initial model's features, trained on train, "
                                   "early-stopped on val mean AUC, the best epoch scored once on test. Writes "
                                   "metrics.csv, finetune.yaml and best.safetensors to --out.",
                       **_examples("arkx finetune --init run:runs/ark6 --type shenzhen --root data/shenzhen "
                                   "--out ft/ark6-full",
                                   "arkx finetune --init timm:swin_base.safetensors --type shenzhen --root "
                                   "data/shenzhen --out ft/imagenet-head --mode head",
                                   "arkx finetune --init scratch --backbone swin_base_patch4_window7_224 --type "
                                   "shenzhen --root data/shenzhen --out ft/scratch"))
    p.add_argument("--init", required=True, help="run:DIR (or an arkx export), released:FILE (authors' Ark), "
                                                 "timm:FILE (backbone weights) or scratch")
    p.add_argument("--type", required=True, dest="type_", help="dataset adapter")
    p.add_argument("--root", required=True, type=Path, help="dataset folder")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--mode", choices=("full", "head"), default="full", help="train everything, or the new head only")
    p.add_argument("--features", choices=("projector", "backbone"), default="projector",
                   help="what the new head reads")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None, help="default: the initial model's input size")
    p.add_argument("--cache-size", type=int, default=None, help="default: image size x 8/7 (a run's: its own)")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: the run's cache, else OUT/cache")
    p.add_argument("--patience", type=int, default=5,
                   help="epochs without a better val AUC before stopping (0: never stop early)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--uncertain", choices=("ones", "zeros", "ignore", "lsr-ones", "lsr-zeros"), default=None,
                   help="uncertain (-1) label policy (default: the adapter's)")
    p.add_argument("--backbone", default="swin_base_patch4_window7_224", help="timm model for timm: and scratch")
    p.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE",
                   help="timm.create_model keyword for timm: and scratch")
    p.add_argument("--workers", type=int, default=0)


def _cmd_finetune(args) -> int:
    from .transfer.finetune import finetune

    result = finetune(args.init, args.type_, args.root, out=args.out, mode=args.mode,
                      options=_parse_options(args.option), features=args.features, epochs=args.epochs,
                      optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size, image_size=args.image_size,
                      cache_size=args.cache_size, cache_dir=args.cache_dir, patience=args.patience or None,
                      seed=args.seed, device=args.device, uncertain=args.uncertain, backbone=args.backbone,
                      backbone_kwargs=_parse_options(args.backbone_option), workers=args.workers,
                      progress=not args.quiet)
    per_label = ", ".join(f"{name} {auc:.4f}" for name, auc in result.test_per_label.items())
    print(f"best epoch {result.best_epoch} of {result.epochs_run} (val mean AUC {result.best_val_auc:.4f}); "
          f"test mean AUC {result.test_auc:.4f} ({per_label})")
    print(f"-> {result.best_path}, {result.metrics_path.name}, {result.settings_path.name}")
    return 0


def _cmd_embed(args) -> int:
    from .transfer import embed

    table = embed(args.model, args.type_, args.root, options=_parse_options(args.option), which=args.which,
                  features=args.features, splits=args.split, batch_size=args.batch_size, device=args.device,
                  cache_dir=args.cache_dir, out=args.out, progress=not args.quiet)
    excluded = len(table.meta.get("excluded", []))
    print(f"{len(table)} images x {table.embeddings.shape[1]} ({args.which} {args.features}) -> {args.out}"
          + (f"; {excluded} unreadable image(s) left out" if excluded else ""))
    return 0


def _cmd_probe(args) -> int:
    from .transfer import probe

    result = probe(args.embeddings, fractions=args.fractions, shots=args.shots, seeds=args.seeds,
                   class_weight="balanced" if args.balanced else None, uncertain=args.uncertain)
    print(result.format_summary())
    if args.out is not None:
        per_label, summary = result.to_csv(args.out)
        print(f"per-label AUCs -> {per_label}; summary -> {summary}")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="per-head probabilities for images (CSV/JSON), optional Grad-CAM heatmaps",
                       description="Read images (DICOM, PNG, JPEG, MetaImage) exactly as training reads them and print "
                                   "or write each head's probabilities with label names (sigmoid for multilabel heads, "
                                   "softmax for multiclass). --cam writes a Grad-CAM heatmap PNG per finding at or "
                                   "above --cam-threshold (needs pip install grad-cam).",
                       **_examples("arkx predict runs/ark6 chest.dcm",
                                   "arkx predict runs/ark6/teacher.safetensors scans/ --heads chexpert --out preds.csv "
                                   "--cam heatmaps/"))
    p.add_argument("model", type=Path, help="run folder, .safetensors export or checkpoints/last.pt")
    p.add_argument("inputs", type=Path, nargs="+", metavar="IMAGE|FOLDER", help="image files or folders (recursive)")
    p.add_argument("--heads", nargs="+", default=None, help="heads to report (default: all)")
    p.add_argument("--out", type=Path, default=None, help="output .csv or .json (default: CSV on stdout)")
    p.add_argument("--cam", type=Path, default=None, metavar="DIR", help="write Grad-CAM heatmap PNGs there")
    p.add_argument("--cam-threshold", type=float, default=0.5, help="probability at or above which a heatmap is made")
    p.add_argument("--which", choices=("teacher", "student"), default="teacher")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _cmd_predict(args) -> int:
    from .transfer.predict import predict

    table = predict(args.model, args.inputs, heads=args.heads, which=args.which, cam_dir=args.cam,
                    cam_threshold=args.cam_threshold, batch_size=args.batch_size, device=args.device,
                    out=args.out, progress=not args.quiet)
    if args.out is None:
        print(table.to_csv(index=False), end="")
    else:
        images = table["image"].nunique()
        cams = int((table["cam"] != "").sum()) if "cam" in table else 0
        print(f"{images} image(s), {len(table)} probabilities -> {args.out}"
              + (f"; {cams} heatmap(s) -> {args.cam}" if args.cam is not None else ""))
    return 0


def _add_zeroshot(sub) -> None:
    p = sub.add_parser("zeroshot", help="apply a pretrained head to a dataset through a label map (no training)",
                       description="Zero-shot transfer: score a target dataset's labels with a pretrained head's "
                                   "mapped labels (sigmoid, or softmax for a multiclass head) and report AUROC per "
                                   "label. Images are read as training reads them.",
                       **_examples("arkx zeroshot runs/ark6 --head chexpert --type nih14 --root data/nih14 "
                                   "--out zs.csv",
                                   "arkx zeroshot runs/ark6 --head chexpert --type vindr_cxr --root data/vindr "
                                   "--map my_map.yaml --split test"))
    p.add_argument("model", type=Path, help="run folder, .safetensors export or checkpoints/last.pt")
    p.add_argument("--head", required=True, help="the pretrained head to apply (e.g. chexpert)")
    p.add_argument("--type", required=True, dest="type_", help="target dataset adapter")
    p.add_argument("--root", required=True, type=Path, help="target dataset folder")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--map", default=None, dest="label_map",
                   help="shipped map name or YAML file {target label: head label} (default: <head>_to_<type>)")
    p.add_argument("--split", nargs="+", choices=("train", "val", "test"), default=["test"])
    p.add_argument("--out", type=Path, default=None, help="per-label CSV")
    p.add_argument("--which", choices=("teacher", "student"), default="teacher")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache root (default: the run's cache, else a cache folder beside --out)")


def _cmd_zeroshot(args) -> int:
    from .transfer.zeroshot import zeroshot

    result = zeroshot(args.model, args.head, args.type_, args.root, label_map=args.label_map, splits=args.split,
                      options=_parse_options(args.option), which=args.which, batch_size=args.batch_size,
                      device=args.device, cache_dir=args.cache_dir, out=args.out, progress=not args.quiet)
    print(result.format_table())
    if args.out is not None:
        print(f"per-label AUCs -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arkx", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"arkx {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_synth, _add_demo, _add_pretrain, _add_prepare, _add_datasets, _add_cache,
                _add_embed, _add_probe, _add_info, _add_export, _add_zeroshot,
                _add_predict, _add_finetune):
        add(sub)
    return parser


def _parse_options(items: list[str]) -> dict:
    import yaml

    from .config import load_yaml_text
    from .errors import ArkxValueError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ArkxValueError(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = load_yaml_text(value, f"--option {key}")
        except yaml.YAMLError as err:
            raise ArkxValueError(f"--option {item!r}: the value is not valid YAML "
                                 f"({' '.join(str(err).split())[:120]}); quote it") from None
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

    from .errors import ArkxValueError

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
    from .data.cache import clean_cache, human_bytes

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


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="what a model file is: backbone, input size, normalisation, heads, datasets",
                       description="Describe a model: an arkx export (whole model or timm backbone), a run folder, "
                                   "an arkx checkpoint, or the authors' Ark / Ark+ checkpoint (.pth.tar).",
                       **_examples("arkx info runs/ark6", "arkx info ark6_teacher_ep200_swinb_projector1376_mlp.pth.tar",
                                   "arkx info backbone.safetensors --json"))
    p.add_argument("model", type=Path, help="run folder, .safetensors, last.pt or an authors' .pth.tar")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd_info(args) -> int:
    from .models.export import format_info, model_info

    info = model_info(args.model)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model's backbone as a .safetensors file plain timm loads",
                       description="Write the backbone (teacher by default) in timm's key layout, with the config "
                                   "(architecture, model_args, input size, mean/std, heads, datasets) in the file's "
                                   "metadata and a sidecar .json. Load it with timm.create_model(architecture, "
                                   "num_classes=0, checkpoint_path=FILE, **model_args).",
                       **_examples("arkx export runs/ark6 ark6-backbone.safetensors",
                                   "arkx export ark6_teacher.pth.tar ark6-backbone.safetensors --variant ark6"))
    p.add_argument("model", type=Path, help="run folder, .safetensors export, last.pt or an authors' .pth.tar")
    p.add_argument("out", type=Path, help="output .safetensors file")
    p.add_argument("--which", choices=("teacher", "student"), default="teacher")
    p.add_argument("--variant", default="auto", help="for an authors' checkpoint: auto, ark6, ark_plus, ark_plus_covidx")


def _cmd_export(args) -> int:
    from .models.export import export_timm
    from .models.released import load_any_model

    model = load_any_model(args.model, args.which, args.variant)
    path = export_timm(model, args.out)
    print(f"{path} (+ {path.with_suffix('.json').name}): {model.backbone.arkx_backbone['name']} backbone for plain timm")
    return 0


COMMANDS = {"synth": _cmd_synth, "demo": _cmd_demo, "pretrain": _cmd_pretrain, "prepare": _cmd_prepare,
            "datasets": _cmd_datasets, "cache": _cmd_cache,
            "embed": _cmd_embed, "probe": _cmd_probe, "info": _cmd_info, "export": _cmd_export,
            "zeroshot": _cmd_zeroshot, "predict": _cmd_predict,
            "finetune": _cmd_finetune}


def _configure_logging(quiet: bool) -> None:
    """Console: INFO (WARNING with --quiet). The level is the console handler's, not the loggers', so a
    run's log file (``run.log``) still receives INFO records with --quiet."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    from .errors import ArkxError

    try:
        return COMMANDS[args.command](args)
    except ArkxError as err:  # bad input or a refused operation; any other exception is a bug: traceback
        if args.debug:
            raise
        print(f"arkx {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        print(f"arkx {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
