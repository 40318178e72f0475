"""The FastAPI app: /predict, /health, /metrics, limits, API keys, runtimes, drift."""

from __future__ import annotations

import asyncio
import json
import math
import warnings

import numpy as np
import pytest
import torch

from trainengine.serve import BundleError, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient asks for httpx2; the serve extra installs httpx
    from fastapi.testclient import TestClient


def _sample(metrics: dict, metric: str, /, **labels: str) -> float:
    return metrics.get((metric, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def digits_client(digits_bundle):
    with TestClient(create_app(digits_bundle.path)) as client:
        yield client


def test_predict_answers_like_the_pytorch_model(digits_client, digits_bundle, digits_val) -> None:
    x = digits_val[0][:32]
    response = digits_client.post("/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "digits" and body["version"] == "unversioned" and len(body["predictions"]) == 32
    with torch.no_grad():
        probs = torch.softmax(digits_bundle.model(torch.from_numpy(x)).double(), -1).numpy()
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], probs, atol=1e-5)
    assert [p["class"] for p in body["predictions"]] == probs.argmax(1).tolist()


@pytest.mark.parametrize(
    ("payload", "status", "detail"),
    [
        ({"inputs": [[0.0] * 64] * 3 + [[0.0] * 63]}, 422, "inputs[3]: expected shape [64], got [63]"),
        ({"inputs": [[0.0, 0.0, "7"] + [0.0] * 61]}, 422, "inputs[0][2]: not a number, got str '7'"),
        ({"inputs": []}, 422, "inputs: empty batch; send at least one example"),
        ({"inputs": None}, 422, "inputs: expected a list of examples, got null"),
        ({"input": [[0.0] * 64]}, 422, 'inputs: missing; send {"inputs": [example, ...]}, got an object without it'),
        ([[0.0] * 64], 422, "inputs: missing"),
        ({"inputs": [[0.0] * 64] * 1025}, 422, "inputs: 1025 examples exceed the batch limit of 1024"),
    ],
)
def test_malformed_inputs_are_422_naming_the_field(digits_client, payload, status, detail) -> None:
    response = digits_client.post("/predict", json=payload)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b'{"inputs": [[0.0, ', 400, "request body is not valid JSON"),
        (b"", 400, "request body is not valid JSON"),
        (b"\xff\xfe\x00garbage", 400, "request body is not valid JSON"),
        (
            b"[" * 200_000 + b"]" * 200_000,
            400,
            "request body is not valid JSON",
        ),  # deeper than the parser's recursion limit
        (b'{"inputs": [[NaN' + b", 0.0" * 63 + b"]]}", 422, "inputs[0][0]: not finite (nan)"),
        (b'{"inputs": [[1e39' + b", 0.0" * 63 + b"]]}", 422, "inputs[0][0]: 1e+39 is out of range for float32"),
    ],
)
def test_bad_json_is_a_client_error(digits_bundle, body, status, detail) -> None:
    with TestClient(create_app(digits_bundle.path, max_body_bytes=1_000_000)) as client:
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(detail)


def test_body_over_the_limit_is_413(digits_bundle) -> None:
    app = create_app(digits_bundle.path, max_body_bytes=2000)
    small = json.dumps({"inputs": [[0.0] * 64]}).encode()
    big = json.dumps({"inputs": [[0.0] * 64] * 20}).encode()
    with TestClient(app) as client:
        declared = client.post("/predict", content=big, headers={"content-type": "application/json"})
        assert declared.status_code == 413 and "exceeds the limit of 2000 bytes" in declared.json()["detail"]

        def chunks(data: bytes):  # no Content-Length: the server must count what it reads
            for i in range(0, len(data), 256):
                yield data[i : i + 256]

        streamed = client.post("/predict", content=chunks(big), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert client.post("/predict", content=chunks(small)).status_code == 200
        metrics = client.get("/metrics").text
    assert 'trainengine_serve_requests_total{endpoint="/predict",status="413"} 2.0' in metrics


def test_api_key(digits_bundle, metrics_of) -> None:
    good = {"inputs": [[0.0] * 64]}
    with TestClient(create_app(digits_bundle.path, api_key="s3cret-key")) as client:
        assert client.post("/predict", json=good).status_code == 401
        assert client.post("/predict", json=good, headers={"X-API-Key": "s3cret-kex"}).status_code == 401
        assert client.post("/predict", json=good, headers={"Authorization": "Basic s3cret-key"}).status_code == 401
        denied = client.get("/metrics")
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert "X-API-Key" in denied.json()["detail"]
        assert client.get("/health").status_code == 200  # load balancers probe without the key
        assert client.post("/predict", json=good, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert client.post("/predict", json=good, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        metrics = metrics_of(client.get("/metrics", headers={"x-api-key": "s3cret-key"}).text)
    assert _sample(metrics, "trainengine_serve_requests_total", endpoint="/predict", status="401") == 3
    assert _sample(metrics, "trainengine_serve_requests_total", endpoint="/metrics", status="401") == 1
    assert _sample(metrics, "trainengine_serve_requests_total", endpoint="/predict", status="200") == 2


def test_health(digits_bundle, regression_bundle) -> None:
    from trainengine.export import bundle_sha256

    with TestClient(create_app(regression_bundle.path)) as client:
        health = client.get("/health").json()
        first = health["uptime_s"]
        assert client.get("/health").json()["uptime_s"] >= first >= 0
    assert health["status"] == "ok" and health["name"] == "diabetes" and health["version"] == "1.2.0"
    assert health["runtime"] == "onnx" and health["artifact_sha256"] == bundle_sha256(regression_bundle.path)


def test_metrics_count_requests_batches_and_predictions(digits_bundle, digits_val, metrics_of) -> None:
    x = digits_val[0]
    with TestClient(create_app(digits_bundle.path)) as client:
        classes: list[int] = []
        for size in (1, 3, 40):
            response = client.post("/predict", json={"inputs": x[:size].tolist()})
            classes += [p["class"] for p in response.json()["predictions"]]
        client.post("/predict", json={"inputs": [[1]]})
        client.get("/health")
        client.get("/nope")
        text = client.get("/metrics").text
    m = metrics_of(text)
    assert _sample(m, "trainengine_serve_requests_total", endpoint="/predict", status="200") == 3
    assert _sample(m, "trainengine_serve_requests_total", endpoint="/predict", status="422") == 1
    assert _sample(m, "trainengine_serve_requests_total", endpoint="/health", status="200") == 1
    assert _sample(m, "trainengine_serve_requests_total", endpoint="other", status="404") == 1
    assert _sample(m, "trainengine_serve_request_latency_seconds_count", endpoint="/predict") == 4
    assert (
        _sample(m, "trainengine_serve_batch_size_count") == 3 and _sample(m, "trainengine_serve_batch_size_sum") == 44
    )
    assert _sample(m, "trainengine_serve_batch_size_bucket", le="2.0") == 1
    for c in range(10):
        assert _sample(m, "trainengine_serve_predicted_class_total", class_id=str(c)) == classes.count(c)
    from trainengine.export import bundle_sha256

    sha = bundle_sha256(digits_bundle.path)
    assert (
        _sample(
            m, "trainengine_serve_model_info", name="digits", version="unversioned", runtime="onnx", artifact_sha256=sha
        )
        == 1
    )
    assert _sample(m, "trainengine_serve_drift_threshold") == 0.2


def test_regression_and_language_model_endpoints(regression_bundle, gpt_bundle, metrics_of) -> None:
    xr = [regression_bundle.val[i][0].tolist() for i in range(5)]
    with TestClient(create_app(regression_bundle.path)) as client:
        body = client.post("/predict", json={"inputs": xr}).json()
        assert body["version"] == "1.2.0" and all(set(p) == {"value"} for p in body["predictions"])
        m = metrics_of(client.get("/metrics").text)
    values = [p["value"] for p in body["predictions"]]
    buckets = {
        float(dict(labels)["le"]): v
        for (name, labels), v in m.items()
        if name == "trainengine_serve_prediction_value_bucket"
    }
    assert len(buckets) > 10 and buckets[math.inf] == 5 == _sample(m, "trainengine_serve_prediction_value_count")
    assert all(count == sum(v <= le for v in values) for le, count in buckets.items())
    finite = sorted(le for le in buckets if le != math.inf)
    assert finite[0] < min(values) and max(values) < finite[-1]  # buckets span the un-scaled target range
    with TestClient(create_app(gpt_bundle.path)) as client:
        body = client.post("/predict", json={"inputs": ["def ", [100, 101, 102]]}).json()
        assert [set(p) for p in body["predictions"]] == [{"next_token", "next_token_probability", "completion"}] * 2
        bad = client.post("/predict", json={"inputs": ["ok", [1, 999]]})
        assert bad.status_code == 422 and bad.json() == {
            "detail": "inputs[1][1]: token id 999 is out of range [0, 256)",
            "field": "inputs[1][1]",
        }
        m = metrics_of(client.get("/metrics").text)
    assert _sample(m, "trainengine_serve_next_token_probability_count") == 2


def test_apps_in_one_process_keep_separate_metrics(digits_bundle, metrics_of) -> None:
    with TestClient(create_app(digits_bundle.path)) as a, TestClient(create_app(digits_bundle.path)) as b:
        for _ in range(3):
            a.get("/health")
        b.get("/health")
        ma, mb = metrics_of(a.get("/metrics").text), metrics_of(b.get("/metrics").text)
    assert _sample(ma, "trainengine_serve_requests_total", endpoint="/health", status="200") == 3
    assert _sample(mb, "trainengine_serve_requests_total", endpoint="/health", status="200") == 1


def _drift(client, metrics_of) -> tuple[float, float]:
    m = metrics_of(client.get("/metrics").text)
    return _sample(m, "trainengine_serve_drift_score"), _sample(m, "trainengine_serve_drift_window_examples")


def test_drift_gauge_low_for_validation_data_and_high_when_shifted(digits_bundle, digits_val, metrics_of) -> None:
    x = digits_val[0]
    with TestClient(create_app(digits_bundle.path)) as client:
        client.post("/predict", json={"inputs": x[:50].tolist()})
        score, n = _drift(client, metrics_of)
        assert math.isnan(score) and n == 50  # fewer than drift_min_examples (100): no score yet
        for start in range(50, len(x), 64):
            client.post("/predict", json={"inputs": x[start : start + 64].tolist()})
        score, n = _drift(client, metrics_of)
    assert n == len(x) and score < 0.05
    with TestClient(create_app(digits_bundle.path, drift_window=200)) as client:
        for start in range(0, len(x), 64):
            assert client.post("/predict", json={"inputs": (x[start : start + 64] + 3.0).tolist()}).status_code == 200
        score, n = _drift(client, metrics_of)
    assert n == 200 and score > 0.5  # bounded window; +3 on every pixel (range 0..1) is far out of range


def test_torch_runtime_agrees_with_onnx(digits_bundle, gpt_bundle, digits_val) -> None:
    from trainengine.serve._torch import TorchPredictor

    x = digits_val[0][:16].tolist()
    with (
        TestClient(create_app(digits_bundle.path)) as onnx_client,
        TestClient(
            create_app(digits_bundle.path, runtime="torch", torch_predictor=TorchPredictor(digits_bundle.path))
        ) as torch_client,
    ):
        a = onnx_client.post("/predict", json={"inputs": x}).json()["predictions"]
        b = torch_client.post("/predict", json={"inputs": x}).json()["predictions"]
        assert torch_client.get("/health").json()["runtime"] == "torch"
        assert torch_client.post("/predict", json={"inputs": [[0.0] * 63]}).status_code == 422
    assert [p["class"] for p in a] == [p["class"] for p in b]
    np.testing.assert_allclose([p["probabilities"] for p in a], [p["probabilities"] for p in b], atol=1e-5)
    with TestClient(create_app(gpt_bundle.path, runtime="torch")) as client:  # builds its own TorchPredictor
        got = client.post("/predict", json={"inputs": ["abc"]}).json()["predictions"][0]
    with TestClient(create_app(gpt_bundle.path)) as client:
        want = client.post("/predict", json={"inputs": ["abc"]}).json()["predictions"][0]
    assert (got["next_token"], got["completion"]) == (want["next_token"], want["completion"])


def test_inference_runs_off_the_event_loop(digits_bundle) -> None:
    app = create_app(digits_bundle.path)
    predictor = app.state.predictor
    original = predictor.forward
    seen: list[bool] = []

    def forward(x):
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:  # no event loop in this thread: a worker thread
            seen.append(False)
        return original(x)

    predictor.forward = forward
    with TestClient(app) as client:
        assert client.post("/predict", json={"inputs": [[0.0] * 64]}).status_code == 200
    assert seen == [False]


def test_client_errors_never_get_5xx(digits_bundle) -> None:
    bodies = [
        b"null",
        b"1",
        b'"x"',
        b"{}",
        b'{"inputs": {}}',
        b'{"inputs": [null]}',
        b'{"inputs": [[[]]]}',
        b'{"inputs": [{"a": 1}]}',
        b'{"inputs": [' + b"[0]," * 5 + b"[0]]}",
        b'{"inputs": [[1e999' + b",0" * 63 + b"]]}",
        b'{"inputs": [[' + b"9" * 500 + b"," + b"0," * 62 + b"0]]}",
        b"\x00",
        '{"inputs": ["\u00e9"]}'.encode(),
    ]
    with TestClient(create_app(digits_bundle.path)) as client:
        statuses = [client.post("/predict", content=b).status_code for b in bodies]
        statuses += [
            client.get("/predict").status_code,
            client.post("/health").status_code,
            client.get("/x").status_code,
        ]
    assert all(400 <= s < 500 for s in statuses), statuses


def test_create_app_refuses_bad_options(digits_bundle, copy_bundle) -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown runtime 'tensorrt' — available: onnx, torch.*max_batch must be an integer >= 1, got 0",
    ):
        create_app(digits_bundle.path, runtime="tensorrt", max_batch=0)
    path = copy_bundle(digits_bundle.path)
    (path / "reference_profile.json").write_text("{}")
    with pytest.raises(BundleError, match="reference_profile.json: content changed"):
        create_app(path)
