"""The public Python API; the CLI is a thin layer over these functions.

    import arkx
    summary = arkx.pretrain("configs/ark6-swinb224.yaml", overrides=["training.rounds=50"])
    model = arkx.load_model("runs/ark6")              # the teacher, with every dataset head
    z = model.embed(x)                                   # 1376-d embeddings
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .config import (
    ArkConfig,
    ConfigError,
    config_from_dict,
    load_config,
    with_absolute_paths,
)
from .data.adapters import read_dataset
from .data.cache import fingerprint as cache_fingerprint
from .data.loaders import prepare_dataset
from .data.records import Records
from .errors import ArkxFileNotFoundError, ArkxValueError, RunChanged, RunInterrupted
from .evaluation.aggregate import compare_runs
from .evaluation.runner import compare_models, evaluate
from .models.ark import ArkModel, build_model
from .models.files import EXPORT_FORMAT, export_model, load_model
from .training.engine import Engine, RunSummary, pretraining_tasks
from .training.identity import (
    config_differences,
    config_identity,
    dataset_identity,
    describe_change,
    write_datasets_file,
)
from .training.init_from import _apply_initial_weights, _initial_weights, heads_for
from .training.preflight import (
    _check_before_work,
    _check_trainable,
    _make_folder,
    _warn_degenerate_labels,
)
from .training.distributed import SINGLE, Distributed, from_environment, rank_zero_first
from .training.runfolder import RunLock, run_log
from .training.state import LAST, load_checkpoint, space_checked

__all__ = ["EXPORT_FORMAT", "as_config", "build_from_config", "compare_models", "compare_runs", "evaluate",
           "export_model", "heads_for", "inspect_dataset", "load_model", "pretrain", "report", "resume", "synthesize",
           "teacher_encoder"]

log = logging.getLogger("arkx")

CONFIG_FILE = "config.yaml"


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
    # torchrun: this process is one rank of a job (rank 0 owns the run folder, see arkx.training.distributed)
    job = from_environment(cfg.run.device)
    try:
        with rank_zero_first(job):
            if job.is_main:
                _make_folder(out, "run.out")
        with (RunLock(out) if job.is_main else contextlib.nullcontext()), \
                (run_log(out) if job.is_main else contextlib.nullcontext()):
            return _pretrain_locked(cfg, records, out, resume, progress, stop_after_steps, accept_data_change,
                                    start_from, job)
    finally:
        job.close()


def _pretrain_locked(cfg: ArkConfig, records: dict[str, Records], out: Path, resume: bool, progress: bool,
                     stop_after_steps: int | None, accept_data_change: bool,
                     start_from: dict[str, ArkModel] | None = None, job: Distributed = SINGLE) -> RunSummary:
    last = out / "checkpoints" / LAST
    if not resume and last.exists():
        raise ConfigError(f"{out} already holds a run (checkpoints/{LAST}); resume it with `arkx pretrain --resume "
                          f"{out}` or choose another run.out")
    if resume and not last.exists():
        raise ArkxFileNotFoundError(f"nothing to resume in {out}: no checkpoints/{LAST}")
    previous = load_checkpoint(last, mmap=True)["extra"] if resume else {}
    if job.is_main:
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
    classifies = "classification" in cfg.training.tasks
    try:
        with rank_zero_first(job):  # rank 0 decodes the images; the others then open the prepared cache
            _make_folder(cache_root, "data.cache_dir")
            datasets = {d.head_name: prepare_dataset(d, cfg.data, cache_root, cfg.run.seed,
                                                     progress=progress and job.is_main, records=records[d.head_name],
                                                     require_labels=classifies and "classification" in (d.tasks or ["classification"]))
                        for d in cfg.datasets}
    except KeyboardInterrupt:
        raise RunInterrupted("interrupted while preparing the image cache; run the same command again to "
                             "continue (images decoded so far are kept)") from None
    _check_trainable(datasets)
    if job.is_main:
        _warn_degenerate_labels(datasets, cfg)
        _write_datasets_record(out, identities, datasets)
    tasks = pretraining_tasks(datasets, cfg.training.tasks, {d.head_name: d.tasks for d in cfg.datasets if d.tasks})
    torch.manual_seed(cfg.run.seed)  # the model's initialisation is part of the run's identity
    student = build_model(cfg.model, [task for per in tasks.values() for task in per],
                          branch_options=cfg.model.branch_options or None)
    engine = Engine(cfg, datasets, student, out, progress=progress, dist=job)
    return _train(engine, cfg, out, resume, previous, identities, stop_after_steps, start_from)


def _write_datasets_record(out: Path, identities: dict, datasets: dict) -> None:
    with space_checked(out / "datasets.json"):
        write_datasets_file(out, identities, {name: dict(cache_folder=str(ds.images.folder))
                                              for name, ds in datasets.items()
                                              if getattr(ds.images, "folder", None) is not None})


def _train(engine: Engine, cfg: ArkConfig, out: Path, resume: bool, previous: dict, identities: dict,
           stop_after_steps: int | None, start_from: dict[str, ArkModel] | None) -> RunSummary:
    """Restore or initialise the engine's weights, run it, export the finished models (rank 0)."""
    last = out / "checkpoints" / LAST
    start = engine.restore(out / "checkpoints") if resume else 0
    if start_from is not None:  # step 0 of a new run only: a resume restores its own checkpoint instead
        _apply_initial_weights(engine, start_from, cfg.model.init_from)
    log.info("%s %s at step %d of %d (datasets: %s)%s", "resuming" if resume else "starting", out, start,
             len(engine.schedule), ", ".join(f"{n} {len(ds.records)} images" for n, ds in engine.datasets.items()),
             f"; {engine.dist.world_size} processes" if engine.dist.enabled else "")
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
    if not engine.dist.is_main:
        return summary
    if summary.finished:
        export_model(engine.teacher, cfg, out / "teacher.safetensors")
        export_model(engine.student, cfg, out / "student.safetensors")
    _write_summary(out, summary)
    return summary


def _interrupted_message(out: Path, last: Path) -> str:
    if not last.exists():
        return f"interrupted before the first checkpoint; start the run again (nothing in {out} to resume yet)"
    step = load_checkpoint(last, mmap=True)["step_done"]
    return f"interrupted; the last checkpoint (step {step}) is intact: resume with `arkx pretrain --resume {out}`"


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
    old = _with_new_defaults(recorded.get("resolved") or {})
    now["resolved"]["run"]["out"] = old.get("run", {}).get("out", now["resolved"]["run"]["out"])
    if now["sha256"] == recorded.get("sha256") or (old and not config_differences(old, now["resolved"])):
        return
    diff = config_differences(old, now["resolved"])
    what = f"at {', '.join(diff[:10])}" if diff else "(its hash differs)"
    raise RunChanged(f"cannot resume {out}: {out / CONFIG_FILE} differs from the config of the last checkpoint "
                     f"{what} (was config.yaml edited since, or the checkpoint copied from another run?); restore "
                     "it, or start a new run (another run.out) with the new settings")


def _with_new_defaults(resolved: dict) -> dict:
    """A recorded resolved config with the keys a newer arkx added filled with their defaults (what the run did
    without them), so a run started by an older version still resumes; one that no longer validates is
    compared as recorded (and its differences reported)."""
    if not resolved:
        return resolved
    try:
        return ArkConfig.model_validate(resolved).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - the raw comparison below names what differs
        return resolved


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
    """A head's outputs cannot change on resume: its weights would not fit (even with a data change accepted).
    Every head counts: classification labels, detection classes, segmentation structures."""
    recorded = {(h["name"], h["kind"]): h for h in previous.get("heads", [])}
    for name, rec in records.items():
        current = {(task.name, task.kind): task for task in rec.tasks(name)}
        if rec.task is not None:  # a classification head whose kind changed (multilabel <-> multiclass)
            for kind in ("multilabel", "multiclass"):
                if (name, kind) in recorded and kind != rec.task.kind:
                    current[(name, kind)] = rec.task
        for key, task in current.items():
            old = recorded.get(key)
            if old is None:
                continue
            old_names, new_names = list(old["label_names"]), list(task.label_names)
            if len(old_names) != len(new_names) or old["kind"] != task.kind:
                added = [n for n in new_names if n not in old_names]
                removed = [n for n in old_names if n not in new_names]
                what = "labels" if old["kind"] in ("multilabel", "multiclass") else f"{task.kind} outputs"
                raise RunChanged(
                    f"cannot resume {out}: head {name!r} was trained with {len(old_names)} outputs {old_names} and the "
                    f"dataset now has {len(new_names)} {what} (added {added}, removed {removed}); a head's outputs "
                    "cannot change within a run: start a new run (another run.out)")


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


def report(run_dir: str | Path, out: str | Path | None = None, **options: Any) -> Path:
    """Write the run's self-contained HTML report (final metrics, plots, config); returns ``report.html``'s
    path (default ``RUN/report/report.html``). ``options``: see
    :func:`arkx.evaluation.html_report.write_report`."""
    from .evaluation.html_report import write_report

    return write_report(run_dir, out, **options)


def teacher_encoder(path: str | Path) -> ArkModel:
    """The released model for reuse: call ``.embed(x)`` for embeddings, ``.features(x)`` for backbone features."""
    return load_model(path, "teacher")


def inspect_dataset(type: str, root: str | Path, **options: Any) -> dict:
    """What an adapter reads from a folder: counts per split, label and sex (JSON-serialisable)."""
    from .data.summary import summarize

    return summarize(read_dataset(type, root, **options))


def synthesize(out: str | Path, seed: int = 0, n: int = 200, size: int = 128, datasets=None) -> dict[str, Path]:
    """Write the synthetic datasets in their official layouts; returns adapter name -> root."""
    from .synth import synthesize as _synth

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
