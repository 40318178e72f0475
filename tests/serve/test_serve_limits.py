"""Work limits of /predict: client disconnects (499), token budgets (413), compute timeout (503)."""

from __future__ import annotations

import logging
import socket
import time
import warnings

import httpx
import numpy as np
import pytest

from trainengine.serve import OnnxPredictor, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient asks for httpx2; the serve extra installs httpx
    from fastapi.testclient import TestClient


class _Recording(OnnxPredictor):
    """The ONNX predictor, recording each model call's input shape and sleeping ``delay`` in it."""

    def __init__(self, *args, delay: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(tuple(x.shape))
        time.sleep(self.delay)
        return super().forward(x)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _predict_status_counts(url: str, metrics_of) -> dict[str, float]:
    metrics = metrics_of(httpx.get(url + "/metrics").text)
    return {
        dict(labels)["status"]: value
        for (name, labels), value in metrics.items()
        if name == "trainengine_serve_requests_total" and dict(labels)["endpoint"] == "/predict"
    }


def _wait_for_status(url: str, metrics_of, status: str) -> dict[str, float]:
    deadline = time.monotonic() + 5
    while True:
        counts = _predict_status_counts(url, metrics_of)
        if status in counts or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def _raw_request(port: int, body: bytes, content_length: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_client_disconnect_mid_upload_is_499_with_one_line(gpt_bundle, live_server, metrics_of) -> None:
    server = live_server(create_app(gpt_bundle.path))
    uvicorn_log, serve_log = _Records(), _Records()
    logging.getLogger("uvicorn.error").addHandler(uvicorn_log)  # after uvicorn configured its logging
    logging.getLogger("trainengine.serve").addHandler(serve_log)
    try:
        with server:
            sock = _raw_request(server.port, b'{"inputs": ["' + b"a" * 1000, content_length=100_000)
            time.sleep(0.1)  # the server is reading the body
            sock.close()
            counts = _wait_for_status(server.url, metrics_of, "499")
            assert httpx.post(server.url + "/predict", json={"inputs": ["hello"]}).status_code == 200
    finally:
        logging.getLogger("uvicorn.error").removeHandler(uvicorn_log)
        logging.getLogger("trainengine.serve").removeHandler(serve_log)
    assert counts == {"499": 1.0}, counts  # not a 500: the error rate does not move
    assert not [r for r in uvicorn_log.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in uvicorn_log.records
    ]
    lines = [r for r in serve_log.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "during the upload" in lines[0].getMessage() and "499" in lines[0].getMessage()


def test_disconnected_client_stops_the_work(gpt_bundle, live_server, metrics_of) -> None:
    slow = _Recording(gpt_bundle.path, delay=0.02)
    app = create_app(gpt_bundle.path, runtime="torch", torch_predictor=slow, max_batch_tokens=25)
    with live_server(app) as server:
        # 8 texts of 10 tokens: one per chunk (10 + 15 completion tokens = 25), 16 model calls each.
        body = b'{"inputs": [' + b", ".join([b'"0123456789"'] * 8) + b"]}"
        sock = _raw_request(server.port, body, content_length=len(body))
        time.sleep(0.3)
        sock.close()
        counts = _wait_for_status(server.url, metrics_of, "499")
        calls = len(slow.shapes)
        time.sleep(0.3)
        assert len(slow.shapes) <= calls + 1  # stopped before its next model call
    assert counts == {"499": 1.0}, counts
    assert calls < 8 * 16 / 2  # far from all the work the request asked for


def test_tokens_over_max_request_tokens_are_413_naming_the_limit(gpt_bundle) -> None:
    with TestClient(create_app(gpt_bundle.path, max_request_tokens=50)) as client:
        ok = client.post("/predict", json={"inputs": ["a" * 25, "b" * 25]})
        over = client.post("/predict", json={"inputs": ["a" * 20, "b" * 20, "c" * 20]})
        # The model sees its last max_seq_len (32) tokens: a longer text counts 32.
        cropped = client.post("/predict", json={"inputs": ["a" * 1000]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
    assert over.status_code == 413, over.text
    assert "max_request_tokens" in over.json()["detail"] and "50" in over.json()["detail"]
    assert over.json()["field"] == "inputs"
    assert cropped.status_code == 200


def test_example_over_max_batch_tokens_is_413_naming_it(gpt_bundle) -> None:
    with TestClient(create_app(gpt_bundle.path, max_batch_tokens=20)) as client:
        ok = client.post("/predict", json={"inputs": ["abcde"]})  # 5 + 15 completion tokens
        over = client.post("/predict", json={"inputs": ["abcde", "abcdef"]})
    assert ok.status_code == 200
    assert over.status_code == 413 and over.json()["field"] == "inputs[1]"
    assert "max_batch_tokens" in over.json()["detail"] and "20" in over.json()["detail"]


def test_chunks_stay_within_max_batch_tokens_and_answer_alike(gpt_bundle) -> None:
    predictor = _Recording(gpt_bundle.path)
    texts = ["a", "hello world", "xy" * 20, "abc", "the quick brown fox", "q" * 7, "z"]
    x = predictor.preprocess(texts)
    whole = predictor.predict_array(x)
    predictor.shapes.clear()
    chunked = predictor.predict_array(x, max_batch_tokens=64)
    assert max(rows * width for rows, width in predictor.shapes) <= 64
    assert len(predictor.shapes) > 16  # more than one chunk of 16 model calls
    assert [p["completion"] for p in chunked] == [p["completion"] for p in whole]  # request order kept
    np.testing.assert_allclose(
        [p["next_token_probability"] for p in chunked], [p["next_token_probability"] for p in whole], rtol=1e-5
    )


def test_compute_timeout_is_503_with_retry_after_and_stops_the_work(gpt_bundle) -> None:
    slow = _Recording(gpt_bundle.path, delay=0.02)
    app = create_app(gpt_bundle.path, runtime="torch", torch_predictor=slow, max_batch_tokens=25, request_timeout_s=0.2)
    with TestClient(app) as client:
        start = time.monotonic()
        response = client.post("/predict", json={"inputs": ["0123456789"] * 8})  # 128 model calls
        elapsed = time.monotonic() - start
        calls = len(slow.shapes)
        time.sleep(0.2)
        assert len(slow.shapes) <= calls + 1  # the worker stopped before its next model call
        assert client.post("/predict", json={"inputs": ["ok"]}).status_code == 503  # 16 calls > 0.2 s
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "request_timeout_s" in response.json()["detail"] and "0.2 s" in response.json()["detail"]
    assert elapsed < 1.0 and calls < 8 * 16 / 2


def test_large_requests_hand_memory_back(gpt_bundle, monkeypatch) -> None:
    from trainengine.serve import _app

    released: list[int] = []
    monkeypatch.setattr(_app, "_release_memory", lambda: released.append(1))
    with TestClient(create_app(gpt_bundle.path, max_request_tokens=10**6)) as client:
        assert client.post("/predict", json={"inputs": ["small"]}).status_code == 200
        assert released == []
        big = client.post("/predict", json={"inputs": ["x" * 300_000]})  # one cropped example, a large body
    assert big.status_code == 200 and released == [1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_request_tokens": 0}, "max_request_tokens must be an integer >= 1, got 0"),
        ({"max_batch_tokens": 2.5}, "max_batch_tokens must be an integer >= 1, got 2.5"),
        ({"request_timeout_s": -1}, "request_timeout_s must be a positive number, got -1"),
    ],
)
def test_bad_limits_are_refused(gpt_bundle, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        create_app(gpt_bundle.path, **options)


def test_limits_come_from_the_bundle_monitoring_json(gpt_bundle, copy_bundle) -> None:
    import hashlib
    import json

    path = copy_bundle(gpt_bundle.path)
    monitoring = json.loads((path / "monitoring.json").read_text())
    (path / "monitoring.json").write_text(json.dumps({**monitoring, "max_request_tokens": 30}))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["monitoring.json"] = hashlib.sha256((path / "monitoring.json").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(path)) as client:
        refused = client.post("/predict", json={"inputs": ["a" * 20, "b" * 20]})
    with TestClient(create_app(path, max_request_tokens=40)) as client:  # the argument wins
        allowed = client.post("/predict", json={"inputs": ["a" * 20, "b" * 20]})
    assert refused.status_code == 413 and "limit of 30 tokens" in refused.json()["detail"]
    assert allowed.status_code == 200
