"""A resume notices what changed since its last checkpoint (issue 19 items 3, 4, 14, 20).

Data: inverted training labels, two label columns swapped, an image replaced, ids added, a label column
added -- each refused with a message naming the dataset and what changed, unless the change is accepted
explicitly (``accept_data_change=True`` / ``--accept-data-change``); a head whose outputs would change is
refused even then. Config: a hand-edited ``config.yaml`` is refused naming the keys, as the same change
given as an override is. A finished run resumed keeps its summary (training time included).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import arkx
from arkx.cli import main
from arkx.errors import RunChanged
from arkx.training.state import atomic_save

from .conftest import run_config

LABELS = ("Alpha", "Beta")


def csv_dataset(root: Path, n: int = 40, seed: int = 0, train: int | None = None) -> Path:
    """A private dataset for the generic ``csv`` adapter: ``n`` 36-px PNGs and labels.csv (path, split,
    Alpha, Beta), both classes of both labels in every split."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    train = n * 6 // 10 if train is None else train
    rest = n - train
    splits = ["train"] * train + ["val"] * (rest // 2) + ["test"] * (rest - rest // 2)
    rows = []
    for i, split in enumerate(splits):
        path = f"images/{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (36, 36), dtype=np.uint8)).save(root / path)
        rows.append(dict(path=path, split=split, Alpha=i % 2, Beta=(i // 2) % 2))
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def csv_entry(root: Path, name: str = "mine") -> dict:
    return dict(type="csv", name=name, root=str(root), options=dict(csv="labels.csv", split_column="split"))


@pytest.fixture
def partial_run(tmp_path) -> tuple[Path, Path]:
    """A run of the csv dataset stopped after 1 of 2 steps: (run folder, dataset root)."""
    root = csv_dataset(tmp_path / "data")
    run = tmp_path / "run"
    arkx.pretrain(run_config(run, [csv_entry(root)]), progress=False, stop_after_steps=1)
    return run, root


def _edit_labels(root: Path, edit) -> None:
    frame = pd.read_csv(root / "labels.csv")
    edit(frame).to_csv(root / "labels.csv", index=False)


def _invert_train(frame: pd.DataFrame) -> pd.DataFrame:
    train = frame["split"] == "train"
    frame.loc[train, list(LABELS)] = 1 - frame.loc[train, list(LABELS)]
    return frame


def _replace_image(root: Path) -> None:
    Image.fromarray(np.full((40, 40), 7, dtype=np.uint8)).save(root / "images" / "003.png")


def _add_row(root: Path) -> None:
    Image.fromarray(np.zeros((36, 36), dtype=np.uint8)).save(root / "images" / "new.png")
    _edit_labels(root, lambda f: pd.concat([f, pd.DataFrame([dict(path="images/new.png", split="train",
                                                                  Alpha=1, Beta=0)])]))


#: (name, change, fragments the refusal must contain)
CHANGES = [
    ("inverted-train-labels", lambda root: _edit_labels(root, _invert_train), ["labels changed in 24 of 40 rows"]),
    ("swapped-label-columns", lambda root: _edit_labels(root, lambda f: f[["path", "split", "Beta", "Alpha"]]),
     ["label columns reordered: old order [Alpha, Beta] vs new [Beta, Alpha]"]),
    ("replaced-image", _replace_image, ["image files replaced or modified"]),
    ("ids-added", _add_row, ["image ids changed: 1 added, 0 removed (40 -> 41 images)"]),
]


@pytest.mark.parametrize("name,change,fragments", CHANGES, ids=[c[0] for c in CHANGES])
def test_resume_refuses_changed_data_then_accepts_it_when_asked(partial_run, name, change, fragments):
    run, root = partial_run
    before = (run / "checkpoints" / "last.pt").read_bytes()
    change(root)
    with pytest.raises(RunChanged) as err:
        arkx.resume(run, progress=False)
    message = str(err.value)
    assert "dataset 'mine' changed since the last checkpoint" in message and "--accept-data-change" in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    assert (run / "checkpoints" / "last.pt").read_bytes() == before  # nothing trained
    summary = arkx.resume(run, progress=False, accept_data_change=True)
    assert summary.finished
    assert "accepted" in (run / "run.log").read_text()


def test_cli_accept_data_change_flag(partial_run, capsys):
    run, root = partial_run
    _edit_labels(root, _invert_train)
    assert main(["--quiet", "pretrain", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labels changed in 24 of 40 rows" in err and "Traceback" not in err
    assert main(["--quiet", "pretrain", "--resume", str(run), "--accept-data-change"]) == 0


def test_a_label_column_added_is_refused_naming_the_head_even_when_accepted(partial_run):
    run, root = partial_run
    _edit_labels(root, lambda f: f.assign(Gamma=f["Alpha"]))
    with pytest.raises(RunChanged, match=r"labels added \[Gamma\]"):
        arkx.resume(run, progress=False)
    with pytest.raises(RunChanged, match=r"head 'mine' was trained with 2 outputs \['Alpha', 'Beta'\] and the "
                                         r"dataset now has 3 labels \(added \['Gamma'\]"):
        arkx.resume(run, progress=False, accept_data_change=True)


def test_datasets_json_records_what_the_run_was_trained_on(partial_run):
    run, root = partial_run
    record = json.loads((run / "datasets.json").read_text())["mine"]
    assert record["label_names"] == list(LABELS) and record["n_images"] == 40
    assert record["root"] == str(root.resolve()) and len(record["cache_fingerprint"]) == 64
    assert Path(record["cache_folder"]).is_dir()
    extra = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["extra"]
    assert extra["datasets"]["mine"]["labels_sha256"] == record["labels_sha256"]
    assert extra["config"]["resolved"]["run"]["out"] == str(run.resolve())


def test_resume_refuses_a_hand_edited_config(partial_run, capsys):
    run, _ = partial_run
    path = run / "config.yaml"
    original = path.read_text()
    edited = yaml.safe_load(original)
    edited["training"]["lr"] = 0.01
    path.write_text(yaml.safe_dump(edited, sort_keys=False))
    with pytest.raises(RunChanged, match=r"config.yaml differs from the config of the last checkpoint at training.lr "
                                         r"\(0.002 -> 0.01\)"):
        arkx.resume(run, progress=False)
    assert main(["--quiet", "pretrain", "--resume", str(run)]) == 2
    assert "training.lr (0.002 -> 0.01)" in capsys.readouterr().err
    path.write_text(original)
    assert arkx.resume(run, progress=False).finished


def test_cli_resume_with_an_override_explains_instead_of_reading_it_as_a_file(partial_run, capsys):
    run, _ = partial_run
    assert main(["--quiet", "pretrain", "--resume", str(run), "training.rounds=5"]) == 2
    err = capsys.readouterr().err
    assert "with overrides: they change training.rounds (2 -> 5)" in err and "start a new run" in err
    assert "not found" not in err
    assert main(["--quiet", "pretrain", "--resume", str(run), "training.rounds=2"]) == 0  # changes nothing


def test_resuming_a_finished_run_keeps_its_summary_and_says_so(tmp_path, caplog):
    root = csv_dataset(tmp_path / "data")
    run = tmp_path / "run"
    cfg = run_config(run, [csv_entry(root)])
    arkx.pretrain(cfg, progress=False, stop_after_steps=1)
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    assert state["extra"]["train_seconds"] > 0
    state["extra"]["train_seconds"] = 1000.0  # as if the first session had trained for 1000 s
    atomic_save(state, last)
    finished = arkx.resume(run, progress=False)
    seconds = json.loads((run / "summary.json").read_text())["train_seconds"]
    assert finished.finished and seconds == pytest.approx(finished.train_seconds) and 1000 < seconds < 1100
    assert torch.load(last, weights_only=True)["extra"]["train_seconds"] > 1000  # cumulative over sessions
    before = (run / "summary.json").read_text()
    with caplog.at_level("WARNING", logger="arkx"):
        again = arkx.resume(run, progress=False)
    assert "already finished" in caplog.text
    assert again.train_seconds == pytest.approx(seconds)
    assert (run / "summary.json").read_text() == before


def test_a_copied_run_folder_that_names_its_new_place_resumes(partial_run, tmp_path):
    import shutil

    run, _ = partial_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["run"]["out"] = str(copy)
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert arkx.resume(copy, progress=False).finished
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step_done"] == 1  # the original untouched
