"""The standalone runtime (inference.py): bundle verification, input checks, outputs, drift."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
import torch

from trainengine.serve import _runtime
from trainengine.serve._runtime import (
    PAD,
    BundleError,
    DriftWindow,
    InputError,
    OnnxPredictor,
    drift_divergences,
    drift_score,
    load_bundle,
    postprocess,
    preprocess,
)

DIGITS_MANIFEST = {"input": {"name": "input", "dtype": "float32", "shape": [None, 64]}}
IMAGE_MANIFEST = {"input": {"name": "input", "dtype": "float32", "shape": [None, 1, 8, 8]}}
CLASSIFY = {"task_type": "classification", "num_classes": 10}
LM_MANIFEST = {
    "input": {"dtype": "int64", "shape": [None, None], "max_sequence_length": 8},
    "output": {"shape": [None, None, 256]},
}
LM = {"task_type": "language_modeling", "num_classes": None}


def _row(n: int = 64, **at: object) -> list[object]:
    row: list[object] = [0.5] * n
    for k, v in at.items():
        row[int(k[1:])] = v
    return row


# ----------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "inputs: empty batch; send at least one example"),
        ({"x": 1}, "inputs: expected a list of examples, got an object"),
        ("abc", "inputs: expected a list of examples, got str 'abc'"),
        ([_row(63)], "inputs[0]: expected shape [64], got [63]"),
        ([_row(), _row(), _row(), _row(63)], "inputs[3]: expected shape [64], got [63]"),
        ([_row(), _row(c2="x")], "inputs[1][2]: not a number, got str 'x'"),
        ([_row(c0=True)], "inputs[0][0]: not a number, got bool true"),
        ([_row(c5=None)], "inputs[0][5]: not a number, got null"),
        ([_row(c7=[1.0])], "inputs[0][7]: not a number, got shape [1]"),
        ([5], "inputs[0]: expected shape [64], got int 5"),
        ([[_row()]], "inputs[0]: expected shape [64], got [1, 64]"),
        ([_row(c3=float("nan"))], "inputs[0][3]: not finite (nan)"),
        ([_row(), _row(c63=float("-inf"))], "inputs[1][63]: not finite (-inf)"),
        ([_row(c1=1e39)], "inputs[0][1]: 1e+39 is out of range for float32"),
        ([_row(c1=10**400)], "inputs[0]: a number is out of range for float32"),
    ],
)
def test_preprocess_names_the_offending_field(inputs: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        preprocess(inputs, DIGITS_MANIFEST, CLASSIFY)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and message.startswith(info.value.field + ":")


def test_preprocess_nested_image_shape_and_batch_limit() -> None:
    image = [[[0.0] * 8 for _ in range(8)]]
    ok = preprocess([image, image], IMAGE_MANIFEST, CLASSIFY)
    assert ok.shape == (2, 1, 8, 8) and ok.dtype == np.float32
    image[0][3] = [0.0] * 7
    with pytest.raises(InputError, match=r"^inputs\[1\]\[0\]\[3\]: expected shape \[8\], got \[7\]$"):
        preprocess([ok[0].tolist(), image], IMAGE_MANIFEST, CLASSIFY)
    with pytest.raises(InputError, match=r"^inputs: 3 examples exceed the batch limit of 2"):
        preprocess([_row()] * 3, DIGITS_MANIFEST, CLASSIFY, max_batch=2)


def test_preprocess_keeps_values_and_accepts_ints() -> None:
    x = preprocess([_row(c0=3, c1=-2.25)], DIGITS_MANIFEST, CLASSIFY)
    assert x[0, 0] == 3.0 and x[0, 1] == -2.25 and x[0, 2] == 0.5 and x.shape == (1, 64)


def test_preprocess_tokens_strings_lists_padding_and_cropping() -> None:
    x = preprocess(["ab", [1, 2, 3], "é"], LM_MANIFEST, LM)
    # UTF-8 bytes are the ids; rows are right-padded with PAD; "é" is two bytes.
    assert x.dtype == np.int64 and x.tolist() == [[97, 98, PAD], [1, 2, 3], [0xC3, 0xA9, PAD]]
    long = preprocess([list(range(20))], LM_MANIFEST, LM)
    assert long.tolist() == [list(range(12, 20))]  # the model's context: the last max_sequence_length tokens


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([""], "inputs[0]: empty text"),
        ([[]], "inputs[0]: empty token list"),
        (["ok", [1, "a"]], "inputs[1][1]: not a token id (an integer), got str 'a'"),
        ([[1, 2.0]], "inputs[0][1]: not a token id"),
        ([[1, 256]], r"inputs[0][1]: token id 256 is out of range [0, 256)"),
        ([[-1]], r"inputs[0][0]: token id -1 is out of range [0, 256)"),
        ([[2**70]], "inputs[0][0]: token id"),
        ([3.5], "inputs[0]: expected a string or a list of token ids, got float 3.5"),
    ],
)
def test_preprocess_tokens_errors(inputs: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        preprocess(inputs, LM_MANIFEST, LM)
    assert str(info.value).startswith(message)


# ----------------------------------------------------------------------------- outputs
def test_postprocess_classification_is_a_stable_softmax() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    out = postprocess(logits, CLASSIFY)
    expected = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=-1).numpy()
    assert [p["class"] for p in out] == [0, 2]
    np.testing.assert_allclose([p["probabilities"] for p in out], expected, rtol=1e-12, atol=1e-300)
    assert all(np.isfinite(p["probabilities"]).all() for p in out)


def test_postprocess_regression_and_non_finite_outputs() -> None:
    scaled = postprocess(
        np.array([[0.5], [-1.0]]), {"task_type": "regression"}, target_scaling={"mean": 150.0, "std": 10.0}
    )
    assert scaled == [{"value": 155.0}, {"value": 140.0}]
    assert postprocess(np.array([[1.0, 2.0]]), {"task_type": "regression"}) == [{"values": [1.0, 2.0]}]
    with pytest.raises(InputError, match=r"^inputs\[1\]: the model's output is not finite"):
        postprocess(np.array([[0.0, 1.0], [np.inf, 0.0]]), CLASSIFY)


def _successor_model(batch: np.ndarray) -> np.ndarray:
    """A fake LM that always predicts (last token + 1) % 256, confidently."""
    assert (batch >= 0).all(), "padding must be replaced before the model sees it"
    logits = np.full((*batch.shape, 256), -10.0, dtype=np.float32)  # (B, T, V)
    b, t = np.meshgrid(np.arange(batch.shape[0]), np.arange(batch.shape[1]), indexing="ij")
    logits[b, t, (batch + 1) % 256] = 10.0
    return logits


def test_postprocess_language_model_greedy_completion_with_mixed_lengths() -> None:
    tokens = preprocess(["abc", "x", [250]], LM_MANIFEST, LM)
    out = postprocess(
        _successor_model(_runtime.model_input(tokens)), LM, tokens=tokens, forward=_successor_model, max_seq_len=8
    )
    assert [p["next_token"] for p in out] == [ord("d"), ord("y"), 251]
    assert out[0]["completion"] == "defghijklmnopqrs" and out[1]["completion"] == "yz{|}~\x7f" + "\ufffd" * 9
    expected_p = np.exp(20.0) / (np.exp(20.0) + 255)  # softmax of one +10 among 255 at -10
    assert out[0]["next_token_probability"] == pytest.approx(expected_p, rel=1e-9)
    # 250, 251, ... wraps around to 0 after 255: bytes 0xFB..0xFF are invalid UTF-8 on their own.
    assert out[2]["completion"].endswith("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a")


# ----------------------------------------------------------------------------- bundles
def test_bundle_hash_matches_the_exporters(digits_bundle) -> None:
    from trainengine.export import bundle_sha256

    bundle = load_bundle(digits_bundle.path)
    assert bundle.content_sha256 == bundle_sha256(digits_bundle.path)
    assert bundle.name == "digits" and bundle.version == "unversioned" and bundle.task_type == "classification"


def test_tampered_bundle_is_refused(digits_bundle, copy_bundle) -> None:
    path = copy_bundle(digits_bundle.path)
    with (path / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(
        BundleError, match=r"failed verification: model\.onnx: content changed \(sha256 .*re-export the bundle"
    ):
        OnnxPredictor(path)
    assert load_bundle(path, verify=False).name == "digits"  # verification is what refused it
    (path / "task_spec.json").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: content changed .*task_spec\.json: missing"):
        load_bundle(path)


def test_unlisted_file_is_refused(digits_bundle, copy_bundle) -> None:
    # One contract with trainengine.export.verify_bundle: the bundle is exactly what its manifest
    # lists (an unlisted onnxruntime.py beside inference.py would shadow the real package).
    path = copy_bundle(digits_bundle.path)
    (path / "onnxruntime.py").write_text("raise SystemExit('shadowed')\n")
    with pytest.raises(BundleError, match=r"onnxruntime\.py: not listed in the manifest"):
        load_bundle(path)


def test_missing_or_newer_bundle_is_refused(digits_bundle, copy_bundle, tmp_path) -> None:
    with pytest.raises(BundleError, match="no export bundle at .*manifest.json not found .*does not exist"):
        load_bundle(tmp_path / "nope")
    path = copy_bundle(digits_bundle.path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 2
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version 2; this runtime reads format_version 1"):
        load_bundle(path)
    manifest["format_version"] = 1
    manifest["files"]["../outside.txt"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"'\.\./outside\.txt': not a path inside the bundle"):
        load_bundle(path)


def test_unknown_model_file_lists_the_available_ones(digits_bundle) -> None:
    with pytest.raises(BundleError, match=r"'model\.int8\.onnx' is not an ONNX model .* available: model\.onnx"):
        OnnxPredictor(digits_bundle.path, "model.int8.onnx")


def test_onnx_predictions_match_the_pytorch_model(digits_bundle, digits_val) -> None:
    x, y = digits_val
    predictions = OnnxPredictor(digits_bundle.path).predict(x.tolist())
    with torch.no_grad():
        probs = torch.softmax(digits_bundle.model(torch.from_numpy(x)).double(), dim=-1).numpy()
    np.testing.assert_allclose([p["probabilities"] for p in predictions], probs, atol=1e-5)
    classes = np.array([p["class"] for p in predictions])
    top2 = np.sort(probs, axis=1)[:, -2:]
    tie = top2[:, 1] - top2[:, 0] < 1e-5  # only a near tie may flip between runtimes
    assert ((classes == probs.argmax(1)) | tie).all()
    assert (classes == y).mean() > 0.9  # the fixture's model is trained, so the answers mean something


def test_examples_json_round_trips(digits_bundle, regression_bundle) -> None:
    for info in (digits_bundle, regression_bundle):
        examples = json.loads((info.path / "examples.json").read_text())
        got = OnnxPredictor(info.path).predict(examples["inputs"])
        for g, e in zip(got, examples["predictions"], strict=True):
            assert g.keys() == e.keys()
            if "class" in g:
                assert g["class"] == e["class"]
                np.testing.assert_allclose(g["probabilities"], e["probabilities"], atol=1e-5)


def test_examples_json_of_a_scaled_regression_matches_the_server(regression_bundle) -> None:
    examples = json.loads((regression_bundle.path / "examples.json").read_text())
    got = OnnxPredictor(regression_bundle.path).predict(examples["inputs"])
    np.testing.assert_allclose([p["value"] for p in got], [p["value"] for p in examples["predictions"]], rtol=1e-5)


def test_regression_predictions_are_unscaled(regression_bundle) -> None:
    x = torch.stack([regression_bundle.val[i][0] for i in range(8)])
    got = [p["value"] for p in OnnxPredictor(regression_bundle.path).predict(x.tolist())]
    with torch.no_grad():
        raw = regression_bundle.model(x)[:, 0].double().numpy()
    scale = regression_bundle.target_scaling
    np.testing.assert_allclose(got, raw * scale["std"] + scale["mean"], rtol=1e-5)
    assert 25 < np.mean(got) < 346  # in the data set's target range, not standardised


def test_language_model_completion_equals_greedy_generate(gpt_bundle) -> None:
    predictor = OnnxPredictor(gpt_bundle.path)
    prompts = ["def f(x):", "import o", "a" * 40]  # mixed lengths; the last is longer than the context (32)
    got = predictor.predict(prompts)
    for prompt, prediction in zip(prompts, got, strict=True):
        ids = torch.tensor([list(prompt.encode())])
        generated = gpt_bundle.model.generate(ids, max_new_tokens=16, temperature=0)[0, ids.shape[1] :].tolist()
        assert prediction["next_token"] == generated[0]
        assert prediction["completion"] == bytes(generated).decode("utf-8", errors="replace")
        with torch.no_grad():
            p = torch.softmax(gpt_bundle.model(ids[:, -32:])[0, -1].double(), -1)[generated[0]].item()
        assert prediction["next_token_probability"] == pytest.approx(p, abs=1e-5)


def test_torch_predictor_agrees_with_onnx(digits_bundle, regression_bundle, gpt_bundle, digits_val) -> None:
    from trainengine.serve._torch import TorchPredictor

    x = digits_val[0][:64].tolist()
    a, b = OnnxPredictor(digits_bundle.path).predict(x), TorchPredictor(digits_bundle.path).predict(x)
    np.testing.assert_allclose([p["probabilities"] for p in a], [p["probabilities"] for p in b], atol=1e-5)
    xr = [regression_bundle.val[i][0].tolist() for i in range(16)]
    a, b = OnnxPredictor(regression_bundle.path).predict(xr), TorchPredictor(regression_bundle.path).predict(xr)
    np.testing.assert_allclose([p["value"] for p in a], [p["value"] for p in b], rtol=1e-4)
    prompts = ["hello", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "x"]
    a, b = OnnxPredictor(gpt_bundle.path).predict(prompts), TorchPredictor(gpt_bundle.path).predict(prompts)
    assert [(p["next_token"], p["completion"]) for p in a] == [(p["next_token"], p["completion"]) for p in b]
    np.testing.assert_allclose(
        [p["next_token_probability"] for p in a], [p["next_token_probability"] for p in b], atol=1e-5
    )


# ----------------------------------------------------------------------------- drift
def test_drift_equals_compare_profiles_on_features(digits_bundle, digits_val) -> None:
    from trainengine.data import InMemoryDataset
    from trainengine.monitoring import DatasetProfile, compare_profiles, profile_dataset

    reference = json.loads((digits_bundle.path / "reference_profile.json").read_text())
    ref = DatasetProfile.from_dict(reference)
    x = digits_val[0]
    for current in (x, x + 3.0, x[:50] * 0.5):
        expected = compare_profiles(ref, profile_dataset(InMemoryDataset((torch.from_numpy(current),)), reference=ref))
        assert drift_score(reference, current) == pytest.approx(expected.overall, abs=1e-9)
        got = drift_divergences(reference, current)
        assert got.keys() == expected.per_feature.keys()
        assert max(abs(got[k] - expected.per_feature[k]) for k in got) < 1e-9
    assert drift_score(reference, x) < 0.05 and drift_score(reference, x + 3.0) > 0.5


def test_drift_equals_compare_profiles_on_tokens(gpt_bundle) -> None:
    from trainengine.data import ListDataset
    from trainengine.monitoring import DatasetProfile, compare_profiles, profile_dataset

    reference = json.loads((gpt_bundle.path / "reference_profile.json").read_text())
    ref = DatasetProfile.from_dict(reference)
    rng = np.random.default_rng(0)
    train_rows = [gpt_bundle.train[i][0].numpy() for i in range(len(gpt_bundle.train))]
    for current in (train_rows[:40], [rng.integers(0, 256, size=n) for n in rng.integers(1, 33, size=60)]):
        dataset = ListDataset([torch.as_tensor(r, dtype=torch.int64) for r in current])
        expected = compare_profiles(ref, profile_dataset(dataset, gpt_bundle.task, reference=ref))
        assert drift_score(reference, current) == pytest.approx(expected.overall, abs=1e-9)
        assert drift_divergences(reference, current) == pytest.approx(expected.per_feature, abs=1e-9)


def test_drift_window_is_bounded_and_keeps_the_latest(digits_bundle) -> None:
    reference = json.loads((digits_bundle.path / "reference_profile.json").read_text())
    window = DriftWindow(reference, max_examples=100)
    assert window.score() is None
    rng = np.random.default_rng(0)
    rows = rng.random((537, 64)).astype(np.float32)
    for start in range(0, 537, 37):  # batches that wrap around the ring buffer at odd offsets
        window.add(rows[start : start + 37])
    assert window.num_examples == 100 and window._buffer.shape == (100, 64)
    assert window.score() == pytest.approx(drift_score(reference, rows[-100:]), abs=1e-12)
    window.add(rows[:250])  # a batch larger than the window keeps its last 100
    assert window.score() == pytest.approx(drift_score(reference, rows[150:250]), abs=1e-12)


def test_token_drift_window_bounds_tokens(gpt_bundle) -> None:
    reference = json.loads((gpt_bundle.path / "reference_profile.json").read_text())
    window = DriftWindow(reference, max_examples=50, max_tokens=100)
    for _ in range(20):
        window.add(preprocess(["abcdefghij", "xyz"], LM_MANIFEST, LM))
    assert sum(r.size for r in window._rows) <= 100 and window.num_examples <= 50
    assert all(r.min() >= 0 for r in window._rows)  # padding is not counted as tokens


def test_runtime_docstring_examples() -> None:
    result = doctest.testmod(_runtime, optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL)
    assert result.failed == 0 and result.attempted > 10
