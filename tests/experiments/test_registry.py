"""The declared experiments: every arm of every experiment, at every preset, builds configs arkx accepts, and
each arm changes what it says it changes (nothing trains here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from arkx.config import config_from_dict
from arkx.experiments import EXPERIMENTS, PRESETS
from arkx.experiments.registry import UNCERTAIN_TYPES
from arkx.experiments.runner import plan, validate_job, with_run_folders
from arkx.transfer.finetune.settings import FinetuneConfig


def fake_base(experiment, preset, tmp_path: Path, seed: int = 0) -> dict:
    """The preset's base config on dataset folders that need not exist (configs are validated without reading
    data)."""
    if experiment.family == "foundation-x":
        from arkx.demo_foundation_x import FX_DATASETS, foundation_x_config

        raw = foundation_x_config({n: tmp_path / n for n, _ in FX_DATASETS}, tmp_path, preset.fx_rounds, seed)
    else:
        from arkx.demo import demo_config

        raw = demo_config({n: tmp_path / n for n in preset.datasets}, tmp_path, preset.rounds, seed)
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    return raw


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_arm_builds_valid_configs(name, preset, tmp_path):
    experiment = EXPERIMENTS[name]
    base = fake_base(experiment, PRESETS[preset], tmp_path)
    plans, skipped = plan(experiment, base, 3, finetune_epochs=2, init="timm:/weights/w.pth")
    assert not skipped and [p.arm.name for p in plans] == [a.name for a in experiment.arms]
    jobs = with_run_folders(plans, tmp_path, 3)
    assert jobs
    for job in jobs.values():
        validate_job(job)  # raises on an invalid config
        if job.kind == "pretrain":
            cfg = config_from_dict(job.spec)
            assert cfg.run.seed == 3 and cfg.run.out == tmp_path / "runs" / job.key / "seed-3"
        else:
            settings = FinetuneConfig(**job.spec)
            assert settings.seed == 3 and settings.epochs == 2
    baselines = {experiment.baseline_of(a) for a in experiment.arms}
    assert baselines <= {a.name for a in experiment.arms}


def _by_arm(experiment, base, **kw):
    plans, _ = plan(experiment, base, 0, **kw)
    return {p.arm.name: p for p in plans}


def test_ark_vs_single_gives_each_dataset_alone_the_same_epochs(tmp_path):
    e = EXPERIMENTS["ark-vs-single"]
    base = fake_base(e, PRESETS["demo"], tmp_path)
    arms = _by_arm(e, base)
    (ark, reports), = arms["ark"].jobs
    assert reports is None and len(ark.spec["datasets"]) == 6
    singles = arms["single"].jobs
    assert [r for _, r in singles] == [(d,) for d in PRESETS["demo"].datasets]
    for job, (name,) in singles:
        assert [d["type"] for d in job.spec["datasets"]] == [name]
        assert job.spec["training"] == ark.spec["training"]  # rounds: one epoch of that dataset per round


def test_arm_overrides_change_only_their_keys(tmp_path):
    base = fake_base(EXPERIMENTS["ema"], PRESETS["tiny"], tmp_path)
    ema = _by_arm(EXPERIMENTS["ema"], base)
    off = ema["no-ema"].jobs[0][0].spec["training"]["ema"]
    assert (off["momentum_start"], off["momentum_end"]) == (0.0, 0.0)
    assert ema["ema"].jobs[0][0].spec["training"]["ema"] == base["training"]["ema"]
    modes = _by_arm(EXPERIMENTS["cyclic-vs-concurrent"], base)
    assert modes["concurrent"].jobs[0][0].spec["training"]["mode"] == "concurrent"
    weights = _by_arm(EXPERIMENTS["consistency-weight"], base)
    assert [weights[a].jobs[0][0].spec["training"]["consistency"]["weight"] for a in ("c=0", "c=0.2", "c=0.5")] == [
        0.0, 0.2, 0.5]
    fx = fake_base(EXPERIMENTS["fx-lock-release"], PRESETS["tiny"], tmp_path)
    lr = _by_arm(EXPERIMENTS["fx-lock-release"], fx)
    assert lr["no-lock-release"].jobs[0][0].spec["training"]["lock_release"]["enabled"] is False
    variants = _by_arm(EXPERIMENTS["fx-variants"], fx)
    assert config_from_dict(variants["X-CL"].jobs[0][0].spec).training.tasks == ["classification", "localization"]


def test_uncertain_policies_apply_to_the_datasets_with_uncertain_labels_only(tmp_path):
    e = EXPERIMENTS["uncertain-policy"]
    base = fake_base(e, PRESETS["demo"], tmp_path)
    for name, p in _by_arm(e, base).items():
        for entry, before in zip(p.jobs[0][0].spec["datasets"], base["datasets"]):
            expected = name if entry["type"] in UNCERTAIN_TYPES else before["uncertain"]
            assert entry["uncertain"] == expected, (name, entry["type"])


def test_transfer_holds_one_dataset_out_and_shares_each_pretraining(tmp_path):
    e = EXPERIMENTS["transfer"]
    base = fake_base(e, PRESETS["tiny"], tmp_path)
    plans, skipped = plan(e, base, 0, finetune_epochs=1)
    assert skipped == ["checkpoint/linear-probe", "checkpoint/fine-tune"]  # no --init: no download, no arm
    jobs = with_run_folders(plans, tmp_path, 0)
    pre = jobs["pretrain-all-but-chexpert"]
    assert [d["type"] for d in pre.spec["datasets"]] == ["nih14", "shenzhen"]
    assert [d["type"] for d in jobs["pretrain-nih14"].spec["datasets"]] == ["nih14"]
    probe, tune = jobs["ark--linear-probe"], jobs["ark--fine-tune"]
    assert probe.spec["init"] == tune.spec["init"] == f"run:{tmp_path / 'runs' / pre.key / 'seed-0'}"
    assert (probe.spec["mode"], tune.spec["mode"]) == ("head", "full")
    assert jobs["scratch--linear-probe"].spec["init"] == "scratch"
    assert {j.spec["dataset_type"] for j in jobs.values() if j.kind == "finetune"} == {"chexpert"}
    assert e.baseline_of(e.arm("ark/fine-tune")) == "scratch/fine-tune"
    assert e.baseline_of(e.arm("ark/linear-probe")) == "scratch/linear-probe"
    # every fine-tuning gets the same settings apart from its initial model and mode
    def shared(spec):
        return {k: v for k, v in spec.items() if k not in ("init", "out", "mode")}
    assert shared(probe.spec) == shared(jobs["scratch--linear-probe"].spec) == shared(jobs["single--linear-probe"].spec)
    with_init, _ = plan(e, base, 0, init="timm:/w.pth")
    assert {p.arm.name for p in with_init} >= {"checkpoint/linear-probe", "checkpoint/fine-tune"}
