"""Your own files from the CLI: CSV, JSONL text, Parquet, image folders and save_to_disk folders
train end to end, and the run record says what was read, dropped, filled and fitted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from trainengine.cli.main import main

FAST = ["--output-dir", "runs", "--set", "tracking.progress=off", "--set", "data.cache_dir=cache"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _train(capsys, *args: str) -> tuple[int, str]:
    code = main(["train", *args, *FAST])
    out, err = capsys.readouterr()
    return code, out + err


def _run_json(root: Path) -> dict:
    (run,) = root.glob("runs/*/*/run.json")
    return json.loads(run.read_text())


def _mixed_csv(path: Path, n: int, seed: int) -> dict:
    """Numeric x1, numeric x2 with blanks, categorical city with blanks, a yes/no label that x1 and city decide."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(5.0, 2.0, n).round(3)
    x2 = rng.normal(-1.0, 0.5, n).round(3)
    city = rng.choice(["paris", "oslo", "lima"], n)
    label = np.where((x1 - 5.0) + 2.0 * (city == "oslo") > 0.5, "yes", "no")
    x2_blank = rng.random(n) < 0.1
    city_blank = rng.random(n) < 0.05
    lines = ["x1,x2,city,label"]
    for i in range(n):
        lines.append(f"{x1[i]},{'' if x2_blank[i] else x2[i]},{'' if city_blank[i] else city[i]},{label[i]}")
    path.write_text("\n".join(lines) + "\n")
    return {"x1": x1, "x2_blank": int(x2_blank.sum()), "city_blank": int(city_blank.sum())}


def test_csv_with_categories_and_missing_values_trains_and_records_its_preprocessing(in_tmp, capsys):
    facts = _mixed_csv(in_tmp / "train.csv", 300, seed=0)
    _mixed_csv(in_tmp / "val.csv", 80, seed=1)
    _mixed_csv(in_tmp / "test.csv", 80, seed=2)
    code, out = _train(
        capsys,
        "--train-file", "train.csv", "--val-file", "val.csv", "--test-file", "test.csv",
        "--max-steps", "60", "--lr", "0.01",
    )  # fmt: skip
    assert code == 0, out
    run = _run_json(in_tmp)
    source = run["data"]["source"]
    assert source["format"] == "csv" and source["kind"] == "tabular"
    train = source["splits"]["train"]
    assert train["sources"][0]["sha256"] == hashlib.sha256((in_tmp / "train.csv").read_bytes()).hexdigest()
    assert train["rows_read"] == 300 and train["samples"] == 300  # fill: nothing dropped
    assert run["task"]["task_type"] == "classification" and run["task"]["num_classes"] == 2

    # The standardisation comes from the training file alone (independently recomputed here).
    prep = json.loads(next(in_tmp.glob("runs/*/*/preprocessing.json")).read_text())
    x1 = next(c for c in prep["columns"] if c["name"] == "x1")
    assert x1["mean"] == pytest.approx(float(facts["x1"].mean()), rel=1e-9)
    assert x1["std"] == pytest.approx(float(facts["x1"].std()), rel=1e-6)
    assert prep["missing_counts"]["x2"] == facts["x2_blank"]
    assert prep["missing_counts"]["city"] == facts["city_blank"]
    city = next(c for c in prep["columns"] if c["name"] == "city")
    assert city["type"] == "categorical" and sorted(city["categories"]) == ["lima", "oslo", "paris"]
    assert prep["label"]["classes"] == ["no", "yes"]

    # The test file was evaluated once after training; the signal is strong enough to learn.
    test = run["results"]["test_metrics"]
    assert test["test/accuracy"] > 0.8, test

    # Exported from the run directory, the bundle serves RAW records through the same preprocessing.
    from trainengine.serve import load_bundle
    from trainengine.serve._torch import TorchPredictor

    run_dir = next(in_tmp.glob("runs/*/*"))
    assert main(["export", "--checkpoint", str(run_dir), "--formats", "pytorch", "--output-dir", "exports"]) == 0
    bundle = load_bundle(next(in_tmp.glob("exports/*")))
    assert json.loads((bundle.path / "preprocessing.json").read_text()) == prep
    records = [{"x1": 9.5, "x2": None, "city": "oslo"}, {"x1": 1.0, "x2": -1.0, "city": "a city never seen"}]
    answers = TorchPredictor(bundle.path).predict(records)
    assert [a["label"] for a in answers] == ["yes", "no"]  # x1 far above / below the boundary


def test_missing_values_drop_policy_counts_the_dropped_rows(in_tmp, capsys):
    facts = _mixed_csv(in_tmp / "train.csv", 200, seed=3)
    code, out = _train(capsys, "--train-file", "train.csv", "--max-steps", "3", "--set", "data.missing_values=drop")
    assert code == 0, out
    source = _run_json(in_tmp)["data"]["source"]
    kept = source["splits"]["train"]["samples"] + source["splits"]["val"]["samples"]
    assert source["val_held_out"] is True
    # Every row with a blank x2 or city is gone (a row may have both blanks).
    assert 200 - facts["x2_blank"] - facts["city_blank"] <= kept < 200


def test_a_bad_row_stops_with_its_file_and_line_or_is_skipped_and_counted(in_tmp, capsys):
    lines = ["a,b,label"] + [f"{i},{i * 2},{i % 2}" for i in range(40)]
    lines.insert(6, "1,2,3,4")  # line 7 of the file: one field too many
    (in_tmp / "bad.csv").write_text("\n".join(lines) + "\n")
    code, out = _train(capsys, "--train-file", "bad.csv", "--max-steps", "2")
    assert code == 2
    assert "bad.csv" in out and "7" in out and "bad_rows" in out, out
    code, out = _train(capsys, "--train-file", "bad.csv", "--max-steps", "2", "--set", "data.bad_rows=skip")
    assert code == 0, out
    train = _run_json(in_tmp)["data"]["source"]["splits"]["train"]
    assert train["bad_rows"] == 1 and train["rows_read"] == 40


def test_jsonl_text_trains_a_language_model_with_the_byte_tokenizer(in_tmp, capsys):
    docs = [{"text": f"document {i}: " + "the quick brown fox jumps over the lazy dog. " * 3} for i in range(40)]
    (in_tmp / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    code, out = _train(
        capsys, "--train-file", "corpus.jsonl", "--max-steps", "4",
        "--set", "data.max_length=32", "--set", "model.max_seq_len=32", "--set", "model.d_model=32",
        "--set", "model.n_layers=1", "--set", "model.n_heads=2",
    )  # fmt: skip
    assert code == 0, out
    run = _run_json(in_tmp)
    assert run["task"]["task_type"] == "language_modeling"
    source = run["data"]["source"]
    assert source["format"] == "jsonl" and source["kind"] == "language_modeling" and source["column"] == "text"
    assert source["tokenizer"]["kind"] == "byte"
    # The tail of the token stream is the validation split; every token is counted once (+1 shared).
    total = sum(len(d["text"].encode()) for d in docs)
    tokens = source["splits"]["train"]["tokens"] + source["splits"]["val"]["tokens"]
    assert total <= tokens <= total + len(docs) + 1


def test_a_trained_tokenizer_sizes_the_model_and_is_saved_with_the_run(in_tmp, capsys):
    tokenizers = pytest.importorskip("tokenizers")
    text = "".join(f"line {i} of a small corpus about trains and engines.\n" for i in range(200))
    (in_tmp / "corpus.txt").write_text(text)
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]", "</s>"])
    tok.train_from_iterator(text.splitlines(), trainer)
    (in_tmp / "tok").mkdir()
    tok.save(str(in_tmp / "tok" / "tokenizer.json"))
    code, out = _train(
        capsys, "--train-file", "corpus.txt", "--max-steps", "3", "--set", "data.tokenizer=tok",
        "--set", "data.max_length=16", "--set", "model.max_seq_len=16", "--set", "model.d_model=32",
        "--set", "model.n_layers=1", "--set", "model.n_heads=2", "--set", "checkpointing.enabled=true",
        "--set", "checkpointing.save_every_n_steps=3",
    )  # fmt: skip
    assert code == 0, out
    run = _run_json(in_tmp)
    assert run["model"]["config"]["vocab_size"] == tok.get_vocab_size()
    run_dir = next(in_tmp.glob("runs/*/*"))
    saved = tokenizers.Tokenizer.from_file(str(run_dir / "tokenizer" / "tokenizer.json"))
    assert saved.encode("trains and engines").ids == tok.encode("trains and engines").ids
    # The checkpoint carries it too, so export works from the checkpoint alone: the bundle's server
    # encodes text with the trained tokenizer (its ids are all below the BPE vocabulary).
    meta = json.loads(next(run_dir.glob("checkpoints/ckpt-*/meta.json")).read_text())
    assert meta["meta"]["data"]["tokenizer"]["vocab_size"] == tok.get_vocab_size()
    import shutil

    shutil.rmtree(run_dir / "tokenizer")  # only the checkpoint's copy is left
    ckpt = next(run_dir.glob("checkpoints/ckpt-*"))
    assert main(["export", "--checkpoint", str(ckpt), "--formats", "pytorch", "--output-dir", "exports"]) == 0
    bundle = next(in_tmp.glob("exports/*"))
    assert tokenizers.Tokenizer.from_file(str(bundle / "tokenizer.json")).get_vocab_size() == tok.get_vocab_size()
    assert "tokenizers" in (bundle / "requirements.txt").read_text()


def test_parquet_float_label_is_regression_with_a_standardised_target(in_tmp, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (200, 3))
    y = 100.0 + 20.0 * x[:, 0] - 5.0 * x[:, 1]
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "price": y}), in_tmp / "houses.parquet")
    code, out = _train(
        capsys, "--train-file", "houses.parquet", "--max-steps", "5", "--set", "data.label_column=price"
    )  # fmt: skip
    assert code == 0, out
    run = _run_json(in_tmp)
    assert run["task"]["task_type"] == "regression"
    prep = json.loads(next(in_tmp.glob("runs/*/*/preprocessing.json")).read_text())
    assert prep["label"]["column"] == "price"
    assert 80.0 < prep["label"]["mean"] < 120.0 and prep["label"]["std"] > 5.0
    assert [c["name"] for c in prep["columns"]] == ["a", "b", "c"]


def test_image_folder_trains_the_cnn(in_tmp, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, channel in (("red", 0), ("blue", 2)):
        (in_tmp / "images" / cls).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
            pixels[..., channel] = 200
            Image.fromarray(pixels).save(in_tmp / "images" / cls / f"{i}.png")
    code, out = _train(capsys, "--train-file", "images", "--max-steps", "3", "--set", "data.image_size=16")
    assert code == 0, out
    run = _run_json(in_tmp)
    assert run["data"]["source"]["format"] == "imagefolder"
    assert run["data"]["source"]["class_names"] == ["blue", "red"]
    assert run["task"]["modality"] == "image" and run["model"]["class"] == "SmallCNN"


def test_a_save_to_disk_dataset_dict_uses_its_train_and_validation_splits(in_tmp, capsys):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)

    def part(n: int) -> dict:
        x = rng.normal(0, 1, n)
        return {"x": x.tolist(), "z": rng.normal(0, 1, n).tolist(), "label": (x > 0).astype(int).tolist()}

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(part(120)), "validation": datasets.Dataset.from_dict(part(30))}
    )
    dd.save_to_disk(str(in_tmp / "hfdata"))
    code, out = _train(capsys, "--train-file", "hfdata", "--max-steps", "3")
    assert code == 0, out
    source = _run_json(in_tmp)["data"]["source"]
    assert source["format"] == "hf_disk" and source["val_held_out"] is False
    assert source["splits"]["train"]["samples"] == 120 and source["splits"]["val"]["samples"] == 30


def test_file_errors_say_what_to_fix(in_tmp, capsys):
    code, out = _train(capsys, "--train-file", "nope/*.csv")
    assert code == 2 and "matches no file" in out
    (in_tmp / "d.csv").write_text("a,b\n1,2\n3,4\n")
    code, out = _train(capsys, "--train-file", "d.csv")
    assert code == 2 and "data.label_column" in out and "a, b" in out
    code, out = _train(capsys, "--train-file", "d.csv", "--set", "data.label_column=c")
    assert code == 2 and "'c'" in out and "a, b" in out
    (in_tmp / "d.xlsx").write_text("")
    code, out = _train(capsys, "--train-file", "d.xlsx")
    assert code == 2 and "data.format" in out


def test_leakage_between_files_is_found_in_batches(tmp_path):
    from trainengine.data import FileDataOptions, check_overlap, load_files

    rows = [f"{i},{i % 3},{i % 2}" for i in range(300)]
    (tmp_path / "train.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    # 7 validation rows copy training inputs (one with another label: still a leak), 13 are new.
    val = rows[:6] + ["6,0,1"] + [f"{1000 + i},{i % 3},{i % 2}" for i in range(13)]
    (tmp_path / "val.csv").write_text("a,b,label\n" + "\n".join(val) + "\n")
    splits = load_files(
        FileDataOptions(
            train_file=str(tmp_path / "train.csv"), val_file=str(tmp_path / "val.csv"), cache_dir=str(tmp_path / "c")
        )
    )
    with pytest.warns(UserWarning, match="7 of 20 validation samples"):
        assert check_overlap(splits.train, splits.val) == 7
