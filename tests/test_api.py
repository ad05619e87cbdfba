"""End to end through the public API and the CLI on synthetic data in official layouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import arkx
from arkx.cli import main
from arkx.demo import TINY_SWIN

SMALL_SWIN = dict(TINY_SWIN, embed_dim=16, img_size=32)


@pytest.fixture(scope="module")
def synth_roots(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return arkx.synthesize(out, seed=3, n=80, size=48, datasets=["chexpert", "shenzhen", "rsna"])


def small_config(roots, out: Path, rounds: int = 2) -> dict:
    return dict(
        run=dict(out=str(out), seed=1, device="cpu"),
        datasets=[dict(type="chexpert", root=str(roots["chexpert"]), uncertain="lsr-ones"),
                  dict(type="shenzhen", root=str(roots["shenzhen"])),
                  dict(type="rsna", root=str(roots["rsna"]), options=dict(task="3class"))],
        data=dict(image_size=32, cache_size=40, batch_size=16, eval_batch_size=64, workers=0, prepare_workers=0,
                  cache_dir=str(out.parent / "cache")),
        model=dict(backbone="swin_tiny_patch4_window7_224", backbone_kwargs=SMALL_SWIN, projector_dim=16),
        training=dict(rounds=rounds, optimizer="adamw", lr=2e-3, warmup_rounds=0.5, max_iters_per_epoch=2),
        eval=dict(every="round"),
    )


def write_config(roots, path: Path, out: Path, rounds: int = 2) -> Path:
    path.write_text(yaml.safe_dump(small_config(roots, out, rounds)))
    return path


def state_of(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = state_of(a), state_of(b)
    assert sa["step_done"] == sb["step_done"]
    for which in ("student", "teacher"):
        for key, value in sa[which].items():
            assert torch.equal(value, sb[which][key]), f"{which}.{key}"


def test_pretrain_writes_everything_a_user_needs(synth_roots, tmp_path):
    run = tmp_path / "run"
    summary = arkx.pretrain(small_config(synth_roots, run), progress=False)
    assert summary.finished and summary.total_steps == 6
    for name in ("config.yaml", "metrics.csv", "summary.json", "teacher.safetensors", "student.safetensors",
                 "checkpoints/last.pt"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").iterdir())
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["training"]["rounds"] == 2 and resolved["training"]["ema"]["momentum_start"] == 0.9
    import pandas as pd

    metrics = pd.read_csv(run / "metrics.csv")
    assert set(metrics["model"]) == {"student", "teacher"}
    assert set(metrics["split"]) == {"val", "test"}
    assert set(metrics.loc[metrics["dataset"] == "rsna", "label"]) == {
        "Normal", "No Lung Opacity / Not Normal", "Lung Opacity", "__mean__"}
    assert set(summary.final["teacher"]) == {"chexpert", "shenzhen", "rsna"}
    # the exported teacher rebuilds with its heads and label names carried from the files
    model = arkx.load_model(run)
    assert model.head_specs["chexpert"].label_names[0] == "No Finding"
    z, logits = model(torch.zeros(2, 3, 32, 32), "rsna")
    assert z.shape == (2, 16) and logits.shape == (2, 3)
    ckpt_model = arkx.load_model(run / "checkpoints" / "last.pt")
    for k, v in ckpt_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


def test_build_from_config_names_heads_from_the_files(synth_roots, tmp_path):
    model = arkx.build_from_config(small_config(synth_roots, tmp_path / "run"))
    assert list(model.heads) == ["chexpert", "shenzhen", "rsna"]
    assert model.head_specs["shenzhen"].label_names == ("Tuberculosis",)
    assert model.head_specs["rsna"].kind == "multiclass"
    assert not (tmp_path / "run").exists()  # building a model starts no run


def test_resume_after_interruption_matches_uninterrupted_run(synth_roots, tmp_path):
    full = tmp_path / "full"
    arkx.pretrain(small_config(synth_roots, full), progress=False)
    part = tmp_path / "part"
    first = arkx.pretrain(small_config(synth_roots, part), progress=False, stop_after_steps=4)
    assert not first.finished and first.steps_done == 4
    arkx.resume(part, progress=False)
    assert_same_weights(full, part)
    assert (full / "metrics.csv").read_text() == (part / "metrics.csv").read_text()


def test_sigkill_during_training_then_resume_matches(synth_roots, tmp_path):
    full = tmp_path / "full"
    arkx.pretrain(small_config(synth_roots, full, rounds=3), progress=False)
    killed = tmp_path / "killed"
    cfg = write_config(synth_roots, tmp_path / "cfg.yaml", killed, rounds=3)
    proc = subprocess.Popen([sys.executable, "-m", "arkx.cli", "--quiet", "pretrain", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and state_of(killed)["step_done"] >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = state_of(killed)["step_done"]
    assert 2 <= done < 9, "the kill must land mid-run"
    assert main(["--quiet", "pretrain", "--resume", str(killed)]) == 0
    assert_same_weights(full, killed)


def test_cli_resume_with_the_config_as_the_issue_spells_it(synth_roots, tmp_path, capsys):
    cfg = write_config(synth_roots, tmp_path / "cfg.yaml", tmp_path / "run")
    arkx.pretrain(cfg, progress=False, stop_after_steps=2)
    assert main(["--quiet", "pretrain", str(cfg), "training.rounds=3", "--resume", str(tmp_path / "run")]) == 2
    assert "training.rounds" in capsys.readouterr().err  # a changed key is named, nothing is mixed
    assert main(["--quiet", "pretrain", str(cfg), "--resume", str(tmp_path / "run")]) == 0
    assert state_of(tmp_path / "run")["step_done"] == 6


def test_refuses_to_overwrite_a_run_and_to_resume_with_another_config(synth_roots, tmp_path):
    run = tmp_path / "run"
    arkx.pretrain(small_config(synth_roots, run, rounds=1), progress=False)
    with pytest.raises(arkx.config.ConfigError, match="already holds a run"):
        arkx.pretrain(small_config(synth_roots, run, rounds=1), progress=False)
    with pytest.raises(arkx.config.ConfigError, match="training.rounds"):
        arkx.pretrain(small_config(synth_roots, run, rounds=5), progress=False, resume=True)


def test_cli_reports_config_typos_with_key_path(synth_roots, tmp_path, capsys):
    cfg = write_config(synth_roots, tmp_path / "cfg.yaml", tmp_path / "run")
    assert main(["pretrain", str(cfg), "training.ema.momentum_strat=0.5"]) == 2
    err = capsys.readouterr().err
    assert "training.ema.momentum_strat: unknown key" in err and "cfg.yaml" in err
    assert main(["pretrain", str(cfg), "datasets.1.root=/no/such/folder"]) == 2
    assert "/no/such/folder" in capsys.readouterr().err


def test_cli_synth_and_inspect_json(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--n", "40", "--size", "32", "--datasets", "shenzhen"]) == 0
    root = capsys.readouterr().out.split()[1]
    assert main(["datasets", "inspect", root, "--type", "shenzhen", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 40
    assert main(["datasets", "inspect", root, "--type", "nih14"]) == 2
    assert "Data_Entry" in capsys.readouterr().err


def test_demo_end_to_end_tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from arkx.demo import run_demo

    # the CLI's default --out is relative (we are in tmp_path): every path must still resolve
    result = run_demo("demo", seeds=(0,), n=60, size=48, rounds=1, progress=False)
    table = result.table
    assert list(table["dataset"])[:6] == ["mimic_cxr", "chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen"]
    assert table[["ark_teacher_auc", "single_dataset_auc"]].notna().all().all()
    assert (table[["ark_teacher_auc", "single_dataset_auc"]] <= 1).all().all()
    assert (tmp_path / "demo" / "demo_table.csv").exists()


def test_cli_prepare_a_folder_then_verify_detects_a_flipped_byte(synth_roots, tmp_path, capsys):
    args = ["--quiet", "prepare", str(synth_roots["shenzhen"]), "--type", "shenzhen", "--size", "40",
            "--cache-dir", str(tmp_path / "cache"), "--workers", "0"]
    assert main(args + ["--verify"]) == 0
    out = capsys.readouterr().out
    assert "80 images, 0 skipped" in out and "verify: 0 image(s)" in out
    blob = next((tmp_path / "cache").glob("shenzhen-40-*/images.u8"))
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert main(args + ["--verify"]) == 1
    assert "verify: 1 image(s) with a wrong checksum, e.g. row 0" in capsys.readouterr().out


def test_cli_prepare_from_a_config(synth_roots, tmp_path, capsys):
    cfg = write_config(synth_roots, tmp_path / "cfg.yaml", tmp_path / "run")
    assert main(["--quiet", "prepare", str(cfg), "data.cache_dir=" + str(tmp_path / "c2")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["chexpert", "shenzhen", "rsna"]
    assert len(list((tmp_path / "c2").iterdir())) == 3


def test_readme_lists_every_registered_adapter():
    from arkx.data.adapters import adapter_names

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [name for name in adapter_names() if f"| `{name}` |" not in readme]
    assert not missing, f"README's dataset table lacks {missing}"
