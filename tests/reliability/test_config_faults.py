"""Config faults fail before any work starts -- no run folder, no cache -- with the key path in the
message, through the API and through the CLI (exit status 2, one line, no traceback)."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

import arkx
from arkx.cli import main
from arkx.config import ConfigError

from .conftest import tiny_config

#: (name, how to break the config, text the message must contain)
CASES = [
    ("unknown-top-level-key", lambda c: c.update(trainig={}), "trainig: unknown key"),
    ("unknown-nested-key", lambda c: c["training"].update(learning_rate=0.1), "training.learning_rate: unknown key"),
    ("unknown-dataset-key", lambda c: c["datasets"][0].update(rot="x"), "datasets.0.rot: unknown key"),
    ("wrong-type-lr", lambda c: c["training"].update(lr="fast"), "training.lr: Input should be a valid number"),
    ("wrong-type-batch", lambda c: c["data"].update(batch_size=[8]), "data.batch_size: Input should be a valid integer"),
    ("wrong-type-datasets", lambda c: c.update(datasets={"type": "rsna"}), "datasets: Input should be a valid list"),
    ("negative-lr", lambda c: c["training"].update(lr=-0.1), "training.lr: Input should be greater than 0"),
    ("momentum-1", lambda c: c["training"].update(momentum=1.0), "training.momentum: Input should be less than 1"),
    ("ema-momentum-1", lambda c: c["training"].update(ema=dict(momentum_start=1.0)),
     "training.ema.momentum_start: Input should be less than 1"),
    ("zero-datasets", lambda c: c.update(datasets=[]), "at least one dataset"),
    ("batch-size-0", lambda c: c["data"].update(batch_size=0), "data.batch_size: Input should be greater than or equal to 1"),
    ("fail-fraction-above-1", lambda c: c["data"].update(fail_fraction=1.5),
     "data.fail_fraction: Input should be less than or equal to 1"),
    ("cache-smaller-than-image", lambda c: c["data"].update(cache_size=24), "cache_size (24) must be >= image_size (32)"),
    ("unknown-backbone", lambda c: c["model"].update(backbone="swin_tiny_patch4_windw7_224"),
     "model.backbone: Value error, unknown timm backbone 'swin_tiny_patch4_windw7_224'"),
    ("unknown-dataset-type", lambda c: c["datasets"][0].update(type="shenzen"), "datasets.0.type"),
    ("unknown-adapter-option", lambda c: c["datasets"][1].update(options=dict(task="4class")), "datasets.1.options"),
    ("lsr-range-reversed", lambda c: c["datasets"][0].update(lsr_ones_range=[0.9, 0.5]), "datasets.0.lsr_ones_range"),
    ("rounds-0", lambda c: c["training"].update(rounds=0), "training.rounds: Input should be greater than or equal to 1"),
    ("warmup-not-below-rounds", lambda c: c["training"].update(warmup_rounds=5), "warmup_rounds (5.0) must be < rounds"),
    ("unknown-optimizer", lambda c: c["training"].update(optimizer="lion"), "training.optimizer"),
    ("order-unknown-dataset", lambda c: c["training"].update(order=["shenzhen", "nih14"]), "training.order names unknown"),
    ("missing-backbone-checkpoint", lambda c: c["model"].update(checkpoint="/no/such/weights.pt"),
     "model.checkpoint: file /no/such/weights.pt not found"),
]
if not torch.cuda.is_available():
    CASES.append(("cuda-without-gpu", lambda c: c["run"].update(device="cuda"), "run.device: run.device is 'cuda'"))


#: checked by arkx.api before the run folder is made (they depend on the machine, not the schema)
RUNTIME_CHECKED = {"missing-backbone-checkpoint", "cuda-without-gpu"}


def _broken(roots, tmp_path, breaker) -> dict:
    cfg = copy.deepcopy(tiny_config(roots, tmp_path / "run"))
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    breaker(cfg)
    return cfg


@pytest.mark.parametrize("name,breaker,fragment", CASES, ids=[c[0] for c in CASES])
def test_config_fault_fails_before_any_work_with_the_key_path(pristine_roots, tmp_path, name, breaker, fragment):
    cfg = _broken(pristine_roots, tmp_path, breaker)
    with pytest.raises(ConfigError) as err:
        arkx.pretrain(cfg, progress=False)
    assert fragment in str(err.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("name,breaker,fragment", CASES[::3] + [CASES[13]], ids=[c[0] for c in CASES[::3] + [CASES[13]]])
def test_cli_config_fault_exits_2_with_one_message_and_no_traceback(pristine_roots, tmp_path, capsys,
                                                                    name, breaker, fragment):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_broken(pristine_roots, tmp_path, breaker)))
    capsys.readouterr()
    assert main(["--quiet", "pretrain", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("arkx pretrain: error: ") and fragment in err
    if name not in RUNTIME_CHECKED:  # schema errors also name the file
        assert str(path) in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("override,fragment", [
    ("training.lr=-1", "training.lr: Input should be greater than 0"),
    ("training.lr", "override 'training.lr': expected dotted.key=value"),
    ("datasets.7.root=x", "datasets.7 is not a valid list index"),
    ("training.lr.value=1", "cannot set a key inside a value"),
    ("model.backbone=resnet5O", "unknown timm backbone 'resnet5O'"),
])
def test_cli_bad_overrides(pristine_roots, tmp_path, capsys, override, fragment):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_broken(pristine_roots, tmp_path, lambda c: None)))
    capsys.readouterr()
    assert main(["--quiet", "pretrain", str(path), override]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_cli_top_level_not_a_mapping_and_missing_file(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("- just\n- a list\n")
    assert main(["pretrain", str(path)]) == 2
    assert "expected a mapping at the top level, got list" in capsys.readouterr().err
    assert main(["pretrain", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("text,fragment", [
    ("a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 8)), "expands to more than 100000 values"),
    ("run:\n  seed: 1\n  seed: 2\n", "line 3: key 'seed' repeats the key of line 2"),
])
def test_cli_alias_bomb_and_duplicate_key_are_one_line_before_any_work(tmp_path, capsys, text, fragment):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    assert main(["--quiet", "pretrain", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and str(path) in err and "Traceback" not in err
