"""The public Python API; the CLI is a thin layer over these functions.

    import arkx
    summary = arkx.pretrain("configs/ark6.yaml", overrides=["training.rounds=50"])
    model = arkx.load_model("runs/ark6")              # the teacher, with every dataset head
    z = model.embed(x)                                   # 1376-d embeddings
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import ArkConfig, ConfigError, config_from_dict, load_config
from .data.adapters import read_dataset
from .data.loaders import prepare_dataset
from .data.transforms import MEAN, STD
from .models.ark import ArkModel, HeadSpec, build_model
from .training.engine import Engine, RunSummary
from .training.state import LAST

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


def heads_for(datasets) -> list[HeadSpec]:
    return [HeadSpec(name, ds.task.kind, ds.task.label_names) for name, ds in datasets.items()]


def build_from_config(config: ArkConfig | str | Path | dict, overrides: list[str] | None = None) -> ArkModel:
    """The (untrained) student a config describes: its backbone, projector and one head per dataset.

    Reads each dataset's label files to name its head (images are not touched)."""
    cfg = as_config(config, overrides)
    heads = []
    for d in cfg.datasets:
        records = read_dataset(d.type, d.root, **d.options)
        if records.task is None:
            raise ValueError(f"dataset {d.head_name!r} ({d.type}) has no classification labels")
        heads.append(HeadSpec(d.head_name, records.task.kind, records.task.label_names))
    torch.manual_seed(cfg.run.seed)
    return build_model(cfg.model, heads)


def _write_resolved_config(cfg: ArkConfig, out: Path, resume: bool) -> None:
    path = out / CONFIG_FILE
    text = cfg.to_yaml()
    if resume and path.exists():
        before = yaml.safe_load(path.read_text())
        now = yaml.safe_load(text)
        if before != now:
            diff = sorted(_diff_keys(before, now))
            raise ConfigError(f"cannot resume {out}: the config differs from the one it started with at {diff[:10]}")
        return
    path.write_text(text)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [k for key in keys for k in _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [k for i, (x, y) in enumerate(zip(a, b)) for k in _diff_keys(x, y, f"{prefix}{i}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _configure_determinism(cfg: ArkConfig) -> None:
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def pretrain(config: ArkConfig | str | Path | dict, *, overrides: list[str] | None = None, resume: bool = False,
             progress: bool = True, stop_after_steps: int | None = None) -> RunSummary:
    """Run Ark pretraining as configured (or continue it with ``resume=True``)."""
    cfg = as_config(config, overrides)
    _check_before_work(cfg)
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "checkpoints" / LAST
    if not resume and last.exists():
        raise ConfigError(f"{out} already holds a run (checkpoints/{LAST}); resume it with `arkx pretrain --resume "
                          f"{out}` or choose another run.out")
    if resume and not last.exists():
        raise FileNotFoundError(f"nothing to resume in {out}: no checkpoints/{LAST}")
    _write_resolved_config(cfg, out, resume)
    _configure_determinism(cfg)
    cache_root = cfg.data.cache_dir or out / "cache"
    datasets = {d.head_name: prepare_dataset(d, cfg.data, cache_root, cfg.run.seed, progress=progress)
                for d in cfg.datasets}
    torch.manual_seed(cfg.run.seed)  # the model's initialisation is part of the run's identity
    student = build_model(cfg.model, heads_for(datasets))
    engine = Engine(cfg, datasets, student, out, progress=progress)
    start = engine.restore(out / "checkpoints") if resume else 0
    summary = engine.run(start_step=start, stop_after_steps=stop_after_steps)
    if summary.finished:
        export_model(engine.teacher, cfg, out / "teacher.safetensors")
        export_model(engine.student, cfg, out / "student.safetensors")
    (out / "summary.json").write_text(json.dumps(_summary_dict(summary), indent=2))
    return summary


def _check_before_work(cfg: ArkConfig) -> None:
    """What the config schema cannot know but must fail before the run folder or a cache is made."""
    from .training.engine import resolve_device

    try:
        resolve_device(cfg.run.device)
    except RuntimeError as err:
        raise ConfigError(f"invalid config:\n  run.device: {err}") from None
    if cfg.model.checkpoint is not None and not Path(cfg.model.checkpoint).is_file():
        raise ConfigError(f"invalid config:\n  model.checkpoint: file {cfg.model.checkpoint} not found")


def resume(run_dir: str | Path, config: ArkConfig | str | Path | dict | None = None, *,
           overrides: list[str] | None = None, progress: bool = True,
           stop_after_steps: int | None = None) -> RunSummary:
    """Continue the run in ``run_dir`` from its last checkpoint, with the config it started with.

    ``config`` (with ``overrides``) may be given too, as ``arkx pretrain CONFIG --resume DIR`` does: it
    must then resolve to the run's own config (its ``run.out`` is taken to be ``run_dir``), so a changed
    key is reported instead of silently mixing two configurations.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an arkx run folder (no {CONFIG_FILE})")
    saved = load_config(cfg_path)
    if Path(saved.run.out).resolve() != run_dir.resolve():  # a copied or moved run folder
        raise ConfigError(f"cannot resume {run_dir}: its {CONFIG_FILE} has run.out={saved.run.out}, so resuming "
                          f"would continue that folder instead; set run.out in {cfg_path} to this folder first")
    cfg = saved
    if config is not None:
        cfg = as_config(config, list(overrides or []) + [f"run.out={saved.run.out}"])
    return pretrain(cfg, resume=True, progress=progress, stop_after_steps=stop_after_steps)


def _summary_dict(summary: RunSummary) -> dict:
    d = asdict(summary)
    d["out"] = str(summary.out)
    d["finished"] = summary.finished
    return d


# ---------------------------------------------------------------------------- model files
def export_model(model: ArkModel, cfg: ArkConfig, path: Path) -> Path:
    """Weights as safetensors, with what is needed to rebuild the model in the metadata."""
    from safetensors.torch import save_file

    meta = dict(format=EXPORT_FORMAT, model=cfg.model.model_dump(mode="json"), heads=model.head_config(),
                image_size=cfg.data.image_size, normalization=dict(mean=MEAN, std=STD))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"arkx": json.dumps(meta)})
    tmp.replace(path)
    return path


def load_model(path: str | Path, which: str = "teacher") -> ArkModel:
    """Rebuild an exported (or in-progress) arkx model: a run folder, a ``.safetensors`` export or a
    ``checkpoints/last.pt``. ``which`` picks teacher (the released model) or student."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    if path.is_dir():
        exported = path / f"{which}.safetensors"
        path = exported if exported.exists() else path / "checkpoints" / LAST
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("arkx", "null") or "null")
        if not meta or meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}: not an arkx model export (no arkx metadata)")
        from .config import ModelConfig

        model_cfg = ModelConfig.model_validate({**meta["model"], "checkpoint": None})
        heads = [HeadSpec(h["name"], h["kind"], tuple(h["label_names"])) for h in meta["heads"]]
        model = build_model(model_cfg, heads)
        _load_strict(model, load_file(str(path)), path)
        return model.eval()
    # A checkpoint of a run in progress: rebuild from the run's config and heads stored beside it.
    run_dir = path.parent.parent
    from .training.state import load_checkpoint

    state = load_checkpoint(path)
    cfg = load_config(run_dir / CONFIG_FILE)
    heads = [HeadSpec(h["name"], h["kind"], tuple(h["label_names"])) for h in state["extra"].get("heads", [])]
    if not heads:
        raise ValueError(f"{path}: checkpoint does not record its heads")
    model = build_model(cfg.model.model_copy(update={"checkpoint": None}), heads)
    _load_strict(model, state[which], path)
    return model.eval()


def _load_strict(model: torch.nn.Module, state: dict, source: Path) -> None:
    from .models.backbones import format_key_mismatch

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(format_key_mismatch(str(source), missing, unexpected, mismatched, own, state))
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

    return _synth(out, seed=seed, n=n, size=size, datasets=datasets)
