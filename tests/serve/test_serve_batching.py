"""Adaptive batching, the inline fast path and the device option of the model server (issue 17)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from trainengine.serve import BundleError, OnnxPredictor, create_app


def _count_calls(app: Any) -> list[tuple[int, int]]:
    """Wrap the app's model call; returns the (rows, thread id) of every call, appended as they happen."""
    predictor = app.state.predictor
    calls: list[tuple[int, int]] = []
    forward = predictor.forward

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append((len(x), threading.get_ident()))
        return forward(x)

    predictor.forward = counted
    return calls


async def _post_all(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        return list(await asyncio.gather(*(client.post("/predict", json=b) for b in bodies)))


def test_batching_answers_every_request_as_alone_in_fewer_model_calls(digits_bundle, digits_val, live_server):
    x = digits_val[0]
    rng = np.random.default_rng(0)
    groups = [rng.choice(len(x), size=int(rng.integers(1, 4)), replace=False) for _ in range(24)]
    alone = OnnxPredictor(digits_bundle.path)
    app = create_app(digits_bundle.path, batch_max_size=32, batch_max_wait_ms=50)
    calls = _count_calls(app)
    with live_server(app) as server:
        responses = asyncio.run(_post_all(server.url, [{"inputs": x[g].tolist()} for g in groups]))
    for g, response in zip(groups, responses, strict=True):
        assert response.status_code == 200, response.text
        want = alone.predict(x[g].tolist())
        got = response.json()["predictions"]
        assert [p["class"] for p in got] == [p["class"] for p in want]
        np.testing.assert_allclose([p["probabilities"] for p in got], [p["probabilities"] for p in want], atol=1e-6)
    rows = [r for r, _ in calls]
    assert sum(rows) == sum(len(g) for g in groups)
    assert len(calls) < len(groups) and max(rows) > 3, rows  # requests shared model calls


def test_a_request_that_fails_alone_does_not_fail_the_others_in_its_batch(gpt_bundle, live_server):
    # max_batch_tokens 24: a 20-byte prompt grows past it with its 8-token completion (413), 4-byte ones fit.
    app = create_app(gpt_bundle.path, batch_max_size=16, batch_max_wait_ms=50, max_batch_tokens=24)
    alone = create_app(gpt_bundle.path, max_batch_tokens=24)
    texts = ["abcd", "efgh", "x" * 20, "ijkl", "mnop"]
    bodies = [{"inputs": [t], "max_new_tokens": 8} for t in texts]
    seeded = {"inputs": ["seed"], "max_new_tokens": 8, "temperature": 1.0, "seed": 7}
    with live_server(app) as server:
        responses = asyncio.run(_post_all(server.url, [*bodies, seeded, seeded]))
    with live_server(alone) as server:
        expected = [httpx.post(server.url + "/predict", json=b, timeout=30) for b in [*bodies, seeded]]
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 413, 200, 200, 200, 200], [r.text for r in responses]
    assert "max_batch_tokens" in responses[2].json()["detail"]
    for got, want in zip(responses[:5] + responses[5:6], expected, strict=True):
        if want.status_code == 200:
            assert got.json()["predictions"] == want.json()["predictions"]
    # Seeded sampling draws per example index: batched or not, the same request gets the same text.
    assert responses[5].json()["predictions"] == responses[6].json()["predictions"] == expected[5].json()["predictions"]


def test_small_requests_of_a_fast_model_run_on_the_event_loop(digits_bundle, digits_val):
    app = create_app(digits_bundle.path)
    calls = _count_calls(app)
    row = digits_val[0][0].tolist()

    async def run() -> tuple[int, list[int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            statuses = [(await client.post("/predict", json={"inputs": [row]})).status_code for _ in range(5)]
            big = {"inputs": [row] * 64}  # > 16 KiB of JSON: parsed in the thread pool
            assert len(json.dumps(big)) > 16 * 1024
            statuses.append((await client.post("/predict", json=big)).status_code)
        return threading.get_ident(), statuses

    loop_thread, statuses = asyncio.run(run())
    assert statuses == [200] * 6
    threads = [t for _, t in calls]
    assert threads[0] != loop_thread  # unknown compute time: the thread pool first
    # Measured fast: inline, no thread hand-off. A first request slowed by warm-up (a loaded machine) may send
    # the second to the pool as well; the estimate is the fastest of the first ones, so the third runs inline.
    assert threads[2:5] == [loop_thread] * 3
    assert threads[5] != loop_thread  # a large body never blocks the loop


def test_batching_and_device_options_are_checked(digits_bundle):
    with pytest.raises(ValueError, match="batch_max_size must be an integer >= 1"):
        create_app(digits_bundle.path, batch_max_size=0)
    with pytest.raises(ValueError, match="batch_max_wait_ms must be"):
        create_app(digits_bundle.path, batch_max_size=4, batch_max_wait_ms=-1)
    with pytest.raises(ValueError, match="device must be cpu or cuda"):
        create_app(digits_bundle.path, device="tpu")


def test_cuda_on_an_onnxruntime_without_the_cuda_provider_says_what_to_install(digits_bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BundleError, match="pip install onnxruntime-gpu"):
        OnnxPredictor(digits_bundle.path, device="cuda")


def test_the_cli_falls_back_to_the_torch_runtime_for_cuda_without_onnxruntime_gpu(digits_bundle, monkeypatch):
    from trainengine.cli import _serve_cmd

    seen: dict[str, Any] = {}
    monkeypatch.setattr(_serve_cmd, "_onnx_has_cuda", lambda: False)
    monkeypatch.setattr(
        "trainengine.serve._torch.TorchPredictor", lambda bundle, device, num_threads: seen.update(device=device)
    )
    monkeypatch.setattr("trainengine.serve.serve", lambda bundle, **kw: seen.update(kw))
    _serve_cmd.serve_command(
        str(digits_bundle.path), host="127.0.0.1", port=0, runtime="onnx", api_key_env=None, workers=1,
        registry=None, model_file=None, max_body_bytes=1024, max_batch=8, max_request_tokens=None,
        max_batch_tokens=None, request_timeout=None, batch_max_size=4, batch_max_wait_ms=1.0, device="cuda",
        threads=None, log_level="warning", no_alerts=False, alert_window_s=None, alert_interval_s=5.0,
        alert_repeat_s=None, alert_min_requests=None, alert_webhook=None, alert_email=None, alert_action=None,
        plugin=None, smtp_host=None, smtp_port=None, smtp_from=None, smtp_starttls=None, smtp_username=None,
        smtp_password_env=None,
    )  # fmt: skip
    assert seen["runtime"] == "torch" and seen["device"] == "cuda" and seen["batch_max_size"] == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_torch_runtime_on_cuda_answers_like_the_cpu(digits_bundle, digits_val, live_server):
    rows = digits_val[0][:8].tolist()
    with live_server(create_app(digits_bundle.path, runtime="torch", device="cuda")) as server:
        gpu = httpx.post(server.url + "/predict", json={"inputs": rows}, timeout=30).json()["predictions"]
    cpu = OnnxPredictor(digits_bundle.path).predict(rows)
    assert [p["class"] for p in gpu] == [p["class"] for p in cpu]
    np.testing.assert_allclose([p["probabilities"] for p in gpu], [p["probabilities"] for p in cpu], atol=1e-4)


def test_a_model_that_raises_is_a_counted_500_not_a_dropped_connection(digits_bundle, digits_val, metrics_of):
    # POST /predict skips the framework's layers: its own handler must turn a crash into a 500.
    from fastapi.testclient import TestClient

    app = create_app(digits_bundle.path)

    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("the model broke")

    app.state.predictor.forward = broken
    with TestClient(app) as client:
        response = client.post("/predict", json={"inputs": [digits_val[0][0].tolist()]})
        assert response.status_code == 500 and response.json() == {"detail": "internal server error"}
        assert client.get("/predict").status_code == 405  # other methods still reach the router
        metrics = metrics_of(client.get("/metrics").text)
    key = ("trainengine_serve_requests_total", frozenset({("endpoint", "/predict"), ("status", "500")}))
    assert metrics[key] == 1.0


def test_drift_rows_handed_over_from_many_threads_all_reach_the_window(digits_bundle, digits_val):
    # Requests hand their rows to the drift window in O(1) and they enter it in bulk: none is lost.
    app = create_app(digits_bundle.path, drift_window=5000)
    drift = app.state.drift
    rows = digits_val[0][:2]

    def hand_over() -> None:
        for _ in range(300):
            drift.add(rows)

    threads = [threading.Thread(target=hand_over) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert drift.window.num_examples < 2400  # folded every 256 batches: some still pending
    drift.refresh(force=True)
    assert drift.window.num_examples == 2400


def test_on_a_gpu_unbatched_requests_take_turns_on_one_model_thread(gpt_bundle, live_server):
    # device="cuda" with a predictor built here on the CPU: the scheduling, not the device, is under test.
    from trainengine.serve._torch import TorchPredictor

    app = create_app(gpt_bundle.path, runtime="torch", torch_predictor=TorchPredictor(gpt_bundle.path), device="cuda")
    names: list[str] = []
    forward = app.state.predictor.forward

    def recorded(x: np.ndarray) -> np.ndarray:
        names.append(threading.current_thread().name)
        return forward(x)

    app.state.predictor.forward = recorded
    with live_server(app) as server:
        responses = asyncio.run(_post_all(server.url, [{"inputs": [t], "max_new_tokens": 3} for t in "abcdef"]))
    assert [r.status_code for r in responses] == [200] * 6
    assert len(set(names)) == 1 and names[0].startswith("trainengine-gpu"), set(names)


def test_the_compute_estimate_is_not_held_back_by_a_slow_first_request():
    from trainengine.serve._app import _ComputeTime

    compute = _ComputeTime()
    assert compute.mean_s == float("inf")
    compute.add(0.050)  # the first request: the runtime's warm-up
    compute.add(0.0002)
    assert compute.mean_s == 0.0002  # the fastest of the warm-up requests, not their average
    compute.add(0.0003)
    compute.add(0.0102)  # then an exponential average
    assert compute.mean_s == pytest.approx(0.9 * 0.0002 + 0.1 * 0.0102)
