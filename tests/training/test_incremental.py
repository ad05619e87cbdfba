"""Incremental pretraining (Ark+): a new run lists the old datasets plus new ones and sets
``model.init_from`` to the old run; the old weights start it, new heads start fresh and join the
optimizer and the teacher, and the old head keeps its AUC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import arkx
from arkx import api
from arkx.config import ConfigError
from tests.reliability.conftest import assert_bitwise_equal, pristine_roots, tiny_config  # noqa: F401 (fixture)

# The old head's test AUC may move by at most this much after one incremental round (2 dataset epochs of
# 2 iterations each). The synthetic test split is small (a handful of images per class), so one rank swap
# moves the AUC by several hundredths: 0.1 allows a swap or two, while a model that lost the old weights
# (scratch init, same training) lands near chance, ~0.35 below the old run's AUC.
AUC_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def old_run(pristine_roots, tmp_path_factory) -> Path:  # noqa: F811 (the fixture imported above)
    """A finished run on shenzhen alone, trained long enough (4 full rounds) for its head to rank well."""
    out = tmp_path_factory.mktemp("incremental") / "old"
    cfg = tiny_config(pristine_roots, out, datasets=("shenzhen",), rounds=4, eval=dict(test_at_end=True),
                      training=dict(max_iters_per_epoch=None))
    arkx.pretrain(cfg, progress=False)
    return out


def incremental_config(roots, out: Path, old: Path, **sections) -> dict:
    """The old dataset plus rsna (a new head), one round, started from ``old``, tested at the end."""
    model = dict(tiny_config(roots, out)["model"], init_from=str(old), **sections.pop("model", {}))
    return tiny_config(roots, out, datasets=("shenzhen", "rsna"), rounds=1, model=model,
                       eval=dict(test_at_end=True), **sections)


def copied_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def new_run(old_run, pristine_roots) -> dict:  # noqa: F811
    """The incremental run, finished, with what its engine held when training started (step 0)."""
    seen = {"out": old_run.parent / "new"}
    original_run = api.Engine.run

    def run_and_record_start(engine, *args, **kwargs):
        seen["student"], seen["teacher"] = copied_state(engine.student), copied_state(engine.teacher)
        seen["optimized"] = {id(p) for g in engine.optimizer.param_groups for p in g["params"]}
        seen["rsna_params"] = list(engine.student.heads["rsna"].parameters())
        return original_run(engine, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api.Engine, "run", run_and_record_start)
        seen["summary"] = arkx.pretrain(incremental_config(pristine_roots, seen["out"], old_run), progress=False)
    return seen


def test_new_run_starts_from_the_old_weights_and_trains_the_new_head(old_run, new_run):
    for which in ("student", "teacher"):
        old = arkx.load_model(old_run, which).state_dict()
        start = new_run[which]
        for key, value in old.items():  # backbone, projector and the shenzhen head, exactly
            assert torch.equal(start[key], value), f"{which}.{key}"
        assert {k for k in start if k not in old} == {"heads.rsna.weight", "heads.rsna.bias"}
    # each from its own model: the old student and teacher differ
    assert not torch.equal(new_run["student"]["heads.shenzhen.weight"], new_run["teacher"]["heads.shenzhen.weight"])
    for key in ("heads.rsna.weight", "heads.rsna.bias"):
        assert torch.equal(new_run["teacher"][key], new_run["student"][key])  # the teacher's new head: a copy
    assert all(id(p) in new_run["optimized"] for p in new_run["rsna_params"]), "the new head is not optimized"
    teacher_now = arkx.load_model(new_run["out"], "teacher").state_dict()
    assert not torch.equal(teacher_now["heads.rsna.weight"], new_run["teacher"]["heads.rsna.weight"])  # EMA moved it
    resolved = yaml.safe_load((new_run["out"] / "config.yaml").read_text())
    assert resolved["model"]["init_from"] == str(old_run.resolve())


def test_old_head_keeps_its_auc_after_incremental_training(old_run, new_run):
    before = json.loads((old_run / "summary.json").read_text())["final"]["teacher"]["shenzhen"]
    after = new_run["summary"].final["teacher"]["shenzhen"]
    print(f"shenzhen test AUC (teacher): old run {before:.3f}, after an incremental round {after:.3f}")
    assert before >= 0.75  # the old head ranks well, so losing its weights would show
    assert abs(after - before) <= AUC_TOLERANCE


def test_a_head_whose_labels_changed_is_refused_before_any_work(old_run, pristine_roots, tmp_path):  # noqa: F811
    cfg = incremental_config(pristine_roots, tmp_path / "new", old_run)
    cfg["datasets"] = [dict(cfg["datasets"][1], name="shenzhen")]  # rsna's 3 labels under the old head's name
    with pytest.raises(ConfigError, match=r"head 'shenzhen'.*\['Tuberculosis'\].*'Lung Opacity'"):
        arkx.pretrain(cfg, progress=False)
    assert not (tmp_path / "new").exists()


def test_the_cli_takes_init_from_as_an_override(old_run, pristine_roots, tmp_path, capsys):  # noqa: F811
    from arkx.cli import main

    cfg = incremental_config(pristine_roots, tmp_path / "new", old_run)
    del cfg["model"]["init_from"]
    cfg["datasets"] = [dict(cfg["datasets"][1], name="shenzhen")]
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["pretrain", str(path), f"model.init_from={old_run}"]) == 2
    assert "head 'shenzhen'" in capsys.readouterr().err


def test_another_architecture_is_refused_naming_the_keys(old_run, pristine_roots, tmp_path):  # noqa: F811
    cfg = incremental_config(pristine_roots, tmp_path / "new", old_run, model=dict(projector_dim=16))
    with pytest.raises(ConfigError, match=r"shape differs.*projector\.weight"):
        arkx.pretrain(cfg, progress=False)


def test_init_from_and_a_backbone_checkpoint_together_are_refused(old_run, pristine_roots, tmp_path):  # noqa: F811
    cfg = incremental_config(pristine_roots, tmp_path / "new", old_run, model=dict(checkpoint=str(old_run)))
    with pytest.raises(ConfigError, match="model.init_from and model.checkpoint"):
        arkx.pretrain(cfg, progress=False)


def test_a_relative_init_from_is_recorded_absolute(pristine_roots, tmp_path, monkeypatch):  # noqa: F811
    from arkx.config import config_from_dict, with_absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(incremental_config(pristine_roots, tmp_path / "new", Path("runs/old")))
    assert with_absolute_paths(cfg).model.init_from == tmp_path.resolve() / "runs" / "old"


@pytest.mark.slow
def test_resume_of_an_incremental_run_does_not_initialise_again(old_run, new_run, pristine_roots,  # noqa: F811
                                                                tmp_path):
    parts = tmp_path / "parts"
    arkx.pretrain(incremental_config(pristine_roots, parts, old_run), progress=False, stop_after_steps=1)
    arkx.resume(parts, progress=False)
    assert_bitwise_equal(new_run["out"], parts)
