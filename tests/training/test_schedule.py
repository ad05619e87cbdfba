import math

import pytest

from arkx.training.schedule import (
    CONCURRENT,
    build_schedule,
    consistency_weight,
    ema_momentum,
    iteration_rounds,
    learning_rate,
    progress_in_rounds,
)


def test_cyclic_schedule_visits_each_dataset_once_per_round_in_order():
    steps = build_schedule("cyclic", ["mimic", "chexpert", "nih"], rounds=3)
    assert [s.dataset for s in steps] == ["mimic", "chexpert", "nih"] * 3
    assert [s.round for s in steps] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [s.index for s in steps] == list(range(9))


def test_concurrent_schedule_has_one_mixed_step_per_round():
    steps = build_schedule("concurrent", ["a", "b"], rounds=4)
    assert [s.dataset for s in steps] == [CONCURRENT] * 4


def test_unknown_mode_rejected():
    with pytest.raises(ValueError):
        build_schedule("sequential", ["a"], 1)


def test_learning_rate_warmup_then_cosine():
    kw = dict(base=0.3, rounds=10, warmup=2, schedule="cosine")
    assert learning_rate(0.0, **kw) == 0.0
    assert math.isclose(learning_rate(1.0, **kw), 0.15)
    assert math.isclose(learning_rate(2.0, **kw), 0.3)
    assert math.isclose(learning_rate(6.0, **kw), 0.15)
    assert math.isclose(learning_rate(10.0, **kw), 0.0, abs_tol=1e-12)


def test_warmup_gives_each_iteration_the_value_at_its_end():
    kw = dict(base=0.3, rounds=10, warmup=2, schedule="cosine")
    steps = build_schedule("cyclic", ["a", "b"], rounds=10)
    iters = 5  # per dataset epoch: 2 warm-up rounds are 20 iterations
    lrs = [learning_rate(progress_in_rounds(s, i, iters), iteration=iteration_rounds(s, iters), **kw)
           for s in steps[:4] for i in range(iters)]
    assert lrs == pytest.approx([0.3 * (i + 1) / 20 for i in range(20)], rel=1e-12)
    assert lrs[0] > 0  # the first iteration trains
    assert learning_rate(2.0, iteration=0.1, **kw) == 0.3  # the decay is read where the iteration starts


def test_progress_counts_datasets_and_iterations():
    steps = build_schedule("cyclic", ["a", "b"], rounds=2)
    assert progress_in_rounds(steps[0], 0, 10) == 0.0
    assert progress_in_rounds(steps[1], 5, 10) == 0.75
    assert progress_in_rounds(steps[3], 0, 10) == 1.5


def test_ema_and_consistency_ramps():
    assert ema_momentum(0.0, start=0.9, end=1.0, schedule="cosine") == 0.9
    assert math.isclose(ema_momentum(0.5, start=0.9, end=1.0, schedule="cosine"), 0.95)
    assert ema_momentum(0.7, start=0.9, end=1.0, schedule="constant") == 0.9
    assert consistency_weight(0.0, weight=0.5, ramp="cosine") == 0.0
    assert math.isclose(consistency_weight(1.0, weight=0.5, ramp="cosine"), 0.5)
    assert consistency_weight(0.2, weight=0.5, ramp="constant") == 0.5


def test_steps_carry_the_task_cyclic_over_dataset_task_pairs_in_order():
    from arkx.tasks import Task

    cls_a = Task("a", "multilabel", ("x", "y"))
    det_a = Task("a", "detection", ("nodule",))
    seg_a = Task("a", "segmentation", ("lung",))
    cls_b = Task("b", "multiclass", ("p", "q"))
    steps = build_schedule("cyclic", [("a", [cls_a, det_a, seg_a]), ("b", cls_b)], rounds=2)
    assert [(s.dataset, s.task) for s in steps] == [("a", cls_a), ("a", det_a), ("a", seg_a), ("b", cls_b)] * 2
    assert [s.index for s in steps] == list(range(8))
    assert [s.position for s in steps] == [0, 1, 2, 3] * 2 and {s.per_round for s in steps} == {4}
    assert [s.round for s in steps] == [0] * 4 + [1] * 4
    mixed = build_schedule("concurrent", [("a", [cls_a, det_a]), ("b", cls_b)], rounds=2)
    assert [s.parts for s in mixed] == [(("a", cls_a), ("a", det_a), ("b", cls_b))] * 2
    assert all(s.task is None and s.dataset == CONCURRENT for s in mixed)


def test_one_task_per_dataset_keeps_the_steps_of_a_schedule_of_names():
    # resume finds its step by index: adding the task to a step must not move any step
    from arkx.tasks import Task

    tasks = {n: Task(n, "multilabel", ("x",)) for n in ("mimic", "chexpert", "nih")}
    for mode in ("cyclic", "concurrent"):
        with_tasks = build_schedule(mode, list(tasks.items()), rounds=3)
        names = build_schedule(mode, list(tasks), rounds=3)
        key = [(s.index, s.round, s.dataset, s.position, s.per_round, [n for n, _ in s.parts]) for s in with_tasks]
        assert key == [(s.index, s.round, s.dataset, s.position, s.per_round, [n for n, _ in s.parts]) for s in names]
        assert all(task is tasks[name] for s in with_tasks for name, task in s.parts)
