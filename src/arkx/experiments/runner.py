"""Running an experiment: every (arm, seed) into its own run folder, reusing finished runs.

Layout of the output folder ``OUT``::

    OUT/experiment.json        what was planned: the experiment, the preset, every job's config (by job/seed)
    OUT/data/seed-S/           synthetic data of seed S (no --config); data-fx/ for Foundation X
    OUT/cache/                 the prepared image cache every run shares
    OUT/runs/JOB/seed-S/       one pretraining run or one probe / fine-tuning, with done.json when finished
    OUT/results.csv            tidy: experiment, arm, seed, job, dataset, label, metric, value
    OUT/summary.csv, summary.txt, summary.png, experiment.html   (see :mod:`arkx.experiments.tables`)

A *job* is one training run; an arm is one job per seed (Ark), one per dataset per seed (single-dataset
baselines) or a pretraining job and a probe / fine-tuning job per seed (transfer). Two arms that need the same
run (the probe and the fine-tuning of one pretraining) share its folder.

Re-running the command continues: a job with ``done.json`` is read, never trained again; a pretraining run
killed midway resumes from its last checkpoint (:func:`arkx.resume`); a probe / fine-tuning killed midway
starts again (they are short). A job whose config differs from the one recorded in ``experiment.json`` is
refused with the keys that differ (use another ``--out``); new seeds or arms are added.

Seeds: seed S is the run's ``run.seed`` (initialisation, data order, augmentation) and, on synthetic data,
also the seed of the generated datasets, so each seed is an independent replication (new patients, new
training); with ``--config`` the data stay the user's and only the training seed changes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ArkxValueError
from .registry import (
    UNCERTAIN_TYPES,
    Arm,
    Experiment,
    Preset,
    get_experiment,
    get_preset,
)

log = logging.getLogger("arkx.experiments")

MANIFEST = "experiment.json"
DONE = "done.json"
TIDY_COLUMNS = ("experiment", "arm", "seed", "job", "dataset", "label", "metric", "value")
#: fine-tuning settings every transfer arm shares (fixed before any run; patience off: a fixed budget)
TRANSFER_LR = 1e-3


@dataclass
class Job:
    """One training run of one seed: ``pretrain`` (``spec`` is an arkx config dict) or ``finetune`` (``spec``
    holds :class:`arkx.transfer.finetune.FinetuneConfig` fields; ``needs`` names the pretraining job whose
    run is its initial model)."""

    key: str
    kind: str
    spec: dict
    needs: str | None = None

    def folder(self, out: Path, seed: int) -> Path:
        return out / "runs" / self.key / f"seed-{seed}"


@dataclass
class ArmPlan:
    arm: Arm
    jobs: list[tuple[Job, tuple[str, ...] | None]]  # each job and the datasets it reports (None: all)


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` wrote and found."""

    name: str
    out: Path
    seeds: list[int]
    tidy: pd.DataFrame
    summary: pd.DataFrame
    text: str
    paths: dict[str, Path]
    seconds: float
    trained: list[str] = field(default_factory=list)  # job/seed trained by this call
    reused: list[str] = field(default_factory=list)  # job/seed found finished and read
    skipped_arms: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- base configs
def _synthetic_roots(out: Path, folder: str, seed: int, n: int, size: int, datasets: Sequence[str]) -> dict[str, Path]:
    """The synthetic datasets of one seed, generated once: a later call reads ``roots.json`` (and refuses
    data of other sizes, which would silently change finished runs' meaning)."""
    from ..api import synthesize

    where = out / folder / f"seed-{seed}"
    marker = where / "roots.json"
    wanted = dict(seed=seed, n=n, size=size, datasets=list(datasets))
    if marker.is_file():
        recorded = json.loads(marker.read_text())
        if {k: recorded.get(k) for k in wanted} != wanted:
            raise ArkxValueError(f"{where} holds synthetic data of another size ({ {k: recorded.get(k) for k in wanted} }, "
                                 f"wanted {wanted}); use another --out")
        return {name: Path(root) for name, root in recorded["roots"].items()}
    if where.exists():  # an interrupted generation: ours to redo
        shutil.rmtree(where)
    roots = synthesize(where, seed=seed, n=n, size=size, datasets=list(datasets))
    marker.write_text(json.dumps(dict(wanted, roots={k: str(v) for k, v in roots.items()}), indent=2))
    return roots


def base_config(experiment: Experiment, preset: Preset, out: Path, seed: int, config: str | Path | None = None) -> dict:
    """The config every arm of ``experiment`` starts from for ``seed``: the user's ``config`` (validated, paths
    absolute) or the demo's config on synthetic data of the preset's size."""
    from ..config import load_config, with_absolute_paths

    if config is not None:
        raw = with_absolute_paths(load_config(config)).model_dump(mode="json")
    elif experiment.family == "foundation-x":
        from ..demo_foundation_x import FX_DATASETS, foundation_x_config

        roots = _synthetic_roots(out, "data-fx", seed, preset.fx_n, max(96, preset.fx_image_size),
                                 [name for name, _ in FX_DATASETS])
        raw = foundation_x_config(roots, out, preset.fx_rounds, seed)
        raw["data"].update(image_size=preset.fx_image_size, cache_size=preset.fx_image_size * 9 // 8)
    else:
        from ..demo import demo_config

        roots = _synthetic_roots(out, "data", seed, preset.n, preset.size, preset.datasets)
        raw = demo_config(roots, out, preset.rounds, seed)
        raw["data"].update(image_size=preset.image_size, cache_size=preset.image_size * 9 // 8)
    raw = copy.deepcopy(raw)
    raw.setdefault("run", {})["seed"] = seed
    data = raw.setdefault("data", {})
    data["cache_dir"] = data.get("cache_dir") or str(out / "cache")  # a user's prepared cache is reused
    return raw


# ---------------------------------------------------------------------------- arms -> jobs
def _set(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = copy.deepcopy(value)


def _head(entry: dict) -> str:
    return entry.get("name") or entry["type"]


def _folder_key(name: str) -> str:
    return name.replace("/", "--")


def _pretrain_job(key: str, raw: dict) -> Job:
    return Job(key=key, kind="pretrain", spec=raw)


def _transfer_datasets(experiment: Experiment, base: dict, from_user_config: bool) -> tuple[dict, dict]:
    """The held-out dataset entry and the single-source entry of a transfer experiment."""
    entries = {_head(e): e for e in base["datasets"]}
    if len(entries) < 2:
        raise ArkxValueError("the transfer experiment needs at least two datasets (one held out)")
    heldout = experiment.heldout if not from_user_config and experiment.heldout in entries else list(entries)[-1]
    others = [name for name in entries if name != heldout]
    single = experiment.single_source if not from_user_config and experiment.single_source in others else others[0]
    return entries[heldout], entries[single]


def _finetune_spec(base: dict, target: dict, mode: str, epochs: int, seed: int) -> dict:
    """Settings of one probe / fine-tuning on ``target``: the same for every initial model."""
    model, data = base.get("model", {}), base.get("data", {})
    spec = dict(dataset_type=target["type"], root=str(target["root"]), options=dict(target.get("options") or {}),
                task="classification", mode=mode, epochs=epochs, lr=TRANSFER_LR, patience=None, seed=seed,
                batch_size=data.get("batch_size", 32), eval_batch_size=data.get("eval_batch_size", 64),
                image_size=data.get("image_size", 224), cache_dir=str(data.get("cache_dir")),
                device=base.get("run", {}).get("device", "auto"), uncertain=target.get("uncertain"), workers=0,
                backbone=model.get("backbone", "swin_base_patch4_window7_224"),
                backbone_kwargs=dict(model.get("backbone_kwargs") or {}), projector=model.get("projector", "linear"),
                projector_dim=model.get("projector_dim", 1376))
    if data.get("cache_size"):
        spec["cache_size"] = data["cache_size"]
    return spec


def plan_arm(experiment: Experiment, arm: Arm, base: dict, seed: int, *, finetune_epochs: int = 1,
             init: str | None = None, from_user_config: bool = False) -> ArmPlan | None:
    """The jobs of one arm for one seed (``None``: the arm needs an ``init`` that was not given)."""
    raw = copy.deepcopy(base)
    raw.setdefault("run", {})["seed"] = seed
    for dotted, value in arm.overrides.items():
        _set(raw, dotted, value)
    for entry in raw["datasets"]:
        if entry["type"] in UNCERTAIN_TYPES:
            entry.update(copy.deepcopy(dict(arm.dataset_overrides)))
    if arm.transfer is not None:
        return _plan_transfer(experiment, arm, raw, seed, finetune_epochs, init, from_user_config)
    if arm.per_dataset:
        jobs = []
        for entry in raw["datasets"]:
            single = copy.deepcopy(raw)
            single["datasets"] = [entry]
            if single.get("training", {}).get("order"):
                single["training"]["order"] = [_head(entry)]
            jobs.append((_pretrain_job(f"{_folder_key(arm.name)}-{_head(entry)}", single), (_head(entry),)))
        return ArmPlan(arm, jobs)
    return ArmPlan(arm, [(_pretrain_job(_folder_key(arm.name), raw), None)])


def _plan_transfer(experiment: Experiment, arm: Arm, raw: dict, seed: int, epochs: int, init: str | None,
                   from_user_config: bool) -> ArmPlan | None:
    target, single = _transfer_datasets(experiment, raw, from_user_config)
    source = arm.transfer.source
    spec = _finetune_spec(raw, target, arm.transfer.mode, epochs, seed)
    jobs = []
    pretrain = None
    if source == "all-but-heldout":
        cfg = copy.deepcopy(raw)
        cfg["datasets"] = [e for e in raw["datasets"] if _head(e) != _head(target)]
        pretrain = _pretrain_job(f"pretrain-all-but-{_head(target)}", cfg)
    elif source == "single":
        cfg = copy.deepcopy(raw)
        cfg["datasets"] = [single]
        pretrain = _pretrain_job(f"pretrain-{_head(single)}", cfg)
    elif source == "scratch":
        spec["init"] = "scratch"
    elif source == "init":
        if init is None:
            return None
        spec["init"] = init
    if pretrain is not None:
        if pretrain.spec.get("training", {}).get("order"):
            pretrain.spec["training"]["order"] = [_head(e) for e in pretrain.spec["datasets"]]
        jobs.append((pretrain, ()))  # pretraining reports nothing itself: the transfer is the result
        spec["init"] = "run:{needs}"
    finetune = Job(key=_folder_key(arm.name), kind="finetune", spec=spec, needs=pretrain.key if pretrain else None)
    jobs.append((finetune, (_head(target),)))
    return ArmPlan(arm, jobs)


def plan(experiment: Experiment, base: dict, seed: int, *, finetune_epochs: int = 1, init: str | None = None,
         from_user_config: bool = False, arms: Sequence[str] | None = None) -> tuple[list[ArmPlan], list[str]]:
    """Every arm's jobs for one seed, and the arms left out (an ``init`` arm without ``init``)."""
    chosen = [experiment.arm(name) for name in arms] if arms else list(experiment.arms)
    plans, skipped = [], []
    for arm in chosen:
        p = plan_arm(experiment, arm, base, seed, finetune_epochs=finetune_epochs, init=init,
                     from_user_config=from_user_config)
        if p is None:
            skipped.append(arm.name)
        else:
            plans.append(p)
    return plans, skipped


def with_run_folders(plans: list[ArmPlan], out: Path, seed: int) -> dict[str, Job]:
    """The distinct jobs of one seed (shared ones once), with their run folders written into their specs;
    two arms asking for the same job with different configs is a bug in the registry."""
    jobs: dict[str, Job] = {}
    for p in plans:
        for job, _ in p.jobs:
            folder = job.folder(out, seed)
            if job.kind == "pretrain":
                job.spec.setdefault("run", {})["out"] = str(folder)
            else:
                job.spec["out"] = str(folder)
                if job.needs:
                    job.spec["init"] = f"run:{Job(job.needs, 'pretrain', {}).folder(out, seed)}"
            if job.key in jobs and jobs[job.key].spec != job.spec:
                raise RuntimeError(f"two arms need job {job.key!r} with different configs")
            jobs[job.key] = job
    return jobs


def validate_job(job: Job) -> None:
    """The job's config as arkx reads it (a ConfigError names the key)."""
    if job.kind == "pretrain":
        from ..api import as_config

        as_config(job.spec)
    else:
        from pydantic import ValidationError

        from ..transfer.finetune.settings import FinetuneConfig

        try:
            FinetuneConfig(**job.spec)
        except ValidationError as err:  # pydantic's message names the field
            raise ArkxValueError(f"job {job.key}: invalid fine-tuning settings: {err}") from None


# ---------------------------------------------------------------------------- manifest
def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(_jsonable(spec), sort_keys=True).encode()).hexdigest()


def check_identity(out: Path, experiment: Experiment, preset: Preset, config: str | Path | None) -> dict:
    """The folder's manifest (a new one if none); refused when it holds another experiment, preset or base
    config file (checked before any data are generated)."""
    from ..training.identity import config_differences

    path = out / MANIFEST
    sizes = None
    if config is None:  # what shapes the runs (the default seeds and the wording do not)
        sizes = {k: v for k, v in asdict(preset).items() if k not in ("seeds", "description")}
    identity = _jsonable(dict(experiment=experiment.name, preset=sizes,
                              config=None if config is None else str(Path(config).resolve())))
    manifest = json.loads(path.read_text()) if path.is_file() else dict(identity, jobs={})
    diff = config_differences({k: manifest.get(k) for k in identity}, identity)
    if diff:
        raise ArkxValueError(f"{path}: this folder holds another setting of experiment {manifest.get('experiment')!r} "
                             f"({', '.join(diff[:4])}); use another --out")
    return manifest


def check_manifest(out: Path, manifest: dict, jobs_by_seed: dict[int, dict[str, Job]]) -> dict:
    """Refuse a re-run in which any already planned job's config changed; return the manifest with the new
    jobs added (written by the caller)."""
    from ..training.identity import config_differences

    path = out / MANIFEST
    for seed, jobs in jobs_by_seed.items():
        for job in jobs.values():
            name = f"{job.key}/seed-{seed}"
            now = _jsonable(job.spec)
            before = manifest["jobs"].get(name)
            if before is not None and before != now:
                diff = config_differences(before, now)
                raise ArkxValueError(f"{path}: the config of {name} changed since it was planned "
                                     f"({', '.join(diff[:5])}); finished runs would no longer match: use another --out")
            manifest["jobs"][name] = now
    return manifest


# ---------------------------------------------------------------------------- running jobs
def _pretrain_rows(folder: Path) -> pd.DataFrame:
    from ..evaluation.aggregate import read_run_results

    return read_run_results(folder)


def _train_pretrain(job: Job, folder: Path, progress: bool, keep_checkpoints: bool = False) -> pd.DataFrame:
    """Train (or resume) one pretraining run and read its final test results. A finished run's checkpoints
    are removed unless ``keep_checkpoints`` (its exported ``teacher``/``student.safetensors`` stay: reports,
    evaluation and transfer read those; a checkpoint holds them twice more plus the optimizer state, 77 MB
    per demo run)."""
    from .. import api
    from ..training.state import LAST

    if (folder / "checkpoints" / LAST).exists():
        summary = api.resume(folder, progress=progress)
    else:
        summary = api.pretrain(job.spec, progress=progress)
    rows = _pretrain_rows(folder)
    if summary.finished and not keep_checkpoints and (folder / "teacher.safetensors").is_file():
        for checkpoint in (folder / "checkpoints").glob("*.pt"):
            checkpoint.unlink()
    return rows


def _train_finetune(job: Job, folder: Path, progress: bool) -> pd.DataFrame:
    """One probe / fine-tuning from the start (a killed one is short to redo) and its test scores."""
    from ..evaluation.scoring import MEAN_LABEL
    from ..transfer.finetune import FinetuneConfig, run_finetune

    result = run_finetune(FinetuneConfig(**job.spec), progress=progress)
    metric = "auroc" if result.metric == "auc" else result.metric
    values = dict(result.test_per_label)
    values[MEAN_LABEL] = result.test_score
    return pd.DataFrame(dict(run=str(folder), seed=job.spec["seed"], dataset=job.spec["dataset_type"],
                             label=list(values), metric=metric, value=[float(v) for v in values.values()]))


def run_job(job: Job, seed: int, out: Path, progress: bool, keep_checkpoints: bool = False
            ) -> tuple[pd.DataFrame, bool]:
    """The job's result rows, and whether it was trained now (False: read from its ``done.json``)."""
    folder = job.folder(out, seed)
    done = folder / DONE
    if done.is_file():
        recorded = json.loads(done.read_text())
        if recorded.get("spec_sha256") == _spec_hash(job.spec):
            return pd.DataFrame(recorded["rows"]), False
        raise ArkxValueError(f"{done}: finished with another config than planned now; use another --out")
    from ..errors import RunInterrupted

    started = time.perf_counter()
    try:
        if job.kind == "pretrain":
            rows = _train_pretrain(job, folder, progress, keep_checkpoints)
        else:
            rows = _train_finetune(job, folder, progress)
    except KeyboardInterrupt as err:  # Ctrl-C: say how the experiment continues, not only the run
        raise RunInterrupted(f"{err or 'interrupted'}; to continue the whole experiment run the same command "
                             "again (finished runs are kept, this one resumes)") from None
    rows = rows.assign(seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(dict(spec_sha256=_spec_hash(job.spec), seconds=time.perf_counter() - started,
                                    rows=_jsonable(rows.to_dict(orient="records"))), indent=1))
    return rows, True


# ---------------------------------------------------------------------------- the command
def run_experiment(name: str, out: str | Path | None = None, *, seeds: Sequence[int] | None = None,
                   preset: str | Preset = "tiny", config: str | Path | None = None, init: str | None = None,
                   arms: Sequence[str] | None = None, progress: bool = True,
                   keep_checkpoints: bool = False) -> ExperimentResult:
    """Run experiment ``name`` (see ``arkx experiment list``) over ``seeds`` into ``out`` and write its tables.

    Args:
        out: the experiment folder (default ``experiments/NAME-PRESET``); re-running continues it.
        seeds: default the preset's (tiny: 0 1; demo: 0 1 2).
        preset: ``tiny`` or ``demo`` (sizes of the synthetic data and the schedule), or a :class:`Preset`.
        config: a base config (YAML) on your own data instead of synthetic data; arms apply their changes to it.
        init: transfer only: a local initial model for an extra arm (``timm:FILE`` e.g. ImageNet weights of the
            config's backbone, or ``released:FILE``); nothing is downloaded.
        arms: a subset of the experiment's arms (default all).
        keep_checkpoints: keep each finished pretraining run's ``checkpoints/`` (default: removed, the exported
            models stay).
    """
    from .tables import write_outputs

    started = time.perf_counter()
    experiment = get_experiment(name)
    chosen = preset if isinstance(preset, Preset) else get_preset(preset)
    seeds = list(seeds) if seeds else list(chosen.seeds)
    if len(set(seeds)) != len(seeds):
        raise ArkxValueError(f"seeds {seeds}: each seed once")
    out = Path(out or f"experiments/{name}-{chosen.name}").resolve()
    if init is not None and not any(a.transfer is not None for a in experiment.arms):
        raise ArkxValueError(f"--init applies to the transfer experiment, not {name!r}")
    out.mkdir(parents=True, exist_ok=True)
    manifest = check_identity(out, experiment, chosen, config)
    plans_by_seed, jobs_by_seed, skipped = {}, {}, []
    for seed in seeds:
        base = base_config(experiment, chosen, out, seed, config)
        plans, skipped = plan(experiment, base, seed, finetune_epochs=chosen.finetune_epochs, init=init,
                              from_user_config=config is not None, arms=arms)
        plans_by_seed[seed], jobs_by_seed[seed] = plans, with_run_folders(plans, out, seed)
        for job in jobs_by_seed[seed].values():
            validate_job(job)
    manifest = check_manifest(out, manifest, jobs_by_seed)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    frames, trained, reused = [], [], []
    for seed in seeds:
        rows_of: dict[str, pd.DataFrame] = {}
        for key, job in jobs_by_seed[seed].items():  # pretraining before the probes that need it (plan order)
            rows_of[key], now = run_job(job, seed, out, progress, keep_checkpoints)
            (trained if now else reused).append(f"{key}/seed-{seed}")
        for p in plans_by_seed[seed]:
            for job, reports in p.jobs:
                rows = rows_of[job.key]
                if reports is not None:
                    rows = rows[rows["dataset"].isin(reports)]
                frames.append(rows.assign(experiment=experiment.name, arm=p.arm.name, job=job.key))
    tidy = pd.concat(frames, ignore_index=True)[list(TIDY_COLUMNS)] if frames else pd.DataFrame(columns=TIDY_COLUMNS)
    summary, text, paths = write_outputs(experiment, tidy, out, preset=None if config else chosen, seeds=seeds,
                                         skipped_arms=skipped)
    return ExperimentResult(name=experiment.name, out=out, seeds=seeds, tidy=tidy, summary=summary, text=text,
                            paths=paths, seconds=time.perf_counter() - started, trained=trained, reused=reused,
                            skipped_arms=skipped)
