"""Export bundles carry what serving needs to take raw inputs: preprocessing.json, tokenizer.json, class names."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from trainengine._preprocess import encode_records, output_width
from trainengine.errors import ExportError
from trainengine.export import create_export_bundle, verify_bundle
from trainengine.models import build_model
from trainengine.tasks import TaskSpec

SPEC = {
    "kind": "tabular",
    "version": 1,
    "feature_columns": ["age", "city"],
    "standardize": True,
    "missing_values": "fill",
    "encoding": "onehot",
    "columns": [
        {"name": "age", "type": "numeric", "mean": 40.0, "std": 10.0, "fill": 40.0},
        {"name": "city", "type": "categorical", "categories": ["NYC", "SF", "LA"]},
    ],
    "dense_width": 6,
    "codes": [],
    "output_width": 6,
    "label": {"column": "pet", "type": "class", "classes": ["cat", "dog", "fish"]},
    "missing_counts": {"age": 2},
}
TEXT = "the cat sat on the mat and the dog ran to the cat"


def _export(model: torch.nn.Module, task: TaskSpec, out: Path, **kwargs) -> Path:
    """A bundle in the PyTorch format only: these tests check the serving files, not the model formats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_export_bundle(model.eval(), task_spec=task, formats=["pytorch"], output_dir=out, **kwargs)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def tabular_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", input_dim=output_width(SPEC), output_dim=3, hidden_dims=(8,)).eval()


@pytest.fixture(scope="module")
def tabular_bundle(tabular_model, tmp_path_factory) -> Path:
    return _export(
        tabular_model, TaskSpec.classification("pets", 3), tmp_path_factory.mktemp("tab"), preprocessing=SPEC
    )


def _word_tokenizer(folder: Path) -> Path:
    """A real WordLevel tokenizer (the `tokenizers` library) saved as folder/tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([TEXT], trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"]))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_tabular_bundle_holds_the_spec_its_code_and_raw_examples(tabular_bundle, tabular_model) -> None:
    names = {p.name for p in tabular_bundle.iterdir()}
    assert {"preprocessing.json", "_preprocess.py", "inference.py", "_numeric.py"} <= names
    assert verify_bundle(tabular_bundle) == []  # both new files are hashed in the manifest
    manifest = _json(tabular_bundle / "manifest.json")
    assert {"preprocessing.json", "_preprocess.py"} <= set(manifest["files"])
    assert _json(tabular_bundle / "preprocessing.json") == SPEC
    assert manifest["preprocessing"]["feature_columns"] == ["age", "city"]
    assert manifest["preprocessing"]["output_width"] == 6 and manifest["input"]["shape"] == [None, 6]
    assert manifest["class_names"] == ["cat", "dog", "fish"]  # from the spec's label classes

    examples = _json(tabular_bundle / "examples.json")
    assert all(isinstance(r, dict) and set(r) == {"age", "city"} for r in examples["inputs"])
    with torch.no_grad():
        logits = tabular_model(torch.from_numpy(encode_records(SPEC, examples["inputs"]))).double()
    probs = torch.softmax(logits, -1).numpy()
    preds = examples["predictions"]
    assert [p["class"] for p in preds] == probs.argmax(1).tolist()
    assert [p["label"] for p in preds] == [["cat", "dog", "fish"][c] for c in probs.argmax(1)]
    np.testing.assert_allclose([p["probabilities"] for p in preds], probs, atol=1e-5)

    readme = (tabular_bundle / "README.md").read_text()
    assert "`age`, `city`" in readme and json.dumps(examples["inputs"][0]) in readme and '"label"' in readme
    assert "tokenizers" not in (tabular_bundle / "requirements.txt").read_text()


def test_given_raw_examples_go_into_examples_json(tabular_model, tmp_path) -> None:
    raw = [{"age": 31, "city": "SF"}, {"city": "Paris"}, [None, "LA"]]
    bundle = _export(tabular_model, TaskSpec.classification("pets", 3), tmp_path, preprocessing=SPEC, raw_examples=raw)
    examples = _json(bundle / "examples.json")
    assert examples["inputs"] == raw and len(examples["predictions"]) == 3


def test_regression_label_statistics_unscale_predictions(tmp_path) -> None:
    spec = {**SPEC, "label": {"column": "price", "type": "numeric", "mean": 300.0, "std": 20.0}}
    torch.manual_seed(0)
    model = build_model("mlp", input_dim=6, output_dim=1, hidden_dims=(8,)).eval()
    bundle = _export(model, TaskSpec.regression("prices"), tmp_path, preprocessing=spec)
    manifest = _json(bundle / "manifest.json")
    assert manifest["target_scaling"] == {"mean": 300.0, "std": 20.0} and "class_names" not in manifest
    examples = _json(bundle / "examples.json")
    with torch.no_grad():
        out = model(torch.from_numpy(encode_records(spec, examples["inputs"]))).squeeze(-1).double().numpy()
    np.testing.assert_allclose([p["value"] for p in examples["predictions"]], out * 20.0 + 300.0, rtol=1e-5)


def test_class_names_without_preprocessing(tmp_path) -> None:
    model = build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(4,))
    bundle = _export(model, TaskSpec.classification("x", 2), tmp_path, class_names=["left", "right"])
    manifest = _json(bundle / "manifest.json")
    assert manifest["class_names"] == ["left", "right"] and "preprocessing" not in manifest
    assert "_preprocess.py" not in {p.name for p in bundle.iterdir()}  # only bundles with preprocessing.json
    assert all(p["label"] == ["left", "right"][p["class"]] for p in _json(bundle / "examples.json")["predictions"])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"preprocessing": {**SPEC, "output_width": 7}}, ["preprocessing is not a usable spec", "output_width 7"]),
        ({"preprocessing": {**SPEC, "version": 9}}, ["version 9"]),
        ({"class_names": ["a", "b"]}, ["2 class names", "3 outputs"]),
        ({"preprocessing": SPEC, "raw_examples": [{"age": "old"}]}, ["raw_examples[0].age", "not a number"]),
        ({"tokenizer_dir": "."}, ["tokenizer_dir is for language-model bundles"]),
    ],
)
def test_bad_serving_arguments_fail_the_export(kwargs, words, tmp_path) -> None:
    model = build_model("mlp", input_dim=6, output_dim=3, hidden_dims=(4,))
    with pytest.raises(ExportError) as info:
        _export(model, TaskSpec.classification("pets", 3), tmp_path, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert not list(tmp_path.iterdir()) or all(not p.name.startswith("model_") for p in tmp_path.iterdir())


def test_preprocessing_must_match_the_model_width(tmp_path) -> None:
    model = build_model("mlp", input_dim=5, output_dim=3, hidden_dims=(4,))
    with pytest.raises(ExportError, match=r"encodes 6 values per example .* shape \[4, 5\]"):
        _export(
            model, TaskSpec.classification("pets", 3), tmp_path, preprocessing=SPEC, example_input=torch.zeros(4, 5)
        )


def test_token_bundle_ships_the_tokenizer(tmp_path) -> None:
    from tokenizers import Tokenizer

    folder = _word_tokenizer(tmp_path / "tok")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size()
    torch.manual_seed(0)
    model = build_model("gpt", vocab_size=vocab, max_seq_len=16, d_model=16, n_heads=2, n_layers=1).eval()
    bundle = _export(
        model,
        TaskSpec.language_modeling("words"),
        tmp_path / "out",
        tokenizer_dir=folder,
        raw_examples=["the cat sat", "dog"],
    )
    assert (bundle / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    manifest = _json(bundle / "manifest.json")
    assert manifest["tokenizer"] == {"kind": "hf", "file": "tokenizer.json", "vocab_size": vocab}
    assert "tokenizer.json" in manifest["files"] and verify_bundle(bundle) == []
    assert any(line.startswith("tokenizers==") for line in (bundle / "requirements.txt").read_text().splitlines())

    # The completion of "the cat sat" is the greedy continuation decoded by the tokenizer, computed here in torch.
    examples = _json(bundle / "examples.json")
    assert examples["inputs"] == ["the cat sat", "dog"]
    ids = tokenizer.encode("the cat sat", add_special_tokens=False).ids
    with torch.no_grad():
        for _ in range(16):
            ids.append(int(model(torch.tensor([ids[-16:]]))[0, -1].argmax()))
    completion = tokenizer.decode(ids[3:])
    assert examples["predictions"][0]["completion"] == completion and examples["predictions"][0]["next_token"] == ids[3]
    assert "tokenizer.json" in (bundle / "README.md").read_text()


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(tmp_path) -> None:
    folder = _word_tokenizer(tmp_path / "tok")
    model = build_model("gpt", vocab_size=4, max_seq_len=8, d_model=8, n_heads=2, n_layers=1)
    with pytest.raises(ExportError, match=r"tokenizer has \d+ tokens but the model's vocabulary has 4"):
        _export(model, TaskSpec.language_modeling("words"), tmp_path / "out", tokenizer_dir=folder)


def test_byte_tokenizer_folder_needs_no_tokenizer_file(tmp_path) -> None:
    folder = tmp_path / "byte"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"kind": "byte", "vocab_size": 256, "eos_id": 0}))
    model = build_model("gpt", vocab_size=256, max_seq_len=8, d_model=8, n_heads=2, n_layers=1)
    bundle = _export(model, TaskSpec.language_modeling("bytes"), tmp_path / "out", tokenizer_dir=folder)
    manifest = _json(bundle / "manifest.json")
    assert manifest["tokenizer"]["kind"] == "byte" and "tokenizer.json" not in manifest["files"]
    assert "tokenizers" not in (bundle / "requirements.txt").read_text()

    with pytest.raises(ExportError, match="no tokenizer in .*tokenizer.json"):
        _export(model, TaskSpec.language_modeling("bytes"), tmp_path / "out", tokenizer_dir=tmp_path / "out")
