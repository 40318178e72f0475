"""Alert records, AlertConfig validation, and each alert action (webhook against a local server)."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from trainengine.errors import ConfigError
from trainengine.monitoring import (
    Alert,
    AlertConfig,
    CallbackAlert,
    LogAlert,
    StopTrainingAlert,
    WebhookAlert,
)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # urllib honours *_proxy variables; requests to the local test server must go direct.
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _alert(severity: str = "warning", **kw) -> Alert:
    fields = {
        "message": "val/loss spiked",
        "severity": severity,
        "metric": "val/loss",
        "value": 1.5,
        "threshold": 0.2,
        "epoch": 3,
        "step": 120,
        "kind": "val_loss_spike",
    }
    fields.update(kw)
    return Alert(**fields)


# ----------------------------------------------------------------------------- Alert
def test_alert_supports_item_and_attribute_access() -> None:
    alert = _alert()
    assert alert["message"] == alert.message == "val/loss spiked"
    assert alert["severity"] == "warning" and alert["epoch"] == 3 and alert["kind"] == "val_loss_spike"
    assert alert.get("missing", "default") == "default"
    assert "message" in alert and "nope" not in alert
    as_dict = alert.as_dict()
    assert dict(alert) == as_dict
    assert set(as_dict) >= {"message", "severity", "metric", "value", "threshold", "epoch", "step", "kind", "time"}
    assert abs(as_dict["time"] - time.time()) < 60
    with pytest.raises(KeyError, match="fields: message"):
        alert["mesage"]


def test_alert_rejects_unknown_severity_and_kind() -> None:
    with pytest.raises(ConfigError, match="warning, critical"):
        _alert(severity="fatal")
    with pytest.raises(ConfigError, match="val_loss_spike"):
        _alert(kind="loss_up")


# ----------------------------------------------------------------------------- AlertConfig
def test_alert_config_defaults_match_the_seed() -> None:
    cfg = AlertConfig()
    assert (cfg.val_loss_spike_threshold, cfg.accuracy_drop_threshold, cfg.gradient_norm_threshold) == (0.2, 0.05, 10.0)
    assert cfg.patience_epochs == 2 and cfg.drift_threshold == 0.2 and cfg.nonfinite_is_critical
    assert [type(a) for a in cfg.actions] == [LogAlert]
    assert AlertConfig().actions is not cfg.actions  # no shared mutable default


def test_alert_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        AlertConfig(
            val_loss_spike_threshold=-0.1,
            accuracy_drop_threshold=float("nan"),
            gradient_norm_threshold=-1,
            drift_threshold=-0.2,
            patience_epochs=0,
            critical_factor=0.5,
            actions=["not callable"],
        )
    message = str(info.value)
    assert "7 problems" in message
    for part in (
        "val_loss_spike_threshold must be a finite number >= 0, got -0.1",
        "accuracy_drop_threshold",
        "gradient_norm_threshold",
        "drift_threshold",
        "patience_epochs must be an integer >= 1, got 0",
        "critical_factor",
        "actions[0] must be callable",
    ):
        assert part in message


def test_alert_config_accepts_zero_thresholds_and_rejects_bool_patience() -> None:
    AlertConfig(val_loss_spike_threshold=0, accuracy_drop_threshold=0, gradient_norm_threshold=0, drift_threshold=0)
    with pytest.raises(ConfigError, match="patience_epochs"):
        AlertConfig(patience_epochs=True)
    with pytest.raises(ConfigError, match="actions must be a list"):
        AlertConfig(actions=LogAlert())


# ----------------------------------------------------------------------------- LogAlert
def test_log_alert_uses_warning_and_error_levels(caplog) -> None:
    action = LogAlert(logger_name="trainengine.alerts.test")
    with caplog.at_level(logging.WARNING, logger="trainengine.alerts.test"):
        action(_alert("warning", message="loss went up"))
        action(_alert("critical", message="loss is nan"))
    records = [r for r in caplog.records if r.name == "trainengine.alerts.test"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "[warning alert] loss went up"),
        (logging.ERROR, "[critical alert] loss is nan"),
    ]


def test_log_alert_min_severity_filters(caplog) -> None:
    action = LogAlert(logger_name="trainengine.alerts.test2", min_severity="critical")
    with caplog.at_level(logging.WARNING, logger="trainengine.alerts.test2"):
        action(_alert("warning"))
    assert not [r for r in caplog.records if r.name == "trainengine.alerts.test2"]
    with pytest.raises(ConfigError, match="min_severity"):
        LogAlert(min_severity="error")


# ----------------------------------------------------------------------------- CallbackAlert
def test_callback_alert_calls_the_function_with_the_alert() -> None:
    seen: list[Alert] = []
    action = CallbackAlert(seen.append, min_severity="critical")
    action(_alert("warning"))
    critical = _alert("critical", message="grad exploded")
    action(critical)
    assert seen == [critical]
    with pytest.raises(ConfigError, match="needs a callable"):
        CallbackAlert("print")


# ----------------------------------------------------------------------------- StopTrainingAlert
class _FakeTrainer:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def request_stop(self, reason: str) -> None:
        self.reasons.append(reason)


def test_stop_training_alert_stops_on_critical_only_by_default() -> None:
    trainer = _FakeTrainer()
    stop = StopTrainingAlert(trainer)
    stop(_alert("warning"))
    assert not stop.should_stop and trainer.reasons == []
    stop(_alert("critical", message="train/loss is nan", kind="nonfinite"))
    assert stop.should_stop
    assert len(trainer.reasons) == 1 and "train/loss is nan" in trainer.reasons[0] and "nonfinite" in trainer.reasons[0]
    stop(_alert("critical", message="another"))  # the first reason stands, no second request
    assert len(trainer.reasons) == 1 and stop.alert.message == "train/loss is nan"
    stop.reset()
    assert not stop.should_stop and stop.reason is None


def test_stop_training_alert_without_trainer_and_with_warning_threshold() -> None:
    stop = StopTrainingAlert(min_severity="warning")
    stop(_alert("warning"))
    assert stop.should_stop and "val/loss spiked" in stop.reason
    with pytest.raises(ConfigError, match="request_stop"):
        StopTrainingAlert(object())


# ----------------------------------------------------------------------------- WebhookAlert
class _Receiver:
    """A local HTTP server on 127.0.0.1 that records POSTs; answers with ``status``."""

    def __init__(self, status: int = 200) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append({"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)})
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        # Safety net: the server stops itself even if a test never reaches its teardown.
        self.watchdog = threading.Timer(20.0, self.server.shutdown)
        self.watchdog.daemon = True

    def __enter__(self) -> _Receiver:
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self.watchdog.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_webhook_posts_the_alert_as_json() -> None:
    with _Receiver() as server:
        hook = WebhookAlert(server.url, timeout=5.0, headers={"X-Token": "abc"})
        hook(_alert("critical", message="loss is nan", value=float("nan"), kind="nonfinite"))
    assert hook.num_sent == 1 and hook.num_failed == 0
    (request,) = server.received
    assert request["path"] == "/hooks/alerts"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["content-type"] == "application/json" and headers["x-token"] == "abc"
    body = json.loads(request["body"])  # strict JSON: NaN was sent as a string
    assert body["text"] == "critical: loss is nan" and body["source"] == "trainengine"
    assert body["alert"]["message"] == "loss is nan" and body["alert"]["severity"] == "critical"
    assert body["alert"]["kind"] == "nonfinite" and body["alert"]["epoch"] == 3 and body["alert"]["value"] == "nan"


def test_webhook_min_severity_skips_warnings() -> None:
    with _Receiver() as server:
        hook = WebhookAlert(server.url, min_severity="critical")
        hook(_alert("warning"))
        hook(_alert("critical"))
    assert len(server.received) == 1 and json.loads(server.received[0]["body"])["alert"]["severity"] == "critical"


def test_webhook_http_error_is_logged_not_raised(caplog) -> None:
    with _Receiver(status=500) as server, caplog.at_level(logging.ERROR, logger="trainengine.alerts"):
        hook = WebhookAlert(server.url)
        hook(_alert())
    assert len(server.received) == 1
    assert hook.num_failed == 1 and hook.num_sent == 0 and "500" in hook.last_error
    assert any("webhook alert to" in r.getMessage() for r in caplog.records)


def test_webhook_unreachable_and_silent_endpoints_never_raise() -> None:
    # A port nobody listens on: connection refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    hook = WebhookAlert(f"http://127.0.0.1:{free_port}/x", timeout=1.0)
    hook(_alert())
    assert hook.num_failed == 1 and hook.last_error
    # A socket that accepts connections (backlog) but never answers: the timeout bounds the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        hook = WebhookAlert(f"http://127.0.0.1:{silent.getsockname()[1]}/x", timeout=0.3)
        hook(_alert())  # returns only through the timeout: nothing ever answers (a hang fails by pytest-timeout)
    assert hook.num_failed == 1 and "timed out" in hook.last_error.lower()


def test_webhook_rejects_non_http_urls_and_bad_timeouts() -> None:
    with pytest.raises(ConfigError) as info:
        WebhookAlert("file:///etc/passwd", timeout=0)
    assert "http:// or https://" in str(info.value) and "timeout must be" in str(info.value)


def test_json_safe_payload_keeps_finite_numbers() -> None:
    hook = WebhookAlert("https://example.invalid/hook")
    payload = hook.payload(_alert(value=float("inf"), threshold=0.25))
    assert payload["alert"]["value"] == "inf" and payload["alert"]["threshold"] == 0.25
    assert not math.isnan(payload["alert"]["step"])
