"""File readers into the Arrow cache: CSV/TSV, JSONL, Parquet, HF save_to_disk; bad rows; the cache itself."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainengine.data import _readers
from trainengine.data._readers import read_csv, read_hf_disk, read_jsonl, read_parquet, row_location
from trainengine.data._types import ReadOptions
from trainengine.errors import DataError


def _opts(tmp_path: Path, **kwargs) -> ReadOptions:
    return ReadOptions(cache_dir=tmp_path / "cache", **kwargs)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------- CSV


def test_csv_types_and_missing_values(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.csv", ["age,city,score", "30,NYC,1.5", ",SF,NA", "41,,null"])
    got = read_csv([f], _opts(tmp_path))
    assert got.table.column("age").to_pylist() == [30, None, 41]
    assert got.table.column("city").to_pylist() == ["NYC", "SF", None]
    assert got.table.column("score").to_pylist() == [1.5, None, None]
    assert got.meta["format"] == "csv" and got.meta["bad_rows"] == 0
    assert got.meta["sources"][0]["rows"] == 3 and len(got.meta["sources"][0]["sha256"]) == 64


def test_csv_wrong_field_count_error_names_file_line_and_fix(tmp_path: Path) -> None:
    f = _write(tmp_path / "train.csv", ["x,y,c", "1,2.5,a", "2,3.5,b", "3,4,c,EXTRA", "4,5,d"])
    with pytest.raises(DataError) as info:
        read_csv([f], _opts(tmp_path))
    text = str(info.value)
    assert "train.csv line 4" in text and "expected 3 fields, found 4" in text
    assert "data.bad_rows: skip" in text


def test_csv_skip_drops_exactly_the_bad_row_and_counts_it(tmp_path: Path) -> None:
    f = _write(tmp_path / "train.csv", ["x,y,c", "1,2.5,a", "2,3.5,b", "3,4,c,EXTRA", "4,5,d", "5,6"])
    got = read_csv([f], _opts(tmp_path, bad_rows="skip"))
    assert got.table.to_pydict() == {"x": [1, 2, 4], "y": [2.5, 3.5, 5.0], "c": ["a", "b", "d"]}
    assert got.meta["bad_rows"] == 2
    assert [(Path(e["file"]).name, e["line"]) for e in got.meta["bad_row_examples"]] == [
        ("train.csv", 4),
        ("train.csv", 6),
    ]
    # Table row 2 is the file's 4th data row: the skipped 3rd one still counts.
    assert row_location(got.meta, 2) == "train.csv row 4"


def test_csv_conversion_error_in_a_later_block_has_the_exact_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_readers, "_CSV_BLOCK", 64)  # types come from the first block: the bad value is far after it
    lines = ["x,y"] + [f"{i},{i * 2}" for i in range(200)]
    lines[151] = "150,abc"  # physical line 152
    f = _write(tmp_path / "big.csv", lines)
    with pytest.raises(DataError) as info:
        read_csv([f], _opts(tmp_path))
    text = str(info.value)
    assert "big.csv line 152" in text and "'abc'" in text and "column 'y'" in text and "data.bad_rows: skip" in text

    got = read_csv([f], _opts(tmp_path, bad_rows="skip"))
    assert got.table.num_rows == 199 and got.meta["bad_rows"] == 1
    assert got.meta["bad_row_examples"][0]["line"] == 152
    assert got.table.column("y").type == pa.int64()
    assert 300 not in got.table.column("y").to_pylist()  # the row of 150 is the one gone
    assert row_location(got.meta, 150) == "big.csv row 152"


def test_csv_int_column_with_a_later_decimal_becomes_float(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_readers, "_CSV_BLOCK", 64)
    lines = ["x,y"] + [f"{i},{i}" for i in range(100)]
    lines[90] = "89,2.5"
    got = read_csv([_write(tmp_path / "t.csv", lines)], _opts(tmp_path))
    assert got.table.column("y").type == pa.float64()
    assert got.table.column("y")[89].as_py() == 2.5 and got.table.column("y")[10].as_py() == 10.0


def test_tsv_uses_tab_and_delimiter_option(tmp_path: Path) -> None:
    tsv = _write(tmp_path / "t.tsv", ["a\tb", "1\tx,y"])
    assert read_csv([tsv], _opts(tmp_path)).table.to_pydict() == {"a": [1], "b": ["x,y"]}
    semi = _write(tmp_path / "t.txt", ["a;b", "1;2"])
    assert read_csv([semi], _opts(tmp_path, delimiter=";")).table.to_pydict() == {"a": [1], "b": [2]}


def test_csv_multiple_files_unify_types_and_map_rows_back(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", ["x,y", "1,u", "2,v"])
    b = _write(tmp_path / "b.csv", ["y,x", "w,2.5", "bad", "z,4"])  # other column order, float x, a bad row
    got = read_csv([a, b], _opts(tmp_path, bad_rows="skip"))
    assert got.table.column_names == ["x", "y"]
    assert got.table.column("x").type == pa.float64()
    assert got.table.to_pydict() == {"x": [1.0, 2.0, 2.5, 4.0], "y": ["u", "v", "w", "z"]}
    assert [s["rows"] for s in got.meta["sources"]] == [2, 2]
    assert [row_location(got.meta, i) for i in range(4)] == ["a.csv row 1", "a.csv row 2", "b.csv row 1", "b.csv row 3"]


def test_csv_files_with_different_columns_are_named(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", ["x,y", "1,2"])
    b = _write(tmp_path / "b.csv", ["x,z", "1,2"])
    with pytest.raises(DataError) as info:
        read_csv([a, b], _opts(tmp_path))
    text = str(info.value)
    assert "b.csv" in text and "a.csv" in text and "missing ['y']" in text and "extra ['z']" in text


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.csv"):
        read_csv([tmp_path / "nope.csv"], _opts(tmp_path))


# ------------------------------------------------------------------------------------------- cache


def test_cache_is_reused_and_rebuilt_when_damaged(tmp_path: Path, monkeypatch) -> None:
    f = _write(tmp_path / "t.csv", ["x,y", *(f"{i},{i % 3}" for i in range(50))])
    first = read_csv([f], _opts(tmp_path))
    expected = first.table.to_pydict()

    def no_parsing(*args, **kwargs):
        raise AssertionError("the CSV was parsed again although its cache entry exists")

    monkeypatch.setattr(_readers, "_open_csv", no_parsing)
    again = read_csv([f], _opts(tmp_path))  # a cache hit: never opens the CSV
    assert again.path == first.path and again.table.to_pydict() == expected
    monkeypatch.undo()

    del first, again  # release the memory maps before damaging the file
    path = read_csv([f], _opts(tmp_path)).path
    assert path is not None
    path.write_bytes(path.read_bytes()[:100])  # truncated: no longer a valid entry
    rebuilt = read_csv([f], _opts(tmp_path))
    assert rebuilt.path == path and rebuilt.table.to_pydict() == expected
    assert path.stat().st_size > 100  # written anew, whole

    f.write_text("x,y\n1,1\n")  # a changed file gets a new entry
    assert read_csv([f], _opts(tmp_path)).path != path


# ------------------------------------------------------------------------------------------- JSONL


def test_jsonl_reads_and_widens_ints(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.jsonl", ['{"x": 1, "t": "a"}', "", '{"x": 2.5, "t": null}'])
    got = read_jsonl([f], _opts(tmp_path))
    assert got.table.to_pydict() == {"x": [1.0, 2.5], "t": ["a", None]}
    assert got.meta["format"] == "jsonl" and got.meta["sources"][0]["rows"] == 2


def test_jsonl_bad_line_error_and_skip(tmp_path: Path) -> None:
    lines = ['{"x": 1, "t": "a"}', "", '{"x": 2, "t": "b"}', '{"x": 3, "t": ', '{"x": 4, "t": "d"}']
    lines += ['{"x": "five", "t": "e"}', '{"x": 6, "t": "f"}']
    f = _write(tmp_path / "d.jsonl", lines)
    with pytest.raises(DataError) as info:
        read_jsonl([f], _opts(tmp_path))
    text = str(info.value)
    assert "d.jsonl line 4" in text and "not valid JSON" in text and "data.bad_rows: skip" in text

    got = read_jsonl([f], _opts(tmp_path, bad_rows="skip"))
    assert got.table.to_pydict() == {"x": [1, 2, 4, 6], "t": ["a", "b", "d", "f"]}
    assert got.meta["bad_rows"] == 2
    assert [e["line"] for e in got.meta["bad_row_examples"]] == [4, 6]
    assert "'five'" in got.meta["bad_row_examples"][1]["problem"]
    # Records exclude blank lines: table row 2 ({"x": 4}) is the 4th record.
    assert [row_location(got.meta, i) for i in range(4)] == [
        "d.jsonl row 1",
        "d.jsonl row 2",
        "d.jsonl row 4",
        "d.jsonl row 6",
    ]


def test_jsonl_non_object_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.jsonl", ['{"x": 1}', "[1, 2]", '{"x": 3}'])
    with pytest.raises(DataError, match=r"d\.jsonl line 2: a JSON list, not an object"):
        read_jsonl([f], _opts(tmp_path))


# ----------------------------------------------------------------------------------------- Parquet


def test_parquet_row_groups_and_type_unification(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"x": list(range(10)), "c": ["u"] * 10}), a, row_group_size=3)
    pq.write_table(pa.table({"c": ["v", None], "x": [0.5, 1.5]}), b)
    got = read_parquet([a, b], _opts(tmp_path))
    assert got.table.column_names == ["x", "c"] and got.table.column("x").type == pa.float64()
    assert got.table.column("x").to_pylist() == [*map(float, range(10)), 0.5, 1.5]
    assert got.table.column("c").to_pylist()[-2:] == ["v", None]
    assert [s["rows"] for s in got.meta["sources"]] == [10, 2]
    assert row_location(got.meta, 11) == "b.parquet row 2"


def test_parquet_damaged_file_is_named(tmp_path: Path) -> None:
    f = tmp_path / "broken.parquet"
    f.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"broken\.parquet.*Parquet"):
        read_parquet([f], _opts(tmp_path))


# --------------------------------------------------------------------------------- HF save_to_disk


def _features():
    datasets = pytest.importorskip("datasets")
    return datasets, datasets.Features(
        {"x": datasets.Value("int64"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )


def test_hf_dataset_folder_with_class_labels_as_names(tmp_path: Path) -> None:
    datasets, features = _features()
    datasets.Dataset.from_dict({"x": [1, 2, 3], "label": [0, 1, 0]}, features=features).save_to_disk(tmp_path / "ds")
    got = read_hf_disk([tmp_path / "ds"], _opts(tmp_path))
    assert got.table.to_pydict() == {"x": [1, 2, 3], "label": ["neg", "pos", "neg"]}
    assert got.meta["format"] == "hf_disk" and got.meta["sources"][0]["rows"] == 3


def test_hf_dataset_dict_split_selection_and_missing_split(tmp_path: Path) -> None:
    datasets, features = _features()
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"x": [1, 2, 3], "label": [0, 1, 0]}, features=features),
            "test": datasets.Dataset.from_dict({"x": [9], "label": [1]}, features=features),
        }
    )
    dd.save_to_disk(tmp_path / "dd")
    assert read_hf_disk([tmp_path / "dd"], _opts(tmp_path, split="test")).table.to_pydict() == {
        "x": [9],
        "label": ["pos"],
    }
    assert read_hf_disk([tmp_path / "dd"], _opts(tmp_path, split="train")).table.num_rows == 3
    with pytest.raises(DataError) as info:
        read_hf_disk([tmp_path / "dd"], _opts(tmp_path, split="validation"))
    assert "'validation'" in str(info.value) and "['test', 'train']" in str(info.value)
    with pytest.raises(DataError, match=r"names no split.*\['test', 'train'\]"):
        read_hf_disk([tmp_path / "dd"], _opts(tmp_path))


def test_hf_not_a_dataset_folder(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty is not a dataset folder.*save_to_disk"):
        read_hf_disk([tmp_path / "empty"], _opts(tmp_path))


# ---------------------------------------------------------------------------------------- locations


def test_row_location_across_files_with_skipped_rows() -> None:
    meta = {
        "sources": [
            {"path": "/d/a.csv", "rows": 3, "skipped": [0, 2]},  # records 1 and 3 dropped: kept 2, 4, 5
            {"path": "/d/b.csv", "rows": 2, "skipped": []},
        ]
    }
    assert [row_location(meta, i) for i in range(5)] == [
        "a.csv row 2",
        "a.csv row 4",
        "a.csv row 5",
        "b.csv row 1",
        "b.csv row 2",
    ]
    assert row_location(meta, 7) == "row 8"  # beyond the sources: a plain row number
