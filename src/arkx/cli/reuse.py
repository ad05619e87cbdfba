"""Commands of the ``arkx`` command line that reuse a trained model: ``embed`` (embeddings to a .npz),
``probe`` (linear probes on embeddings), ``finetune``, ``zeroshot`` (a pretrained head through a label map),
``predict`` (per-head probabilities, Grad-CAM), ``info`` (describe a model file) and ``export`` (a timm
backbone file). Each command is an ``_add_*`` function that declares its subparser and a ``_cmd_*`` function
that runs it over :mod:`arkx.transfer` and :mod:`arkx.models`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._common import (
    _add_batch_size_and_device,
    _add_dataset_options,
    _add_which,
    _examples,
    _parse_options,
)


def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="embeddings of a dataset from a trained model, to a .npz file",
                       description="Embed every usable image of a dataset with a trained model (images read as "
                                   "training reads them) and write ids, splits, labels and embeddings to a .npz file.",
                       **_examples("arkx embed runs/ark6 --type chexpert --root data/CheXpert-v1.0-small "
                                   "--out chexpert.npz",
                                   "arkx embed runs/ark6/teacher.safetensors --type shenzhen --root data/shenzhen "
                                   "--features backbone --split test --cache-dir arkx-cache --out sz.npz"))
    p.add_argument("model", type=Path, help="run folder, .safetensors export or checkpoints/last.pt")
    _add_dataset_options(p)
    p.add_argument("--out", required=True, type=Path, help="output file (.npz)")
    _add_which(p)
    p.add_argument("--features", choices=("projector", "backbone"), default="projector",
                   help="projector output (the embedding heads read) or pooled backbone features")
    p.add_argument("--split", nargs="+", choices=("train", "val", "test"), default=None, help="default: all")
    _add_batch_size_and_device(p, 64)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache root (default: the run's cache, else a cache folder beside --out)")


def _cmd_embed(args) -> int:
    from ..transfer import embed

    table = embed(args.model, args.type_, args.root, options=_parse_options(args.option), which=args.which,
                  features=args.features, splits=args.split, batch_size=args.batch_size, device=args.device,
                  cache_dir=args.cache_dir, out=args.out, progress=not args.quiet)
    excluded = len(table.meta.get("excluded", []))
    print(f"{len(table)} images x {table.embeddings.shape[1]} ({args.which} {args.features}) -> {args.out}"
          + (f"; {excluded} unreadable image(s) left out" if excluded else ""))
    return 0


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


def _cmd_probe(args) -> int:
    from ..transfer import probe

    result = probe(args.embeddings, fractions=args.fractions, shots=args.shots, seeds=args.seeds,
                   class_weight="balanced" if args.balanced else None, uncertain=args.uncertain)
    print(result.format_summary())
    if args.out is not None:
        per_label, summary = result.to_csv(args.out)
        print(f"per-label AUCs -> {per_label}; summary -> {summary}")
    return 0


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model (or train from scratch) on one dataset's task",
                       description="A new head for the dataset's task (classification, segmentation or detection) on "
                                   "the initial model's features, trained on train, early-stopped on the val metric "
                                   "(mean AUC, Dice or mAP40), the best epoch scored once on test. Settings come from "
                                   "CONFIG (a YAML file of fine-tuning settings) and/or the options (an option wins). "
                                   "Writes metrics.csv, finetune.yaml and best.safetensors to --out.",
                       **_examples("arkx finetune --init run:runs/ark6 --type shenzhen --root data/shenzhen "
                                   "--out ft/ark6-full",
                                   "arkx finetune --from scratch --backbone swin_base_patch4_window7_224 --type "
                                   "shenzhen --root data/shenzhen --out ft/scratch",
                                   "arkx finetune --init run:runs/ark6 --type jsrt --root data/JSRT --task segmentation "
                                   "--out ft/jsrt-seg",
                                   "arkx finetune ft-tbx11k.yaml --from scratch --out ft/tbx11k-scratch"))
    p.add_argument("config", nargs="?", type=Path, default=None,
                   help="YAML file with fine-tuning settings (init, dataset_type, root, task, epochs, lr, ...)")
    p.add_argument("--init", "--from", dest="init", default=None,
                   help="run:DIR (or an arkx export), released:FILE (authors' Ark or Foundation X), timm:FILE "
                        "(backbone weights) or scratch")
    p.add_argument("--type", dest="type_", default=None, help="dataset adapter")
    p.add_argument("--root", type=Path, default=None, help="dataset folder")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--out", type=Path, default=None, help="output folder")
    p.add_argument("--task", choices=("auto", "classification", "segmentation", "detection"), default=None,
                   help="which of the dataset's tasks (default auto: classification, else segmentation, else detection)")
    p.add_argument("--mode", choices=("full", "head"), default=None, help="train everything, or the new head only")
    p.add_argument("--features", choices=("projector", "backbone"), default=None,
                   help="what a new classification head reads")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None, help="default: the initial model's input size")
    p.add_argument("--cache-size", type=int, default=None, help="default: image size x 8/7 (a run's: its own)")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: the run's cache, else OUT/cache")
    p.add_argument("--patience", type=int, default=None,
                   help="epochs without a better val score before stopping (0: never stop early; default 5)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--uncertain", choices=("ones", "zeros", "ignore", "lsr-ones", "lsr-zeros"), default=None,
                   help="uncertain (-1) label policy (default: the adapter's)")
    p.add_argument("--backbone", default=None, help="timm model for timm: and scratch")
    p.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE",
                   help="timm.create_model keyword for timm: and scratch")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--which", choices=("teacher", "student"), default=None,
                   help="the model of a run:/released: init (default teacher; a Foundation X file: teacher_model)")
    p.add_argument("--shots", type=int, default=None,
                   help="few-shot: train on this many labelled training images (seeded draw, listed in OUT/shots.csv)")
    p.add_argument("--no-reuse-head", dest="reuse_head", action="store_false", default=None,
                   help="start a new segmentation head / detection decoder even when the initial model has one for "
                        "this dataset and labels")


#: command-line option -> fine-tuning setting (options left unset keep CONFIG's value, else the default)
_FINETUNE_FLAGS = dict(init="init", type_="dataset_type", root="root", out="out", task="task", mode="mode",
                       features="features", epochs="epochs", optimizer="optimizer", lr="lr", batch_size="batch_size",
                       image_size="image_size", cache_size="cache_size", cache_dir="cache_dir", patience="patience",
                       seed="seed", device="device", uncertain="uncertain", backbone="backbone", workers="workers",
                       which="which", shots="shots", reuse_head="reuse_head")


def finetune_settings(args) -> dict:
    """The settings of ``arkx finetune``: CONFIG's (``type`` is accepted for ``dataset_type``, as in a
    pretraining config), then every option given on the command line."""
    from ..config_yaml import read_yaml_file
    from ..errors import ArkxValueError

    settings: dict = {}
    if args.config is not None:
        loaded = read_yaml_file(args.config)
        if not isinstance(loaded, dict):
            raise ArkxValueError(f"{args.config}: expected a mapping of fine-tuning settings, got "
                                 f"{type(loaded).__name__}")
        settings.update(loaded)
        if "type" in settings:
            settings.setdefault("dataset_type", settings.pop("type"))
    for flag, key in _FINETUNE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            settings[key] = value
    if args.patience == 0:
        settings["patience"] = None
    if args.option:
        settings["options"] = {**settings.get("options", {}), **_parse_options(args.option)}
    if args.backbone_option:
        settings["backbone_kwargs"] = {**settings.get("backbone_kwargs", {}), **_parse_options(args.backbone_option)}
    missing = [name for name, key in (("--init/--from", "init"), ("--type", "dataset_type"), ("--root", "root"),
                                      ("--out", "out")) if key not in settings]
    if missing:
        where = f" (not in {args.config} either)" if args.config is not None else ""
        raise ArkxValueError(f"arkx finetune: missing {', '.join(missing)}{where}")
    return settings


#: how the command prints each task kind's metric
METRIC_NAMES = dict(auc="AUC", dice="Dice", map40="mAP40")


def _cmd_finetune(args) -> int:
    from ..transfer.finetune import _settings, run_finetune

    result = run_finetune(_settings(**finetune_settings(args)), progress=not args.quiet)
    metric = METRIC_NAMES.get(result.metric, result.metric)
    per_label = ", ".join(f"{name} {value:.4f}" for name, value in result.test_per_label.items())
    extra = "".join(f", {k} {v:.4f}" for k, v in result.test_details.items())
    print(f"{result.task.kind} {result.task.name}: best epoch {result.best_epoch} of {result.epochs_run} "
          f"(val mean {metric} {result.best_val:.4f}); test mean {metric} {result.test_score:.4f}{extra} ({per_label})")
    print(f"-> {result.best_path}, {result.metrics_path.name}, {result.settings_path.name}")
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
    _add_dataset_options(p, "target dataset")
    p.add_argument("--map", default=None, dest="label_map",
                   help="shipped map name or YAML file {target label: head label} (default: <head>_to_<type>)")
    p.add_argument("--split", nargs="+", choices=("train", "val", "test"), default=["test"])
    p.add_argument("--out", type=Path, default=None, help="per-label CSV")
    _add_which(p)
    _add_batch_size_and_device(p, 64)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache root (default: the run's cache, else a cache folder beside --out)")


def _cmd_zeroshot(args) -> int:
    from ..transfer.zeroshot import zeroshot

    result = zeroshot(args.model, args.head, args.type_, args.root, label_map=args.label_map, splits=args.split,
                      options=_parse_options(args.option), which=args.which, batch_size=args.batch_size,
                      device=args.device, cache_dir=args.cache_dir, out=args.out, progress=not args.quiet)
    print(result.format_table())
    if args.out is not None:
        print(f"per-label AUCs -> {args.out}")
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
    _add_which(p)
    _add_batch_size_and_device(p, 16)


def _cmd_predict(args) -> int:
    from ..transfer.predict import predict

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


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="what a model file is: backbone, input size, normalisation, heads, datasets",
                       description="Describe a model: an arkx export (whole model or timm backbone), a run folder, "
                                   "an arkx checkpoint, or the authors' Ark / Ark+ checkpoint (.pth.tar).",
                       **_examples("arkx info runs/ark6", "arkx info ark6_teacher_ep200_swinb_projector1376_mlp.pth.tar",
                                   "arkx info backbone.safetensors --json"))
    p.add_argument("model", type=Path, help="run folder, .safetensors, last.pt or an authors' .pth.tar")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd_info(args) -> int:
    from ..models.export import format_info, model_info

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
    _add_which(p)
    p.add_argument("--variant", default="auto", help="for an authors' checkpoint: auto, ark6, ark_plus, ark_plus_covidx")


def _cmd_export(args) -> int:
    from ..models.export import export_timm
    from ..models.released import load_any_model

    model = load_any_model(args.model, args.which, args.variant)
    path = export_timm(model, args.out)
    print(f"{path} (+ {path.with_suffix('.json').name}): {model.backbone.arkx_backbone['name']} backbone for plain timm")
    return 0

