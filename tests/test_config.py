"""Config validation: typos, wrong types and impossible values are rejected with the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from arkx.config import ConfigError, apply_overrides, config_from_dict, load_config


def base(tmp_path):
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    return dict(datasets=[dict(type="chexpert", root=str(root))], training=dict(rounds=4, warmup_rounds=1))


@pytest.mark.parametrize("patch, key", [
    ({"training": {"rounds": 4, "warmup_rounds": 1, "lr": -0.1}}, "training.lr"),
    ({"training": {"rounds": 4, "warmup_rounds": 1, "ema": {"momentum_start": 1.0}}}, "training.ema.momentum_start"),
    ({"training": {"rounds": 4, "warmup_rounds": 1, "momentum": 1.5}}, "training.momentum"),
    ({"training": {"rounds": 4, "warmup_rounds": 1, "rounds_": 3}}, "training.rounds_: unknown key"),
    ({"trainig": {}}, "trainig: unknown key"),
    ({"datasets": []}, "at least one dataset"),
    ({"data": {"batch_size": "big"}}, "data.batch_size"),
    ({"training": {"rounds": 4, "warmup_rounds": 6}}, "warmup_rounds"),
    ({"data": {"image_size": 224, "cache_size": 128}}, "cache_size"),
    ({"training": {"rounds": 4, "warmup_rounds": 1, "mode": "sequential"}}, "training.mode"),
])
def test_bad_values_name_the_key(tmp_path, patch, key):
    raw = {**base(tmp_path), **patch}
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert key in str(err.value)


def test_unknown_dataset_type_lists_known_types(tmp_path):
    raw = base(tmp_path)
    raw["datasets"][0]["type"] = "chexpret"
    with pytest.raises(ConfigError, match=r"datasets\.0\.type.*unknown dataset type 'chexpret'.*chexpert"):
        config_from_dict(raw)


def test_unknown_adapter_option_is_rejected(tmp_path):
    raw = base(tmp_path)
    raw["datasets"][0]["options"] = {"colour": "red"}
    with pytest.raises(ConfigError, match=r"datasets\.0\.options.*colour"):
        config_from_dict(raw)


def test_duplicate_heads_and_bad_order(tmp_path):
    raw = base(tmp_path)
    raw["datasets"] = raw["datasets"] * 2
    with pytest.raises(ConfigError, match="unique"):
        config_from_dict(raw)
    raw = base(tmp_path)
    raw["training"]["order"] = ["nih14"]
    with pytest.raises(ConfigError, match="unknown datasets"):
        config_from_dict(raw)


def test_overrides_and_relative_roots(tmp_path):
    (tmp_path / "data").mkdir()
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(dict(datasets=[dict(type="chexpert", root="data")],
                                        training=dict(rounds=4, warmup_rounds=1))))
    cfg = load_config(path, ["training.rounds=8", "training.ema.momentum_start=0.5", "datasets.0.uncertain=lsr-ones"])
    assert cfg.training.rounds == 8 and cfg.training.ema.momentum_start == 0.5
    assert cfg.datasets[0].uncertain == "lsr-ones"
    assert cfg.datasets[0].root == (tmp_path / "data").resolve()
    with pytest.raises(ConfigError, match=r"(?s)cfg.yaml.*training.rounds"):
        load_config(path, ["training.rounds=zero"])
    with pytest.raises(ConfigError, match="list index"):
        apply_overrides({"datasets": []}, ["datasets.3.root=x"])


def test_resolved_config_round_trips(tmp_path):
    cfg = config_from_dict(base(tmp_path))
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


# ---------------------------------------------------------------------------- hostile and careless YAML
def _bomb(levels: int) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_load_quickly(tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9) + "model:\n  backbone_kwargs:\n    lol: *a8\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml: the YAML expands to more than 100000 values through its aliases"):
        load_config(path)
    assert time.perf_counter() - started < 1.0


def test_ordinary_anchors_and_merge_keys_still_load(tmp_path):
    (tmp_path / "data").mkdir()
    path = tmp_path / "cfg.yaml"
    path.write_text("datasets:\n  - &ds {type: chexpert, root: data, uncertain: lsr-ones}\n"
                    "  - <<: *ds\n    name: second\n"
                    "training: {rounds: 4, warmup_rounds: 1}\n")
    cfg = load_config(path)
    assert [d.head_name for d in cfg.datasets] == ["chexpert", "second"]
    assert cfg.datasets[1].uncertain == "lsr-ones"
    from arkx.config import load_yaml_text

    merged = load_yaml_text("base: &b {lr: 0.1, rounds: 3}\ntraining:\n  <<: *b\n  lr: 0.2\n")
    assert merged["training"] == {"lr": 0.2, "rounds": 3}  # an explicit key overrides a merged one


@pytest.mark.parametrize("text,fragment", [
    ("training:\n  lr: 0.1\n  rounds: 3\n  lr: 0.2\n", "line 4: key 'lr' repeats the key of line 2"),
    ("run: {seed: 1, seed: 2}\n", "line 1: key 'seed' repeats the key of line 1"),
    ("datasets: []\ndatasets: []\n", "line 2: key 'datasets' repeats the key of line 1"),
])
def test_a_duplicate_key_is_an_error_naming_the_key_and_line(tmp_path, text, fragment):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_non_utf8_folder_and_bom(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("run:\n  out: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml: not UTF-8 text \(byte 0xe9 at offset 15\)"):
        load_config(latin)
    with pytest.raises(ConfigError, match=r"is a folder, not a config file"):
        load_config(tmp_path)
    (tmp_path / "data").mkdir()
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeff".encode() + yaml.safe_dump(base(tmp_path)).encode())
    assert load_config(bom).training.rounds == 4


def test_relative_paths_are_made_absolute_for_the_run(tmp_path):
    from arkx.config import with_absolute_paths

    cfg = config_from_dict(dict(base(tmp_path), run=dict(out="runs/x"), data=dict(cache_dir="c")))
    resolved = with_absolute_paths(cfg, cwd=tmp_path)
    assert resolved.run.out == tmp_path / "runs/x" and resolved.data.cache_dir == tmp_path / "c"
    assert resolved.datasets[0].root.is_absolute() and cfg.run.out == Path("runs/x")  # a copy
