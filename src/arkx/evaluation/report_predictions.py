"""The report's prediction sections: the run's model over a seeded sample of each dataset's split, for the ROC
curves per classification head and the t-SNE map of the embeddings (:mod:`arkx.evaluation.html_report`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArkxError
from . import plots
from .report_page import Section, _one_line, _safe

log = logging.getLogger("arkx.evaluation")

CLASSIFICATION_KINDS = ("multilabel", "multiclass")


@dataclass
class HeadPredictions:
    """A classification head's outputs on a (sampled) split: probabilities, raw targets, embeddings."""

    dataset: str
    kind: str
    label_names: tuple[str, ...]
    scores: np.ndarray  # [n, L]
    targets: np.ndarray  # [n, L], raw (1, 0, -1 uncertain, NaN unknown)
    embeddings: np.ndarray  # [n, D], the projector's output (what the heads read)
    n_split: int  # usable images in the split (n may be a sample of them)


def prediction_sections(run_dir: Path, out: Path, *, enabled: bool, which: str, split: str, device: str,
                        max_images: int, tsne_per_dataset: int, seed: int, progress: bool) -> list[Section]:
    roc = Section("roc", f"ROC curves per head ({which}, {split} split)",
                  "One curve per label (one-vs-rest per class for a multiclass head); labels with one class "
                  "only among the known targets have no curve.")
    tsne = Section("tsne", f"t-SNE of the embeddings ({which}, {split} split)",
                   "The projector's output (what every head reads) of a seeded sample of each dataset, mapped to "
                   "2-D by t-SNE. Left: by dataset; right: by finding, each image tagged with its positive label "
                   "that is most frequent over the sample (a finding that several datasets name alike gets one "
                   "colour).")
    if not enabled:
        note = "predictions were not computed (predictions=False / --no-predictions)"
        roc.notes.append(note)
        tsne.notes.append(note)
        return [roc, tsne]
    heads, notes = predict_run(run_dir, which=which, split=split, device=device, max_images=max_images, seed=seed,
                               progress=progress)
    roc.notes += notes
    tsne.notes += notes
    _roc_figures(roc, heads, out, split)
    _tsne_figure(tsne, heads, out, tsne_per_dataset, seed)
    return [roc, tsne]


def _roc_figures(section: Section, heads: list[HeadPredictions], out: Path, split: str) -> None:
    for head in heads:
        curves, skipped = plots.roc_curves(head.scores, head.targets, head.label_names, head.kind)
        sample = (f"{len(head.scores)} {split} images" if len(head.scores) == head.n_split
                  else f"a seeded sample of {len(head.scores)} of {head.n_split} {split} images")
        path = plots.plot_roc(head.dataset, curves, out / f"roc_{_safe(head.dataset)}.png",
                              subtitle=f"{head.kind}, {sample}")
        if path is None:
            section.notes.append(f"{head.dataset}: no label has both classes among the {split} images used, so no "
                                 "ROC curve")
            continue
        caption = f"{head.dataset} ({head.kind}): {sample}."
        if skipped:
            caption += " No curve for: " + "; ".join(f"{name} ({why})" for name, why in skipped) + "."
        section.figures.append((path, caption))


def _tsne_figure(section: Section, heads: list[HeadPredictions], out: Path, per_dataset: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors, datasets, positives = [], [], []
    for head in heads:
        take = np.arange(len(head.embeddings))
        if len(take) > per_dataset:
            take = np.sort(rng.choice(take, size=per_dataset, replace=False))
        vectors.append(head.embeddings[take])
        datasets += [head.dataset] * len(take)
        positives += [[head.label_names[j] for j in np.flatnonzero(row == 1)] for row in head.targets[take]]
    n = sum(len(v) for v in vectors)
    if n < 5:
        if heads:
            section.notes.append(f"only {n} embedded image(s): too few for a t-SNE map")
        return
    coords = plots.tsne_map(np.concatenate(vectors), seed=seed)
    path = plots.plot_tsne(coords, datasets, plots.primary_findings(positives), out / "tsne.png",
                           title=f"t-SNE of {n} embeddings (at most {per_dataset} per dataset, seed {seed})")
    section.figures.append((path, f"{n} images from {len(heads)} dataset(s); perplexity min(30, (n - 1) / 3)."))


def predict_run(run_dir: Path, *, which: str = "teacher", split: str = "test", device: str = "auto",
                max_images: int = 1000, seed: int = 0, progress: bool = False
                ) -> tuple[list[HeadPredictions], list[str]]:
    """The run's classification heads on ``split`` of its configured datasets, read from its image cache (as
    evaluation reads them), and notes naming what could not be predicted and why."""
    from ..config import load_config, with_absolute_paths
    from ..models.files import load_model
    from ..training.engine import resolve_device

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return [], [f"no config.yaml in {run_dir}: the datasets to predict on are unknown"]
    try:
        cfg = with_absolute_paths(load_config(cfg_path), cwd=run_dir.parent)
        model = load_model(run_dir, which)
        torch_device = resolve_device(device)
    except (ArkxError, OSError, RuntimeError, ValueError) as err:
        return [], [f"no predictions: {_one_line(err)}"]
    model = model.to(torch_device).eval()
    cache_root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / "cache"
    heads, notes = [], []
    for ds_cfg in cfg.datasets:
        try:
            head = _predict_dataset(model, ds_cfg, cfg, cache_root, which, split, torch_device, max_images, seed,
                                    progress)
        except (ArkxError, OSError, ValueError) as err:
            notes.append(f"{ds_cfg.head_name}: not reachable from here ({_one_line(err)}); no predictions for it")
            continue
        if isinstance(head, str):
            notes.append(f"{ds_cfg.head_name}: {head}")
        else:
            heads.append(head)
    return heads, notes


def _predict_dataset(model, ds_cfg, cfg, cache_root: Path, which: str, split: str, device, max_images: int,
                     seed: int, progress: bool) -> HeadPredictions | str:
    """One dataset's head outputs (or a string saying why there are none)."""
    import torch

    from ..data.loaders import _read_row, prepare_dataset
    from ..data.transforms import eval_view
    from ..tasks import get_kind

    name = ds_cfg.head_name
    if name not in model.heads:
        return f"the {which} has no classification head {name!r} (no ROC curve for detection or segmentation)"
    ds = prepare_dataset(ds_cfg, cfg.data, cache_root, cfg.run.seed, progress=progress, require_labels=False)
    if ds.task is None or ds.task.kind not in CLASSIFICATION_KINDS:
        return "no image-level labels here (no ROC curve for detection or segmentation)"
    rows = ds.indices(split)
    if len(rows) == 0:
        return f"no usable images in the {split} split"
    n_split = len(rows)
    if len(rows) > max_images:  # a seeded sample: the same images every time the report is written
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_images, replace=False))
    kind = get_kind(ds.task.kind)
    scores, embeddings = [], []
    batch_size = cfg.data.eval_batch_size
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = torch.from_numpy(np.stack([_read_row(ds.images, int(r)) for r in chunk]))
            if batch.dim() == 3:  # cache rows are [S, S]: add the channel
                batch = batch.unsqueeze(1)
            projection, logits = model(eval_view(batch.to(device), cfg.data.image_size), name)
            scores.append(kind.predict(logits).float().cpu().numpy())
            embeddings.append(projection.float().cpu().numpy())
    return HeadPredictions(dataset=name, kind=ds.task.kind, label_names=tuple(ds.task.label_names),
                           scores=np.concatenate(scores), targets=np.asarray(ds.records.labels[rows], dtype=float),
                           embeddings=np.concatenate(embeddings), n_split=n_split)
