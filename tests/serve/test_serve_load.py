"""A bounded load test against a real uvicorn server on loopback: 2,000 requests, 10% malformed."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import numpy as np
import torch

from trainengine.serve import create_app

NUM_REQUESTS = 2000
CONCURRENCY = 16
MAX_BODY = 64 * 1024


def _requests(x: np.ndarray) -> list[tuple[str, bytes, list[int] | None]]:
    """(kind, body, indices of the examples) for each request, shuffled; 10% malformed."""
    rng = random.Random(0)
    out: list[tuple[str, bytes, list[int] | None]] = []
    malformed = NUM_REQUESTS // 10
    kinds = ["shape", "string", "missing", "oversized", "bad_json"]
    for i in range(malformed):
        kind = kinds[i % len(kinds)]
        row = x[rng.randrange(len(x))].tolist()
        if kind == "shape":
            body = json.dumps({"inputs": [row, row[:-1]]})
        elif kind == "string":
            row[rng.randrange(64)] = "0.5"
            body = json.dumps({"inputs": [row]})
        elif kind == "missing":
            body = json.dumps({"examples": [row]})
        elif kind == "oversized":
            body = json.dumps({"inputs": [row] * 300})  # >= 96 KB > 64 KiB
        else:
            body = json.dumps({"inputs": [row]})[:-7]
        out.append((kind, body.encode(), None))
    for _ in range(NUM_REQUESTS - malformed):
        idx = [rng.randrange(len(x)) for _ in range(rng.randint(1, 4))]
        out.append(("good", json.dumps({"inputs": x[idx].tolist()}).encode(), idx))
    rng.shuffle(out)
    return out


async def _fire(url: str, requests: list[tuple[str, bytes, list[int] | None]]) -> list[tuple[int, dict]]:
    results: list[tuple[int, dict] | None] = [None] * len(requests)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(requests)):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                try:
                    response = await client.post(
                        "/predict", content=requests[i][1], headers={"content-type": "application/json"}
                    )
                except httpx.HTTPError as exc:  # which request lost its connection, for the failure message
                    raise AssertionError(f"request {i} ({requests[i][0]}): {exc!r}") from exc
                results[i] = (response.status_code, response.json())

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results  # type: ignore[return-value]  # every slot is filled by the workers


def test_load_2000_requests_with_malformed_ones(digits_bundle, digits_val, live_server, metrics_of) -> None:
    x = digits_val[0]
    with torch.no_grad():
        expected = digits_bundle.model(torch.from_numpy(x)).argmax(-1).numpy()  # the PyTorch model's answers
    requests = _requests(x)
    app = create_app(digits_bundle.path, max_body_bytes=MAX_BODY)
    with live_server(app) as server:
        start = time.perf_counter()
        results = asyncio.run(_fire(server.url, requests))
        elapsed = time.perf_counter() - start
        health = httpx.get(server.url + "/health").json()
        metrics = metrics_of(httpx.get(server.url + "/metrics").text)

    want_status = {"shape": 422, "string": 422, "missing": 422, "oversized": 413, "bad_json": 400}
    good_examples, predicted = 0, np.zeros(10)
    for (kind, _body, idx), (status, body) in zip(requests, results, strict=True):
        assert status < 500, (kind, status, body)
        if kind == "good":
            assert status == 200, body
            classes = [p["class"] for p in body["predictions"]]
            assert classes == expected[idx].tolist()
            good_examples += len(idx)
            np.add.at(predicted, classes, 1)
        else:
            assert status == want_status[kind], (kind, status, body)
            assert isinstance(body["detail"], str) and body["detail"]
    assert health["status"] == "ok"

    def count(status: str) -> float:
        return metrics.get(
            ("trainengine_serve_requests_total", frozenset({("endpoint", "/predict"), ("status", status)})), 0.0
        )

    num_good = sum(kind == "good" for kind, _, _ in requests)
    assert count("200") == num_good == 1800
    assert count("422") == 120 and count("413") == 40 and count("400") == 40
    assert not any(
        name == "trainengine_serve_requests_total" and dict(labels)["status"].startswith("5")
        for name, labels in metrics
    )
    assert metrics[("trainengine_serve_batch_size_count", frozenset())] == num_good
    assert metrics[("trainengine_serve_batch_size_sum", frozenset())] == good_examples
    for c in range(10):
        assert metrics[("trainengine_serve_predicted_class_total", frozenset({("class_id", str(c))}))] == predicted[c]
    assert (
        metrics[("trainengine_serve_request_latency_seconds_count", frozenset({("endpoint", "/predict")}))]
        == NUM_REQUESTS
    )
    print(
        f"\n{NUM_REQUESTS} requests at concurrency {CONCURRENCY} in {elapsed:.1f} s "
        f"({NUM_REQUESTS / elapsed:.0f} req/s)"
    )


def test_load_language_model_with_oversized_work_requests(gpt_bundle, live_server, metrics_of) -> None:
    """Requests asking for too much work (1,024 texts, within the body limit) among normal ones."""
    from trainengine.serve import OnnxPredictor

    rng = random.Random(1)
    texts = ["def f(x):", "import numpy", "hello", "the quick brown fox", "a" * 40, "for i in range(3):"]
    expected = {t: p["completion"] for t, p in zip(texts, OnnxPredictor(gpt_bundle.path).predict(texts), strict=True)}
    requests: list[tuple[str, bytes, list[str] | None]] = []
    for _ in range(60):
        chosen = [rng.choice(texts) for _ in range(rng.randint(1, 3))]
        requests.append(("good", json.dumps({"inputs": chosen}).encode(), chosen))
    for _ in range(6):  # 1,024 texts of 30 characters: 32 KB of JSON but 30,720 tokens of work
        requests.append(("oversized", json.dumps({"inputs": ["x" * 30] * 1024}).encode(), None))
    rng.shuffle(requests)
    app = create_app(gpt_bundle.path, max_body_bytes=MAX_BODY, max_request_tokens=1024, max_batch_tokens=256)
    with live_server(app) as server:
        results = asyncio.run(_fire(server.url, requests))  # type: ignore[arg-type]  # same shape, str examples
        metrics = metrics_of(httpx.get(server.url + "/metrics").text)

    for (kind, _body, chosen), (status, body) in zip(requests, results, strict=True):
        if kind == "good":
            assert status == 200, body
            assert [p["completion"] for p in body["predictions"]] == [expected[t] for t in chosen]
        else:
            assert status == 413 and "max_request_tokens" in body["detail"], (status, body)
    statuses = {
        dict(labels)["status"]: value
        for (name, labels), value in metrics.items()
        if name == "trainengine_serve_requests_total" and dict(labels)["endpoint"] == "/predict"
    }
    assert statuses == {"200": 60.0, "413": 6.0}
