"""Linear probes on embedding tables: right AUCs on known data, C chosen on val only, seeded nested
subsets, exact k-shot, degenerate labels skipped with a warning."""

from __future__ import annotations

import importlib
import logging

import numpy as np
import pytest

from arkx.cli import main
from arkx.transfer import EmbeddingTable, probe, save_embeddings
from arkx.transfer.probe import fraction_subset, kshot_subset

probe_module = importlib.import_module("arkx.transfer.probe")  # `arkx.transfer.probe` the attribute is the function


def make_table(n=(200, 100, 200), labels=("a", "b"), dim=8, separable=True, seed=0, kind="multilabel"):
    """A table whose label j is the sign of embedding column j (separable) or independent of it."""
    rng = np.random.default_rng(seed)
    total = sum(n)
    x = rng.normal(size=(total, dim)).astype(np.float32)
    if kind == "multiclass":
        cls = np.argmax(x[:, : len(labels)], axis=1) if separable else rng.integers(0, len(labels), total)
        y = np.eye(len(labels), dtype=np.float32)[cls]
    else:
        source = x if separable else rng.normal(size=(total, dim))
        y = (source[:, : len(labels)] > 0).astype(np.float32)
    split = np.array(["train"] * n[0] + ["val"] * n[1] + ["test"] * n[2])
    ids = np.array([f"img{i}" for i in range(total)])
    return EmbeddingTable(ids=ids, split=split, patient_id=ids.copy(), sex=np.array([""] * total),
                          age=np.full(total, np.nan), label_names=tuple(labels), labels=y, embeddings=x,
                          meta=dict(task_kind=kind))


def test_separable_embeddings_reach_auc_one():
    result = probe(make_table(), fractions=[1.0], seeds=[0])
    assert set(result.per_label["label"]) == {"a", "b"}
    assert result.per_label["auc"].min() > 0.99


def test_random_embeddings_give_chance_auc():
    result = probe(make_table(n=(300, 100, 600), dim=64, separable=False), fractions=[1.0], seeds=[0, 1])
    assert abs(result.summary["mean"].iloc[0] - 0.5) < 0.08


def test_multiclass_probe_scores_each_class_one_vs_rest():
    result = probe(make_table(labels=("x", "y", "z"), kind="multiclass"), fractions=[1.0], seeds=[0])
    assert list(result.per_label["label"]) == ["x", "y", "z"]
    assert result.per_label["auc"].min() > 0.97


def test_c_is_chosen_on_the_validation_rows(monkeypatch):
    table = make_table(n=(60, 30, 40))
    seen = []
    real = probe_module.choose_C

    def spy(x_train, y_train, x_val, y_val, *args, **kwargs):
        seen.append(x_val)
        return real(x_train, y_train, x_val, y_val, *args, **kwargs)

    monkeypatch.setattr(probe_module, "choose_C", spy)
    probe(table, fractions=[1.0], seeds=[0])
    val_rows = {row.tobytes() for row in table.embeddings[table.split == "val"].astype(np.float64)}
    assert len(seen) == 2  # one per label
    for x_val in seen:
        assert {row.tobytes() for row in x_val} <= val_rows and len(x_val) == 30


def test_choose_c_maximises_the_validation_score():
    rng = np.random.default_rng(0)
    x_train, y_train = rng.normal(size=(20, 3)), np.array([0, 1] * 10)
    x_val, y_val = rng.normal(size=(10, 3)), np.array([0, 1] * 5)

    def score(fitted, x, y):  # best at C = 10 on the validation rows; anything else scores the same
        return -abs(np.log10(fitted[1].C) - 1.0) if x is x_val else 0.0

    assert probe_module.choose_C(x_train, y_train, x_val, y_val, None, score) == pytest.approx(10.0)


def test_fraction_subsets_are_seeded_nested_and_keep_both_classes():
    rng = np.random.default_rng(1)
    y = (rng.random((500, 3)) < 0.3).astype(float)
    y[:, 2] = 0.0
    y[123, 2] = 1.0  # a rare label: one positive in the whole train split
    small, large = fraction_subset(y, 0.01, seed=4), fraction_subset(y, 0.1, seed=4)
    assert set(small) <= set(large)
    assert np.array_equal(small, fraction_subset(y, 0.01, seed=4))
    assert not np.array_equal(large, fraction_subset(y, 0.1, seed=5))
    assert len(large) >= 50 and len(large) <= 53
    for subset in (small, large):
        assert 123 in subset
        assert all({0.0, 1.0} <= set(y[subset, j]) for j in range(3))
    assert len(fraction_subset(y, 1.0, seed=0)) == 500


def test_kshot_picks_exactly_k_of_each_class_reproducibly():
    classes = np.array([0] * 30 + [1] * 12 + [-1] * 5 + [2] * 7)
    subset = kshot_subset(classes, 5, seed=3)
    assert [int((classes[subset] == c).sum()) for c in (0, 1, 2)] == [5, 5, 5]
    assert -1 not in classes[subset]
    assert np.array_equal(subset, kshot_subset(classes, 5, seed=3))
    assert kshot_subset(classes, 8, seed=3) is None  # class 2 has only 7


def test_kshot_probe_trains_on_k_positives_and_k_negatives():
    result = probe(make_table(), fractions=[], shots=[1, 5], seeds=[0, 1])
    assert sorted(set(result.per_label["setting"])) == ["1-shot", "5-shot"]
    for setting, k in (("1-shot", 1), ("5-shot", 5)):
        assert set(result.per_label.loc[result.per_label["setting"] == setting, "n_train"]) == {2 * k}


def test_degenerate_label_is_skipped_with_a_warning(caplog):
    table = make_table(labels=("a", "b", "never"))
    table.labels[table.split == "train", 2] = 0.0  # no positive to train on (val and test have both classes)
    with caplog.at_level(logging.WARNING, logger="arkx.transfer"):
        result = probe(table, fractions=[1.0], seeds=[0])
    assert "never" not in set(result.per_label["label"])
    assert set(result.per_label["label"]) == {"a", "b"}
    assert any("'never'" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    assert result.skipped == [("fraction=1", 0, "never", "one class only in the training subset")]


def test_label_with_one_class_in_test_is_skipped():
    table = make_table()
    table.labels[table.split == "test", 1] = 1.0
    result = probe(table, fractions=[1.0], seeds=[0])
    assert set(result.per_label["label"]) == {"a"}
    assert result.skipped[0][2:] == ("b", "one class only in the test split")


def test_missing_and_uncertain_labels_are_masked_in_training():
    table = make_table()
    train = np.flatnonzero(table.split == "train")
    table.labels[train[:20], 0] = np.nan
    table.labels[train[20:50], 0] = -1.0
    ignored = probe(table, fractions=[1.0], seeds=[0]).per_label.set_index("label")
    as_ones = probe(table, fractions=[1.0], seeds=[0], uncertain="ones").per_label.set_index("label")
    assert ignored.loc["a", "n_train"] == 150 and ignored.loc["b", "n_train"] == 200
    assert as_ones.loc["a", "n_train"] == 180


def test_summary_is_mean_over_labels_then_mean_and_std_over_seeds():
    result = probe(make_table(n=(60, 40, 60), separable=False), fractions=[0.5, 1.0], seeds=[0, 1, 2],
                   grid=(0.01, 1.0))
    per = result.per_label
    for row in result.summary.itertuples():
        by_seed = per[per["setting"] == row.setting].groupby("seed")["auc"].mean()
        assert row.mean == pytest.approx(by_seed.mean())
        assert row.std == pytest.approx(np.std(by_seed.to_numpy(), ddof=1))
        assert row.n_seeds == 3 and row.n_labels == 2
    assert list(result.summary["setting"]) == ["fraction=0.5", "fraction=1"]


def test_cli_probe_prints_the_summary_and_writes_csvs(tmp_path, capsys):
    path = save_embeddings(make_table(n=(80, 40, 80)), tmp_path / "emb.npz")
    assert main(["probe", str(path), "--fractions", "0.5", "1.0", "--shots", "2", "--seeds", "0", "1",
                 "--balanced", "--out", str(tmp_path / "probe.csv")]) == 0
    out = capsys.readouterr().out
    assert "fraction=0.5" in out and "2-shot" in out and "±" in out
    import pandas as pd

    per_label = pd.read_csv(tmp_path / "probe.csv")
    assert len(per_label) == 3 * 2 * 2  # settings x seeds x labels
    assert len(pd.read_csv(tmp_path / "probe.summary.csv")) == 3


def test_probe_refuses_a_table_without_validation_rows():
    table = make_table()
    table.split[table.split == "val"] = "train"
    from arkx.errors import ArkxValueError

    with pytest.raises(ArkxValueError, match="no val rows"):
        probe(table, fractions=[1.0], seeds=[0])
