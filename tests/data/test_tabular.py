"""Tabular preprocessing fitted on train rows only, the missing-value policy, and TabularDataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from trainengine.data._readers import read_csv
from trainengine.data._tabular import TabularDataset, fit_tabular, select_rows
from trainengine.data._types import ReadOptions
from trainengine.errors import DataError


def _csv(tmp_path: Path, name: str, lines: list[str]):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return read_csv([path], ReadOptions(cache_dir=tmp_path / "cache"))


def _mixed(n: int = 40, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "age": rng.normal(40, 10, n),
            "income": rng.integers(0, 1000, n),
            "city": rng.choice(["NYC", "SF", "LA"], n).tolist(),
            "y": rng.choice(["no", "yes"], n).tolist(),
        }
    )


def test_statistics_come_from_the_train_rows_only() -> None:
    t = _mixed(40)
    train = np.arange(0, 40, 2)  # every other row: the rest must not influence the stats
    spec = fit_tabular(t, train, feature_columns=["age", "income"], label_column="y")
    for col in spec["columns"]:
        values = np.asarray(t.column(col["name"]).to_pylist(), dtype=np.float64)[train]
        assert col["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert col["std"] == pytest.approx(values.std(), rel=1e-12)  # population std (ddof=0)
        assert col["fill"] == col["mean"]
    full = fit_tabular(t, None, feature_columns=["age", "income"], label_column="y")
    assert full["columns"][0]["mean"] != spec["columns"][0]["mean"]


def test_regression_label_standardised_with_train_stats() -> None:
    t = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": [10.0, 20.0, 30.0, 1000.0]})
    spec = fit_tabular(t, np.array([0, 1, 2]), feature_columns=None, label_column="y", task_type="regression")
    mean, std = np.mean([10, 20, 30]), np.std([10, 20, 30])
    assert spec["label"] == {"column": "y", "type": "numeric", "mean": pytest.approx(mean), "std": pytest.approx(std)}
    ds = TabularDataset(t, np.arange(4), spec)
    _, y = ds[3]
    assert y.dtype == torch.float32 and y.shape == () and float(y) == pytest.approx((1000 - mean) / std, rel=1e-6)


def test_categories_are_the_top_k_by_frequency_with_missing_and_other_slots() -> None:
    city = ["b"] * 5 + ["a"] * 5 + ["c"] * 3 + ["d"] + [None]
    t = pa.table({"city": city, "y": ["p"] * len(city)})
    spec = fit_tabular(t, None, feature_columns=["city"], label_column="y", max_categories=2)
    # Ties broken by name: a (5), b (5); c and d go to "other".
    assert spec["columns"][0]["categories"] == ["a", "b"]
    assert spec["output_width"] == spec["dense_width"] == 4 and spec["codes"] == []
    x = TabularDataset(t, np.array([0, 5, 10, 13, 14]), spec).__getitems__(list(range(5))).collated[0]
    # Layout [missing, other, a, b]
    expected = [[0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]
    assert x.tolist() == expected
    assert spec["missing_counts"] == {"city": 1}


def test_default_columns_and_onehot_row() -> None:
    t = pa.table({"age": [20.0, 40.0], "ok": [True, False], "y": ["a", "b"]})
    spec = fit_tabular(t, None, feature_columns=None, label_column="y")
    assert spec["feature_columns"] == ["age", "ok"]
    assert [c["type"] for c in spec["columns"]] == ["numeric", "categorical"]  # bool -> categorical
    assert spec["columns"][1]["categories"] == ["false", "true"]
    x, y = TabularDataset(t, np.arange(2), spec)[0]
    assert x.tolist() == [-1.0, 0.0, 0.0, 0.0, 1.0] and y.dtype == torch.int64 and int(y) == 0


def test_embedding_layout_dense_then_codes() -> None:
    t = pa.table(
        {
            "c1": ["x", "y", None, "x", "z"],
            "n": [1.0, 3.0, 5.0, None, 7.0],
            "c2": ["p", "p", "q", "q", "p"],
            "y": ["a", "b", "a", "b", "a"],
        }
    )
    train = np.array([0, 1, 2, 3])  # "z" (row 4) is unseen in training
    spec = fit_tabular(t, train, feature_columns=None, label_column="y", encoding="embedding")
    assert spec["dense_width"] == 1 and spec["output_width"] == 3
    assert spec["codes"] == [{"name": "c1", "cardinality": 4}, {"name": "c2", "cardinality": 4}]
    x = TabularDataset(t, np.arange(5), spec).__getitems__(range(5)).collated[0]
    mean, std = np.mean([1, 3, 5]), np.std([1, 3, 5])
    np.testing.assert_allclose(x[:, 0].numpy(), (np.array([1, 3, 5, mean, 7]) - mean) / std, rtol=1e-6)
    # c1 categories ["x", "y"]: x -> 2, y -> 3, missing -> 0, unseen z -> 1 (other); c2 ["p", "q"].
    assert x[:, 1].tolist() == [2, 3, 0, 2, 1]
    assert x[:, 2].tolist() == [2, 2, 3, 3, 2]


def test_missing_fill_drop_and_error_policies(tmp_path: Path) -> None:
    table = _csv(tmp_path, "train.csv", ["a,c,y", "1,u,p", ",v,q", "3,,p", "4,u,", "5,v,q"])
    fill = fit_tabular(table, None, feature_columns=None, label_column="y", missing="fill")
    assert fill["missing_counts"] == {"a": 1, "c": 1, "y": 1}
    # Row 3's missing label is never filled: the stats leave it out.
    assert fill["columns"][0]["mean"] == pytest.approx(np.mean([1, 3, 5]))
    kept, report = select_rows(table, None, fill)
    assert kept.tolist() == [0, 1, 2, 4] and report["dropped_missing"] == 1 and report["kept"] == 4
    x = TabularDataset(table, kept, fill).__getitems__([1]).collated[0]
    assert x[0, 0].item() == pytest.approx(0.0)  # the fill (mean) standardises to 0

    drop = fit_tabular(table, None, feature_columns=None, label_column="y", missing="drop")
    assert drop["columns"][0]["mean"] == pytest.approx(np.mean([1, 5]))  # complete rows only
    kept, report = select_rows(table, None, drop)
    assert kept.tolist() == [0, 4] and report["dropped_missing"] == 3
    assert report["missing_counts"] == {"a": 1, "c": 1, "y": 1}

    with pytest.raises(DataError) as info:
        fit_tabular(table, None, feature_columns=None, label_column="y", missing="error")
    text = str(info.value)
    assert "'a'" in text and "1 missing" in text and "train.csv row 2" in text and "missing_values: fill" in text
    clean = fit_tabular(table, np.array([0, 4]), feature_columns=None, label_column="y", missing="error")
    with pytest.raises(DataError, match=r"column 'a' has a missing value at train\.csv row 2"):
        select_rows(table, np.array([0, 1]), clean)


def test_unseen_class_in_validation_names_value_and_row(tmp_path: Path) -> None:
    train = _csv(tmp_path, "train.csv", ["x,y", "1,cat", "2,dog", "3,cat"])
    val = _csv(tmp_path, "val.csv", ["x,y", "1,cat", "2,bird", "3,dog"])
    spec = fit_tabular(train, None, feature_columns=None, label_column="y")
    assert spec["label"]["classes"] == ["cat", "dog"]
    with pytest.raises(DataError) as info:
        select_rows(val, None, spec)
    text = str(info.value)
    assert "'bird'" in text and "val.csv row 2" in text and "['cat', 'dog']" in text


def test_numeric_classes_sort_by_value() -> None:
    t = pa.table({"x": [1.0, 2.0, 3.0], "y": [10, 2, 1]})
    spec = fit_tabular(t, None, feature_columns=None, label_column="y")
    assert spec["label"]["classes"] == ["1", "2", "10"]
    assert TabularDataset(t, np.arange(3), spec).__getitems__([0, 1, 2]).collated[1].tolist() == [2, 1, 0]


def test_column_problems_are_reported_together() -> None:
    t = pa.table({"s": ["a"], "n": [1.0], "y": ["p"]})
    with pytest.raises(DataError) as info:
        fit_tabular(t, None, feature_columns=["s", "nope"], categorical_columns=[], label_column="lbl")
    text = str(info.value)
    assert "'lbl'" in text and "['nope']" in text and "'s'" in text and "categorical_columns" in text


def test_getitems_equals_stacked_getitem() -> None:
    t = _mixed(30)
    spec = fit_tabular(t, np.arange(20), feature_columns=None, label_column="y")
    ds = TabularDataset(t, np.arange(5, 30), spec)
    idx = [7, 0, 24, 7, 3]  # unsorted, repeated
    x, y = ds.__getitems__(idx).collated
    assert x.shape == (5, spec["output_width"]) and x.dtype == torch.float32 and y.dtype == torch.int64
    singles = [ds[i] for i in idx]
    assert torch.equal(x, torch.stack([s[0] for s in singles]))
    assert torch.equal(y, torch.stack([s[1] for s in singles]))


def test_getitems_across_cached_record_batches(tmp_path: Path, monkeypatch) -> None:
    from trainengine.data import _readers

    monkeypatch.setattr(_readers, "_CSV_BLOCK", 64)  # small CSV blocks, each flushed as its own record batch
    monkeypatch.setattr(_readers, "_BATCH_ROWS", 7)
    lines = ["x,c,y"] + [f"{i},{'uv'[i % 2]},{'ab'[i % 3 == 0]}" for i in range(50)]
    table = _csv(tmp_path, "t.csv", lines)
    assert len(table.table.to_batches()) > 3
    spec = fit_tabular(table, None, feature_columns=None, label_column="y", standardize=False)
    ds = TabularDataset(table, np.arange(50), spec)
    x, y = ds.__getitems__([49, 3, 20, 8]).collated
    assert x[:, 0].tolist() == [49, 3, 20, 8]
    assert y.tolist() == [0, 1, 0, 0]  # classes ["a", "b"]; "b" when i % 3 == 0


def test_pickle_round_trip_reopens_the_memory_map(tmp_path: Path) -> None:
    table = _csv(tmp_path, "t.csv", ["x,c,y", *(f"{i},{'uvw'[i % 3]},{i % 2}" for i in range(200))])
    spec = fit_tabular(table, None, feature_columns=None, label_column="y")
    ds = TabularDataset(table, np.arange(10, 200), spec)
    blob = pickle.dumps(ds)
    assert len(blob) < 8000  # the table is not inside: workers map the cache file
    back = pickle.loads(blob)
    for a, b in zip(ds.__getitems__([0, 50, 189]).collated, back.__getitems__([0, 50, 189]).collated, strict=True):
        assert torch.equal(a, b)
    assert back.data_fingerprint == ds.data_fingerprint and len(back) == 190


def test_data_fingerprint_follows_file_bytes_rows_and_spec(tmp_path: Path) -> None:
    lines = ["x,y", "1,a", "2,b", "3,a"]
    a = _csv(tmp_path, "a.csv", lines)
    same = _csv(tmp_path, "copy.csv", lines)  # same content, other name: same cache entry
    lines[2] = "7,b"  # one byte differs
    other = _csv(tmp_path, "b.csv", lines)
    spec = fit_tabular(a, None, feature_columns=None, label_column="y")
    rows = np.arange(3)
    fp = TabularDataset(a, rows, spec).data_fingerprint
    assert TabularDataset(same, rows, spec).data_fingerprint == fp
    assert TabularDataset(other, rows, spec).data_fingerprint != fp
    assert TabularDataset(a, np.array([0, 1]), spec).data_fingerprint != fp
    spec2 = fit_tabular(a, np.array([0, 1]), feature_columns=None, label_column="y")
    assert TabularDataset(a, rows, spec2).data_fingerprint != fp
