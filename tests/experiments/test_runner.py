"""The runner: every (arm, seed) in its own folder, finished jobs read and never trained again, a changed
config refused, an interrupted pretraining resumed, shared pretraining trained once. Training is replaced by
fakes that return made-up scores (the real thing is in test_end_to_end.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from arkx.errors import ArkxValueError
from arkx.experiments import runner
from arkx.experiments.runner import run_experiment

from .conftest import write_tiny_config


class FakeTraining:
    """Stands in for pretraining and fine-tuning: records each call, returns a score per dataset that depends
    on the arm's setting and the seed."""

    def __init__(self, monkeypatch):
        self.pretrained, self.finetuned = [], []
        monkeypatch.setattr(runner, "_train_pretrain", self.pretrain)
        monkeypatch.setattr(runner, "_train_finetune", self.finetune)

    def pretrain(self, job, folder, progress, keep_checkpoints=False):
        self.pretrained.append(str(folder))
        seed = job.spec["run"]["seed"]
        bonus = 0.05 if job.spec["training"].get("mode", "cyclic") == "cyclic" else 0.0
        return pd.DataFrame([dict(run=str(folder), seed=seed, dataset=d["type"], label="__mean__", metric="auroc",
                                  value=0.6 + bonus + 0.01 * seed) for d in job.spec["datasets"]])

    def finetune(self, job, folder, progress):
        self.finetuned.append((str(folder), job.spec["init"]))
        return pd.DataFrame([dict(run=str(folder), seed=job.spec["seed"], dataset=job.spec["dataset_type"],
                                  label="__mean__", metric="auroc", value=0.7)])


def test_rerun_reads_finished_runs_and_trains_only_new_seeds(tiny_roots, tmp_path, monkeypatch):
    fake = FakeTraining(monkeypatch)
    config = write_tiny_config(tiny_roots, tmp_path / "base.yaml")
    out = tmp_path / "exp"
    first = run_experiment("cyclic-vs-concurrent", out, seeds=[0, 1], config=config, progress=False)
    assert sorted(fake.pretrained) == sorted(str(out / "runs" / arm / f"seed-{s}")
                                             for arm in ("cyclic", "concurrent") for s in (0, 1))
    assert len(first.trained) == 4 and not first.reused
    for job in first.trained:
        assert (out / "runs" / job / "done.json").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("done.json")}

    fake.pretrained.clear()
    again = run_experiment("cyclic-vs-concurrent", out, seeds=[0, 1], config=config, progress=False)
    assert fake.pretrained == [] and len(again.reused) == 4 and not again.trained
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("done.json")} == mtimes
    pd.testing.assert_frame_equal(again.tidy, first.tidy)
    pd.testing.assert_frame_equal(again.summary, first.summary)

    more = run_experiment("cyclic-vs-concurrent", out, seeds=[0, 1, 2], config=config, progress=False)
    assert sorted(fake.pretrained) == sorted(str(out / "runs" / a / "seed-2") for a in ("cyclic", "concurrent"))
    assert set(more.tidy["seed"]) == {0, 1, 2}
    assert set(more.summary["n_seeds"]) == {3}


def test_a_changed_config_is_refused_with_the_keys_that_changed(tiny_roots, tmp_path, monkeypatch):
    fake = FakeTraining(monkeypatch)
    config = write_tiny_config(tiny_roots, tmp_path / "base.yaml")
    out = tmp_path / "exp"
    run_experiment("ema", out, seeds=[0], config=config, progress=False)
    raw = yaml.safe_load(config.read_text())
    raw["training"]["lr"] = 0.01
    config.write_text(yaml.safe_dump(raw))
    fake.pretrained.clear()
    with pytest.raises(ArkxValueError, match=r"ema/seed-0 changed.*training\.lr \(0\.002 -> 0\.01\)"):
        run_experiment("ema", out, seeds=[0], config=config, progress=False)
    assert fake.pretrained == []  # refused before anything trains
    with pytest.raises(ArkxValueError, match="another setting of experiment 'ema'.*experiment"):
        run_experiment("cyclic-vs-concurrent", out, seeds=[0], config=config, progress=False)


def test_an_interrupted_pretraining_resumes_from_its_checkpoint(tiny_roots, tmp_path, monkeypatch):
    import arkx.api

    calls = []
    unfinished = SimpleNamespace(finished=False)
    monkeypatch.setattr(arkx.api, "pretrain",
                        lambda cfg, progress=True: calls.append(("pretrain", cfg["run"]["out"])) or unfinished)
    monkeypatch.setattr(arkx.api, "resume", lambda folder, progress=True: calls.append(("resume", str(folder))) or unfinished)
    monkeypatch.setattr(runner, "_pretrain_rows", lambda folder: pd.DataFrame(
        [dict(run=str(folder), seed=0, dataset="shenzhen", label="__mean__", metric="auroc", value=0.5)]))
    config = write_tiny_config(tiny_roots, tmp_path / "base.yaml")
    out = tmp_path / "exp"
    killed = out / "runs" / "concurrent" / "seed-0"
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    run_experiment("cyclic-vs-concurrent", out, seeds=[0], config=config, progress=False)
    assert sorted(calls) == [("pretrain", str(out / "runs" / "cyclic" / "seed-0")), ("resume", str(killed))]


def test_transfer_pretrains_once_per_source_and_probes_from_that_run(tiny_roots, tmp_path, monkeypatch):
    fake = FakeTraining(monkeypatch)
    config = write_tiny_config(tiny_roots, tmp_path / "base.yaml")
    out = tmp_path / "exp"
    result = run_experiment("transfer", out, seeds=[0], config=config, progress=False)
    # the config's last dataset (shenzhen) is held out; the other one (chexpert) is both sources
    assert sorted(fake.pretrained) == [str(out / "runs" / "pretrain-all-but-shenzhen" / "seed-0"),
                                       str(out / "runs" / "pretrain-chexpert" / "seed-0")]
    inits = dict(fake.finetuned)
    assert inits[str(out / "runs" / "ark--linear-probe" / "seed-0")] == f"run:{out / 'runs' / 'pretrain-all-but-shenzhen' / 'seed-0'}"
    assert inits[str(out / "runs" / "scratch--fine-tune" / "seed-0")] == "scratch"
    assert len(fake.finetuned) == 6 and result.skipped_arms == ["checkpoint/linear-probe", "checkpoint/fine-tune"]
    assert set(result.tidy["dataset"]) == {"shenzhen"}  # pretraining runs report nothing themselves


def test_a_done_file_of_another_config_is_refused(tiny_roots, tmp_path, monkeypatch):
    import json

    FakeTraining(monkeypatch)
    config = write_tiny_config(tiny_roots, tmp_path / "base.yaml")
    out = tmp_path / "exp"
    run_experiment("ema", out, seeds=[0], config=config, progress=False)
    done = out / "runs" / "ema" / "seed-0" / "done.json"
    record = json.loads(done.read_text())
    done.write_text(json.dumps(dict(record, spec_sha256="0" * 64)))
    with pytest.raises(ArkxValueError, match="done.json: finished with another config"):
        run_experiment("ema", out, seeds=[0], config=config, progress=False)


def test_fine_tuning_results_become_rows_of_the_test_scores(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from arkx.experiments.runner import Job, _train_finetune

    fake = SimpleNamespace(metric="auc", test_per_label={"Nodule": 0.6, "Mass": 0.8}, test_score=0.7, best_val=0.95)
    monkeypatch.setattr("arkx.transfer.finetune.run_finetune", lambda cfg, progress=True: fake)
    job = Job("j", "finetune", dict(init="scratch", dataset_type="chexpert", root=str(tmp_path), out=str(tmp_path),
                                    seed=2))
    rows = _train_finetune(job, tmp_path, False).set_index("label")
    assert rows.loc["__mean__", "value"] == 0.7 and rows.loc["Mass", "value"] == 0.8  # test, never val
    assert set(rows.metric) == {"auroc"} and set(rows.dataset) == {"chexpert"} and set(rows.seed) == {2}


def test_synthetic_data_are_generated_once_per_seed_and_other_sizes_refused(tmp_path, monkeypatch):
    import arkx.api
    from arkx.experiments.runner import _synthetic_roots

    first = _synthetic_roots(tmp_path, "data", 1, 10, 32, ["shenzhen"])
    assert first["shenzhen"].is_relative_to(tmp_path / "data" / "seed-1")
    monkeypatch.setattr(arkx.api, "synthesize", lambda *a, **k: pytest.fail("generated again"))
    assert _synthetic_roots(tmp_path, "data", 1, 10, 32, ["shenzhen"]) == first
    with pytest.raises(ArkxValueError, match="synthetic data of another size"):
        _synthetic_roots(tmp_path, "data", 1, 16, 32, ["shenzhen"])


def test_ctrl_c_says_the_same_command_continues(tiny_roots, tmp_path, monkeypatch):
    from arkx.errors import RunInterrupted

    def interrupted(job, folder, progress, keep_checkpoints=False):
        raise RunInterrupted("interrupted; the last checkpoint (step 3) is intact")

    monkeypatch.setattr(runner, "_train_pretrain", interrupted)
    config = write_tiny_config(tiny_roots, tmp_path / "base.yaml")
    with pytest.raises(RunInterrupted, match=r"step 3\) is intact; to continue the whole experiment run the same"):
        run_experiment("ema", tmp_path / "exp", seeds=[0], config=config, progress=False)


def test_a_user_config_keeps_its_cache_and_gets_the_seed(tiny_roots, tmp_path):
    from arkx.experiments import get_experiment, get_preset
    from arkx.experiments.runner import base_config

    mine = write_tiny_config(tiny_roots, tmp_path / "mine.yaml", data=dict(cache_dir=str(tmp_path / "my-cache")))
    raw = base_config(get_experiment("ema"), get_preset("tiny"), tmp_path / "exp", 7, mine)
    assert raw["data"]["cache_dir"] == str(tmp_path / "my-cache") and raw["run"]["seed"] == 7
    default = base_config(get_experiment("ema"), get_preset("tiny"), tmp_path / "exp", 7,
                          write_tiny_config(tiny_roots, tmp_path / "plain.yaml"))
    assert default["data"]["cache_dir"] == str(tmp_path / "exp" / "cache")
