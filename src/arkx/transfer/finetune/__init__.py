"""Fine-tuning a (pre)trained model on one dataset's task: classification, segmentation or detection.

A plain loop, written to be read: a NEW head for the target dataset's task on the initial model's
features (a linear layer on the embedding for classification; an UperNet decoder for segmentation and
a DETR-family detector for detection, both on the backbone's feature pyramid), trained on the train
split with the student-view augmentation (masks and boxes move with the image), scored on val after
every epoch, stopped early when val stops improving for ``patience`` epochs. The best epoch's weights
are kept and scored on test ONCE, at the end: test never takes part in any choice. The score is the
task's (:class:`arkx.tasks.TaskKind`): mean AUROC over labels, mean Dice over structures, or COCO mAP at
IoU 0.4.

The initial model comes from one of (``init``):

* ``run:DIR`` - an arkx run (its teacher, the released model of a run; a ``.safetensors`` export works too),
* ``released:FILE`` - an authors' Ark / Ark+ checkpoint (:func:`arkx.load_released`) or Foundation X
  checkpoint (:func:`arkx.load_foundation_x`: its backbone; told apart by the file's content),
* ``timm:FILE`` - backbone weights for a timm model (e.g. ImageNet), with a fresh projector,
* ``scratch`` - random initialisation (the baseline with the same budget),

and every init is trained with the same settings (epochs, optimizer, learning rate, augmentation,
seed), so their results compare fairly. ``which`` picks the teacher (default) or the student of a
``run:`` / ``released:`` init.

A model that brings shared branches (a Foundation X model's ``seg_decoder`` UperNet and ``det_encoder``)
keeps them: a segmentation task starts from the pretrained decoder, a localization task from the
pretrained encoder; and when the model has a head for the SAME dataset, kind and labels (its segmentation
head, or its localization decoder with its query, box and class heads), that head is the starting point
too (``reuse_head``, default on; classification heads are always new). ``mode="head"`` trains the task's
head only: everything the initial model brought (backbone, projector, shared branches) is frozen and in
eval mode; a decoder built new for the task trains. ``mode="full"`` trains everything.

``shots=K`` (few-shot) trains on K labelled training images drawn with ``seed`` (listed in ``shots.csv``)
and evaluates on the whole val and test splits (:mod:`arkx.transfer.finetune.few_shot`).

The output folder holds ``metrics.csv`` (one row per epoch), ``finetune.yaml`` (the resolved settings),
``best.safetensors`` (the best weights, an arkx export :func:`arkx.load_model` reads) and, few-shot,
``shots.csv``.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from ...errors import ArkxValueError
from ...tasks import Task
from .few_shot import few_shot, shot_rows
from .init import (
    InitSpec,
    _Initial,
    _input_size,
    load_initial_model,
    parse_init,
    reusable_head,
    start_from_pretrained_head,
    with_new_head,
)
from .loop import FROZEN_IN_HEAD_MODE, evaluate, is_better, set_train_mode, train_one_epoch, trainable_parameters
from .settings import (
    BEST_FILE,
    INIT_KINDS,
    METRICS_FILE,
    SETTINGS_FILE,
    SHOTS_FILE,
    TASK_CHOICES,
    FinetuneConfig,
    FinetuneResult,
)

__all__ = ["BEST_FILE", "INIT_KINDS", "METRICS_FILE", "SETTINGS_FILE", "SHOTS_FILE", "TASK_CHOICES", "FinetuneConfig",
           "FinetuneResult", "InitSpec", "evaluate", "few_shot", "finetune", "is_better", "load_initial_model",
           "parse_init", "reusable_head", "select_task", "set_train_mode", "shot_rows", "start_from_pretrained_head",
           "train_one_epoch", "trainable_parameters", "with_new_head"]

log = logging.getLogger("arkx.transfer")


def finetune(init: str, dataset_type: str, root: str | Path, *, out: str | Path, mode: str = "full",
             task: str = "auto", options: dict | None = None, variant="auto", progress: bool = True,
             **settings: Any) -> FinetuneResult:
    """Fine-tune a model on one dataset's task; see the module docstring.

    Args:
        init: ``run:DIR``, ``released:FILE``, ``timm:FILE`` or ``scratch``.
        dataset_type, root, options: the target dataset, as for :func:`arkx.read_dataset`.
        out: the output folder (``metrics.csv``, ``finetune.yaml``, ``best.safetensors``).
        mode: ``full`` (train everything) or ``head`` (train the new head only).
        task: ``classification``, ``segmentation``, ``detection`` or ``auto`` (the dataset's classification
            task if it has image-level labels, else its segmentation task, else detection).
        settings: any other :class:`FinetuneConfig` field (``epochs``, ``lr``, ``batch_size``, ``shots``,
            ``which``, ``reuse_head``,
            ``image_size``, ``patience``, ``seed``, ``device``, ``uncertain``, ``features``,
            ``backbone``/``backbone_kwargs`` for timm: and scratch, ...).
        variant: the released variant for ``released:`` inits (see :func:`arkx.load_released`).
    """
    cfg = _settings(init=str(init), dataset_type=dataset_type, root=Path(root), options=options or {},
                    out=Path(out), mode=mode, task=task, **settings)
    return run_finetune(cfg, variant=variant, progress=progress)


def run_finetune(cfg: FinetuneConfig, *, variant="auto", progress: bool = True) -> FinetuneResult:
    """:func:`finetune` from a validated :class:`FinetuneConfig` (what ``arkx finetune CONFIG`` runs)."""
    spec = parse_init(cfg.init)
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    initial = load_initial_model(spec, cfg, variant)
    # what the initial model brings (backbone, projector, shared branches): frozen in head mode
    pretrained_groups = tuple(initial.model.parameter_groups())
    cfg = _resolved(cfg, initial)
    data = _prepare(cfg, progress)
    task = select_task(data, cfg.task)
    if cfg.shots is not None:
        data = few_shot(data, task, cfg.shots, cfg.seed, out / SHOTS_FILE)
    torch.manual_seed(cfg.seed)  # the new head starts the same whatever the init's loading consumed
    _set_branch_options(initial.model, cfg.branch_options)
    model = with_new_head(initial.model, task, cfg.features)
    model = start_from_pretrained_head(model, task, reusable_head(initial, task)).to(device)
    _write_settings(cfg, spec, out, task)

    from ...data.loaders import make_loader
    from ...tasks import get_kind

    fields = get_kind(task.kind).loader_targets
    train_loader = make_loader(data, "train", cfg.batch_size, cfg.workers, train=True, targets=fields)
    val_loader = make_loader(data, "val", cfg.eval_batch_size, cfg.workers, train=False, targets=fields)
    optimizer = _optimizer(model, cfg, pretrained_groups)
    history, best_val, best_epoch, best_state, since_best, metric = [], None, 0, None, 0, "score"
    metrics_path = out / METRICS_FILE
    with open(metrics_path, "w", newline="") as handle:
        writer = None
        for epoch in range(cfg.epochs):
            started = time.perf_counter()
            loss, lr = train_one_epoch(model, train_loader, data, task, optimizer, cfg, cfg.image_size, epoch,
                                       device)
            val = evaluate(model, val_loader, data, cfg.image_size, device, task)
            metric = val.metric
            if writer is None:
                writer = csv.writer(handle)
                writer.writerow(["epoch", "lr", "train_loss", f"val_mean_{metric}",
                                 *[f"val_{metric}_{n}" for n in val.as_dict()], "seconds"])
            history.append(val.mean)
            writer.writerow([epoch + 1, f"{lr:.6g}", f"{loss:.6f}", f"{val.mean:.6f}",
                             *[f"{v:.6f}" for v in val.as_dict().values()], f"{time.perf_counter() - started:.2f}"])
            handle.flush()
            log.info("epoch %d/%d: train loss %.4f, val mean %s %.4f", epoch + 1, cfg.epochs, loss, metric, val.mean)
            if is_better(val.mean, best_val):
                best_val, best_epoch, since_best = val.mean, epoch + 1, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                since_best += 1
                if cfg.patience is not None and since_best >= cfg.patience:
                    log.info("early stop: no better val %s for %d epoch(s)", metric, since_best)
                    break

    model.load_state_dict(best_state)
    model.eval()
    best_path = save_best(model, cfg, out / BEST_FILE, dict(init=cfg.init, mode=cfg.mode, best_epoch=best_epoch,
                                                           best_val=best_val, metric=metric, task=task.as_dict(),
                                                           dataset_type=cfg.dataset_type))
    # the one and only look at test: the best weights, chosen on val
    test_loader = make_loader(data, "test", cfg.eval_batch_size, cfg.workers, train=False, targets=fields)
    test = evaluate(model, test_loader, data, cfg.image_size, device, task)
    log.info("best epoch %d (val mean %s %.4f); test mean %s %.4f", best_epoch, metric, best_val, metric, test.mean)
    details = dict(getattr(test, "details", None) or {})
    return FinetuneResult(task=task, metric=metric, best_epoch=best_epoch, best_val=float(best_val),
                          epochs_run=len(history), test_score=test.mean, test_per_label=test.as_dict(),
                          val_history=history, out=out, best_path=best_path, metrics_path=metrics_path,
                          settings_path=out / SETTINGS_FILE, test_details=details, model=model)


def _set_branch_options(model, options: dict[str, dict]) -> None:
    """The configured options of branches the model does not have yet (a built branch keeps its architecture:
    its weights were trained with it)."""
    built = set(model.branches())
    clash = sorted(name for name in options if name in built and dict(options[name]) != model.branch_options.get(name))
    if clash:
        raise ArkxValueError(f"branch_options for {clash}: the initial model has these branches already, built with "
                             f"{ {n: model.branch_options.get(n) for n in clash} }; leave them out to reuse them")
    for name, value in options.items():
        model.branch_options[name] = dict(value)


def _settings(**fields: Any) -> FinetuneConfig:
    try:
        return FinetuneConfig(**fields)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ArkxValueError(f"invalid fine-tuning settings: {problems}") from None


def select_task(data, wanted: str) -> Task:
    """The dataset's task that ``wanted`` names (``auto``: classification, else segmentation, else detection);
    a dataset without it is a one-line error listing what it has."""
    tasks = data.records.tasks(data.name)
    if wanted == "auto":
        order = {"classification": 0, "segmentation": 1, "detection": 2}
        tasks = sorted(tasks, key=lambda t: order["classification" if t.is_classification else t.kind])
        found = tasks[:1]
    else:
        found = [t for t in tasks if ("classification" if t.is_classification else t.kind) == wanted]
    if not found:
        have = ", ".join(sorted({"classification" if t.is_classification else t.kind for t in tasks})) or "nothing"
        raise ArkxValueError(f"{data.records.root} ({data.records.dataset}): no {wanted if wanted != 'auto' else ''} "
                             f"targets to fine-tune on (the adapter read: {have})".replace("no  targets", "no targets"))
    return found[0]


def _device(name: str) -> torch.device:
    from ...training.engine import resolve_device

    try:
        return resolve_device(name)
    except RuntimeError as err:
        raise ArkxValueError(f"device {name!r}: {err}") from None


def _resolved(cfg: FinetuneConfig, initial: _Initial) -> FinetuneConfig:
    """Sizes and the uncertain policy filled in, so ``finetune.yaml`` records what was used."""
    from ...data.adapters import default_uncertain

    image = cfg.image_size or initial.image_size or _input_size(initial.model)
    if cfg.cache_size is not None:
        cache = cfg.cache_size
    elif initial.cache_size is not None and image == initial.image_size:
        cache = initial.cache_size
    else:
        cache = max(image, round(image * 8 / 7))
    if cache < image:
        raise ArkxValueError(f"cache_size ({cache}) must be >= image_size ({image})")
    cache_dir = cfg.cache_dir or initial.cache_dir or Path(cfg.out) / "cache"
    uncertain = cfg.uncertain or default_uncertain(cfg.dataset_type)
    return cfg.model_copy(update=dict(image_size=image, cache_size=cache, cache_dir=Path(cache_dir),
                                      uncertain=uncertain))


def _prepare(cfg: FinetuneConfig, progress: bool):
    from ...config import DataConfig, DatasetConfig
    from ...data.loaders import prepare_dataset

    try:
        ds_cfg = DatasetConfig(type=cfg.dataset_type, root=cfg.root, options=cfg.options, uncertain=cfg.uncertain)
        data_cfg = DataConfig(image_size=cfg.image_size, cache_size=cfg.cache_size, cache_dir=cfg.cache_dir,
                              batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, workers=cfg.workers,
                              prepare_workers=cfg.workers)
    except ValidationError as err:
        raise ArkxValueError(f"dataset {cfg.dataset_type} at {cfg.root}: {err.errors()[0]['msg']}") from None
    Path(cfg.cache_dir).mkdir(parents=True, exist_ok=True)
    data = prepare_dataset(ds_cfg, data_cfg, Path(cfg.cache_dir), cfg.seed, progress=progress,
                           require_labels=cfg.task == "classification")
    for split in ("train", "val", "test"):  # early stopping needs val, the result needs test
        if len(data.indices(split)) == 0:
            raise ArkxValueError(f"{cfg.root} ({cfg.dataset_type}): no usable images in split {split!r}; "
                                 "fine-tuning needs train, val (early stopping) and test")
    return data


def _optimizer(model, cfg: FinetuneConfig, frozen_in_head_mode=FROZEN_IN_HEAD_MODE) -> torch.optim.Optimizer:
    from ...training.optim import check_param_groups, param_groups

    trainable_parameters(model, cfg.mode, frozen_in_head_mode)
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    check_param_groups(model, opt)
    return opt


def _write_settings(cfg: FinetuneConfig, spec: InitSpec, out: Path, task: Task) -> None:
    import yaml

    settings = cfg.model_dump(mode="json")
    settings["init_kind"] = spec.kind
    settings["resolved_task"] = task.as_dict()
    (out / SETTINGS_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))


# ---------------------------------------------------------------------------- the best weights
def model_config_of(model) -> dict:
    """The :class:`arkx.config.ModelConfig` fields that rebuild ``model`` (its backbone records its timm name)."""
    projector = model.projector
    kind = "none" if isinstance(projector, nn.Identity) else "linear" if isinstance(projector, nn.Linear) else "mlp"
    record = model.backbone.arkx_backbone
    return dict(backbone=record["name"], backbone_kwargs=dict(record["kwargs"]), checkpoint=None,
                projector=kind, projector_dim=int(model.embed_dim))


def save_best(model, cfg: FinetuneConfig, path: Path, finetune_info: dict) -> Path:
    """The weights as an arkx export (same metadata as :func:`arkx.api.export_model`), so
    :func:`arkx.load_model`, ``arkx embed`` and ``arkx info`` read it."""
    from safetensors.torch import save_file

    from ... import __version__
    from ...api import EXPORT_FORMAT
    from ...data.transforms import MEAN, STD

    meta = dict(format=EXPORT_FORMAT, arkx_version=__version__, model=model_config_of(model),
                heads=model.head_config(), image_size=cfg.image_size, normalization=dict(mean=MEAN, std=STD),
                finetune=finetune_info)
    if model.branch_config():  # a segmentation decoder / detection encoder: what load_model rebuilds them from
        meta["branches"] = model.branch_config()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    try:
        save_file(state, str(tmp), metadata={"arkx": json.dumps(meta)})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
