"""``arkx.evaluate``: a trained model's report on datasets, with patient-bootstrap CIs.

For each dataset, every head of the model named like the dataset (its head name):

- classification heads (multilabel, multiclass): probabilities of the validation and test images (read as
  training reads them: the prepared cache and the evaluation view, through :func:`arkx.embed`), then
  :func:`arkx.evaluation.scoring.classification_report` (AUROC, AUPRC, sensitivity / specificity at the
  validation threshold, means, patient-bootstrap CIs); with ``longtail`` the head / medium / tail means
  (:mod:`arkx.evaluation.longtail`, frequencies from the training split's labels); with ``bias`` the FNR per
  sex and age group and the sex-exclusive probe protocol (:mod:`arkx.evaluation.bias`);
- detection heads: mAP at IoU 0.4, 0.5, 0.5:0.95 and AP40 per class (:mod:`arkx.evaluation.detection`);
  segmentation heads: Dice per structure and mean (:mod:`arkx.evaluation.segmentation`); each with a
  patient-bootstrap CI (detection re-runs COCOeval per resample: ``detection_resamples``, 200 by default,
  bounds its cost).

Datasets come from (``datasets=``): the run's own config (default, for a run folder), a pretraining config
YAML (its ``datasets``), ``TYPE=ROOT`` items, or names of the run config's datasets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import ArkxFileNotFoundError, ArkxValueError
from .aggregate import _run_seed
from .bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, patient_bootstrap
from .scoring import (
    MEAN_LABEL,
    TABLE_COLUMNS,
    HeadPredictions,
    classification_report,
    validation_thresholds,
)

log = logging.getLogger("arkx.evaluation")

#: detection's bootstrap re-runs COCOeval on every resample: fewer resamples by default
DETECTION_RESAMPLES = 200


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured.

    Attributes:
        table: the tidy table (:data:`arkx.evaluation.scoring.TABLE_COLUMNS`), every dataset and head.
        longtail: per (dataset, metric, group) means (empty unless asked).
        fnr: FNR per sex / age group (:data:`arkx.evaluation.bias.BIAS_COLUMNS`; empty unless asked).
        sex_exclusive: per dataset the :class:`arkx.evaluation.bias.SexBiasResult` (unless not asked).
        predictions: ``{(dataset, split): HeadPredictions}`` of the classification heads (for paired tests).
    """

    table: pd.DataFrame
    longtail: pd.DataFrame = field(default_factory=pd.DataFrame)
    fnr: pd.DataFrame = field(default_factory=pd.DataFrame)
    sex_exclusive: dict = field(default_factory=dict)
    predictions: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def write(self, out: str | Path) -> list[Path]:
        """``out`` (the tidy CSV) and, beside it, ``NAME.longtail.csv``, ``NAME.fnr.csv``,
        ``NAME.sex_exclusive[.folds].csv`` for the parts that were computed."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(out, index=False)
        written = [out]

        def beside(suffix: str) -> Path:
            return out.with_name(f"{out.stem}.{suffix}.csv")

        if not self.longtail.empty:
            self.longtail.to_csv(beside("longtail"), index=False)
            written.append(beside("longtail"))
        if not self.fnr.empty:
            self.fnr.to_csv(beside("fnr"), index=False)
            written.append(beside("fnr"))
        if self.sex_exclusive:
            tests = pd.concat([r.tests.assign(dataset=d) for d, r in self.sex_exclusive.items()], ignore_index=True)
            folds = pd.concat([r.per_fold.assign(dataset=d) for d, r in self.sex_exclusive.items()], ignore_index=True)
            tests.to_csv(beside("sex_exclusive"), index=False)
            folds.to_csv(beside("sex_exclusive.folds"), index=False)
            written += [beside("sex_exclusive"), beside("sex_exclusive.folds")]
        return written


# ---------------------------------------------------------------------------- datasets
def resolve_datasets(model_path: Path | None, datasets: Sequence[str] | None) -> list:
    """The :class:`arkx.config.DatasetConfig` list that ``datasets`` names (see the module docstring)."""
    from ..config import DatasetConfig

    run_datasets = _run_datasets(model_path)
    if not datasets:
        if run_datasets is None:
            raise ArkxValueError("no datasets: give --datasets (a config YAML, TYPE=ROOT, or names of the run's "
                                 "datasets); a model file outside a run folder has no config to take them from")
        return run_datasets
    out = []
    for item in datasets:
        item = str(item)
        if item.endswith((".yaml", ".yml")):
            out.extend(_config_datasets(Path(item)))
        elif "=" in item:
            type_, _, root = item.partition("=")
            out.append(DatasetConfig(type=type_.strip(), root=Path(root.strip()).expanduser().resolve()))
        else:
            found = [d for d in (run_datasets or []) if item in (d.head_name, d.type)]
            if not found:
                known = ", ".join(d.head_name for d in run_datasets or []) or "none (no run config)"
                raise ArkxValueError(f"--datasets {item!r}: not a config YAML, not TYPE=ROOT, and not a dataset of "
                                     f"the run (its datasets: {known})")
            out.extend(found)
    return out


def _run_folder(model_path: Path | None) -> Path | None:
    if model_path is None:
        return None
    path = Path(model_path)
    folder = path if path.is_dir() else (path.parent.parent if path.parent.name == "checkpoints" else path.parent)
    return folder if (folder / "config.yaml").is_file() else None


def _run_datasets(model_path: Path | None):
    folder = _run_folder(model_path)
    return _config_datasets(folder / "config.yaml", cwd=folder.parent) if folder is not None else None


def _config_datasets(path: Path, cwd: Path | None = None):
    from ..config import load_config, with_absolute_paths

    if not path.is_file():
        raise ArkxFileNotFoundError(f"no config file {path}")
    cfg = load_config(path)
    return list(with_absolute_paths(cfg, cwd=cwd).datasets if cwd is not None else with_absolute_paths(cfg).datasets)


# ---------------------------------------------------------------------------- predictions
def _classification_predictions(model, head: str, ds_cfg, splits, common: dict) -> dict[str, HeadPredictions]:
    """``{split: HeadPredictions}`` of a classification head, plus the embedding table under ``"table"``."""
    from ..transfer.embed import embed
    from ..transfer.zeroshot import head_probabilities

    table = embed(model, ds_cfg.type, ds_cfg.root, options=ds_cfg.options, features="projector", splits=splits,
                  **common)
    probabilities = head_probabilities(model, head, table.embeddings)
    out = {"table": table}
    for split in ("train", "val", "test"):
        rows = table.rows(split)
        if len(rows):
            out[split] = HeadPredictions(probabilities[rows], table.labels[rows], table.patient_id[rows],
                                         sex=table.sex[rows], age=table.age[rows], ids=table.ids[rows],
                                         meta=dict(split=split))
    return out


@torch.no_grad()
def _dense_predictions(model, task, data, split: str, image_size: int, batch_size: int, device: torch.device):
    """Per-image predictions and evaluation targets of a detection / segmentation head, and the images' rows."""
    from ..data.geometry import resize_batch
    from ..data.loaders import make_loader
    from ..data.transforms import eval_view
    from ..tasks import get_kind
    from .predict import _to_cpu

    kind = get_kind(task.kind)
    loader = make_loader(data, split, batch_size, 0, train=False, targets=kind.loader_targets)
    predictions, targets, rows = [], [], []
    model.eval()
    for batch in loader:
        x = eval_view(batch.images.to(device), image_size)
        _, output = model.run_task(x, task)
        predictions.append(_to_cpu(kind.predict(output)))
        targets.append(kind.eval_targets(resize_batch(batch, image_size)))
        rows.append(batch.rows.numpy())
    return predictions, targets, np.concatenate(rows)


def detection_report(predictions: list, targets: list, patient_ids: np.ndarray, label_names: Sequence[str], *,
                     dataset: str, head: str, split: str = "test", n_resamples: int = DETECTION_RESAMPLES,
                     seed: int = 0, level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """mAP40 / mAP50 / mAP50:95 and AP40 per class (per-image ``predictions`` and ``targets`` as
    :func:`arkx.evaluation.detection.mean_average_precision` takes them), with patient-bootstrap CIs."""
    from .detection import mean_average_precision

    label_names = tuple(label_names)

    def statistic(idx: np.ndarray) -> np.ndarray:
        result = mean_average_precision([predictions[i] for i in idx], [targets[i] for i in idx], label_names)
        return np.r_[result.map40, result.map50, result.map50_95,
                     [result.per_class_ap40[n] for n in label_names]]

    boot = _bootstrap_or_point(statistic, patient_ids, n_resamples, seed, level)
    counts = np.zeros(len(label_names), dtype=np.int64)
    for target in targets:
        counts += np.bincount(np.asarray(target["labels"], dtype=np.int64).reshape(-1), minlength=len(label_names))
    entries = [(MEAN_LABEL, "map40"), (MEAN_LABEL, "map50"), (MEAN_LABEL, "map50_95")]
    entries += [(name, "ap40") for name in label_names]
    n_boxes = [int(counts.sum())] * 3 + [int(c) for c in counts]
    return _dense_rows(boot, entries, n_boxes, dict(dataset=dataset, head=head, task="detection", split=split,
                                                    n=len(predictions), n_resamples=n_resamples),
                       note="n_pos: ground-truth boxes")


def segmentation_report(dice: np.ndarray, patient_ids: np.ndarray, label_names: Sequence[str], *, dataset: str,
                        head: str, split: str = "test", n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        level: float = DEFAULT_LEVEL) -> pd.DataFrame:
    """Dice per structure (mean over the images where it counts) and the macro mean, from the per-image Dice
    ``[n, C]`` (NaN where a pair does not count), with patient-bootstrap CIs."""
    from .segmentation import _column_means, _nanmean

    label_names = tuple(label_names)

    def statistic(idx: np.ndarray) -> np.ndarray:
        per_class = _column_means(dice[idx])
        return np.r_[_nanmean(per_class), per_class]

    boot = _bootstrap_or_point(statistic, patient_ids, n_resamples, seed, level)
    counted = (~np.isnan(dice)).sum(axis=0)
    entries = [(MEAN_LABEL, "dice")] + [(name, "dice") for name in label_names]
    return _dense_rows(boot, entries, [int(counted.sum())] + [int(c) for c in counted],
                       dict(dataset=dataset, head=head, task="segmentation", split=split, n=len(dice),
                            n_resamples=n_resamples), note="n_pos: images where the structure counts")


def _bootstrap_or_point(statistic, patient_ids, n_resamples: int, seed: int, level: float):
    if n_resamples > 0:
        return patient_bootstrap(statistic, patient_ids, n_resamples=n_resamples, seed=seed, level=level)
    point = statistic(np.arange(len(patient_ids)))
    from .bootstrap import BootstrapResult

    nan = np.full_like(point, np.nan)
    return BootstrapResult(point, nan, nan, np.zeros(len(point), dtype=np.int64), 0, level,
                           len(np.unique(np.asarray(patient_ids).astype(str))), np.zeros((0, len(point))))


def _dense_rows(boot, entries, n_pos, common: dict, note: str) -> pd.DataFrame:
    rows = [dict(common, label=label, metric=metric, value=boot.point[k], ci_low=boot.low[k], ci_high=boot.high[k],
                 threshold=np.nan, threshold_rule="", n_pos=n_pos[k], n_neg=np.nan, n_patients=boot.n_patients,
                 undefined_resamples=int(boot.undefined[k]), note=note)
            for k, (label, metric) in enumerate(entries)]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


# ---------------------------------------------------------------------------- the entry point
def evaluate(model: str | Path, datasets: Sequence[str] | None = None, *, split: str = "test",
             threshold: str = "max-f1", bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0,
             level: float = DEFAULT_LEVEL, which: str = "teacher", longtail: bool = False,
             longtail_thresholds: tuple[float, float] | None = None, longtail_by: str = "fraction",
             bias: bool = False, bias_folds: int = 20, age_bins: Sequence[float] | None = None,
             detection_resamples: int = DETECTION_RESAMPLES, batch_size: int = 64, device: str = "auto",
             cache_dir: str | Path | None = None, out: str | Path | None = None, progress: bool = True,
             image_size: int | None = None, cache_size: int | None = None) -> EvaluationResult:
    """Evaluate a trained model (run folder, ``.safetensors`` export or ``last.pt``; or an :class:`arkx.ArkModel`
    with ``image_size=`` and ``cache_dir=``) on datasets.

    Args:
        datasets: see :func:`resolve_datasets` (default: the run's own datasets).
        split: the split reported (``test``; ``val`` for a look that keeps test untouched). Thresholds always
            come from ``val``.
        threshold: ``max-f1`` or ``youden`` (the rule choosing each label's threshold on val).
        bootstrap: patient resamples for the CIs (0: no CI); ``seed`` seeds them; ``level`` the CI level.
        longtail: add head / medium / tail means (``longtail_thresholds``, ``longtail_by``: see
            :func:`arkx.evaluation.longtail.label_groups`).
        bias: add FNR per sex and age group and the sex-exclusive protocol (``bias_folds`` folds).
        out: write the tidy CSV there (and the other parts beside it).
    """
    from ..transfer.embed import _cache_root, _device, _resolve_model
    from .bias import AGE_BINS, attribute_groups, fnr_by_group, sex_exclusive_probes
    from .longtail import group_means, label_groups

    if split not in ("val", "test"):
        raise ArkxValueError(f"split {split!r}: expected test (or val)")
    from ..models.ark import ArkModel

    model_path = None if isinstance(model, ArkModel) else Path(model)
    ark, source, sizes = _resolve_model(model if model_path is None else model_path, which, image_size, cache_size)
    configs = resolve_datasets(model_path, datasets)
    cache_root = _cache_root(cache_dir, sizes, out)
    torch_device = _device(device)
    common = dict(which=which, batch_size=batch_size, device=device, cache_dir=cache_root,
                  image_size=sizes.image_size, cache_size=sizes.cache_size, progress=progress)
    tables, longtails, fnrs, sex_exclusive, predictions = [], [], [], {}, {}
    for ds_cfg in configs:
        name = ds_cfg.head_name
        tasks = [t for t in ark.tasks() if t.name == name]
        if not tasks:
            heads = ", ".join(f"{t.name} ({t.kind})" for t in ark.tasks()) or "none"
            raise ArkxValueError(f"dataset {name!r} ({ds_cfg.type}): the model has no head of that name; its heads: "
                                 f"{heads}")
        for task in tasks:
            if task.is_classification:
                splits = None if bias or longtail else ["val", split]
                preds = _classification_predictions(ark, name, ds_cfg, splits, common)
                if split not in preds:
                    raise ArkxValueError(f"dataset {name!r}: no usable {split} images")
                val = preds.get("val")
                if val is None:
                    log.warning("dataset %r has no val images: no threshold, so no sensitivity/specificity", name)
                table = classification_report(preds[split], val, task.label_names, dataset=name, head=name,
                                              task=task.kind, threshold_rule=threshold, n_resamples=bootstrap,
                                              seed=seed, level=level)
                tables.append(table)
                predictions.update({(name, s): p for s, p in preds.items() if s != "table"})
                if longtail:
                    if "train" not in preds:
                        raise ArkxValueError(f"dataset {name!r}: no train images to measure label frequencies on")
                    groups = label_groups(preds["train"].targets, task.label_names, longtail_thresholds, longtail_by)
                    longtails.append(group_means(table, groups))
                if bias:
                    thresholds = (validation_thresholds(val, threshold) if val is not None
                                  else np.full(len(task.label_names), np.nan))
                    test = preds[split]
                    found = attribute_groups(test, age_bins or AGE_BINS)
                    if not found:
                        log.warning("dataset %r: no sex or age recorded; no bias audit for it", name)
                        continue
                    fnrs.append(fnr_by_group(test, thresholds, task.label_names, groups=found, dataset=name,
                                             n_resamples=bootstrap, seed=seed, level=level))
                    if "sex" in found:
                        sex_exclusive[name] = sex_exclusive_probes(preds["table"], folds=bias_folds, seed=seed)
            else:
                tables.append(_dense_report(ark, task, ds_cfg, split, sizes, cache_root, batch_size, torch_device,
                                            bootstrap, detection_resamples, seed, level, progress))
    result = EvaluationResult(table=pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=list(TABLE_COLUMNS)),
        longtail=pd.concat(longtails, ignore_index=True) if longtails else pd.DataFrame(),
        fnr=pd.concat(fnrs, ignore_index=True) if fnrs else pd.DataFrame(), sex_exclusive=sex_exclusive,
        predictions=predictions, meta=dict(model=source, threshold=threshold, bootstrap=bootstrap, seed=seed,
                                           level=level, split=split))
    # the training seed of the run (not the bootstrap's): what arkx evaluate --compare pairs runs by
    run_folder = _run_folder(model_path)
    result.table["run_seed"] = _run_seed(run_folder) if run_folder is not None else np.nan
    if out is not None:
        result.write(out)
    return result


def _dense_report(model, task, ds_cfg, split, sizes, cache_root, batch_size, device, bootstrap, detection_resamples,
                  seed, level, progress) -> pd.DataFrame:
    from ..config import DataConfig
    from ..data.loaders import prepare_dataset

    data_cfg = DataConfig(image_size=sizes.image_size, cache_size=sizes.cache_size, workers=0)
    data = prepare_dataset(ds_cfg, data_cfg, Path(cache_root), progress=progress, require_labels=False)
    model.to(device)
    predictions, targets, rows = _dense_predictions(model, task, data, split, sizes.image_size, batch_size, device)
    patients = data.records.images["patient_id"].astype(str).to_numpy()[rows]
    if task.kind == "detection":
        flat_predictions = [p for batch in predictions for p in batch]
        flat_targets = [t for batch in targets for t in batch]
        return detection_report(flat_predictions, flat_targets, patients, task.label_names, dataset=task.name,
                                head=task.name, split=split, n_resamples=min(bootstrap, detection_resamples),
                                seed=seed, level=level)
    scores = model_kind_score(task, predictions, targets)
    return segmentation_report(scores.dice, patients, task.label_names, dataset=task.name, head=task.name, split=split,
                               n_resamples=bootstrap, seed=seed, level=level)


def model_kind_score(task, predictions, targets):
    """The segmentation kind's own scoring (threshold 0.5, empty ground truth ignored) of per-batch outputs."""
    from ..tasks import get_kind

    return get_kind(task.kind).score(predictions, targets, task).raw


def compare_models(model: str | Path, baseline: str | Path, datasets: Sequence[str] | None = None, *,
                   split: str = "test", bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0,
                   level: float = DEFAULT_LEVEL, which: str = "teacher", batch_size: int = 64, device: str = "auto",
                   cache_dir: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Paired patient bootstrap of the AUROC difference ``model - baseline`` on the same test images, per label
    and for the mean, for every classification head both models have (datasets as for :func:`evaluate`,
    default: ``model``'s run datasets)."""
    from .aggregate import paired_bootstrap

    names = datasets if datasets else [d.head_name for d in resolve_datasets(Path(model), None)]
    options = dict(split=split, bootstrap=0, which=which, batch_size=batch_size, device=device, cache_dir=cache_dir,
                   progress=progress)
    a = evaluate(model, datasets or names, **options)
    b = evaluate(baseline, datasets or [str(n) for n in _as_type_roots(Path(model), names)], **options)
    tables = []
    for (dataset, which_split), pred_a in a.predictions.items():
        if which_split != split or (dataset, split) not in b.predictions:
            continue
        labels = a.table.loc[(a.table["dataset"] == dataset) & (a.table["label"] != MEAN_LABEL), "label"]
        tables.append(paired_bootstrap(pred_a, b.predictions[dataset, split], list(dict.fromkeys(labels)),
                                       n_resamples=bootstrap, seed=seed, level=level, dataset=dataset))
    if not tables:
        raise ArkxValueError("compare: the two models share no classification head on these datasets")
    return pd.concat(tables, ignore_index=True)


def _as_type_roots(model_path: Path, names: Sequence[str]) -> list[str]:
    """Names of ``model_path``'s run datasets as ``TYPE=ROOT`` items, so a baseline from another run (whose config
    may not list them) is scored on the very same folders. Items that are already files or ``TYPE=ROOT`` stay."""
    run = {d.head_name: d for d in (_run_datasets(model_path) or [])}
    out = []
    for name in names:
        d = run.get(str(name))
        if d is None or d.options or d.name:
            out.append(str(name))  # a config with options or a custom head name: the baseline must resolve it itself
        else:
            out.append(f"{d.type}={d.root}")
    return out
