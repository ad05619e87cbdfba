"""Foundation X pretraining: (dataset, task) cycles, Lock-Release, the three consistency sites, every task
evaluated after every step, and the defects of the authors' code that must not come back (METHOD.md §5).

The data are synthetic datasets in their providers' layouts (JSRT: a nodule label, nodule boxes and five
SCR structures; VinDr-CXR: labels and lesion boxes), prepared into a real cache, and a tiny CNN with
small branches, so each engine step takes a fraction of a second."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import arkx
from arkx.config import ArkConfig, ConfigError, config_from_dict
from arkx.data.loaders import prepare_dataset
from arkx.data.transforms import to_unit
from arkx.errors import ArkxValueError
from arkx.models.ark import build_model
from arkx.training.engine import Engine, pretraining_tasks
from arkx.training.schedule import build_schedule

SIZE = 48  # the coarsest pyramid level must be wider than 1 px for the encoder's GroupNorm
TINY_CNN = dict(backbone="resnet18", backbone_kwargs=dict(layers=[1, 1, 1, 1], channels=[8, 16, 16, 32]))
BRANCHES = dict(det_encoder=dict(d_model=16, n_layers=1, n_heads=2, n_points=2, ffn_dim=32),
                det_decoder=dict(num_queries=8, n_layers=2, n_heads=2, n_points=2, ffn_dim=32),
                seg_decoder=dict(channels=16))


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return arkx.synthesize(tmp_path_factory.mktemp("fx-synth"), seed=3, n=24, size=40, datasets=["jsrt", "vindr_cxr"])


def fx_config(roots, out, tasks="X-CLS", **training) -> ArkConfig:
    cfg = dict(
        run=dict(out=str(out / "run"), seed=2, device="cpu"),
        datasets=[dict(type="jsrt", root=str(roots["jsrt"])), dict(type="vindr_cxr", root=str(roots["vindr_cxr"]))],
        data=dict(image_size=SIZE, cache_size=SIZE, batch_size=4, eval_batch_size=16, workers=0, prepare_workers=0,
                  cache_dir=str(out.parent / "fx-cache")),
        model=dict(TINY_CNN, projector_dim=8, branch_options=BRANCHES),
        training={**dict(tasks=tasks, rounds=1, optimizer="adamw", lr=1e-3, warmup_rounds=0.0,
                         lr_schedule="constant", max_iters_per_epoch=2), **training},
        eval=dict(every="end", models=["teacher"], test_at_end=False),
    )
    return config_from_dict(cfg)


def make_engine(roots, tmp_path, tasks="X-CLS", **training) -> Engine:
    cfg = fx_config(roots, tmp_path, tasks, **training)
    datasets = {d.head_name: prepare_dataset(d, cfg.data, cfg.data.cache_dir, progress=False, require_labels=False)
                for d in cfg.datasets}
    tasks_ = pretraining_tasks(datasets, cfg.training.tasks)
    torch.manual_seed(0)
    model = build_model(cfg.model, [t for per in tasks_.values() for t in per], branch_options=cfg.model.branch_options)
    return Engine(cfg, datasets, model, cfg.run.out, progress=False)


# ------------------------------------------------------------------ config and schedule
def test_variants_name_the_task_families_in_schedule_order(roots, tmp_path):
    assert fx_config(roots, tmp_path, "X-LS").training.tasks == ["localization", "segmentation"]
    assert fx_config(roots, tmp_path, ["segmentation", "classification"]).training.tasks == \
        ["classification", "segmentation"]
    with pytest.raises(ConfigError, match="X-CSL"):
        fx_config(roots, tmp_path, "X-CSL")
    with pytest.raises(ConfigError, match="lock_release.freeze"):
        fx_config(roots, tmp_path, lock_release=dict(freeze=["backbone", "heads"]))


def test_cyclic_schedule_runs_each_datasets_tasks_in_order(roots, tmp_path):
    eng = make_engine(roots, tmp_path)
    parts = [(s.dataset, s.task.kind) for s in eng.schedule]
    assert parts == [("jsrt", "multilabel"), ("jsrt", "detection"), ("jsrt", "segmentation"),
                     ("vindr_cxr", "multilabel"), ("vindr_cxr", "detection")]
    eng_ls = make_engine(roots, tmp_path / "ls", "X-LS")
    assert [(s.dataset, s.task.kind) for s in eng_ls.schedule] == [("jsrt", "detection"), ("jsrt", "segmentation"),
                                                                   ("vindr_cxr", "detection")]
    # the schedule's shape is a pure function of the parts: a resume finds its step again
    assert len(build_schedule("cyclic", eng._schedule_entries(), 3)) == 15


def test_a_dataset_without_a_family_is_left_out_and_a_requested_one_it_lacks_refused(roots, tmp_path, caplog):
    cfg = fx_config(roots, tmp_path, "X-S")
    datasets = {d.head_name: prepare_dataset(d, cfg.data, cfg.data.cache_dir, progress=False, require_labels=False)
                for d in cfg.datasets}
    with caplog.at_level("WARNING", logger="arkx.training"):
        tasks = pretraining_tasks(datasets, cfg.training.tasks)
    assert tasks["vindr_cxr"] == [] and [t.kind for t in tasks["jsrt"]] == ["segmentation"]
    assert "'vindr_cxr' has nothing to train" in caplog.text
    with pytest.raises(ArkxValueError, match="vindr_cxr.*asks for \\['segmentation'\\].*localization"):
        pretraining_tasks(datasets, ["classification", "segmentation"], {"vindr_cxr": ["segmentation"]})
    with pytest.raises(ArkxValueError, match="no dataset has anything"):
        pretraining_tasks({"vindr_cxr": datasets["vindr_cxr"]}, ["segmentation"])


# ------------------------------------------------------------------ the geometry of dense steps
def test_a_dense_steps_masks_are_warped_by_the_student_views_parameters(roots, tmp_path, monkeypatch):
    """The segmentation step draws the augmentation once: the student's view uses it, and the targets are the
    cache's masks warped by exactly those parameters, on the model input's grid and device."""
    from arkx.data.geometry import resize_masks, warp_masks

    eng = make_engine(roots, tmp_path, "X-S", lock_release=dict(enabled=False))
    seen, views = [], []
    real_targets, real_views = eng.objective.targets, eng._views

    def targets(task, batch, data, generator):
        seen.append(batch)
        return real_targets(task, batch, data, generator)

    def capture_views(images, aug_gen, params=None):
        views.append(params)
        return real_views(images, aug_gen, params)

    monkeypatch.setattr(eng.objective, "targets", targets)
    monkeypatch.setattr(eng, "_views", capture_views)
    eng.train_step(eng.schedule[0])
    batch, params = seen[0], views[0]
    assert params is not None
    assert batch.masks.shape[-2:] == (SIZE, SIZE) and batch.masks.any()
    assert torch.equal(warp_masks(_source_masks(eng, batch), params, SIZE), batch.masks.cpu())
    unmoved = resize_masks(_source_masks(eng, batch), SIZE)
    assert not torch.equal(unmoved, batch.masks.cpu())  # the augmentation did move them


def _source_masks(eng, warped_batch):
    """The cache's masks of the rows of ``warped_batch`` (what the loader read, before the geometry)."""
    images = eng.datasets["jsrt"].images
    masks = [torch.from_numpy(images.masks(int(r))[0]) for r in warped_batch.rows]
    return torch.stack(masks)


def test_a_mask_painted_into_the_image_stays_under_the_warped_mask(roots, tmp_path, monkeypatch):
    """Replace every image by its own first mask (255 inside, 0 outside): the student view (un-normalised) is
    then bright exactly where the warped target mask is set, which only holds if image and masks moved alike."""
    eng = make_engine(roots, tmp_path, "X-S", lock_release=dict(enabled=False))
    loader = eng.train_loader("jsrt", eng.schedule[0].task)
    real_getitem = type(loader.dataset).__getitem__

    def painted(self, i):
        sample = real_getitem(self, i)
        sample["image"] = (sample["masks"][:1].to(torch.uint8) * 255)
        return sample

    monkeypatch.setattr(type(loader.dataset), "__getitem__", painted)
    pairs = []
    real_forward = eng._forward

    def forward(task, x_student, x_teacher, targets=None):
        pairs.append((x_student.detach(), targets[0].detach()))
        return real_forward(task, x_student, x_teacher, targets)

    monkeypatch.setattr(eng, "_forward", forward)
    eng.train_step(eng.schedule[0])
    agreement = []
    for x, masks in pairs:
        bright = x[:, 0] > x[:, 0].amin(dim=(1, 2), keepdim=True) + 0.5 * (
            x[:, 0].amax(dim=(1, 2), keepdim=True) - x[:, 0].amin(dim=(1, 2), keepdim=True))
        agreement.append((bright == masks[:, 0]).float().mean().item())
    assert min(agreement) > 0.95, agreement


# ------------------------------------------------------------------ Lock-Release
def test_lock_phase_trains_only_the_datasets_head_on_a_seeded_part_then_release_trains_all(roots, tmp_path,
                                                                                            monkeypatch):
    eng = make_engine(roots, tmp_path, "X-L", lock_release=dict(lock_fraction=0.5), max_iters_per_epoch=None)
    step = eng.schedule[0]  # jsrt detection
    assert [p.name for p in eng.phases(step)] == ["lock", "release"]
    calls = []
    real = eng._batch_loss
    snapshots = []

    def batch_loss(name, batch, step, *args, **kwargs):
        trainable = {g for g, names in eng.student.parameter_groups().items()
                     if all(dict(eng.student.named_parameters())[n].requires_grad for n in names)}
        calls.append((trainable, batch.rows.tolist()))
        snapshots.append({k: v.detach().clone() for k, v in eng.student.named_parameters()})
        return real(name, batch, step, *args, **kwargs)

    monkeypatch.setattr(eng, "_batch_loss", batch_loss)
    eng.train_step(step)
    n_train = len(eng.datasets["jsrt"].indices("train"))
    batch = eng.cfg.data.batch_size
    lock_iters = math.ceil(n_train / 2) // batch
    release_iters = n_train // batch
    assert len(calls) == lock_iters + release_iters
    groups = eng.student.parameter_groups()
    for trainable, _ in calls[:lock_iters]:
        assert "det_heads/jsrt" in trainable
        assert not {"backbone", "projector", "det_encoder"} & trainable
    for trainable, _ in calls[lock_iters:]:
        assert {"backbone", "det_encoder", "det_heads/jsrt"} <= trainable
    # during the lock phase the frozen groups did not move (momentum, weight decay included); the head did
    before, after_lock = snapshots[0], snapshots[lock_iters]
    for name in groups["backbone"] + groups["det_encoder"]:
        assert torch.equal(before[name], after_lock[name]), name
    assert any(not torch.equal(before[n], after_lock[n]) for n in groups["det_heads/jsrt"])
    # ... and the release phase moved the backbone
    final = dict(eng.student.named_parameters())
    assert any(not torch.equal(after_lock[n], final[n].detach()) for n in groups["backbone"])
    # the lock phase saw a seeded half: distinct rows, fewer than the release phase's, reproducible
    lock_rows = [r for _, rows in calls[:lock_iters] for r in rows]
    release_rows = [r for _, rows in calls[lock_iters:] for r in rows]
    assert len(set(lock_rows)) == len(lock_rows) <= math.ceil(n_train / 2)
    assert len(set(release_rows)) == len(release_rows) == release_iters * batch
    # everything is trainable after the step
    assert all(p.requires_grad for p in eng.student.parameters())


def test_lock_release_off_or_for_classification_is_one_plain_phase(roots, tmp_path):
    eng = make_engine(roots, tmp_path, "X-CL", lock_release=dict(enabled=False))
    assert all([p.name for p in eng.phases(s)] == ["train"] for s in eng.schedule)
    eng = make_engine(roots, tmp_path / "b", "X-CL")
    assert [[p.name for p in eng.phases(s)] for s in eng.schedule] == [
        ["train"], ["lock", "release"], ["train"], ["lock", "release"]]


# ------------------------------------------------------------------ the authors' defects
def test_every_trainable_parameter_is_in_exactly_one_optimizer_group(roots, tmp_path):
    eng = make_engine(roots, tmp_path)
    seen = [id(p) for group in eng.optimizer.param_groups for p in group["params"]]
    trainable = [id(p) for p in eng.student.parameters() if p.requires_grad]
    assert len(seen) == len(set(seen))
    assert set(seen) == set(trainable)
    # the detector's output heads are among them (the authors' optimizer left them out)
    decoder = eng.student.det_heads["jsrt"]
    head_params = [id(p) for name, p in decoder.named_parameters() if "class" in name or "box" in name]
    assert head_params and set(head_params) <= set(seen)


@pytest.mark.parametrize("site, kind, branch", [("det_encoder", "detection", "det_encoder"),
                                                ("seg_decoder", "segmentation", "seg_decoder")])
def test_each_consistency_site_has_a_gradient_that_reaches_the_student(roots, tmp_path, site, kind, branch):
    eng = make_engine(roots, tmp_path, "X-LS", consistency=dict(sites={site: 0.5}, ramp="constant"))
    step = next(s for s in eng.schedule if s.task.kind == kind)
    batch = next(iter(eng.train_loader(step.dataset, step.task)))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    x_s, x_t = eng._views(batch.images, g())
    features, _ = eng.student.run_task(x_s, step.task)
    student_sites = eng.objective.read_sites(eng.student, features, step.task)
    assert set(student_sites) == {site}
    with torch.no_grad():
        teacher_sites = eng.objective.read_sites(
            eng.teacher, eng.teacher.forward_features(x_t, pyramid=True), step.task)
    # make the teacher differ, so the term is not zero at the start
    loss = torch.nn.functional.mse_loss(student_sites[site], teacher_sites[site] + 0.1)
    loss.backward()
    grads = [p.grad for p in getattr(eng.student, branch).parameters() if p.grad is not None]
    assert grads and any(gr.abs().sum() > 0 for gr in grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in eng.student.backbone.parameters())
    assert all(p.grad is None for p in eng.teacher.parameters())  # the teacher never accumulates gradients


def test_sites_apply_to_their_branchs_steps_only(roots, tmp_path):
    eng = make_engine(roots, tmp_path, consistency=dict(sites={"projection": 0.2, "det_encoder": 0.1,
                                                               "seg_decoder": 0.1}))
    by_kind = {s.task.kind: eng.objective.active(s.task) for s in eng.schedule}
    assert by_kind == {"multilabel": ["projection"], "detection": ["projection", "det_encoder"],
                       "segmentation": ["projection", "seg_decoder"]}


def test_the_teacher_follows_every_branch_and_buffer_after_a_step(roots, tmp_path, monkeypatch):
    """After each step the teacher is ``m·teacher + (1 - m)·student`` for every parameter and floating buffer
    of every branch (the authors' EMA skipped buffers)."""
    from arkx.training import callbacks as callbacks_mod

    eng = make_engine(roots, tmp_path, "X-LS")
    start = {k: v.clone() for k, v in eng.teacher.state_dict().items()}
    updates = []
    real = callbacks_mod.ema_update

    def ema(teacher, student, momentum):
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        real(teacher, student, momentum)
        updates.append((before, {k: v.clone() for k, v in student.state_dict().items()}, momentum))

    monkeypatch.setattr(callbacks_mod, "ema_update", ema)
    eng.run(stop_after_steps=2)
    after = eng.teacher.state_dict()
    before, student, m = updates[-1]
    floating = [k for k, v in after.items() if v.is_floating_point()]
    for key in floating:
        torch.testing.assert_close(after[key], m * before[key] + (1 - m) * student[key], rtol=1e-5, atol=1e-6)
    moved = {k.split(".")[0] for k in floating if not torch.equal(start[k], after[k])}
    assert {"backbone", "det_encoder", "det_heads", "seg_decoder", "seg_heads"} <= moved
    buffers = [k for k, _ in eng.teacher.named_buffers() if "running_mean" in k]
    assert buffers and all(k in floating for k in buffers) and any(not torch.equal(start[k], after[k]) for k in buffers)


# ------------------------------------------------------------------ evaluation and the run
def test_every_task_is_evaluated_after_every_step_with_its_metric(roots, tmp_path):
    eng = make_engine(roots, tmp_path)
    eng.cfg.eval.every = "dataset_epoch"
    eng.run(stop_after_steps=2)
    frame = pd.read_csv(eng.out / "metrics.csv")
    means = frame[frame["label"] == "__mean__"]
    got = {(r.step, r.dataset, r.task, r.metric, r.trained, r.trained_task) for r in means.itertuples()}
    expected = set()
    for step, trained_task in ((0, "multilabel"), (1, "detection")):
        for dataset, task, metric in (("jsrt", "multilabel", "auc"), ("jsrt", "detection", "map40"),
                                      ("jsrt", "segmentation", "dice"), ("vindr_cxr", "multilabel", "auc"),
                                      ("vindr_cxr", "detection", "map40")):
            expected.add((step, dataset, task, metric, "jsrt", trained_task))
    assert got == expected
    dice = means[(means["metric"] == "dice")]["score"]
    assert dice.between(0, 1).all()
    det = means[means["metric"] == "map40"]
    assert det["note"].str.contains("map50=").all()


def test_foundation_x_pretraining_from_the_api_resumes_bitwise(roots, tmp_path):
    from tests.reliability.conftest import assert_bitwise_equal

    raw = fx_config(roots, tmp_path / "a").model_dump(mode="json")
    raw["eval"] = dict(every="round", models=["teacher"], test_at_end=True)
    full = arkx.pretrain(raw, progress=False)
    assert full.finished and full.total_steps == 5
    assert set(full.final_tasks["teacher"]["jsrt"]) == {"multilabel", "detection", "segmentation"}
    assert full.final["teacher"].keys() == {"jsrt", "vindr_cxr"}
    raw_b = dict(raw, run=dict(raw["run"], out=str(tmp_path / "b" / "run")))
    arkx.pretrain(raw_b, progress=False, stop_after_steps=2)
    arkx.pretrain(raw_b, progress=False, resume=True)
    assert_bitwise_equal(tmp_path / "a" / "run", tmp_path / "b" / "run")
    # the exported teacher rebuilds with its branches and scores the same
    model = arkx.load_model(tmp_path / "a" / "run" / "teacher.safetensors")
    assert {t.kind for t in model.tasks()} == {"multilabel", "detection", "segmentation"}


def test_resume_refuses_changed_segmentation_structures(roots, tmp_path):
    from arkx.api import _check_heads_unchanged
    from arkx.errors import RunChanged
    from arkx.data.adapters import read_dataset

    records = {"jsrt": read_dataset("jsrt", roots["jsrt"])}
    heads = [t.as_dict() for t in records["jsrt"].tasks("jsrt")]
    _check_heads_unchanged(dict(heads=heads), records, tmp_path)  # unchanged: fine
    heads[2] = dict(heads[2], label_names=heads[2]["label_names"][:3])
    with pytest.raises(RunChanged, match="segmentation outputs"):
        _check_heads_unchanged(dict(heads=heads), records, tmp_path)


def test_lock_phase_is_skipped_with_a_warning_when_its_part_is_below_one_batch(roots, tmp_path, caplog):
    eng = make_engine(roots, tmp_path, "X-L", lock_release=dict(lock_fraction=0.05))
    with caplog.at_level("WARNING", logger="arkx.training"):
        eng.train_step(eng.schedule[0])
    assert "lock phase" in caplog.text


@pytest.mark.parametrize("kind, attr", [("detection", "det_encoder"), ("segmentation", "seg_decoder")])
def test_a_shared_branch_runs_once_per_pass_for_its_head_and_its_site(roots, tmp_path, kind, attr):
    eng = make_engine(roots, tmp_path, "X-LS", consistency=dict(sites={"det_encoder": 0.1, "seg_decoder": 0.1}))
    step = next(s for s in eng.schedule if s.task.kind == kind)
    calls = []
    handle = getattr(eng.student, attr).register_forward_hook(lambda *a: calls.append(1))
    batch = next(iter(eng.train_loader(step.dataset, step.task)))
    x, _ = eng._views(batch.images, torch.Generator().manual_seed(0))
    features, _ = eng.student.run_task(x, step.task)
    eng.objective.read_sites(eng.student, features, step.task)
    handle.remove()
    assert len(calls) == 1


def test_loader_workers_live_for_one_epoch_and_do_not_change_the_result(roots, tmp_path):
    """One pool of workers at a time (started per dataset epoch, gone after it), and the same weights as
    reading in the main process: the order and the augmentation come from the main process."""
    import multiprocessing

    results = {}
    for workers in (0, 2):
        cfg = fx_config(roots, tmp_path / f"w{workers}", "X-CL")
        cfg.data.workers = workers
        datasets = {d.head_name: prepare_dataset(d, cfg.data, cfg.data.cache_dir, progress=False)
                    for d in cfg.datasets}
        tasks = pretraining_tasks(datasets, cfg.training.tasks)
        torch.manual_seed(0)
        model = build_model(cfg.model, [t for per in tasks.values() for t in per],
                            branch_options=cfg.model.branch_options)
        eng = Engine(cfg, datasets, model, cfg.run.out, progress=False)
        for step in eng.schedule[:2]:
            eng.train_step(step)
            assert multiprocessing.active_children() == []  # the epoch's workers are gone
        results[workers] = {k: v.detach().clone() for k, v in eng.student.state_dict().items()}
    assert all(torch.equal(results[0][k], results[2][k]) for k in results[0])
