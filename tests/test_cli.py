"""The command line as a user meets it (issue 12 section 7, issue 19 items 13 and 14): help that says what
the tool does with an example per command; expected failures as one line with exit status 2 (``--debug``
shows the traceback); anything else, a bug, keeps its traceback."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest
import yaml

import arkx
import arkx.api  # noqa: F401  (the tests patch its functions)
from arkx.cli import build_parser, main
from arkx.errors import ArkxValueError

from tests.reliability.test_resume_changes import csv_dataset, csv_entry, run_config

SUBCOMMANDS = ("synth", "demo", "pretrain", "prepare", "datasets")


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"arkx {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------- help
def test_top_level_help_says_what_arkx_does_and_names_the_first_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "chest X-ray foundation model" in out
    for first in ("arkx demo", "arkx datasets list", "arkx pretrain CONFIG.yaml", "arkx pretrain --resume"):
        assert first in out
    for markup in (":mod:", "``", "calls arkx.api", "nothing more"):
        assert markup not in out


def _leaf_commands(parser, prefix=()) -> list[tuple[str, ...]]:
    """Every runnable command path (``("datasets", "inspect")``...), from the parser itself."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return [prefix]
    return [leaf for name, sub in groups[0].choices.items() for leaf in _leaf_commands(sub, prefix + (name,))]


def test_every_command_help_has_an_example(capsys):
    leaves = _leaf_commands(build_parser())
    assert {leaf[0] for leaf in leaves} >= set(SUBCOMMANDS)
    for leaf in leaves:
        with pytest.raises(SystemExit):
            main([*leaf, "--help"])
        out = capsys.readouterr().out
        assert "example" in out and f"arkx {' '.join(leaf)}" in out.split("example")[-1], leaf
        assert ":mod:" not in out and "``" not in out, leaf


# ---------------------------------------------------------------------------- which errors are one line
def test_arkx_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise ArkxValueError("a clear reason")

    monkeypatch.setattr(arkx.api, "synthesize", refuse)
    assert main(["synth", "out"]) == 2
    assert _one_error_line(capsys, "synth") == "arkx synth: error: a clear reason\n"
    with pytest.raises(ArkxValueError):
        main(["--debug", "synth", "out"])


@pytest.mark.parametrize("bug", [KeyError("head"), RuntimeError("internal"), ValueError("internal")])
def test_other_exceptions_are_bugs_and_keep_their_traceback(monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(arkx.api, "synthesize", broken)
    with pytest.raises(type(bug)):
        main(["synth", "out"])


# ---------------------------------------------------------------------------- item 13
@pytest.mark.parametrize("option,fragment", [
    ("task", "--option 'task': expected KEY=VALUE"),
    ("task=[3class", "--option 'task=[3class': the value is not valid YAML"),
    ("task=4class", "options of dataset type 'rsna': task"),
])
def test_bad_option_values_are_one_line(tmp_path, capsys, option, fragment):
    root = tmp_path / "rsna"
    root.mkdir()
    assert main(["datasets", "inspect", str(root), "--type", "rsna", "--option", option]) == 2
    assert fragment in _one_error_line(capsys, "datasets")


def test_unknown_dataset_type_is_one_line(tmp_path, capsys):
    assert main(["datasets", "inspect", str(tmp_path), "--type", "chexpret"]) == 2
    assert "unknown dataset type 'chexpret'; known types: " in _one_error_line(capsys, "datasets")


def test_synth_onto_a_file_or_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["synth", str(target), "--n", "20", "--size", "32", "--datasets", "shenzhen"]) == 2
    assert f"{target} is a file" in _one_error_line(capsys, "synth")
    assert main(["synth", str(tmp_path / "s"), "--n", "5"]) == 2
    assert "need n >= 10" in _one_error_line(capsys, "synth")
    import arkx.synth as synth

    def read_only(*args, **kwargs):  # the tests run as root, for whom chmod does not make a folder read-only
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp_path / "ro" / "shenzhen"))

    monkeypatch.setattr(synth, "synthesize", read_only)
    assert main(["synth", str(tmp_path / "ro")]) == 2
    assert "cannot write synthetic datasets into" in _one_error_line(capsys, "synth")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return csv_dataset(tmp_path_factory.mktemp("csvdata") / "data")


def _config_file(tmp_path: Path, root: Path, **sections) -> Path:
    path = tmp_path / "cfg.yaml"
    cfg = run_config(tmp_path / "run", [csv_entry(root)], rounds=1)
    for section, values in sections.items():
        cfg[section] = {**cfg[section], **values}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("where", ["run.out", "data.cache_dir"])
def test_run_out_or_cache_dir_being_a_file_is_one_line(tmp_path, dataset, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    section, key = where.split(".")
    path = _config_file(tmp_path, dataset, **{section: {key: str(blocker)}})
    assert main(["--quiet", "pretrain", str(path)]) == 2
    assert f"{where}: {blocker} is a file, not a folder" in _one_error_line(capsys, "pretrain")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # refused before any work


@pytest.mark.parametrize("patch,fragment", [
    (dict(model=dict(backbone_kwargs=dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                                          windw_size=4, img_size=32))),
     "model.backbone_kwargs: swin_tiny_patch4_window7_224 cannot be built with"),
    (dict(data=dict(image_size=48, cache_size=48)), "data.image_size=48 does not fit model.backbone"),
])
def test_backbone_kwargs_typo_or_unfit_image_size_fail_before_any_cache(tmp_path, dataset, capsys, patch, fragment):
    path = _config_file(tmp_path, dataset, **patch)
    assert main(["--quiet", "pretrain", str(path)]) == 2
    assert fragment in _one_error_line(capsys, "pretrain")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_zero_byte_safetensors_is_one_line(tmp_path, dataset, capsys):
    empty = tmp_path / "weights.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ArkxValueError, match=r"weights.safetensors: not a readable .safetensors file \(0 bytes"):
        arkx.load_model(empty)
    path = _config_file(tmp_path, dataset, model=dict(checkpoint=str(empty)))
    assert main(["--quiet", "pretrain", str(path)]) == 2
    assert "model.checkpoint: " + str(empty) + " is empty (0 bytes)" in _one_error_line(capsys, "pretrain")


# ---------------------------------------------------------------------------- item 14
def test_a_train_split_of_one_image_is_one_clear_line(tmp_path, capsys):
    root = csv_dataset(tmp_path / "one", n=20, train=1)
    path = _config_file(tmp_path, root)
    assert main(["--quiet", "pretrain", str(path)]) == 2
    assert "dataset 'mine'" in (err := _one_error_line(capsys, "pretrain"))
    assert "has 1 usable training image(s); training needs at least 2" in err


def test_non_utf8_config_and_a_folder_as_config_name_the_file(tmp_path, capsys):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("run:\n  out: caf\xe9\n".encode("latin-1"))
    assert main(["pretrain", str(latin)]) == 2
    assert f"{latin}: not UTF-8 text" in _one_error_line(capsys, "pretrain")
    assert main(["pretrain", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder, not a config file" in _one_error_line(capsys, "pretrain")


def test_resume_of_a_missing_or_non_run_folder_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--resume", str(tmp_path / "nope")]) == 2
    assert "no run folder" in _one_error_line(capsys, "pretrain")
    assert main(["pretrain", "--resume", str(tmp_path)]) == 2
    assert "is not an arkx run folder" in _one_error_line(capsys, "pretrain")


def test_prepare_with_a_cache_size_of_zero_is_one_line(tmp_path, capsys):
    roots = arkx.synthesize(tmp_path / "data", n=10, size=32, datasets=["shenzhen"])
    code = main(["prepare", str(roots["shenzhen"]), "--type", "shenzhen", "--size", "0",
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err == "arkx prepare: error: cache size must be a positive number of pixels, got 0"
