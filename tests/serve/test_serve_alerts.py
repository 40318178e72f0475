"""Serving alerts: the sliding-window rules (p95 latency, error rate, drift), their cool-down and
resolution, delivery through the alert actions, and what /metrics, /alerts and /health show."""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from trainengine.data import load_builtin
from trainengine.errors import ConfigError
from trainengine.export import create_export_bundle
from trainengine.export._prometheus import SERVED_METRICS
from trainengine.models import build_model
from trainengine.monitoring import CallbackAlert
from trainengine.registries import ALERT_ACTIONS, register_alert_action
from trainengine.serve import ServingAlerts, WindowCounts, build_alert_actions, create_app, histogram_quantile

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient asks for httpx2
    from fastapi.testclient import TestClient

INF = float("inf")
EDGES = (0.05, 0.1, 0.25, 1.0, INF)


# ----------------------------------------------------------------------------- the rules, on synthetic windows
class Traffic:
    """Cumulative counters a test moves forward in time: what the server's /metrics would hold."""

    def __init__(self) -> None:
        self.now = 0.0
        self.counts = dict.fromkeys(EDGES, 0.0)
        self.requests = self.errors = 0.0
        self.drift: float | None = None

    def serve(self, n: int, seconds: float, *, errors: int = 0, after: float = 5.0) -> None:
        """``n`` requests taking ``seconds`` each (``errors`` of them 5xx), then ``after`` seconds pass."""
        for edge in EDGES:
            if seconds <= edge:
                self.counts[edge] += n
        self.requests += n
        self.errors += errors
        self.now += after

    def sample(self) -> WindowCounts:
        return WindowCounts(self.now, tuple(self.counts.items()), self.requests, self.errors, self.drift, 500)


def _rules(traffic: Traffic, seen: list, **kw) -> ServingAlerts:
    options = {
        "latency_threshold_ms": 100.0,
        "error_rate_threshold": 0.05,
        "drift_threshold": 0.2,
        "window_s": 60.0,
        "interval_s": 5.0,
        "repeat_s": 600.0,
        "min_requests": 20,
        "labels": {"model": "digits", "version": "1.0.0"},
        **kw,
    }
    return ServingAlerts(traffic.sample, [seen.append], clock=lambda: traffic.now, **options)


def test_healthy_traffic_fires_nothing() -> None:
    traffic, seen = Traffic(), []
    rules = _rules(traffic, seen)
    traffic.drift = 0.05
    for _ in range(20):
        traffic.serve(100, 0.02, errors=1)  # 1% errors, 20 ms, low drift
        assert rules.evaluate() == []
    assert seen == [] and rules.active() == []
    assert rules.window["requests"] == 1200 and rules.window["latency_p95_ms"] < 50  # 12 evaluations of 100 in 60 s


def test_a_slow_window_fires_one_latency_alert_with_the_numbers() -> None:
    traffic, seen = Traffic(), []
    rules = _rules(traffic, seen)
    traffic.serve(90, 0.02)
    traffic.serve(10, 0.2)  # 10% of the requests over 100 ms: p95 above the threshold
    (alert,) = rules.evaluate()
    assert seen == [alert] and rules.active() == ["latency"]
    assert alert.kind == "latency" and alert.severity == "warning" and not alert.resolved
    assert alert.threshold == 100.0 and 100 < alert.value <= 250
    assert alert.value == pytest.approx(
        histogram_quantile(0.95, [(0.05, 90), (0.1, 90), (0.25, 100), (INF, 100)]) * 1e3
    )
    assert "p95 latency" in alert.message and "digits 1.0.0" in alert.message
    assert alert.details["model"] == "digits" and alert.details["window_requests"] == 100


def test_exactly_five_percent_slow_is_not_a_breach() -> None:
    traffic, seen = Traffic(), []
    rules = _rules(traffic, seen)
    traffic.serve(95, 0.02)
    traffic.serve(5, 0.2)  # the 95th percentile is still under the threshold edge
    assert rules.evaluate() == [] and rules.window["latency_p95_ms"] <= 100


def test_errors_fire_error_rate_and_drift_fires_drift() -> None:
    traffic, seen = Traffic(), []
    rules = _rules(traffic, seen)
    traffic.serve(100, 0.01, errors=30)  # 30%: above twice the 5% threshold -> critical
    traffic.drift = 0.35
    alerts = {a.kind: a for a in rules.evaluate()}
    assert set(alerts) == {"error_rate", "drift"}
    assert alerts["error_rate"].severity == "critical" and alerts["error_rate"].value == pytest.approx(0.3)
    assert "30 of 100 requests answered 5xx" in alerts["error_rate"].message
    assert alerts["drift"].severity == "warning" and "retraining recommended" in alerts["drift"].message


def test_too_few_requests_are_not_judged() -> None:
    traffic, seen = Traffic(), []
    rules = _rules(traffic, seen)
    traffic.serve(10, 2.0, errors=10)  # all slow, all failing, but only 10 requests (< min_requests 20)
    assert rules.evaluate() == [] and rules.window["error_rate"] is None


def test_a_lasting_breach_is_sent_once_then_repeated_after_the_cool_down() -> None:
    traffic, seen = Traffic(), []
    rules = _rules(traffic, seen, repeat_s=60.0, window_s=30.0)
    for _ in range(30):  # 150 s of sustained errors, one evaluation every 5 s
        traffic.serve(100, 0.01, errors=8)
        rules.evaluate()
    kinds = [(a.kind, a.details.get("repeat")) for a in seen]
    assert kinds == [("error_rate", None), ("error_rate", "still firing"), ("error_rate", "still firing")]
    assert seen[1].message.startswith("still firing: ")


def test_escalation_to_critical_is_sent_at_once() -> None:
    traffic, seen = Traffic(), []
    rules = _rules(traffic, seen, window_s=10.0)
    traffic.serve(100, 0.01, errors=8)
    rules.evaluate()
    traffic.serve(100, 0.01, errors=50)
    rules.evaluate()
    assert [(a.severity, a.details.get("repeat")) for a in seen] == [("warning", None), ("critical", "now critical")]


def test_resolves_after_the_window_is_clear_and_can_fire_again() -> None:
    traffic, seen = Traffic(), []
    rules = _rules(traffic, seen, window_s=20.0, resolve_after=2)
    traffic.serve(100, 0.5)
    rules.evaluate()
    assert rules.active() == ["latency"]
    fast = 0
    while rules.active():  # the slow requests leave the 20 s window, then two clear evaluations resolve it
        traffic.serve(100, 0.01)
        rules.evaluate()
        fast += 1
        assert fast < 10
    first, resolved = seen
    assert resolved.resolved and resolved.kind == "latency" and "back under 100 ms" in resolved.message
    assert resolved.details["firing_since"] == first.details["firing_since"]
    traffic.serve(100, 0.5)
    assert [a.kind for a in rules.evaluate()] == ["latency"] and not seen[-1].resolved  # a new incident


def test_counter_reset_counts_anew() -> None:
    traffic, seen = Traffic(), []
    rules = _rules(traffic, seen)
    traffic.serve(100, 0.01)
    rules.evaluate()
    traffic.counts = dict.fromkeys(EDGES, 0.0)  # a restarted worker: counters start again at 0
    traffic.requests = traffic.errors = 0.0
    traffic.serve(50, 0.01, errors=25)
    assert [a.kind for a in rules.evaluate()] == ["error_rate"] and rules.window["requests"] == 50


def test_histogram_quantile_is_prometheus_interpolation() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.4, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.99, [(0.1, 1.0), (INF, 100.0)]) == 0.1  # in +Inf: the largest finite bound
    assert histogram_quantile(0.95, [(0.1, 0.0), (INF, 0.0)]) is None


def test_bad_settings_are_listed_at_once() -> None:
    traffic = Traffic()
    with pytest.raises(ConfigError) as info:
        ServingAlerts(traffic.sample, [42], latency_threshold_ms=-1, window_s=1, interval_s=5, min_requests=0)
    text = str(info.value)
    for part in (
        "latency_threshold_ms must be a positive",
        "interval_s (5) must not exceed",
        "min_requests",
        "actions[0]",
    ):
        assert part in text


def test_alert_targets_come_from_the_bundle_and_the_server(monkeypatch) -> None:
    monitoring = {"alert_webhook": "http://127.0.0.1:9/hook", "alert_email": "team@example.com"}
    actions = build_alert_actions(monitoring, webhooks=["http://127.0.0.1:9/other"])
    assert [type(a).__name__ for a in actions] == ["LogAlert", "WebhookAlert", "WebhookAlert"]  # no SMTP host: no email
    monitoring["smtp"] = {"host": "127.0.0.1", "port": 2525, "sender": "alerts@example.com"}
    actions = build_alert_actions(monitoring, emails=["oncall@example.com"], smtp={"port": 2526})
    (mail,) = [a for a in actions if type(a).__name__ == "EmailAlert"]
    assert mail.recipients == ["team@example.com", "oncall@example.com"] and mail.smtp_port == 2526
    with pytest.raises(ConfigError, match="a password is never stored in settings"):
        build_alert_actions({"alert_email": "a@example.com", "smtp": {"host": "h", "password": "hunter2"}})
    with pytest.raises(ConfigError, match="url must start with http"):
        build_alert_actions({}, webhooks=["ftp://example.com"])


# ----------------------------------------------------------------------------- in the server
class _Hook:
    """A local HTTP endpoint collecting the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Hook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def alert_bundle(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """An (untrained) digits MLP bundle whose monitoring config sets the alert thresholds."""
    splits = load_builtin("digits", max_train_samples=400)
    model = build_model("mlp", input_dim=64, output_dim=10, hidden_dims=(16,), dropout=0.0).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trainengine.tasks import TaskSpec

        path = create_export_bundle(
            model,
            task_spec=TaskSpec.classification("digits", 10),
            formats=["onnx"],
            output_dir=tmp_path_factory.mktemp("alert-bundles"),
            name="digits",
            version="1.0.0",
            reference_data=splits.train,
            monitoring_config={
                "latency_threshold_ms": 40,
                "error_rate_threshold": 0.05,
                "drift_threshold": 0.2,
                "alert_email": "team@example.com",
                "alert_min_requests": 10,
            },
        )
    val = np.stack([splits.val[i][0].numpy() for i in range(len(splits.val))])
    return path, val


def _metric(client: TestClient, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError(name)


def test_drift_alert_reaches_webhook_registered_action_metrics_and_alerts_endpoint(alert_bundle) -> None:
    path, val = alert_bundle
    retrain: list = []
    register_alert_action("test_submit_retraining", CallbackAlert(lambda a: a.kind == "drift" and retrain.append(a)))
    try:
        with _Hook() as hook:
            app = create_app(
                path, alert_webhooks=[hook.url], alert_actions=["test_submit_retraining"], drift_min_examples=50
            )
            client = TestClient(app)  # no lifespan: the test calls the evaluation itself
            assert client.get("/alerts").json()["rules"]["drift"]["status"] == "ok"
            assert client.post("/predict", json={"inputs": (val[:200] + 4.0).tolist()}).status_code == 200
            sent = app.state.alerts.evaluate()
            assert [a.kind for a in sent] == ["drift"]
            (body,) = hook.bodies
            assert body["text"].startswith("warning: input drift") or body["text"].startswith("critical: input drift")
            assert body["alert"]["kind"] == "drift" and body["alert"]["details"]["model"] == "digits"
            assert [a.kind for a in retrain] == ["drift"]
            assert _metric(client, "trainengine_serve_alert_active", kind="drift") == 1.0
            assert _metric(client, "trainengine_serve_alert_active", kind="latency") == 0.0
            assert _metric(client, "trainengine_serve_alerts_total", kind="drift", status="firing") == 1.0
            state = client.get("/alerts").json()
            assert state["active"] == ["drift"] and state["rules"]["drift"]["threshold"] == 0.2
            assert state["rules"]["drift"]["value"] > 0.2 and state["name"] == "digits"
            assert client.get("/health").json()["alerts_active"] == ["drift"]
            assert app.state.alerts.evaluate() == [] and len(hook.bodies) == 1  # still drifted: no repeat yet
    finally:
        ALERT_ACTIONS.unregister("test_submit_retraining")


def test_latency_and_errors_are_read_from_the_servers_own_counters(alert_bundle) -> None:
    path, _ = alert_bundle
    seen: list = []
    app = create_app(path, alert_actions=[seen.append])
    client = TestClient(app)
    assert _metric(client, "trainengine_serve_latency_threshold_seconds") == pytest.approx(0.04)
    metrics = app.state.metrics
    for _ in range(20):  # what the middleware records for each /predict answer
        metrics.observe_request("/predict", 200, 0.2)
    for _ in range(3):
        metrics.observe_request("/predict", 500, 0.001)
        metrics.observe_request("/predict", 499, 5.0)  # the client left: not an error, not an answer
    # The 40 ms threshold is a bucket edge: "p95 above 40 ms" is decided exactly.
    assert _metric(client, "trainengine_serve_request_latency_seconds_bucket", endpoint="/predict", le="0.04") == 3
    sent = {a.kind: a for a in app.state.alerts.evaluate()}
    assert set(sent) == {"latency", "error_rate"}
    assert sent["error_rate"].value == pytest.approx(3 / 23) and sent["latency"].severity == "critical"
    assert math.isclose(_metric(client, "trainengine_serve_window_error_rate"), 3 / 23)
    assert [a.kind for a in seen] == ["latency", "error_rate"]


def test_the_alert_thread_evaluates_in_the_background(alert_bundle) -> None:
    path, val = alert_bundle
    with _Hook() as hook:
        app = create_app(path, alert_webhooks=[hook.url], alert_interval_s=0.1, drift_min_examples=50)
        with TestClient(app) as client:  # the lifespan starts the thread
            client.post("/predict", json={"inputs": (val[:100] - 4.0).tolist()})
            deadline = time.monotonic() + 10
            while not hook.bodies and time.monotonic() < deadline:
                time.sleep(0.05)
        assert hook.bodies and hook.bodies[0]["alert"]["kind"] == "drift"
        assert app.state.alerts._thread is None  # stopped with the app


def test_every_metric_the_prometheus_rules_read_is_exported(alert_bundle) -> None:
    path, val = alert_bundle
    client = TestClient(create_app(path, alerts=False))
    client.post("/predict", json={"inputs": val[:2].tolist()})
    text = client.get("/metrics").text
    for name in SERVED_METRICS:
        assert f"\n{name}{{" in text or f"\n{name} " in text, name
    assert client.get("/alerts").json()["enabled"] is False


def test_serve_cli_refuses_unknown_actions_and_unset_passwords(alert_bundle, capsys, monkeypatch) -> None:
    from trainengine.cli.main import main

    path, _ = alert_bundle
    assert main(["serve", str(path), "--alert-action", "no_such_action"]) == 2
    assert "unknown alert action 'no_such_action'" in capsys.readouterr().err
    monkeypatch.delenv("TE_TEST_UNSET_SMTP_PASSWORD", raising=False)
    code = main(
        [
            "serve",
            str(path),
            "--smtp-host",
            "127.0.0.1",
            "--smtp-username",
            "alerts",
            "--smtp-password-env",
            "TE_TEST_UNSET_SMTP_PASSWORD",
        ]
    )
    assert code == 2 and "TE_TEST_UNSET_SMTP_PASSWORD is unset or empty" in capsys.readouterr().err


def test_with_several_workers_one_sends_and_another_takes_over(tmp_path) -> None:
    from trainengine.serve._alerting import AlertLeader

    first, second = AlertLeader(str(tmp_path)), AlertLeader(str(tmp_path))
    assert first() and not second() and first()  # the lock holder keeps sending
    first.release()  # its worker exited
    assert second() and AlertLeader(None)()  # a single process always sends
    second.release()


def test_the_retrain_action_turns_a_drift_alert_into_one_retraining_job(alert_bundle, tmp_path, monkeypatch) -> None:
    # `trainengine serve BUNDLE --alert-action retrain` with the retraining config in the environment: a drift
    # alert queues one retraining job; a repeated alert within the cool-down queues none.
    from trainengine import TrainingConfigBuilder
    from trainengine.jobs import JobManager, _trigger

    path, val = alert_bundle
    config_file = tmp_path / "retrain.yaml"
    TrainingConfigBuilder.quick_prototype().with_training(epochs=1).build().save(config_file)
    monkeypatch.setenv("TRAINENGINE_RETRAIN_CONFIG", str(config_file))
    monkeypatch.setenv("TRAINENGINE_JOBS_DB", str(tmp_path / "jobs.db"))
    monkeypatch.setattr(_trigger, "_FROM_ENV", {})
    app = create_app(path, alert_actions=["retrain"], drift_min_examples=50)
    client = TestClient(app)
    assert client.post("/predict", json={"inputs": (val[:200] + 4.0).tolist()}).status_code == 200
    (alert,) = app.state.alerts.evaluate()
    assert alert.kind == "drift"
    assert _trigger.retrain_on_drift(alert) is None  # the same alert again: within the cool-down
    (job,) = JobManager(str(tmp_path / "jobs.db")).list_jobs()
    assert (job.job_type, job.priority, job.status) == ("retraining", 8, "queued")
    assert job.config["training_config"]["training"]["epochs"] == 1
    assert "drift score" in JobManager(str(tmp_path / "jobs.db")).get_job(job.id).history[0].message
