"""The public Python API; the CLI is a thin layer over these functions.

    import arkx
    summary = arkx.pretrain("configs/ark6-swinb224.yaml", overrides=["training.rounds=50"])
    model = arkx.load_model("runs/ark6")              # the teacher, with every dataset head
    z = model.embed(x)                                   # 1376-d embeddings
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .config import ArkConfig, ConfigError, config_from_dict, load_config, with_absolute_paths
from .data.adapters import read_dataset
from .data.cache import fingerprint as cache_fingerprint
from .data.loaders import prepare_dataset
from .data.records import Records
from .data.transforms import MEAN, STD
from .errors import ArkxFileNotFoundError, ArkxValueError, RunChanged, RunInterrupted
from .evaluation.metrics import excluded_labels
from .models.ark import ArkModel, HeadSpec, build_model
from .training.engine import Engine, RunSummary
from .training.identity import config_differences, config_identity, dataset_identity, describe_change, write_datasets_file
from .training.runfolder import RunLock, run_log
from .training.state import LAST, load_checkpoint, space_checked, tensor_bytes

log = logging.getLogger("arkx")

CONFIG_FILE = "config.yaml"
EXPORT_FORMAT = "arkx-model/1"


def as_config(config: ArkConfig | str | Path | dict, overrides: list[str] | None = None) -> ArkConfig:
    """Accept a validated config, a YAML path or a raw dict (overrides apply to the latter two)."""
    if isinstance(config, ArkConfig):
        if overrides:
            from .config import apply_overrides

            return config_from_dict(apply_overrides(config.model_dump(mode="json"), overrides))
        return config
    if isinstance(config, dict):
        from .config import apply_overrides

        return config_from_dict(apply_overrides(config, overrides or []))
    return load_config(config, overrides)


def build_from_config(config: ArkConfig | str | Path | dict, overrides: list[str] | None = None) -> ArkModel:
    """The (untrained) student a config describes: its backbone, projector and one head per dataset.

    Reads each dataset's label files to name its head (images are not touched)."""
    cfg = as_config(config, overrides)
    heads = heads_for(_read_records(cfg))
    torch.manual_seed(cfg.run.seed)
    return build_model(cfg.model, heads)


def heads_for(datasets) -> list[HeadSpec]:
    """One head per dataset (``{name: Records}`` or ``{name: PreparedDataset}``), named after it."""
    return [HeadSpec(name, ds.task.kind, ds.task.label_names) for name, ds in datasets.items()]


def _read_records(cfg: ArkConfig) -> dict[str, Records]:
    """Every configured dataset's records (label files only), before any image is touched."""
    out = {}
    for d in cfg.datasets:
        records = read_dataset(d.type, d.root, **d.options)
        if records.task is None:
            raise ConfigError(f"dataset {d.head_name!r} ({d.type}) has no image-level labels to pretrain a "
                              "classification head on")
        out[d.head_name] = records
    return out


def _write_resolved_config(cfg: ArkConfig, out: Path, resume: bool) -> None:
    path = out / CONFIG_FILE
    text = cfg.to_yaml()
    if resume and path.exists():
        before = with_absolute_paths(load_config(path)).model_copy(deep=True)
        before.run.out = cfg.run.out  # resume() checked that the file names this folder
        diff = config_differences(before.model_dump(mode="json"), cfg.model_dump(mode="json"))
        if diff:
            raise ConfigError(f"cannot resume {out}: the config differs from the one it started with at "
                              f"{', '.join(diff[:10])}")
        return
    with space_checked(path):
        path.write_text(text)


def _configure_determinism(cfg: ArkConfig) -> None:
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def pretrain(config: ArkConfig | str | Path | dict, *, overrides: list[str] | None = None, resume: bool = False,
             progress: bool = True, stop_after_steps: int | None = None,
             accept_data_change: bool = False) -> RunSummary:
    """Run Ark pretraining as configured (or continue it with ``resume=True``).

    The run folder (``run.out``) is locked for the run's duration: a second run on it is refused. On resume,
    a change of the datasets (records or image files) since the last checkpoint is refused unless
    ``accept_data_change=True``; a change of the config always is. Ctrl-C raises
    :class:`arkx.errors.RunInterrupted` saying how to resume.

    Incremental pretraining (Ark+): list the old run's datasets plus new ones and set ``model.init_from``
    to the old run; its weights start the new run (at step 0 only, never again on resume), see
    :func:`_initial_weights`.
    """
    cfg = with_absolute_paths(as_config(config, overrides))
    _check_before_work(cfg)
    records = _read_records(cfg)
    out = Path(cfg.run.out)
    # incremental pretraining: the old run's weights, checked against the new heads before any work
    start_from = None
    if cfg.model.init_from is not None and not resume and not (out / "checkpoints" / LAST).exists():
        start_from = _initial_weights(cfg, records)
    _make_folder(out, "run.out")
    with RunLock(out), run_log(out):
        return _pretrain_locked(cfg, records, out, resume, progress, stop_after_steps, accept_data_change,
                                start_from)


def _pretrain_locked(cfg: ArkConfig, records: dict[str, Records], out: Path, resume: bool, progress: bool,
                     stop_after_steps: int | None, accept_data_change: bool,
                     start_from: dict[str, ArkModel] | None = None) -> RunSummary:
    last = out / "checkpoints" / LAST
    if not resume and last.exists():
        raise ConfigError(f"{out} already holds a run (checkpoints/{LAST}); resume it with `arkx pretrain --resume "
                          f"{out}` or choose another run.out")
    if resume and not last.exists():
        raise ArkxFileNotFoundError(f"nothing to resume in {out}: no checkpoints/{LAST}")
    previous = load_checkpoint(last, mmap=True)["extra"] if resume else {}
    _write_resolved_config(cfg, out, resume)
    if resume:
        _check_config_unchanged(previous, cfg, out)
        done = _finished_before(previous, last, cfg, out)
        if done is not None:
            return done
    size = cfg.data.resolved_cache_size
    identities = {name: dataset_identity(rec, cache_fingerprint(rec, size)) for name, rec in records.items()}
    if resume:
        _check_data_unchanged(previous, identities, out, accept_data_change)
        _check_heads_unchanged(previous, records, out)
    _configure_determinism(cfg)
    cache_root = cfg.data.cache_dir or out / "cache"
    _make_folder(cache_root, "data.cache_dir")
    try:
        datasets = {d.head_name: prepare_dataset(d, cfg.data, cache_root, cfg.run.seed, progress=progress,
                                                 records=records[d.head_name]) for d in cfg.datasets}
    except KeyboardInterrupt:
        raise RunInterrupted("interrupted while preparing the image cache; run the same command again to "
                             "continue (images decoded so far are kept)") from None
    _check_trainable(datasets)
    _warn_degenerate_labels(datasets, cfg)
    with space_checked(out / "datasets.json"):
        write_datasets_file(out, identities, {name: dict(cache_folder=str(ds.images.folder))
                                              for name, ds in datasets.items()
                                              if getattr(ds.images, "folder", None) is not None})
    torch.manual_seed(cfg.run.seed)  # the model's initialisation is part of the run's identity
    student = build_model(cfg.model, heads_for(datasets))
    engine = Engine(cfg, datasets, student, out, progress=progress)
    start = engine.restore(out / "checkpoints") if resume else 0
    if start_from is not None:  # step 0 of a new run only: a resume restores its own checkpoint instead
        _apply_initial_weights(engine, start_from, cfg.model.init_from)
    log.info("%s %s at step %d of %d (datasets: %s)", "resuming" if resume else "starting", out, start,
             len(engine.schedule), ", ".join(f"{n} {len(ds.records)} images" for n, ds in datasets.items()))
    prior_seconds = float(previous.get("train_seconds", 0.0))
    record = dict(config=config_identity(cfg), datasets=identities)
    started = time.perf_counter()

    def checkpoint_extra() -> dict:
        return dict(record, train_seconds=prior_seconds + time.perf_counter() - started)

    try:
        summary = engine.run(start_step=start, stop_after_steps=stop_after_steps, checkpoint_extra=checkpoint_extra)
    except KeyboardInterrupt:
        raise RunInterrupted(_interrupted_message(out, last)) from None
    summary.train_seconds += prior_seconds
    log.info("%s at step %d of %d; training time so far %.1f s", "finished" if summary.finished else "stopped",
             summary.steps_done, summary.total_steps, summary.train_seconds)
    if summary.finished:
        export_model(engine.teacher, cfg, out / "teacher.safetensors")
        export_model(engine.student, cfg, out / "student.safetensors")
    _write_summary(out, summary)
    return summary


# ---------------------------------------------------------------------------- incremental pretraining
def _initial_weights(cfg: ArkConfig, records: dict[str, Records]) -> dict[str, ArkModel]:
    """``{"student": model, "teacher": model}`` of ``model.init_from``, checked to fit the new run.

    A run folder (finished or in progress) or its ``checkpoints/last.pt`` gives its student and its teacher,
    so the new run continues both where the old one left them (as cyclic training would have with one more
    dataset); a single ``.safetensors`` export (e.g. the released teacher) starts both from that file."""
    source = Path(cfg.model.init_from)
    if not source.exists():
        raise ConfigError(f"invalid config: model.init_from: {source} not found")
    if source.is_dir() and not any((source / f).is_file() for f in ("teacher.safetensors", f"checkpoints/{LAST}")):
        raise ConfigError(f"invalid config: model.init_from: {source} is not an arkx run folder "
                          f"(no teacher.safetensors, no checkpoints/{LAST})")
    if source.is_dir() or source.suffix == ".pt":
        models = {which: load_model(source, which) for which in ("student", "teacher")}
    else:
        model = load_model(source)
        models = {"student": model, "teacher": model}
    new_heads = heads_for(records)
    for which, model in models.items():
        _check_heads_fit(model, new_heads, source)
        _check_trunk_fits(model, cfg, source)
    return models


def _check_heads_fit(old: ArkModel, new_heads: list[HeadSpec], source: Path) -> None:
    """A head kept from the old run must predict the same labels in the same order (its weights are per label)."""
    for spec in new_heads:
        was = old.head_specs.get(spec.name)
        if was is None:
            continue
        if was.kind != spec.kind or tuple(was.label_names) != tuple(spec.label_names):
            raise ConfigError(f"model.init_from: head {spec.name!r} of {source} predicts {was.kind} "
                              f"{list(was.label_names)}, but the dataset now has {spec.kind} "
                              f"{list(spec.label_names)}; give the dataset another name (datasets[].name) "
                              "to train a new head")


def _trunk(state: dict) -> dict:
    """The backbone and projector entries of a state dict (everything but the heads)."""
    return {k: v for k, v in state.items() if not k.startswith("heads.")}


def _check_trunk_fits(old: ArkModel, cfg: ArkConfig, source: Path) -> None:
    """The new run's backbone and projector (built on the meta device: no memory) must have the old keys and shapes."""
    from .models.backbones import format_key_mismatch

    model_cfg = cfg.model.model_copy(update={"checkpoint": None})
    try:
        with torch.device("meta"):
            own = _trunk(build_model(model_cfg, []).state_dict())
    except Exception:  # noqa: BLE001 - a backbone that cannot be built on meta is built for real
        own = _trunk(build_model(model_cfg, []).state_dict())
    state = _trunk(old.state_dict())
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ConfigError("model.init_from: " + format_key_mismatch(str(source), missing, unexpected, mismatched,
                                                                     own, state))


@torch.no_grad()
def _apply_initial_weights(engine: Engine, start_from: dict[str, ArkModel], source: Path) -> None:
    """Load the old run's backbone, projector and same-named heads into the student and the teacher.

    A new head keeps the student's seeded initialisation and the teacher gets an exact copy of it (as
    the teacher of a new run starts as a copy of the student); from then on the EMA moves it."""
    new_names = [n for n in engine.student.heads if n not in start_from["student"].heads]
    for which, target in (("student", engine.student), ("teacher", engine.teacher)):
        old = start_from[which]
        state = _trunk(old.state_dict())
        state.update({f"heads.{n}.{k}": v for n in target.heads if n in old.heads
                      for k, v in old.heads[n].state_dict().items()})
        # the student's new heads keep their seeded initialisation; the teacher's become copies of them
        state.update({f"heads.{n}.{k}": v.clone() for n in new_names
                      for k, v in engine.student.heads[n].state_dict().items()})
        target.load_state_dict(state, strict=True)
    dropped = [n for n in start_from["student"].heads if n not in engine.student.heads]
    log.info("initialised from %s: heads %s loaded, new heads %s%s", source,
             [n for n in engine.student.heads if n not in new_names] or "none", new_names or "none",
             f", heads not configured any more (left out): {dropped}" if dropped else "")


def _interrupted_message(out: Path, last: Path) -> str:
    if not last.exists():
        return f"interrupted before the first checkpoint; start the run again (nothing in {out} to resume yet)"
    step = load_checkpoint(last, mmap=True)["step_done"]
    return f"interrupted; the last checkpoint (step {step}) is intact: resume with `arkx pretrain --resume {out}`"


def _make_folder(path: Path, key: str) -> None:
    """Create a folder the run writes into; a file in its place or no permission is a one-line error."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}: {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{key}: cannot create the folder {path} ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: the folder {path} is not writable")


def _write_summary(out: Path, summary: RunSummary) -> None:
    path = out / "summary.json"
    with space_checked(path):
        path.write_text(json.dumps(_summary_dict(summary), indent=2))


def _finished_before(previous: dict, last: Path, cfg: ArkConfig, out: Path) -> RunSummary | None:
    """The recorded summary of a run that had already finished (and exported), else None: resuming it is a
    no-op that keeps its summary (training time included) instead of rewriting it."""
    from .training.schedule import build_schedule

    total = len(build_schedule(cfg.training.mode, cfg.dataset_order, cfg.training.rounds))
    step = int(load_checkpoint(last, mmap=True)["step_done"])
    files = [out / "summary.json", out / "teacher.safetensors", out / "student.safetensors"]
    if step < total or not all(f.is_file() for f in files):
        return None
    try:
        summary = _summary_from_dict(json.loads(files[0].read_text()))
    except (ValueError, TypeError, KeyError):
        return None  # an unreadable summary is rewritten by finishing the run again
    log.warning("%s: the run had already finished (%d of %d steps); nothing to do", out, step, total)
    return summary


def _summary_from_dict(d: dict) -> RunSummary:
    fields = {f.name for f in dataclasses.fields(RunSummary)}
    kwargs = {k: v for k, v in d.items() if k in fields}
    kwargs["out"] = Path(kwargs["out"])
    return RunSummary(**kwargs)


def _check_config_unchanged(previous: dict, cfg: ArkConfig, out: Path) -> None:
    """The resolved config must be the one the last checkpoint was trained with (config.yaml may have been
    edited by hand since: a CLI override would have been refused, so the file must be too)."""
    recorded = previous.get("config")
    if not recorded:
        return  # a checkpoint from before configs were recorded
    # run.out may differ: a run folder copied elsewhere names its new place (resume() checked it names this one)
    now = config_identity(cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": Path(out)})}))
    old = recorded.get("resolved") or {}
    now["resolved"]["run"]["out"] = old.get("run", {}).get("out", now["resolved"]["run"]["out"])
    if now["sha256"] == recorded.get("sha256") or (old and not config_differences(old, now["resolved"])):
        return
    diff = config_differences(old, now["resolved"])
    what = f"at {', '.join(diff[:10])}" if diff else "(its hash differs)"
    raise RunChanged(f"cannot resume {out}: {out / CONFIG_FILE} differs from the config of the last checkpoint "
                     f"{what} (was config.yaml edited since, or the checkpoint copied from another run?); restore "
                     "it, or start a new run (another run.out) with the new settings")


def _check_data_unchanged(previous: dict, identities: dict, out: Path, accept: bool) -> None:
    recorded = previous.get("datasets")
    if not recorded:
        return
    problems = []
    for name, ident in identities.items():
        if name not in recorded:
            problems.append(f"dataset {name!r} was not part of the run")
            continue
        changes = describe_change(recorded[name], ident)
        if changes:
            problems.append(f"dataset {name!r} changed since the last checkpoint: {'; '.join(changes)}")
    problems += [f"dataset {name!r} is no longer configured" for name in recorded if name not in identities]
    if not problems:
        return
    if accept:
        for problem in problems:
            log.warning("%s (accepted: training continues on the data as it is now)", problem)
        return
    raise RunChanged(f"cannot resume {out}: {' | '.join(problems)}; pass --accept-data-change "
                     "(accept_data_change=True) to continue on the data as it is now")


def _check_heads_unchanged(previous: dict, records: dict[str, Records], out: Path) -> None:
    """A head's outputs cannot change on resume: its weights would not fit (even with a data change accepted)."""
    recorded = {h["name"]: h for h in previous.get("heads", [])}
    for name, rec in records.items():
        old = recorded.get(name)
        if old is None:
            continue
        old_names, new_names = list(old["label_names"]), list(rec.task.label_names)
        if len(old_names) != len(new_names) or old["kind"] != rec.task.kind:
            added = [n for n in new_names if n not in old_names]
            removed = [n for n in old_names if n not in new_names]
            raise RunChanged(
                f"cannot resume {out}: head {name!r} was trained with {len(old_names)} outputs {old_names} and the "
                f"dataset now has {len(new_names)} labels (added {added}, removed {removed}); a head's outputs "
                "cannot change within a run: start a new run (another run.out)")


def _check_trainable(datasets: dict) -> None:
    for name, ds in datasets.items():
        n = len(ds.indices("train"))
        if n < 2:
            raise ArkxValueError(f"dataset {name!r} ({ds.records.root}) has {n} usable training image(s); training "
                                 "needs at least 2 (batch statistics such as BatchNorm's need more than one image)")


def _warn_degenerate_labels(datasets: dict, cfg: ArkConfig) -> None:
    """Say once, at the start, which labels cannot learn or cannot be scored (they would otherwise show up
    only as ``nan`` or as a mean over fewer labels)."""
    splits = list(dict.fromkeys(list(cfg.eval.splits) + (["test"] if cfg.eval.test_at_end else [])))
    for name, ds in datasets.items():
        names, labels = ds.task.label_names, ds.records.labels
        train = labels[ds.indices("train")]
        known = ~np.isnan(train)
        if ds.uncertain == "ignore":
            known &= train != -1
        unknown = [n for n, k in zip(names, known.any(axis=0)) if not k]
        if len(unknown) == len(names):
            log.warning("dataset %r: no training image has a known label (%s): its head learns from the "
                        "consistency loss alone and its AUC is undefined", name, ", ".join(names))
        elif unknown:
            log.warning("dataset %r: label(s) %s have no known value in the train split: nothing trains "
                        "their outputs", name, ", ".join(unknown))
        for split in splits:
            idx = ds.indices(split)
            if len(idx) == 0:
                continue
            excluded = excluded_labels(ds.task.kind, labels[idx], names)
            if len(excluded) == len(names):
                log.warning("dataset %r, split %s: no label has both classes, so its AUC is undefined (nan)",
                            name, split)
            elif excluded:
                listed = "; ".join(f"{k}: {v}" for k, v in excluded.items())
                log.warning("dataset %r, split %s: %d of %d label(s) left out of the mean AUC (%s)", name, split,
                            len(excluded), len(names), listed)


def _check_before_work(cfg: ArkConfig) -> None:
    """What the config schema cannot know but must fail before the run folder or a cache is made."""
    from .training.engine import resolve_device

    try:
        resolve_device(cfg.run.device)
    except RuntimeError as err:
        raise ConfigError(f"invalid config:\n  run.device: {err}") from None
    ckpt = cfg.model.checkpoint
    if ckpt is not None:
        if not Path(ckpt).is_file():
            raise ConfigError(f"invalid config:\n  model.checkpoint: file {ckpt} not found")
        if Path(ckpt).stat().st_size == 0:
            raise ConfigError(f"invalid config: model.checkpoint: {ckpt} is empty (0 bytes)")
    for key, path in (("run.out", cfg.run.out), ("data.cache_dir", cfg.data.cache_dir)):
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise ConfigError(f"invalid config: {key}: {path} is a file, not a folder")
    _check_model_fits(cfg)


def _check_model_fits(cfg: ArkConfig) -> None:
    """Build the model once without weights (on the meta device: no memory, no time) and run an image of the
    configured size through it, so a typo in ``model.backbone_kwargs`` or an image size the backbone cannot
    take is found before any cache is prepared."""
    model_cfg = cfg.model.model_copy(update={"checkpoint": None})
    size = cfg.data.image_size
    heads = [HeadSpec("check", "multilabel", ("x",))]
    for device in ("meta", "cpu"):  # a backbone that cannot be built on meta is built for real, once
        try:
            with torch.device(device):
                model = build_model(model_cfg, heads).eval()
        except Exception as err:  # noqa: BLE001 - anything timm raises on these kwargs is the user's to fix
            if device == "meta" and "meta" in str(err):
                continue
            raise ConfigError(f"invalid config: model.backbone_kwargs: {cfg.model.backbone} cannot be built with "
                              f"{cfg.model.backbone_kwargs}: {_one_line(err)}") from None
        try:
            with torch.no_grad():
                model(torch.zeros(2, 3, size, size, device=device), "check")
        except Exception as err:  # noqa: BLE001
            if device == "meta" and "meta" in str(err):
                continue
            raise ConfigError(f"invalid config: data.image_size={size} does not fit model.backbone "
                              f"{cfg.model.backbone}: {_one_line(err)}") from None
        return


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


def resume(run_dir: str | Path, config: ArkConfig | str | Path | dict | None = None, *,
           overrides: list[str] | None = None, progress: bool = True,
           stop_after_steps: int | None = None, accept_data_change: bool = False) -> RunSummary:
    """Continue the run in ``run_dir`` from its last checkpoint, with the config it started with.

    ``config`` (with ``overrides``) may be given too, as ``arkx pretrain CONFIG --resume DIR`` does: it
    must then resolve to the run's own config (its ``run.out`` is taken to be ``run_dir``), so a changed
    key is reported instead of silently mixing two configurations. ``overrides`` without ``config`` apply
    to the run's config and are refused if they change it. ``accept_data_change``: see :func:`pretrain`.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ArkxFileNotFoundError(f"no run folder {run_dir}")
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder")
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise ArkxFileNotFoundError(f"{run_dir} is not an arkx run folder (no {CONFIG_FILE})")
    saved = load_config(cfg_path)
    here = run_dir.resolve()
    if not _names_folder(Path(saved.run.out), here):  # a copied or moved run folder
        raise ConfigError(f"cannot resume {run_dir}: its {CONFIG_FILE} has run.out={saved.run.out}, so resuming "
                          f"would continue that folder instead; set run.out in {cfg_path} to this folder first")
    own = with_absolute_paths(saved, cwd=here.parent)
    own.run.out = here
    if config is not None:
        cfg = as_config(config, list(overrides or []) + [f"run.out={here}"])
    elif overrides:
        cfg = with_absolute_paths(as_config(own, overrides))
        changed = config_differences(own.model_dump(mode="json"), cfg.model_dump(mode="json"))
        if changed:
            raise ConfigError(f"cannot resume {run_dir} with overrides: they change {', '.join(changed[:10])}, and a "
                              "run continues with the config it started with; start a new run (another run.out) "
                              "to train with other settings")
    else:
        cfg = own
    return pretrain(cfg, resume=True, progress=progress, stop_after_steps=stop_after_steps,
                    accept_data_change=accept_data_change)


def _names_folder(recorded: Path, folder: Path) -> bool:
    """Whether a config's run.out names ``folder``: absolute and equal, or (runs from before paths were
    recorded absolute) relative and a tail of it."""
    if recorded.is_absolute():
        return recorded.resolve() == folder
    parts = [p for p in recorded.parts if p not in (".", "")]
    return not parts or list(folder.parts[-len(parts):]) == parts


def _summary_dict(summary: RunSummary) -> dict:
    d = asdict(summary)
    d["out"] = str(summary.out)
    d["finished"] = summary.finished
    return d


# ---------------------------------------------------------------------------- model files
def export_model(model: ArkModel, cfg: ArkConfig, path: Path) -> Path:
    """Weights as safetensors, with what is needed to rebuild the model in the metadata."""
    from safetensors.torch import save_file

    meta = dict(format=EXPORT_FORMAT, arkx_version=__version__, model=cfg.model.model_dump(mode="json"), heads=model.head_config(),
                image_size=cfg.data.image_size, normalization=dict(mean=MEAN, std=STD))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    try:
        with space_checked(path, tensor_bytes(state) + 1024 * 1024):
            save_file(state, str(tmp), metadata={"arkx": json.dumps(meta)})
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_model(path: str | Path, which: str = "teacher") -> ArkModel:
    """Rebuild an exported (or in-progress) arkx model: a run folder, a ``.safetensors`` export or a
    ``checkpoints/last.pt``. ``which`` picks teacher (the released model) or student."""
    path = Path(path)
    if which not in ("teacher", "student"):
        raise ArkxValueError(f"which must be 'teacher' or 'student', got {which!r}")
    if path.is_dir():
        exported = path / f"{which}.safetensors"
        path = exported if exported.exists() else path / "checkpoints" / LAST
    if not path.is_file():
        raise ArkxFileNotFoundError(f"no model at {path}")
    if path.suffix == ".safetensors":
        return _load_export(path)
    # A checkpoint of a run in progress: rebuild from the run's config and heads stored beside it.
    run_dir = path.parent.parent
    state = load_checkpoint(path)
    cfg = load_config(run_dir / CONFIG_FILE)
    heads = [HeadSpec(h["name"], h["kind"], tuple(h["label_names"])) for h in state["extra"].get("heads", [])]
    if not heads:
        raise ArkxValueError(f"{path}: checkpoint does not record its heads")
    model = build_model(cfg.model.model_copy(update={"checkpoint": None}), heads)
    _load_strict(model, state[which], path)
    return model.eval()


def _load_export(path: Path) -> ArkModel:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("arkx", "null") or "null")
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        size = path.stat().st_size
        raise ArkxValueError(f"{path}: not a readable .safetensors file ({size} bytes; {_one_line(err)})") from None
    if not meta or meta.get("format") != EXPORT_FORMAT:
        raise ArkxValueError(f"{path}: not an arkx model export (no arkx metadata)")
    from .config import ModelConfig

    model_cfg = ModelConfig.model_validate({**meta["model"], "checkpoint": None})
    heads = [HeadSpec(h["name"], h["kind"], tuple(h["label_names"])) for h in meta["heads"]]
    model = build_model(model_cfg, heads)
    _load_strict(model, state, path)
    return model.eval()


def _load_strict(model: torch.nn.Module, state: dict, source: Path) -> None:
    from .models.backbones import format_key_mismatch

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ArkxValueError(format_key_mismatch(str(source), missing, unexpected, mismatched, own, state))
    model.load_state_dict(state)


def teacher_encoder(path: str | Path) -> ArkModel:
    """The released model for reuse: call ``.embed(x)`` for embeddings, ``.features(x)`` for backbone features."""
    return load_model(path, "teacher")


def inspect_dataset(type: str, root: str | Path, **options: Any) -> dict:
    """What an adapter reads from a folder: counts per split, label and sex (JSON-serialisable)."""
    from .data.summary import summarize

    return summarize(read_dataset(type, root, **options))


def synthesize(out: str | Path, seed: int = 0, n: int = 200, size: int = 128, datasets=None) -> dict[str, Path]:
    """Write the synthetic datasets in their official layouts; returns adapter name -> root."""
    from .data.synth import synthesize as _synth

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArkxValueError(f"{out} is a file; give a folder to write the synthetic datasets into")
    try:
        return _synth(out, seed=seed, n=n, size=size, datasets=datasets)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise ArkxValueError(f"cannot write synthetic datasets into {out}: {err.strerror}"
                                 + (f" ({err.filename})" if err.filename else "")) from None
        raise
