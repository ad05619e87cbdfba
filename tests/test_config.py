"""Config validation: typos, wrong types and impossible values are rejected with the key path."""

from __future__ import annotations

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
