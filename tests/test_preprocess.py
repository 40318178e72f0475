"""trainengine._preprocess: the tabular encoding shared by training and serving (layout, rule, errors)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from trainengine import _preprocess
from trainengine._preprocess import (
    PreprocessError,
    check_spec,
    decode_rows,
    encode_columns,
    encode_records,
    normalize_category,
    output_width,
)


def _spec(encoding: str = "onehot", missing: str = "fill", standardize: bool = True) -> dict:
    spec = {
        "kind": "tabular",
        "version": 1,
        "feature_columns": ["age", "city", "income"],
        "standardize": standardize,
        "missing_values": missing,
        "encoding": encoding,
        "columns": [
            {"name": "age", "type": "numeric", "mean": 40.0, "std": 10.0, "fill": 35.0},
            {"name": "city", "type": "categorical", "categories": ["NYC", "SF", "7"]},
            {"name": "income", "type": "numeric", "mean": 100.0, "std": 0.0, "fill": 100.0},  # constant column
        ],
        "label": {"column": "y", "type": "class", "classes": ["no", "yes"]},
    }
    spec["output_width"] = output_width(spec)
    return spec


def test_docstring_examples() -> None:
    result = doctest.testmod(_preprocess, optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL)
    assert result.failed == 0 and result.attempted >= 8


def test_category_rule_matches_the_documented_cases() -> None:
    cases = [
        ("SF", "SF"),
        ("", ""),
        (True, "true"),
        (np.bool_(False), "false"),
        (7, "7"),
        (np.int64(7), "7"),
        (7.0, "7"),  # an int column read as float still matches
        (np.float32(2.5), "2.5"),
        (0.1, "0.1"),
        (float("nan"), None),
        (None, None),
    ]
    assert [normalize_category(v) for v, _ in cases] == [expected for _, expected in cases]


def test_onehot_layout_standardises_and_fills() -> None:
    spec = _spec()
    x = encode_columns(
        spec,
        {
            "age": np.array([50.0, np.nan, 20.0]),
            "city": np.array(["SF", None, "Rome"], dtype=object),
            "income": np.array([130.0, 100.0, np.nan]),
        },
    )
    assert x.dtype == np.float32 and x.shape == (3, 1 + 5 + 1) == (3, spec["output_width"])
    # age: (50-40)/10, missing -> fill 35 -> -0.5; city slots [missing, other, NYC, SF, 7]; income std 0 counts as 1.
    np.testing.assert_allclose(x[0], [1.0, 0, 0, 0, 1, 0, 30.0])
    np.testing.assert_allclose(x[1], [-0.5, 1, 0, 0, 0, 0, 0.0])
    np.testing.assert_allclose(x[2], [-2.0, 0, 1, 0, 0, 0, 0.0])


def test_embedding_layout_puts_codes_after_the_dense_part() -> None:
    spec = _spec(encoding="embedding", standardize=False)
    x = encode_columns(
        spec,
        {"age": [50.0, None, 20.0], "city": [7, None, "NYC"], "income": [1.0, 2.0, 3.0]},
    )
    assert x.shape == (3, 3) == (3, output_width(spec))
    # dense: age, income (raw, not standardised); then the city code: 0 missing, 1 other, 2 + k.
    np.testing.assert_array_equal(x, [[50.0, 1.0, 4.0], [35.0, 2.0, 0.0], [20.0, 3.0, 2.0]])


def test_records_as_objects_and_lists_encode_like_columns() -> None:
    spec = _spec()
    records = [
        {"age": 50, "city": "SF", "income": 130.5, "y": "yes"},  # the label column is ignored
        {"city": 7.0},  # missing keys are missing values; 7.0 is the category "7"
        [20, True, None],  # a list in feature_columns order; True -> "true", not a category -> other
    ]
    x = encode_records(spec, records)
    expected = encode_columns(
        spec,
        {
            "age": np.array([50.0, np.nan, 20.0]),
            "city": np.array(["SF", "7", "true"], dtype=object),
            "income": np.array([130.5, np.nan, np.nan]),
        },
    )
    np.testing.assert_array_equal(x, expected)
    assert x[1, 1 + 4] == 1.0 and x[2, 1 + 1] == 1.0  # "7" is categories[2]; "true" is other


@pytest.mark.parametrize(
    ("records", "missing", "path", "words"),
    [
        ([{"age": 1}, {}, {"agee": 3}], "fill", "inputs[2].agee", ["unknown column", "age, city, income"]),
        ([[1, "SF"]], "fill", "inputs[0]", ["expected 3 values", "age, city, income", "got 2"]),
        ([{"age": "41"}], "fill", "inputs[0].age", ["not a number", "str '41'"]),
        ([{"age": True}], "fill", "inputs[0].age", ["not a number", "bool true"]),
        ([[float("inf"), "SF", 1]], "fill", "inputs[0][0]", ["not finite"]),
        ([{"city": {"name": "SF"}}], "fill", "inputs[0].city", ["not a category value", "an object"]),
        ([{"age": 1, "city": "SF"}], "drop", "inputs[0].income", ["missing value", "'income'", "'drop'"]),
        ([{"age": None, "city": "SF", "income": 1}], "error", "inputs[0].age", ["missing value", "'error'"]),
        (["a,b,c"], "fill", "inputs[0]", ["expected an object", "str 'a,b,c'"]),
    ],
)
def test_record_errors_name_the_field_and_the_fix(records, missing, path, words) -> None:
    with pytest.raises(PreprocessError) as info:
        encode_records(_spec(missing=missing), records)
    assert info.value.path == path and str(info.value).startswith(path + ": ")
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in info.value.problem


def test_missing_values_fill_only_under_fill() -> None:
    x = encode_records(_spec(missing="fill"), [{"age": None, "city": None, "income": float("nan")}])
    assert x[0, 0] == pytest.approx(-0.5) and x[0, 1] == 1.0  # age filled with 35; city in the missing slot


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"kind": "image"}, ["kind 'image'"]),
        ({"version": 2}, ["version 2", "update trainengine"]),
        ({"encoding": "hash"}, ["encoding 'hash'"]),
        ({"output_width": 99}, ["output_width 99", "(7)"]),
        ({"feature_columns": ["age", "city"]}, ["do not match feature_columns"]),
    ],
)
def test_check_spec_refuses_specs_it_cannot_apply(change, words) -> None:
    check_spec(_spec())
    with pytest.raises(ValueError) as info:
        check_spec({**_spec(), **change})
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
def test_decode_rows_inverts_the_encoding(encoding) -> None:
    spec = _spec(encoding=encoding)
    x = encode_records(spec, [{"age": 51.5, "city": "7", "income": 90}, {"city": "Rome"}, {"age": 3}])
    records = decode_rows(spec, x)
    assert records[1]["city"] == "<other>" and records[2]["city"] is None and records[0]["city"] == "7"
    np.testing.assert_allclose(encode_records(spec, records), x, atol=1e-5)
    assert all(not isinstance(r["age"], float) or math.isfinite(r["age"]) for r in records)


@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
def test_serving_records_encode_exactly_like_the_training_dataset(encoding) -> None:
    """Parity: rows through data's TabularDataset (Arrow) == the same rows as JSON through encode_records."""
    import json

    import pyarrow as pa

    from trainengine.data._tabular import TabularDataset, fit_tabular

    table = pa.table(
        {
            "age": pa.array([30, None, 52, 41, 29, 63, 35, 47, 38, 71], pa.int64()),
            "score": pa.array([0.5, 1.25, None, 2.0, 3.5, 0.75, 1.0, None, 9.5, -1.0], pa.float64()),
            "city": ["NYC", "SF", None, "NYC", "LA", "SF", "NYC", "Oslo", "Rome", ""],  # Rome: unseen in train
            "member": pa.array([True, False, None, True, True, False, True, False, None, True]),
            "zip": pa.array([10001, 94105, 10001, None, 90001, 94105, 10001, 10001, 11111, 94105], pa.int64()),
            "y": ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"],
        }
    )
    train = np.arange(8)
    spec = fit_tabular(
        table,
        train,
        feature_columns=None,
        label_column="y",
        categorical_columns=["city", "member", "zip"],
        encoding=encoding,
        max_categories=2,  # "LA" / "Oslo" and rare zips fall into "other"
    )
    check_spec(spec)
    dataset = TabularDataset(table, np.arange(len(table)), spec)
    x_train_side = dataset.__getitems__(list(range(len(table)))).collated[0].numpy()
    records = json.loads(json.dumps(table.to_pylist()))  # what a client sends: the label key is ignored
    np.testing.assert_array_equal(encode_records(spec, records), x_train_side)
    assert x_train_side.shape == (10, spec["output_width"])
