"""Serving raw inputs: records encoded with the bundle's preprocessing.json, text with its tokenizer.json.

The standalone runs use ``python -S`` with only the virtualenv's site-packages on the path (no
trainengine), as tests/serve/test_serve_standalone.py does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from trainengine._preprocess import encode_records
from trainengine.models import build_model
from trainengine.serve import BundleError, InputError, OnnxPredictor, load_bundle
from trainengine.tasks import TaskSpec

SPEC = {
    "kind": "tabular",
    "version": 1,
    "feature_columns": ["age", "city", "income"],
    "standardize": True,
    "missing_values": "fill",
    "encoding": "onehot",
    "columns": [
        {"name": "age", "type": "numeric", "mean": 40.0, "std": 10.0, "fill": 38.0},
        {"name": "city", "type": "categorical", "categories": ["NYC", "SF"]},
        {"name": "income", "type": "numeric", "mean": 50.0, "std": 5.0, "fill": 50.0},
    ],
    "dense_width": 6,
    "codes": [],
    "output_width": 6,
    "label": {"column": "churn", "type": "class", "classes": ["stays", "leaves"]},
    "missing_counts": {},
}
RECORDS = [{"age": 30, "city": "SF", "income": 61.5}, {"city": "Rome"}, [55, None, 40], {"age": 41, "churn": "x"}]
TEXT = "one two three two one three three one two"


def _export(model: torch.nn.Module, task: TaskSpec, out: Path, formats: tuple = ("onnx", "pytorch"), **kw) -> Path:
    from trainengine.export import create_export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_export_bundle(model.eval(), task_spec=task, formats=formats, output_dir=out, **kw)


@pytest.fixture(scope="module")
def tabular(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("mlp", input_dim=6, output_dim=2, hidden_dims=(8,)).eval()
    # The drift reference: encoded training rows, as a TabularDataset yields them.
    gen = np.random.default_rng(0)
    raw = [
        {"age": float(a), "city": c} for a, c in zip(gen.normal(40, 10, 64), gen.choice(["NYC", "SF"], 64), strict=True)
    ]
    train = [(torch.from_numpy(row), 0) for row in encode_records(SPEC, raw)]
    bundle = _export(model, TaskSpec.classification("churn", 2), tmp_path_factory.mktemp("tab"), preprocessing=SPEC,
                     reference_data=train)  # fmt: skip
    return bundle, model


@pytest.fixture(scope="module")
def token_bundle(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("tok")
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([TEXT], trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"]))
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    model = build_model("gpt", vocab_size=tok.get_vocab_size(), max_seq_len=16, d_model=16, n_heads=2, n_layers=1)
    # PyTorch format only: a GPT's ONNX export costs seconds, and the token path is the same for both runtimes.
    bundle = _export(model, TaskSpec.language_modeling("words"), tmp_path_factory.mktemp("lm"), ("pytorch",),
                     tokenizer_dir=folder, raw_examples=["one two", "three"])  # fmt: skip
    return bundle, model


def _expected(model: torch.nn.Module, records: list) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(encode_records(SPEC, records))).double(), -1).numpy()


def test_predictor_encodes_raw_records_as_in_training(tabular) -> None:
    bundle, model = tabular
    predictor = OnnxPredictor(bundle)
    assert predictor.bundle.preprocessing == SPEC
    batch = predictor.preprocess(RECORDS)
    assert batch.shape == (4, 6) and batch.dtype == np.float32
    np.testing.assert_allclose(
        batch[1], [-0.2, 0, 1, 0, 0, 0], atol=1e-7
    )  # age filled (38), Rome is "other", income mean
    predictions = predictor.predict(RECORDS)
    probs = _expected(model, RECORDS)
    assert [p["class"] for p in predictions] == probs.argmax(1).tolist()
    assert [p["label"] for p in predictions] == [["stays", "leaves"][c] for c in probs.argmax(1)]
    np.testing.assert_allclose([p["probabilities"] for p in predictions], probs, atol=1e-5)


def test_torch_runtime_applies_the_same_preprocessing(tabular) -> None:
    from trainengine.serve._torch import TorchPredictor

    bundle, model = tabular
    predictions = TorchPredictor(bundle).predict(RECORDS)
    np.testing.assert_allclose([p["probabilities"] for p in predictions], _expected(model, RECORDS), atol=1e-5)


@pytest.mark.parametrize(
    ("inputs", "field", "words"),
    [
        ([{"age": 1}, {"age": "old"}], "inputs[1].age", "not a number"),
        ([{"town": "SF"}], "inputs[0].town", "unknown column"),
        ([[1, "SF"]], "inputs[0]", "expected 3 values in the order age, city, income"),
        ([[0.1] * 6], "inputs[0]", "expected 3 values"),  # an encoded row is not accepted as raw values
    ],
)
def test_bad_records_name_the_field(tabular, inputs, field, words) -> None:
    with pytest.raises(InputError) as info:
        OnnxPredictor(tabular[0]).predict(inputs)
    assert info.value.field == field and words in str(info.value)


def test_http_answers_labels_rejects_bad_records_and_watches_drift_on_encoded_rows(tabular) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient asks for httpx2
        from fastapi.testclient import TestClient
    from trainengine.serve import create_app

    app = create_app(tabular[0], drift_min_examples=1)
    with TestClient(app) as client:
        ok = client.post("/predict", json={"inputs": RECORDS})
        assert ok.status_code == 200 and [p["label"] for p in ok.json()["predictions"]] == [
            ["stays", "leaves"][c] for c in _expected(tabular[1], RECORDS).argmax(1)
        ]
        bad = client.post("/predict", json={"inputs": [{"age": 3, "city": ["SF"]}]})
        assert bad.status_code == 422 and bad.json()["field"] == "inputs[0].city"
        assert "not a category value" in bad.json()["detail"]
        app.state.drift.fold()  # requests hand their rows over; they enter the window in bulk
        window = app.state.drift.window
        assert window is not None and window.num_examples == len(RECORDS)  # the encoded rows, not the bad request
        assert window.score() is not None


def test_a_spec_that_does_not_fit_the_model_is_refused_at_load(tabular, tmp_path) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tabular[0], copy)
    spec = {**SPEC, "columns": SPEC["columns"][:2], "feature_columns": ["age", "city"], "output_width": 5}
    (copy / "preprocessing.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="failed verification"):
        load_bundle(copy)
    with pytest.raises(BundleError, match=r"encodes 5 values per example but the model takes input shape \[None, 6\]"):
        load_bundle(copy, verify=False)


def test_text_is_tokenized_and_completions_decoded_with_the_bundle_tokenizer(token_bundle) -> None:
    from tokenizers import Tokenizer

    from trainengine.serve._torch import TorchPredictor

    bundle, model = token_bundle
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    predictor = TorchPredictor(bundle)
    batch = predictor.preprocess(["one two three", "two"])
    assert batch[0].tolist() == tokenizer.encode("one two three", add_special_tokens=False).ids
    assert batch[1, 0] == tokenizer.token_to_id("two") and (batch[1, 1:] == -1).all()  # right padding
    prediction = predictor.predict(["one two three"])[0]
    ids = tokenizer.encode("one two three", add_special_tokens=False).ids
    with torch.no_grad():
        for _ in range(16):
            ids.append(int(model(torch.tensor([ids[-16:]]))[0, -1].argmax()))
    assert prediction["next_token"] == ids[3] and prediction["completion"] == tokenizer.decode(ids[3:])
    assert predictor.predict([[0, 1]])[0]["next_token"] >= 0  # token ids are still accepted


def _python(args: list[str], cwd: Path, site_packages: str) -> subprocess.CompletedProcess:
    """``python -S`` with only site-packages on the path: ``import trainengine`` fails there."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(PYTHONPATH=site_packages, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def _run(bundle: Path, inputs: list, site_packages: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"inputs": inputs}))
    return _python(["inference.py", "--input", str(path)], bundle, site_packages)


def test_standalone_inference_script_takes_raw_records(tabular, site_packages, tmp_path) -> None:
    bundle = tabular[0]
    examples = json.loads((bundle / "examples.json").read_text())
    assert all(isinstance(r, dict) for r in examples["inputs"])
    result = _run(bundle, examples["inputs"], site_packages, tmp_path)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)["predictions"]
    assert [(p["class"], p["label"]) for p in got] == [(p["class"], p["label"]) for p in examples["predictions"]]
    np.testing.assert_allclose(
        [p["probabilities"] for p in got], [p["probabilities"] for p in examples["predictions"]], atol=1e-5
    )
    result = _run(bundle, [{"age": 3}, {"city": 1, "zip": 2}], site_packages, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: inputs[1].zip: unknown column; the model's columns are: age, city, income"
    assert not (tabular[0] / "__pycache__").exists()


def test_standalone_runtime_tokenizes_with_the_bundle_tokenizer(token_bundle, site_packages) -> None:
    from tokenizers import Tokenizer

    bundle = token_bundle[0]
    code = (
        "import inference, json; p = inference.load_bundle('.'); t = inference.load_tokenizer(p); "
        "b = inference.preprocess(['one two three'], p.manifest, p.task, tokenizer=t); "
        "print(json.dumps([b.tolist(), t.decode([1, 2])]))"
    )
    result = _python(["-c", code], bundle, site_packages)
    assert result.returncode == 0, result.stderr
    batch, text = json.loads(result.stdout)
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    assert batch == [tokenizer.encode("one two three", add_special_tokens=False).ids]
    assert text == tokenizer.decode([1, 2])
