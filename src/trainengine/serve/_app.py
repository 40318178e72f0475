"""HTTP model server for a trainengine export bundle: FastAPI, Prometheus metrics, drift.

This file is also copied into every export bundle as ``server.py``. There it imports the
runtime from its sibling ``inference.py`` and needs only fastapi, uvicorn, prometheus_client,
numpy and onnxruntime (a scikit-learn bundle's runtime is its sibling ``sklearn_inference.py``;
serving its ``model.skops`` also needs scikit-learn, skops and pandas)::

    python server.py                          # serves the bundle it sits in on 127.0.0.1:8080
    python server.py --port 9000 --api-key-env MODEL_API_KEY --workers 2

Endpoints:

* ``POST /predict`` — body ``{"inputs": [example, ...]}``; answers ``{"predictions": [...],
  "model": name, "version": version}``. A wrong shape or type is a 422 whose ``detail`` names
  the field (``inputs[3]: expected shape [64], got [63]``); a body over ``max_body_bytes`` is a
  413 (checked on Content-Length and on the bytes actually read); bad JSON is a 400. Language
  models: more than ``max_request_tokens`` tokens is a 413; the model runs on chunks of at most
  ``max_batch_tokens`` tokens, and a request still computing after ``request_timeout_s`` is
  abandoned with a 503 (``Retry-After``). Language-model requests may also carry
  ``max_new_tokens`` (at most the server's ``max_new_tokens`` limit), ``temperature`` (0 = greedy,
  the default), ``top_k``, ``top_p`` and ``seed`` beside ``inputs``; an out-of-range value is a
  422 naming the field. Reward models (process reward bundles) take ``{"problem": str, "steps":
  [str, ...]}``, a list of those, or ``{"inputs": [...]}`` (or ``{"input_ids", "step_positions"}``
  from clients that tokenize themselves), encode each as in training and answer ``{"scores":
  [one per scored step], "num_steps", "steps_scored", "truncated", "problem_truncated"}`` per
  example; missing or empty steps and wrong types are a 422 naming the field. A client that
  disconnects (mid-upload or while its request computes) stops the work and is counted with
  status 499, not as a server error.
* ``GET /health`` — name, version, the bundle's content hash, uptime, runtime; never needs a key.
* ``GET /metrics`` — Prometheus text: requests by endpoint and status, latency and batch-size
  histograms, the prediction distribution, and the drift score of the last ``drift_window``
  inputs against the bundle's reference profile.

With an API key, every endpoint but ``/health`` needs ``X-API-Key: <key>`` or
``Authorization: Bearer <key>`` (401 otherwise). Parsing, validation and inference run in a
thread pool, except a small request of a model measured fast (under 1 ms of CPU), which is
answered on the event loop; ``--batch-max-size`` batches concurrent requests into one model call.

Why one module of this length: this file is copied verbatim into every bundle as server.py, so it
must stand alone: the app, its limits, metrics and CLI entry cannot be split into package modules.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request),
# which are imported inside create_app so that importing this module does not need fastapi.
import argparse
import asyncio
import ctypes
import gc
import hmac
import ipaddress
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

if __package__:  # trainengine.serve._app
    from trainengine.serve._alerting import (
        DEFAULT_INTERVAL_S,
        DEFAULT_MIN_REQUESTS,
        DEFAULT_REPEAT_S,
        DEFAULT_WINDOW_S,
        AlertLeader,
        ServingAlerts,
        WindowCounts,
        build_alert_actions,
    )
    from trainengine.serve._runtime import (
        MAX_NEW_TOKENS_LIMIT,
        PAD,
        REWARD_TASK,
        SAMPLING_FIELDS,
        Bundle,
        BundleError,
        DriftWindow,
        InputError,
        LimitError,
        OnnxPredictor,
        Predictor,
        load_bundle,
        reward_inputs,
        sampling_options,
    )
else:  # a bundle's server.py: the sibling inference.py is the runtime it was exported with
    sys.dont_write_bytecode = True  # no __pycache__ inside the bundle's folder
    try:
        from alerting import (  # type: ignore[no-redef]  # the bundle's copy of trainengine.serve._alerting
            DEFAULT_INTERVAL_S,
            DEFAULT_MIN_REQUESTS,
            DEFAULT_REPEAT_S,
            DEFAULT_WINDOW_S,
            AlertLeader,
            ServingAlerts,
            WindowCounts,
            build_alert_actions,
        )
        from inference import (  # type: ignore[no-redef]  # mypy sees both runtimes; one is imported
            MAX_NEW_TOKENS_LIMIT,
            PAD,
            REWARD_TASK,
            SAMPLING_FIELDS,
            Bundle,
            BundleError,
            DriftWindow,
            InputError,
            LimitError,
            OnnxPredictor,
            Predictor,
            load_bundle,
            reward_inputs,
            sampling_options,
        )
    except ImportError:  # server.py copied alone: fall back to an installed trainengine
        from trainengine.serve._alerting import (
            DEFAULT_INTERVAL_S,
            DEFAULT_MIN_REQUESTS,
            DEFAULT_REPEAT_S,
            DEFAULT_WINDOW_S,
            AlertLeader,
            ServingAlerts,
            WindowCounts,
            build_alert_actions,
        )
        from trainengine.serve._runtime import (
            MAX_NEW_TOKENS_LIMIT,
            PAD,
            REWARD_TASK,
            SAMPLING_FIELDS,
            Bundle,
            BundleError,
            DriftWindow,
            InputError,
            LimitError,
            OnnxPredictor,
            Predictor,
            load_bundle,
            reward_inputs,
            sampling_options,
        )

__all__ = ["create_app", "create_app_from_env", "run_server", "Runtime"]

Runtime = Literal["onnx", "torch"]
RUNTIMES = ("onnx", "torch")
ENDPOINTS = ("/predict", "/health", "/metrics", "/alerts")
ENV_PREFIX = "TRAINENGINE_SERVE_"  # app options handed to uvicorn worker processes
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_VALUE_BUCKETS = (-1000.0, -100.0, -10.0, -3.0, -1.0, -0.3, -0.1, 0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1000.0)
_PROB_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_MAX_CLASS_LABELS = 1000  # classes pre-registered as label values (bounded label cardinality)
# Work limits of a language-model request (create_app's arguments, else monitoring.json, else these).
DEFAULT_MAX_REQUEST_TOKENS = 65_536
DEFAULT_MAX_BATCH_TOKENS = 8_192  # raised to fit one full-context example of the model
DEFAULT_REQUEST_TIMEOUT_S = 30.0
# How long an idle keep-alive connection stays open. uvicorn's default (5 s) closes connections a
# client or proxy is about to reuse: behind a load balancer whose idle timeout is longer, that is a
# reset and a 502; and under uvloop the idle timer runs before pending reads, so one stall of the
# event loop past it drops requests already sent on those connections. nginx's default: 75 s.
KEEP_ALIVE_S = 75

CLIENT_CLOSED = 499  # nginx's "client closed request": counted apart from the 5xx server errors
_RELEASE_AFTER_BYTES = 256 * 1024  # bodies at least this large hand freed memory back to the OS
# The inline path: a small request of a fast model runs on the event loop, not in the thread pool,
# whose hand-off (and 16 threads contending for the GIL) cost more than the model (issue 17).
_INLINE_BODY_BYTES = 16 * 1024
_INLINE_MAX_S = 0.001  # the recent mean compute time under which requests run inline

log = logging.getLogger("trainengine.serve")
# One encoder for every answer: json.dumps(..., allow_nan=False) builds a new one per call.
_encode_json = json.JSONEncoder(allow_nan=False).encode


def _encode(payload: Any) -> bytes:
    return _encode_json(payload).encode("utf-8")


class _Abandoned(Exception):
    """Raised in the worker thread between model calls: the deadline passed or the client left."""


class _ClientError(Exception):
    """A request problem answered with a 4xx status and ``{"detail": message}``."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


# ----------------------------------------------------------------------------- metrics
class _Metrics:
    """The server's Prometheus metrics, on a registry of its own (apps in one process never clash)."""

    def __init__(
        self,
        bundle: Bundle,
        runtime: str,
        max_batch: int,
        drift_threshold: float | None,
        latency_threshold_s: float | None = None,
        error_rate_threshold: float | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        # Multiprocess mode (uvicorn workers): prometheus_client picked file-backed values at import
        # because PROMETHEUS_MULTIPROC_DIR was set; only then do the files hold this app's numbers.
        in_files = values.ValueClass is not values.MutexValue
        self.multiprocess_dir = (os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None) if in_files else None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "trainengine_serve_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=r,
        )
        # The latency threshold is a bucket edge: "p95 above it" (more than 5% of the requests slower)
        # is then exact, for the server's alert rule and the bundle's Prometheus rule alike.
        latency_buckets = sorted({*_LATENCY_BUCKETS, *([latency_threshold_s] if latency_threshold_s else [])})
        self.latency = Histogram(
            "trainengine_serve_request_latency_seconds",
            "Request latency (seconds) by endpoint.",
            ["endpoint"],
            buckets=latency_buckets,
            registry=r,
        )
        batch_buckets = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if b < max_batch] + [
            max_batch
        ]
        self.batch_size = Histogram(
            "trainengine_serve_batch_size",
            "Examples per successful /predict request.",
            buckets=batch_buckets,
            registry=r,
        )
        self._children: dict[tuple[str, int], Any] = {}
        self._class_children: dict[int, Any] = {}
        self.task_type = bundle.task_type
        self.classes = None
        self.values = None
        self.next_token_probability = None
        self.step_scores = None
        if self.task_type in ("classification", "vision"):
            self.classes = Counter(
                "trainengine_serve_predicted_class", "Predictions by predicted class.", ["class_id"], registry=r
            )
            num_classes = bundle.task.get("num_classes")
            if isinstance(num_classes, int) and 0 < num_classes <= _MAX_CLASS_LABELS:
                for c in range(num_classes):  # every class shows, with 0, before its first prediction
                    self.classes.labels(class_id=str(c))
        elif self.task_type == "regression":
            label_hist = (bundle.reference_profile or {}).get("label_histogram") or {}
            scaling = bundle.manifest.get("target_scaling") or {"mean": 0.0, "std": 1.0}
            # The profile holds the targets as trained (standardised); predictions are served un-scaled.
            edges = sorted(
                {float(e) * float(scaling["std"]) + float(scaling["mean"]) for e in label_hist.get("edges") or []}
            )
            self.values = Histogram(
                "trainengine_serve_prediction_value",
                "Predicted values (buckets: the training targets' histogram edges when known).",
                buckets=edges if len(edges) >= 2 else _VALUE_BUCKETS,
                registry=r,
            )
        elif self.task_type == REWARD_TASK:
            self.step_scores = Histogram(
                "trainengine_serve_step_score",
                "Predicted per-step scores of the reward model (one observation per scored step).",
                buckets=_PROB_BUCKETS,
                registry=r,
            )
        else:
            self.next_token_probability = Histogram(
                "trainengine_serve_next_token_probability",
                "Probability of the predicted next token.",
                buckets=_PROB_BUCKETS,
                registry=r,
            )
        # Workers each see part of the traffic: the scraped drift is the largest live worker's.
        self.drift_score = Gauge(
            "trainengine_serve_drift_score",
            "Jensen-Shannon divergence (base 2, mean over features) of the recent inputs against the "
            "bundle's reference profile; NaN until the window holds enough examples.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_score.set(float("nan"))
        self.drift_examples = Gauge(
            "trainengine_serve_drift_window_examples",
            "Examples in the drift window.",
            registry=r,
            multiprocess_mode="livesum",
        )
        for metric, help_text, threshold in (
            (
                "drift_threshold",
                "Drift score above which the inputs count as drifted (monitoring.json).",
                drift_threshold,
            ),
            (
                "latency_threshold_seconds",
                "/predict p95 latency (seconds) above which the latency alert fires (monitoring.json).",
                latency_threshold_s,
            ),
            (
                "error_rate_threshold",
                "Fraction of /predict answers with a 5xx status above which the error-rate alert fires "
                "(monitoring.json).",
                error_rate_threshold,
            ),
        ):
            if threshold is not None:
                Gauge(f"trainengine_serve_{metric}", help_text, registry=r, multiprocess_mode="livemax").set(threshold)
        # The serving alert rules (ServingAlerts): what the window holds and which rules fire.
        self.alert_active = Gauge(
            "trainengine_serve_alert_active",
            "1 while the serving alert rule of this kind fires (latency, error_rate, drift), else 0.",
            ["kind"],
            registry=r,
            multiprocess_mode="livemax",
        )
        for kind in ("latency", "error_rate", "drift"):
            self.alert_active.labels(kind=kind).set(0)
        self.alerts_sent = Counter(
            "trainengine_serve_alerts",
            "Alerts and resolved notices sent by the serving alert rules, by kind and status.",
            ["kind", "status"],
            registry=r,
        )
        self.window_latency_p95 = Gauge(
            "trainengine_serve_window_latency_p95_seconds",
            "p95 /predict latency over the alert window; NaN while it holds too few requests.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.window_error_rate = Gauge(
            "trainengine_serve_window_error_rate",
            "Fraction of /predict answers with a 5xx status over the alert window; NaN while it holds too few.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.window_latency_p95.set(float("nan"))
        self.window_error_rate.set(float("nan"))
        Gauge(
            "trainengine_serve_model_info",
            "The served model (value 1).",
            ["name", "version", "runtime", "artifact_sha256"],
            registry=r,
            multiprocess_mode="livemax",
        ).labels(name=bundle.name, version=bundle.version, runtime=runtime, artifact_sha256=bundle.content_sha256).set(
            1
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        # The labelled children are looked up once per (endpoint, status): labels() costs more than inc().
        children = self._children.get((endpoint, status))
        if children is None:
            children = (
                self.requests.labels(endpoint=endpoint, status=str(status)),
                self.latency.labels(endpoint=endpoint),
            )
            self._children[(endpoint, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def _class_counter(self, class_id: int) -> Any:
        child = self._class_children.get(class_id)
        if child is None:
            assert self.classes is not None
            child = self._class_children[class_id] = self.classes.labels(class_id=str(class_id))
        return child

    def observe_predictions(self, predictions: list[dict[str, Any]]) -> None:
        self.batch_size.observe(len(predictions))
        if self.classes is not None:
            counts: dict[int, int] = {}
            for p in predictions:
                counts[p["class"]] = counts.get(p["class"], 0) + 1
            for c, n in counts.items():
                self._class_counter(c).inc(n)
        elif self.values is not None:
            for p in predictions:
                for v in p["values"] if "values" in p else (p["value"],):
                    self.values.observe(v)
        elif self.step_scores is not None:
            for p in predictions:
                for v in p["scores"]:
                    self.step_scores.observe(v)
        elif self.next_token_probability is not None:
            for p in predictions:
                self.next_token_probability.observe(p["next_token_probability"])

    def _scraped(self) -> Any:
        """The registry a scrape reads: this app's own, or every worker's files in multiprocess mode."""
        if self.multiprocess_dir is None:
            return self.registry
        from prometheus_client import CollectorRegistry, multiprocess

        # Workers write their values to files in PROMETHEUS_MULTIPROC_DIR; a scrape of any
        # worker sums (or, for gauges, combines) them all.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self._scraped())

    def window_counts(self) -> WindowCounts:
        """The cumulative /predict counters and the drift gauge now (what the alert window differences)."""
        buckets: dict[float, float] = {}
        requests = errors = 0.0
        drift: float | None = None
        drift_examples = 0
        for family in self._scraped().collect():
            if family.name == "trainengine_serve_request_latency_seconds":
                for sample in family.samples:
                    if sample.name.endswith("_bucket") and sample.labels.get("endpoint") == "/predict":
                        le = float(sample.labels["le"])
                        buckets[le] = buckets.get(le, 0.0) + sample.value
            elif family.name == "trainengine_serve_requests":
                for sample in family.samples:
                    if not sample.name.endswith("_total") or sample.labels.get("endpoint") != "/predict":
                        continue
                    status = sample.labels.get("status", "")
                    if status == str(CLIENT_CLOSED):
                        continue  # the client left: not the server's error, not an answer either
                    requests += sample.value
                    if status.startswith("5"):
                        errors += sample.value
            elif family.name == "trainengine_serve_drift_score":
                values = [s.value for s in family.samples if math.isfinite(s.value)]
                drift = max(values) if values else None
            elif family.name == "trainengine_serve_drift_window_examples":
                drift_examples = int(sum(s.value for s in family.samples))
        return WindowCounts(time.monotonic(), tuple(sorted(buckets.items())), requests, errors, drift, drift_examples)

    def publish_alerts(self, alerts: Any, sent: Sequence[Any]) -> None:
        """Copy the alert rules' state into the gauges (after each evaluation)."""
        for kind in alerts.rules:
            self.alert_active.labels(kind=kind).set(1 if kind in alerts.active() else 0)
        window = alerts.window
        p95_ms = window.get("latency_p95_ms")
        self.window_latency_p95.set(float("nan") if p95_ms is None else p95_ms / 1000.0)
        rate = window.get("error_rate")
        self.window_error_rate.set(float("nan") if rate is None else rate)
        for alert in sent:
            self.alerts_sent.labels(kind=alert.kind, status="resolved" if alert.resolved else "firing").inc()


class _Drift:
    """Recomputes the drift gauge from a bounded window, at most every ``interval_s`` or on scrape.

    ``features`` turns a preprocessed batch into the window's numeric features when they are not
    the batch itself (a scikit-learn bundle's checked records: its profiled columns as floats);
    it runs when the batches are folded into the window, off the answer's path.
    """

    def __init__(
        self,
        window: DriftWindow | None,
        metrics: _Metrics,
        interval_s: float,
        min_examples: int,
        features: Callable[[Any], Any] | None = None,
    ) -> None:
        self.window = window
        self.features = features
        self.metrics = metrics
        self.interval_s = interval_s
        self.min_examples = min_examples
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: list[Any] = []
        self._seen = -1
        self._last = float("-inf")

    # Requests hand their batches over in O(1); they enter the window together, every this many
    # batches or at a refresh: one concatenation and one copy instead of one per request.
    fold_every = 256

    def add(self, batch: Any) -> None:
        if self.window is None:
            return
        with self._pending_lock:
            self._pending.append(batch)
            full = len(self._pending) >= self.fold_every
        if full:
            self.fold()

    def fold(self) -> None:
        """Move the batches handed over so far into the window."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        window = self.window
        if not pending or window is None:
            return
        try:
            try:
                merged = [np.concatenate(pending)] if len(pending) > 1 else pending
            except ValueError:  # token batches of different widths: one by one
                merged = pending
            for batch in merged:
                window.add(batch if self.features is None else self.features(batch))
        except (ValueError, TypeError) as exc:  # a reference profile that does not fit the inputs
            log.warning("drift monitoring is off: %s", exc)
            self.window = None

    def due(self) -> bool:
        w = self.window
        changed = bool(self._pending) or (w is not None and w.version != self._seen)
        return w is not None and changed and time.monotonic() - self._last >= self.interval_s

    def refresh(self, *, force: bool = False) -> None:
        """Recompute when the window changed; ``force`` waits for a refresh already running."""
        if self.window is None or not self._lock.acquire(blocking=force):
            return
        try:
            self.fold()
            if self.window is None:
                return
            version = self.window.version
            if version == self._seen:
                return
            n = self.window.num_examples
            score = self.window.score() if n >= self.min_examples else None
            self.metrics.drift_examples.set(n)
            self.metrics.drift_score.set(float("nan") if score is None else score)
            self._seen, self._last = version, time.monotonic()
        except Exception:
            log.exception("drift computation failed")
            self._last = time.monotonic()
        finally:
            self._lock.release()


# ----------------------------------------------------------------------------- app
def _header(scope: Mapping[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value
    return None


async def _send_json(
    send: Callable[..., Any], status: int, payload: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Observe:
    """ASGI middleware: API-key check (all but /health) and request count / latency for every response."""

    def __init__(
        self, app: Any, metrics: _Metrics, api_key: bytes | None, predict: Callable[..., Any] | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key
        self.predict = predict  # POST /predict straight to its handler: no routing or framework layers

    def _authorized(self, scope: Mapping[str, Any], key: bytes) -> bool:
        given = _header(scope, b"x-api-key")
        if given is None:
            auth = _header(scope, b"authorization") or b""
            scheme, _, token = auth.partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else None
        # compare_digest: the time taken does not reveal how much of the key matched.
        return given is not None and hmac.compare_digest(given, key)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"  # bounded label values
        start = time.perf_counter()
        status = 500  # what the client gets when the app raises before responding

        async def send_observed(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.api_key is not None and path != "/health" and not self._authorized(scope, self.api_key):
                status = 401
                await _send_json(
                    send,
                    401,
                    {
                        "detail": "missing or wrong API key; send the header 'X-API-Key: <key>' or "
                        "'Authorization: Bearer <key>'"
                    },
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            if self.predict is not None and path == "/predict" and scope.get("method") == "POST":
                await self.predict(scope, receive, send_observed)
            else:
                await self.app(scope, receive, send_observed)
        finally:
            self.metrics.observe_request(endpoint, status, time.perf_counter() - start)


async def _read_body(request: Any, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (declared or actually sent) with a 413."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _ClientError(400, f"Content-Length {declared!r} is not an integer") from None
        if size > limit:
            raise _ClientError(
                413, f"request body of {size} bytes exceeds the limit of {limit} bytes; send fewer examples per request"
            )
    chunks, total = [], 0
    receive = request.receive  # the ASGI messages themselves: request.stream()'s bookkeeping costs more here
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            from starlette.requests import ClientDisconnect

            raise ClientDisconnect()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:  # a chunked body, or one longer than its Content-Length said
            raise _ClientError(413, f"request body exceeds the limit of {limit} bytes; send fewer examples per request")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_malloc_trim() if sys.platform.startswith("linux") else None


def _release_memory() -> None:
    """Collect garbage and hand the freed heap back to the OS (glibc keeps it otherwise).

    Called after a large request: without it, the resident memory of a server stays at the
    high-water mark of its largest request.
    """
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


async def _disconnected(request: Any) -> None:
    """Return when the client closes the connection (the body has been read: nothing else arrives)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # not expected after the body; never spin


class _ComputeTime:
    """An exponential moving average of the CPU time a request's parse + model + answer took.

    The first requests warm the runtime up (lazy allocations, first-run kernels): until
    ``_WARMUP`` were measured the estimate is the fastest of them, not their average, so one slow
    first request does not keep a fast model off the inline path for the next dozen.
    """

    _WARMUP = 3

    def __init__(self) -> None:
        self.mean_s = math.inf  # unknown until a request was measured: the thread pool first
        self.count = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        if self.count <= self._WARMUP:
            self.mean_s = min(self.mean_s, seconds)
        else:
            self.mean_s = 0.9 * self.mean_s + 0.1 * seconds


def _concat_batches(batches: Sequence[Any]) -> Any:
    """Preprocessed batches as one: feature rows stacked; token rows right-padded to the widest."""
    if batches[0].ndim == 2 and np.issubdtype(batches[0].dtype, np.integer):
        width = max(b.shape[1] for b in batches)
        out = np.full((sum(len(b) for b in batches), width), PAD, dtype=batches[0].dtype)
        row = 0
        for b in batches:
            out[row : row + len(b), : b.shape[1]] = b
            row += len(b)
        return out
    return np.concatenate(batches, axis=0)


class _Pending:
    __slots__ = ("abandoned", "batch", "future", "key", "sampling")

    def __init__(self, batch: Any, sampling: Any, key: Any, future: Any) -> None:
        self.batch, self.sampling, self.key, self.future = batch, sampling, key, future
        self.abandoned = False


class _Batcher:
    """Adaptive server-side batching: the examples of concurrent requests run as one model call.

    A request's preprocessed batch waits at most ``max_wait_s`` for others with the same decoding
    options, or until ``max_size`` examples are pending; the group runs in one worker thread (the
    model runs one group at a time; arrivals meanwhile form the next group). A request that alone
    fails (an example over ``max_batch_tokens``) cannot fail the others: a failed group runs again
    request by request, so each gets its own answer or error.

    Args:
        run: ``(batch, sampling, check) -> predictions`` — blocking, called in the worker thread.
        max_size: The most examples in one model call.
        max_wait_s: The longest a request waits for company.
    """

    def __init__(self, run: Callable[..., list[Any]], max_size: int, max_wait_s: float) -> None:
        self._run = run
        self.max_size, self.max_wait_s = max_size, max_wait_s
        self._pending: list[_Pending] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="trainengine-batch")

    async def submit(self, batch: Any, sampling: Any, key: Any) -> _Pending:
        """Queue a batch; returns its entry (``await entry.future`` for the predictions)."""
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        entry = _Pending(batch, sampling, key, loop.create_future())
        self._pending.append(entry)
        self._arrived.set()
        return entry

    def _group(self) -> list[_Pending]:
        """The oldest request and the next ones with its key, up to ``max_size`` examples."""
        first = self._pending[0]
        group: list[_Pending] = []
        size = 0
        for entry in self._pending:
            if entry.key == first.key and (not group or size + len(entry.batch) <= self.max_size):
                group.append(entry)
                size += len(entry.batch)
        taken = {id(e) for e in group}
        self._pending = [e for e in self._pending if id(e) not in taken]
        return group

    def _ready(self) -> bool:
        first = self._pending[0]
        return sum(len(e.batch) for e in self._pending if e.key == first.key) >= self.max_size

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._arrived is not None
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._pending:
                deadline = loop.time() + self.max_wait_s
                while not self._ready() and (left := deadline - loop.time()) > 0:
                    try:
                        await asyncio.wait_for(self._arrived.wait(), left)
                    except TimeoutError:
                        break
                    self._arrived.clear()
                group = [e for e in self._group() if not e.abandoned and not e.future.done()]
                if not group:
                    continue
                results = await loop.run_in_executor(self._executor, self._run_group, group)
                for entry, (ok, value) in zip(group, results, strict=True):
                    if not entry.future.done():
                        (entry.future.set_result if ok else entry.future.set_exception)(value)

    def _run_group(self, group: list[_Pending]) -> list[tuple[bool, Any]]:
        def check() -> None:  # stop between model calls only when nobody waits any more
            if all(e.abandoned for e in group):
                raise _Abandoned

        if len(group) > 1:
            try:
                predictions = self._run(_concat_batches([e.batch for e in group]), group[0].sampling, check)
            except Exception:  # noqa: BLE001 - one request's problem: answer each alone below
                pass
            else:
                out, row = [], 0
                for entry in group:
                    out.append((True, predictions[row : row + len(entry.batch)]))
                    row += len(entry.batch)
                return out
        results: list[tuple[bool, Any]] = []
        for entry in group:

            def alone(entry: _Pending = entry) -> None:
                if entry.abandoned:
                    raise _Abandoned

            try:
                results.append((True, self._run(entry.batch, entry.sampling, alone)))
            except Exception as exc:  # noqa: BLE001 - handed to the request's own future
                results.append((False, exc))
        return results


def _limit(name: str, given: Any, bundle: Bundle, default: float, kind: type) -> Any:
    """A work limit: the argument, else the bundle's monitoring.json, else ``default``; validated."""
    value, source = (given, name) if given is not None else (bundle.monitoring.get(name), f"monitoring.json's {name}")
    if value is None:
        return default
    number = not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
    if not number or not math.isfinite(value) or value <= 0:
        what = "an integer >= 1" if kind is int else "a positive number"
        raise ValueError(f"cannot create the server: {source} must be {what}, got {value!r}")
    return kind(value)


_ALERT_THRESHOLDS = ("latency_threshold_ms", "error_rate_threshold", "drift_threshold")


def _threshold(bundle: Bundle, name: str) -> float | None:
    """A threshold of ``monitoring.json`` (None when absent: that rule is off)."""
    value = bundle.monitoring.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"cannot create the server: monitoring.json's {name} must be a positive number, got {value!r}")
    return float(value)


def _alert_actions(given: Sequence[Any]) -> list[Callable[..., Any]]:
    """Callables as they are; names looked up in trainengine's alert-action registry."""
    if isinstance(given, str):
        given = [given]
    out = []
    for action in given:
        if callable(action):
            out.append(action)
        elif isinstance(action, str):
            try:
                from trainengine.registries import ALERT_ACTIONS
            except ImportError:
                raise ValueError(
                    f"cannot create the server: the alert action {action!r} is a registered name, and looking it up "
                    "needs trainengine installed; the standalone server takes webhooks and email only"
                ) from None
            out.append(ALERT_ACTIONS.get(action))
        else:
            raise ValueError(
                f"cannot create the server: alert_actions holds {type(action).__name__}; give callables taking the "
                "alert, or names registered with register_alert_action"
            )
    return out


def _sklearn_predictor(
    bundle_dir: str | os.PathLike[str], runtime: str, given: Predictor | None, threads: int | None
) -> Predictor | None:
    """The predictor of a scikit-learn bundle (``manifest["format"] == "sklearn"``), else None.

    Such a bundle is served by its own runtime (ONNX Runtime on ``model.onnx`` when it has one,
    else the skops pipeline): ``runtime="torch"`` is refused.
    """
    if __package__:
        from trainengine.serve._sklearn import SklearnPredictor, is_sklearn_bundle
    else:  # a bundle's server.py: a scikit-learn bundle carries its runtime as sklearn_inference.py
        try:
            from sklearn_inference import (  # type: ignore[no-redef]  # the bundle's copy of serve/_sklearn.py
                SklearnPredictor,
                is_sklearn_bundle,
            )
        except ModuleNotFoundError as exc:
            if exc.name != "sklearn_inference":
                raise  # the file is there but its own imports fail: say so, do not serve it as torch
            try:  # a torch bundle (it has no such file), or server.py copied alone: trainengine's
                from trainengine.serve._sklearn import SklearnPredictor, is_sklearn_bundle
            except ImportError:
                return None
    if (runtime == "torch" and given is not None) or not is_sklearn_bundle(bundle_dir):
        return None
    if runtime != "onnx":
        raise ValueError(
            f"{bundle_dir} is a scikit-learn bundle: it is served through ONNX Runtime or its skops pipeline, "
            f"not runtime {runtime!r} — leave the runtime at its default"
        )
    return SklearnPredictor(bundle_dir, num_threads=threads)


def create_app(
    bundle_dir: str | os.PathLike[str],
    *,
    runtime: Runtime = "onnx",
    api_key: str | None = None,
    max_body_bytes: int = 1_048_576,
    max_batch: int = 1024,
    torch_predictor: Predictor | None = None,
    model_file: str | None = None,
    drift_window: int | None = None,
    drift_interval_s: float = 10.0,
    drift_min_examples: int = 100,
    max_request_tokens: int | None = None,
    max_batch_tokens: int | None = None,
    request_timeout_s: float | None = None,
    max_new_tokens: int | None = None,
    batch_max_size: int = 1,
    batch_max_wait_ms: float = 2.0,
    device: str = "cpu",
    threads: int | None = None,
    alerts: bool = True,
    alert_window_s: float | None = None,
    alert_interval_s: float = DEFAULT_INTERVAL_S,
    alert_repeat_s: float | None = None,
    alert_min_requests: int | None = None,
    alert_webhooks: Sequence[str] = (),
    alert_emails: Sequence[str] = (),
    smtp: Mapping[str, Any] | None = None,
    alert_actions: Sequence[Callable[..., Any] | str] = (),
) -> Any:
    """Build the FastAPI app that serves one export bundle.

    Args:
        bundle_dir: The bundle's folder; every file is verified against its manifest.
        runtime: ``"onnx"`` (onnxruntime, ``model.onnx``) or ``"torch"`` (``model.safetensors``
            rebuilt in PyTorch; needs trainengine and torch). A scikit-learn bundle (manifest
            ``"format": "sklearn"``, ``trainengine.sklearn.export_pipeline_bundle``) is served through
            ONNX Runtime when it has ``model.onnx``, else through its skops pipeline; leave ``"onnx"``.
        api_key: Require this key on every endpoint but ``/health``; ``None`` for none.
        max_body_bytes: Larger request bodies get a 413.
        max_batch: More examples per request get a 422.
        torch_predictor: The predictor for ``runtime="torch"`` (built from the bundle when
            ``None``); any :class:`Predictor`.
        model_file: ONNX file for ``runtime="onnx"`` (default ``model.onnx``; ``model.int8.onnx``).
        drift_window: The drift score covers this many most recent examples (default:
            ``monitoring.json``'s ``drift_window``, else 2000).
        drift_interval_s: Recompute the drift score in the background at most this often
            (a ``/metrics`` scrape recomputes it when new inputs arrived).
        drift_min_examples: The drift gauge is NaN until the window holds this many examples.
        max_request_tokens: Language models: more tokens in one request (after cropping to the
            model's context) get a 413 (default: ``monitoring.json``'s ``max_request_tokens``,
            else 65,536).
        max_batch_tokens: Language models: the model runs on chunks of at most this many tokens
            (rows x widest context, the completion included); an example that alone needs more
            gets a 413 (default: ``monitoring.json``, else 8,192 or one full context if larger).
        request_timeout_s: A request still computing after this many seconds (from the moment its
            body has been read) is abandoned between two model calls and answered 503 with
            ``Retry-After`` (default: ``monitoring.json``'s ``request_timeout_s``, else 30).
        max_new_tokens: Language models: the most new tokens one request may ask for with its
            ``max_new_tokens`` field (more is a 422; default: ``monitoring.json``'s
            ``max_new_tokens``, else 256). Requests that do not ask get the 16-token completion.
        batch_max_size: Adaptive batching: concurrent requests' examples run as one model call of
            at most this many examples (1, the default: off — every request runs alone, for the
            lowest one-example latency). Reward bundles and seeded sampling always run alone.
        batch_max_wait_ms: Adaptive batching: how long a request waits for others to join its call.
        device: ``cpu`` or ``cuda`` (``cuda:N``): onnxruntime's CUDA provider for ``runtime="onnx"``
            (it must be installed: ``onnxruntime-gpu``), PyTorch on that device for ``"torch"``.
        threads: CPU threads one model call may use (onnxruntime's intra-op threads; the torch
            runtime's ``torch.set_num_threads``); None: the runtime's default (all cores). With
            many concurrent small requests, 1 leaves the other cores to the HTTP stack.
        alerts: Evaluate the serving alert rules (p95 latency, error rate, drift against the
            thresholds of ``monitoring.json``) on a background thread while the app runs, and send
            what fires to the alert actions (a log line always). ``GET /alerts`` shows their state.
        alert_window_s: Length of the sliding window the rules judge (default: ``monitoring.json``'s
            ``alert_window_s``, else 300 s).
        alert_interval_s: Seconds between two evaluations.
        alert_repeat_s: A rule that stays breached is sent again at most this often (default:
            ``monitoring.json``'s ``alert_repeat_s``, else 3600 s).
        alert_min_requests: Fewer ``/predict`` requests in the window leave latency and error rate
            unjudged (default: ``monitoring.json``'s ``alert_min_requests``, else 20).
        alert_webhooks: URLs to POST alerts to, besides ``monitoring.json``'s ``alert_webhook``.
        alert_emails: Addresses to email alerts to, besides ``monitoring.json``'s ``alert_email``.
        smtp: The SMTP server for email: ``host``, ``port``, ``sender``, ``starttls``, ``username``,
            ``password_env`` (the variable holding the password); over ``monitoring.json``'s ``smtp``.
        alert_actions: More actions: callables ``fn(alert)``, or names registered with
            ``trainengine.registries.register_alert_action`` (needs trainengine installed).

    Returns:
        A ``fastapi.FastAPI`` application.

    Raises:
        BundleError: The bundle is missing, incomplete or fails verification.
        ValueError: An unknown runtime or an out-of-range limit.

    Example:
        >>> from fastapi.testclient import TestClient  # doctest: +SKIP
        >>> client = TestClient(create_app("bundle/"))  # doctest: +SKIP
        >>> client.post("/predict", json={"inputs": [[0.0] * 64]}).json()["predictions"][0]["class"]  # doctest: +SKIP
        0
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    problems = []
    if runtime not in RUNTIMES:
        problems.append(f"unknown runtime {runtime!r} — available: {', '.join(RUNTIMES)}")
    for name, value in (("max_body_bytes", max_body_bytes), ("max_batch", max_batch), ("drift_window", drift_window)):
        if value is None and name == "drift_window":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{name} must be an integer >= 1, got {value!r}")
    if api_key is not None and not api_key:
        problems.append("api_key must be a non-empty string or None")
    if not isinstance(batch_max_size, int) or isinstance(batch_max_size, bool) or batch_max_size < 1:
        problems.append(f"batch_max_size must be an integer >= 1 (1 = no batching), got {batch_max_size!r}")
    if not isinstance(batch_max_wait_ms, (int, float)) or not 0 <= batch_max_wait_ms <= 1000:
        problems.append(f"batch_max_wait_ms must be a number of milliseconds in [0, 1000], got {batch_max_wait_ms!r}")
    if not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda"):
        problems.append(f"device must be cpu or cuda (cuda:N), got {device!r}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        problems.append(f"threads must be an integer >= 1 or None (the runtime's default), got {threads!r}")
    if problems:
        raise ValueError("cannot create the server: " + "; ".join(problems))

    runtime_name: str = runtime
    sklearn_predictor = _sklearn_predictor(bundle_dir, runtime, torch_predictor, threads)
    if sklearn_predictor is not None:
        predictor: Predictor = sklearn_predictor
        runtime_name = sklearn_predictor.runtime
    elif runtime == "onnx":
        predictor = OnnxPredictor(bundle_dir, model_file, device=device, num_threads=threads)
    elif torch_predictor is not None:
        predictor = torch_predictor
    else:
        try:
            from trainengine.serve._torch import TorchPredictor
        except ImportError as exc:
            raise ValueError(
                f"runtime 'torch' needs trainengine and torch ({exc}); the standalone server runs runtime 'onnx'"
            ) from exc
        predictor = TorchPredictor(bundle_dir, device=device, num_threads=threads)
    bundle = predictor.bundle
    request_tokens = _limit("max_request_tokens", max_request_tokens, bundle, DEFAULT_MAX_REQUEST_TOKENS, int)
    # By default one example of the model's full context always fits in a batch.
    full_context = predictor.context_width(bundle.max_seq_len or 1)
    if predictor.step_encoding is not None:  # a reward model: one example is at most max_length tokens
        full_context = predictor.step_encoding.max_length or 1
    batch_tokens = _limit(
        "max_batch_tokens", max_batch_tokens, bundle, max(DEFAULT_MAX_BATCH_TOKENS, full_context), int
    )
    timeout_s = _limit("request_timeout_s", request_timeout_s, bundle, DEFAULT_REQUEST_TIMEOUT_S, float)
    new_tokens_limit = _limit("max_new_tokens", max_new_tokens, bundle, MAX_NEW_TOKENS_LIMIT, int)
    language_model = bundle.task_type == "language_modeling"
    reward_model = bundle.task_type == REWARD_TASK
    retry_after = str(math.ceil(timeout_s))
    thresholds = {name: _threshold(bundle, name) for name in _ALERT_THRESHOLDS}
    latency_ms = thresholds["latency_threshold_ms"]
    metrics = _Metrics(
        bundle,
        runtime_name,
        max_batch,
        thresholds["drift_threshold"],
        latency_threshold_s=None if latency_ms is None else latency_ms / 1000.0,
        error_rate_threshold=thresholds["error_rate_threshold"],
    )
    window = None
    if bundle.reference_profile is not None:
        try:
            size = drift_window or bundle.monitoring.get("drift_window") or 2000
            window = DriftWindow(bundle.reference_profile, max_examples=int(size))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("drift monitoring is off: the bundle's reference_profile.json cannot be read (%s)", exc)
    # A scikit-learn bundle's batches are checked records: the window takes their profiled columns.
    drift_features = getattr(sklearn_predictor, "drift_features", None)
    drift = _Drift(window, metrics, drift_interval_s, drift_min_examples, drift_features)
    alert_rules = None
    leader = AlertLeader(metrics.multiprocess_dir)
    if alerts:
        actions = build_alert_actions(
            bundle.monitoring,
            webhooks=list(alert_webhooks),
            emails=list(alert_emails),
            smtp=smtp,
            extra=_alert_actions(alert_actions),
        )

        def window_counts() -> WindowCounts:
            drift.refresh()  # on the alert thread: the drift score is current without costing a request
            return metrics.window_counts()

        alert_rules = ServingAlerts(
            window_counts,
            actions,
            latency_threshold_ms=latency_ms,
            error_rate_threshold=thresholds["error_rate_threshold"],
            drift_threshold=thresholds["drift_threshold"],
            window_s=_limit("alert_window_s", alert_window_s, bundle, DEFAULT_WINDOW_S, float),
            interval_s=alert_interval_s,
            repeat_s=_limit("alert_repeat_s", alert_repeat_s, bundle, DEFAULT_REPEAT_S, float),
            min_requests=_limit("alert_min_requests", alert_min_requests, bundle, DEFAULT_MIN_REQUESTS, int),
            labels={"model": bundle.name, "version": bundle.version},
            dispatch=leader,
            on_evaluate=metrics.publish_alerts,
        )
    started = time.monotonic()
    key = api_key.encode("utf-8") if api_key is not None else None

    @asynccontextmanager
    async def lifespan(_app: Any):
        # Everything loaded so far (the model, the libraries) lives as long as the server: out of
        # the collector's sight, a full collection no longer walks it — a latency spike otherwise.
        gc.collect()
        gc.freeze()
        if alert_rules is not None:
            alert_rules.start()  # off the request path: a daemon thread reads the counters
        yield
        if alert_rules is not None:
            alert_rules.stop()
            leader.release()
        if metrics.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), metrics.multiprocess_dir)  # drop this worker's live gauges

    class ModelServer(FastAPI):
        """The app, entered through :class:`_Observe`: every request is counted and its key checked
        first, and POST /predict goes straight to its handler, past the framework's per-request
        layers (telemetry hooks, error, body-limit, exception and exit-stack middleware, routing)."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await observed(scope, receive, send)

    app = ModelServer(
        title=f"{bundle.name} ({bundle.version})",
        description="trainengine model server",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.metrics = metrics
    app.state.drift = drift
    app.state.alerts = alert_rules

    compute = _ComputeTime()
    # Small requests of a fast model: parse, predict and answer on the event loop (no thread hand-off).
    inline_capable = not (language_model or reward_model) and batch_max_size == 1

    def handle_predict(body: bytes, check: Callable[[], None]) -> bytes:
        # Runs in the thread pool: JSON parsing and validation scale with the body, inference with the batch.
        start = time.thread_time()  # CPU time: waiting for the GIL among busy threads is not the work's cost
        try:
            return predict_json(body, check)
        finally:
            compute.add(time.thread_time() - start)
            if len(body) >= _RELEASE_AFTER_BYTES:
                _release_memory()

    def parse(body: bytes) -> tuple[Any, Any]:
        """The request's preprocessed batch and decoding options (not for reward bundles)."""
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise _ClientError(400, f"request body is not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(payload, dict) or "inputs" not in payload:
            got = "an object without it" if isinstance(payload, dict) else f"a JSON {type(payload).__name__}"
            raise _ClientError(422, f'inputs: missing; send {{"inputs": [example, ...]}}, got {got}', "inputs")
        try:
            sampling = request_sampling(payload)
            return predictor.preprocess(payload["inputs"], max_batch=max_batch, max_request_tokens=request_tokens), (
                sampling
            )
        except LimitError as exc:
            raise _ClientError(413, str(exc), exc.field) from None
        except InputError as exc:
            raise _ClientError(422, str(exc), exc.field) from None

    def answer(batch: Any, predictions: list[dict[str, Any]]) -> bytes:
        metrics.observe_predictions(predictions)
        drift.add(batch)
        response = {"predictions": predictions, "model": bundle.name, "version": bundle.version}
        return _encode(response)

    def run_model(batch: Any, sampling: Any, check: Callable[[], None]) -> list[dict[str, Any]]:
        return predictor.predict_array(batch, max_batch_tokens=batch_tokens, check=check, sampling=sampling)

    def predict_json(body: bytes, check: Callable[[], None]) -> bytes:
        if reward_model:
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError) as exc:
                raise _ClientError(400, f"request body is not valid JSON: {str(exc)[:200]}") from None
            return predict_steps(payload, check)
        batch, sampling = parse(body)
        try:
            predictions = run_model(batch, sampling, check)
        except LimitError as exc:
            raise _ClientError(413, str(exc), exc.field) from None
        except InputError as exc:
            raise _ClientError(422, str(exc), exc.field) from None
        return answer(batch, predictions)

    def predict_steps(payload: Any, check: Callable[[], None]) -> bytes:
        """A reward request: {"problem", "steps"}, a list of them or {"inputs": [...]} -> per-step scores."""
        try:
            if isinstance(payload, dict):
                request_sampling(payload)  # decoding options are refused by name
            batch = predictor.encode_steps(
                reward_inputs(payload), max_batch=max_batch, max_request_tokens=request_tokens
            )
            del payload
            predictions = predictor.predict_steps(batch, max_batch_tokens=batch_tokens, check=check)
        except LimitError as exc:
            raise _ClientError(413, str(exc), exc.field) from None
        except InputError as exc:
            raise _ClientError(422, str(exc), exc.field) from None
        metrics.observe_predictions(predictions)
        drift.add(batch.tokens)
        response = {"predictions": predictions, "model": bundle.name, "version": bundle.version}
        return _encode(response)

    def request_sampling(payload: dict[str, Any]) -> Any:
        """The request's decoding options (language models); other bundles refuse them by name."""
        if language_model:
            return sampling_options(
                payload, max_new_tokens_limit=new_tokens_limit, default_max_new_tokens=predictor.max_new_tokens
            )
        for name in SAMPLING_FIELDS:
            if payload.get(name) is not None:
                raise InputError(
                    name, f"decoding options are for language-model bundles; this one is {bundle.task_type}"
                )
        return None

    def error_response(exc: _ClientError) -> Any:
        content: dict[str, Any] = {"detail": exc.detail}
        if exc.field is not None:
            content["field"] = exc.field
        return JSONResponse(content, status_code=exc.status)

    def client_closed(when: str) -> Any:
        # Nobody reads this response; its status is what the request metrics count.
        log.warning("POST /predict: the client disconnected %s; counted as status %d", when, CLIENT_CLOSED)
        return Response(status_code=CLIENT_CLOSED)

    batcher = _Batcher(run_model, batch_max_size, batch_max_wait_ms / 1000.0) if batch_max_size > 1 else None
    # On a GPU, concurrent requests each running their own model calls from many threads contend for
    # it (measured: 16 concurrent generations gave half the requests/s of one at a time); one thread.
    model_thread = (
        ThreadPoolExecutor(1, thread_name_prefix="trainengine-gpu")
        if device.startswith("cuda") and batcher is None
        else None
    )

    def no_check() -> None:
        return None

    def after_answer() -> None:
        if drift.due():
            # Off the request path: the response does not wait for the O(window) recomputation.
            asyncio.get_running_loop().run_in_executor(None, drift.refresh)

    def too_slow() -> Any:
        return JSONResponse(
            {
                "detail": f"the request did not finish within the compute limit of {timeout_s:g} s "
                "(request_timeout_s); send fewer or shorter examples, or retry later"
            },
            status_code=503,
            headers={"retry-after": retry_after},
        )

    async def predict_batched(request: Any, body: bytes) -> Any:
        """Adaptive batching: parse here (or in a thread when large), run with other requests' examples."""
        small = len(body) <= _INLINE_BODY_BYTES
        try:
            batch, sampling = parse(body) if small else await run_in_threadpool(parse, body)
        except _ClientError as exc:
            return error_response(exc)
        # Seeded sampling draws per example index: such a request runs alone, as it would unbatched.
        key = object() if getattr(sampling, "seed", None) is not None else sampling
        entry = await batcher.submit(batch, sampling, key)  # type: ignore[union-attr]  # only called with a batcher
        left = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({entry.future, left}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
        if not entry.future.done():
            entry.abandoned = True  # the group stops before its next model call once nobody waits
            entry.future.cancel()
            if left.done() and not left.cancelled() and left.exception() is None:
                return client_closed("before its answer was ready")
            return too_slow()
        try:
            predictions = entry.future.result()
        except LimitError as exc:
            return error_response(_ClientError(413, str(exc), exc.field))
        except InputError as exc:
            return error_response(_ClientError(422, str(exc), exc.field))
        except _Abandoned:
            return too_slow()
        content = answer(batch, predictions) if small else await run_in_threadpool(answer, batch, predictions)
        after_answer()
        return Response(content, media_type="application/json")

    async def predict(request: Request) -> Any:
        try:
            body = await _read_body(request, max_body_bytes)
        except _ClientError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return client_closed("during the upload")
        if batcher is not None and not reward_model:
            return await predict_batched(request, body)
        if inline_capable and len(body) <= _INLINE_BODY_BYTES and compute.mean_s < _INLINE_MAX_S:
            # A fast model and a small body: the thread pool's hand-off would cost more than the work.
            start = time.thread_time()
            try:
                content = predict_json(body, no_check)
            except _ClientError as exc:
                return error_response(exc)
            finally:
                compute.add(time.thread_time() - start)
            after_answer()
            return Response(content, media_type="application/json")
        deadline = time.monotonic() + timeout_s
        abandon = threading.Event()

        def check() -> None:  # in the worker thread, before every model call
            if abandon.is_set() or time.monotonic() > deadline:
                raise _Abandoned

        work: asyncio.Future[Any]
        if model_thread is not None:  # one GPU: requests take turns instead of contending for it
            work = asyncio.get_running_loop().run_in_executor(model_thread, handle_predict, body, check)
        else:
            work = asyncio.ensure_future(run_in_threadpool(handle_predict, body, check))
        left: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, left}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
        if not work.done():
            abandon.set()  # the thread stops before its next model call
            work.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved: no warning
        try:
            if left.done() and not left.cancelled() and left.exception() is None:
                return client_closed("before its answer was ready")
            if not work.done():
                raise _Abandoned
            content = work.result()
        except _ClientError as exc:
            return error_response(exc)
        except _Abandoned:
            return too_slow()
        after_answer()
        return Response(content, media_type="application/json")

    # A plain Starlette route: FastAPI's per-request parameter handling is not needed for a raw body.
    app.router.add_route("/predict", predict, methods=["POST"])

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "name": bundle.name,
            "version": bundle.version,
            "artifact_sha256": bundle.content_sha256,
            "runtime": runtime_name,
            "task_type": bundle.task_type,
            "uptime_s": round(time.monotonic() - started, 3),
            "alerts_active": alert_rules.active() if alert_rules is not None else [],
        }

    @app.get("/alerts")
    async def alerts_endpoint():
        if alert_rules is None:
            return {"enabled": False, "name": bundle.name, "version": bundle.version}
        return {"enabled": True, "name": bundle.name, "version": bundle.version, **alert_rules.state()}

    @app.get("/metrics")
    async def metrics_endpoint():
        from prometheus_client import CONTENT_TYPE_LATEST

        def render() -> bytes:
            drift.refresh(force=True)
            return metrics.render()

        return Response(await run_in_threadpool(render), media_type=CONTENT_TYPE_LATEST)

    async def predict_asgi(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        # The hot path: the same handler as the route, without the framework's routing, exception and
        # exit-stack layers around it (about a third of a small request's time on one core).
        try:
            response = await predict(Request(scope, receive))
        except Exception:
            log.exception("POST /predict failed")
            response = JSONResponse({"detail": "internal server error"}, status_code=500)
        await response(scope, receive, send)

    async def framework(scope: Any, receive: Any, send: Any) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    # Counts every response (401, 404, 413, 422, 500) and checks the key before any body is read.
    observed = _Observe(framework, metrics=metrics, api_key=key, predict=predict_asgi)
    return app


# ----------------------------------------------------------------------------- running
def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(ENV_PREFIX + name)
    return default if raw in (None, "") else int(raw)


def _env_number(name: str, kind: type) -> Any:
    raw = os.environ.get(ENV_PREFIX + name)
    return None if raw in (None, "") else kind(raw)


def create_app_from_env() -> Any:
    """App factory for uvicorn worker processes: options come from ``TRAINENGINE_SERVE_*`` variables.

    ``BUNDLE`` (required), ``RUNTIME``, ``MODEL_FILE``, ``MAX_BODY_BYTES``, ``MAX_BATCH``,
    ``MAX_REQUEST_TOKENS``, ``MAX_BATCH_TOKENS``, ``REQUEST_TIMEOUT_S``, ``MAX_NEW_TOKENS``, ``BATCH_MAX_SIZE``,
    ``BATCH_MAX_WAIT_MS``, ``DEVICE``, ``THREADS``, ``API_KEY_ENV`` (the name of the variable that holds the key),
    the alert options ``ALERTS``, ``ALERT_WINDOW_S``, ``ALERT_INTERVAL_S``, ``ALERT_REPEAT_S``,
    ``ALERT_MIN_REQUESTS``, and as JSON ``ALERT_WEBHOOKS``, ``ALERT_EMAILS``, ``SMTP``, ``ALERT_ACTIONS`` (registered
    names) and ``PLUGINS`` (modules imported first, so that those names are registered).
    """
    bundle = os.environ.get(ENV_PREFIX + "BUNDLE")
    if not bundle:
        raise RuntimeError(f"{ENV_PREFIX}BUNDLE is not set; start the server with `trainengine serve` or server.py")
    key_env = os.environ.get(ENV_PREFIX + "API_KEY_ENV")
    plugins = _env_json("PLUGINS", [])
    if plugins:
        from trainengine.registries import load_plugins

        load_plugins(plugins)
    return create_app(
        bundle,
        runtime=os.environ.get(ENV_PREFIX + "RUNTIME", "onnx"),  # type: ignore[arg-type]  # create_app checks it
        api_key=os.environ.get(key_env) if key_env else None,
        model_file=os.environ.get(ENV_PREFIX + "MODEL_FILE") or None,
        max_body_bytes=_env_int("MAX_BODY_BYTES", 1_048_576),
        max_batch=_env_int("MAX_BATCH", 1024),
        max_request_tokens=_env_number("MAX_REQUEST_TOKENS", int),
        max_batch_tokens=_env_number("MAX_BATCH_TOKENS", int),
        request_timeout_s=_env_number("REQUEST_TIMEOUT_S", float),
        max_new_tokens=_env_number("MAX_NEW_TOKENS", int),
        batch_max_size=_env_int("BATCH_MAX_SIZE", 1),
        batch_max_wait_ms=_env_number("BATCH_MAX_WAIT_MS", float) or 2.0,
        device=os.environ.get(ENV_PREFIX + "DEVICE") or "cpu",
        threads=_env_number("THREADS", int),
        alerts=os.environ.get(ENV_PREFIX + "ALERTS", "1") != "0",
        alert_window_s=_env_number("ALERT_WINDOW_S", float),
        alert_interval_s=_env_number("ALERT_INTERVAL_S", float) or DEFAULT_INTERVAL_S,
        alert_repeat_s=_env_number("ALERT_REPEAT_S", float),
        alert_min_requests=_env_number("ALERT_MIN_REQUESTS", int),
        alert_webhooks=_env_json("ALERT_WEBHOOKS", []),
        alert_emails=_env_json("ALERT_EMAILS", []),
        smtp=_env_json("SMTP", None),
        alert_actions=_env_json("ALERT_ACTIONS", []),
    )


def _env_json(name: str, default: Any) -> Any:
    raw = os.environ.get(ENV_PREFIX + name)
    return default if raw in (None, "") else json.loads(raw)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_server(
    bundle_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    runtime: Runtime = "onnx",
    api_key_env: str | None = None,
    workers: int = 1,
    model_file: str | None = None,
    max_body_bytes: int = 1_048_576,
    max_batch: int = 1024,
    log_level: str = "info",
    torch_predictor: Predictor | None = None,
    max_request_tokens: int | None = None,
    max_batch_tokens: int | None = None,
    request_timeout_s: float | None = None,
    max_new_tokens: int | None = None,
    batch_max_size: int = 1,
    batch_max_wait_ms: float = 2.0,
    device: str = "cpu",
    threads: int | None = None,
    alerts: bool = True,
    alert_window_s: float | None = None,
    alert_interval_s: float = DEFAULT_INTERVAL_S,
    alert_repeat_s: float | None = None,
    alert_min_requests: int | None = None,
    alert_webhooks: Sequence[str] = (),
    alert_emails: Sequence[str] = (),
    smtp: Mapping[str, Any] | None = None,
    alert_actions: Sequence[Callable[..., Any] | str] = (),
    plugins: Sequence[str] = (),
) -> None:
    """Serve a bundle with uvicorn until interrupted (blocks).

    With ``workers > 1``, uvicorn starts that many processes, each building the app through
    :func:`create_app_from_env`; their metrics are aggregated through ``PROMETHEUS_MULTIPROC_DIR``
    (a temporary folder unless already set), and one of them (the holder of a lock file there)
    sends the alerts. The key, if any, is read from the environment variable ``api_key_env`` in
    every process, never passed on a command line; so is the SMTP password (``smtp["password_env"]``).

    Args:
        plugins: Modules to import before the app is built (their import registers the alert
            actions ``alert_actions`` names); needs trainengine.

    Raises:
        ValueError: ``api_key_env`` names an unset or empty variable, ``workers < 1``, or a
            callable alert action with several workers (register it and pass its name).
        BundleError: The bundle cannot be loaded.
    """
    import uvicorn

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if plugins:
        from trainengine.registries import load_plugins

        load_plugins(plugins)
    alert_options: dict[str, Any] = {
        "alerts": alerts,
        "alert_window_s": alert_window_s,
        "alert_interval_s": alert_interval_s,
        "alert_repeat_s": alert_repeat_s,
        "alert_min_requests": alert_min_requests,
        "alert_webhooks": list(alert_webhooks),
        "alert_emails": list(alert_emails),
        "smtp": dict(smtp) if smtp else None,
        "alert_actions": list(alert_actions),
    }
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ValueError(f"the API key variable {api_key_env} is unset or empty; export {api_key_env}=<key> first")
    if not is_loopback(host) and api_key is None:
        print(
            f"warning: serving on {host} without an API key — anyone who can reach port {port} can query "
            "the model; set one with --api-key-env VAR",
            file=sys.stderr,
        )
    if workers == 1:
        app = create_app(
            bundle_dir,
            runtime=runtime,
            api_key=api_key,
            model_file=model_file,
            max_body_bytes=max_body_bytes,
            max_batch=max_batch,
            torch_predictor=torch_predictor,
            max_request_tokens=max_request_tokens,
            max_batch_tokens=max_batch_tokens,
            request_timeout_s=request_timeout_s,
            max_new_tokens=max_new_tokens,
            batch_max_size=batch_max_size,
            batch_max_wait_ms=batch_max_wait_ms,
            device=device,
            threads=threads,
            **alert_options,
        )
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_S)
        return
    if any(not isinstance(a, str) for a in alert_actions):
        raise ValueError(
            "with workers > 1 every alert action must be a registered name (each worker process builds its own): "
            "register the function with trainengine.registries.register_alert_action and pass its name"
        )
    loaded = load_bundle(bundle_dir)  # fail here, once, rather than in every worker
    _limit("max_request_tokens", max_request_tokens, loaded, 0, int)
    _limit("max_batch_tokens", max_batch_tokens, loaded, 0, int)
    _limit("request_timeout_s", request_timeout_s, loaded, 0.0, float)
    _limit("max_new_tokens", max_new_tokens, loaded, 0, int)
    if alerts:  # bad alert targets fail here, once, rather than in every worker
        build_alert_actions(loaded.monitoring, webhooks=list(alert_webhooks), emails=list(alert_emails), smtp=smtp)
    options = {
        "BUNDLE": str(Path(bundle_dir).resolve()),
        "RUNTIME": runtime,
        "MODEL_FILE": model_file or "",
        "MAX_BODY_BYTES": str(max_body_bytes),
        "MAX_BATCH": str(max_batch),
        "MAX_REQUEST_TOKENS": "" if max_request_tokens is None else str(max_request_tokens),
        "MAX_BATCH_TOKENS": "" if max_batch_tokens is None else str(max_batch_tokens),
        "REQUEST_TIMEOUT_S": "" if request_timeout_s is None else str(request_timeout_s),
        "MAX_NEW_TOKENS": "" if max_new_tokens is None else str(max_new_tokens),
        "BATCH_MAX_SIZE": str(batch_max_size),
        "BATCH_MAX_WAIT_MS": str(batch_max_wait_ms),
        "DEVICE": device,
        "THREADS": "" if threads is None else str(threads),
        "API_KEY_ENV": api_key_env or "",
        "ALERTS": "1" if alerts else "0",
        "ALERT_WINDOW_S": "" if alert_window_s is None else str(alert_window_s),
        "ALERT_INTERVAL_S": str(alert_interval_s),
        "ALERT_REPEAT_S": "" if alert_repeat_s is None else str(alert_repeat_s),
        "ALERT_MIN_REQUESTS": "" if alert_min_requests is None else str(alert_min_requests),
        "ALERT_WEBHOOKS": json.dumps(list(alert_webhooks)),
        "ALERT_EMAILS": json.dumps(list(alert_emails)),
        "SMTP": json.dumps(dict(smtp)) if smtp else "",
        "ALERT_ACTIONS": json.dumps(list(alert_actions)),
        "PLUGINS": json.dumps(list(plugins)),
    }
    saved = {k: os.environ.get(k) for k in [ENV_PREFIX + k for k in options] + ["PROMETHEUS_MULTIPROC_DIR"]}
    os.environ.update({ENV_PREFIX + k: v for k, v in options.items()})
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="trainengine-serve-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    if __package__:
        target, app_dir = "trainengine.serve._app:create_app_from_env", "."
    else:  # server.py: workers import it by file name from its folder
        target, app_dir = f"{Path(__file__).stem}:create_app_from_env", str(Path(__file__).resolve().parent)
    try:
        uvicorn.run(
            target,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            app_dir=app_dir,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
    finally:
        for name, value in saved.items():  # the caller's environment as it was
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python server.py [--bundle DIR] [--host H] [--port P] [--api-key-env VAR] [--workers N] [--model FILE]``."""
    parser = argparse.ArgumentParser(description="Serve a trainengine export bundle over HTTP (ONNX Runtime).")
    parser.add_argument(
        "--bundle", default=str(Path(__file__).resolve().parent), help="bundle folder (default: this script's folder)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--model", default=None, help="ONNX file of the bundle (default model.onnx)")
    parser.add_argument("--max-request-tokens", type=int, default=None, help="language models: tokens per request")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="language models: tokens per model call")
    parser.add_argument("--request-timeout", type=float, default=None, help="seconds of compute per request")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="language models: most new tokens per request")
    parser.add_argument("--batch-max-size", type=int, default=1, help="adaptive batching: examples per model call")
    parser.add_argument("--batch-max-wait-ms", type=float, default=2.0, help="adaptive batching: longest wait")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (onnxruntime-gpu's CUDA provider)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per model call (default: all)")
    parser.add_argument("--log-level", default="info")
    alerting = parser.add_argument_group(
        "alerts", "p95 latency, error rate and drift against monitoring.json's thresholds, over a sliding window"
    )
    alerting.add_argument("--no-alerts", action="store_true", help="do not evaluate the alert rules")
    alerting.add_argument("--alert-window-s", type=float, default=None, help="window length (default 300)")
    alerting.add_argument("--alert-interval-s", type=float, default=DEFAULT_INTERVAL_S, help="seconds between checks")
    alerting.add_argument("--alert-repeat-s", type=float, default=None, help="resend a lasting alert this often")
    alerting.add_argument("--alert-min-requests", type=int, default=None, help="requests needed to judge")
    alerting.add_argument("--alert-webhook", action="append", default=[], metavar="URL", help="POST alerts here")
    alerting.add_argument("--alert-email", action="append", default=[], metavar="ADDR", help="email alerts here")
    env = os.environ.get
    alerting.add_argument("--smtp-host", default=env("TRAINENGINE_SMTP_HOST"), help="SMTP server for email alerts")
    alerting.add_argument("--smtp-port", type=int, default=int(env("TRAINENGINE_SMTP_PORT") or 25))
    alerting.add_argument("--smtp-from", default=env("TRAINENGINE_SMTP_FROM"), help="From address")
    alerting.add_argument(
        "--smtp-starttls", action="store_true", default=env("TRAINENGINE_SMTP_STARTTLS", "") in ("1", "true")
    )
    alerting.add_argument("--smtp-username", default=env("TRAINENGINE_SMTP_USERNAME"))
    alerting.add_argument(
        "--smtp-password-env",
        default=env("TRAINENGINE_SMTP_PASSWORD_ENV"),
        metavar="VAR",
        help="environment variable holding the SMTP password",
    )
    args = parser.parse_args(argv)
    smtp = {
        "host": args.smtp_host,
        "port": args.smtp_port if args.smtp_host else None,
        "sender": args.smtp_from,
        "starttls": args.smtp_starttls if args.smtp_host else None,
        "username": args.smtp_username,
        "password_env": args.smtp_password_env,
    }
    try:
        run_server(
            args.bundle,
            host=args.host,
            port=args.port,
            api_key_env=args.api_key_env,
            workers=args.workers,
            model_file=args.model,
            log_level=args.log_level,
            max_request_tokens=args.max_request_tokens,
            max_batch_tokens=args.max_batch_tokens,
            request_timeout_s=args.request_timeout,
            max_new_tokens=args.max_new_tokens,
            batch_max_size=args.batch_max_size,
            batch_max_wait_ms=args.batch_max_wait_ms,
            device=args.device,
            threads=args.threads,
            alerts=not args.no_alerts,
            alert_window_s=args.alert_window_s,
            alert_interval_s=args.alert_interval_s,
            alert_repeat_s=args.alert_repeat_s,
            alert_min_requests=args.alert_min_requests,
            alert_webhooks=args.alert_webhook,
            alert_emails=args.alert_email,
            smtp={k: v for k, v in smtp.items() if v is not None} or None,
        )
    except (BundleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
