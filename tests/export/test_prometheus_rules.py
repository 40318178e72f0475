"""prometheus/alerts.yml: the bundle's thresholds as Prometheus alerting rules, checked by promtool itself.

``promtool check rules`` validates the file; ``promtool test rules`` feeds synthetic series of the
metrics the server exports and checks which alerts fire, with which labels and annotations, and
that a server of another model does not trigger this bundle's rules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import yaml

from trainengine.errors import ExportError
from trainengine.export import create_export_bundle, verify_bundle
from trainengine.models import build_model
from trainengine.tasks import TaskSpec

MONITORING = {"latency_threshold_ms": 50, "error_rate_threshold": 0.01, "drift_threshold": 0.2, "alert_window_s": 120}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found on PATH; run scripts/system-deps.sh as root, or: "
            "apt-get install --no-install-recommends prometheus",
            pytrace=False,
        )
    return found


def _export(out: Path, **monitoring) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_export_bundle(
            build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(8,)),
            task_spec=TaskSpec.classification("toy", 2),
            formats=["pytorch"],
            output_dir=out,
            name="digits",
            version="1.0.0",
            monitoring_config={**MONITORING, **monitoring},
        )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("rules"))


def test_bundle_ships_the_rules_with_its_thresholds(bundle) -> None:
    rules_file = bundle / "prometheus" / "alerts.yml"
    assert (
        verify_bundle(bundle) == []
        and "prometheus/alerts.yml" in json.loads((bundle / "manifest.json").read_text())["files"]
    )
    doc = yaml.safe_load(rules_file.read_text())
    (group,) = doc["groups"]
    assert group["name"] == "trainengine-serve-digits"
    for rule in group["rules"]:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["model"] == "digits" and rule["labels"]["version"] == "1.0.0"
        assert set(rule["annotations"]) == {"summary", "description"}
        assert 'trainengine_serve_model_info{name="digits"}' in rule["expr"]
    by = {(r["alert"], r["labels"]["severity"]): r["expr"] for r in group["rules"]}
    assert "[120s]" in by[("TrainengineServeLatencyHigh", "warning")]  # the alert window
    assert "> 0.05\n" in by[("TrainengineServeLatencyHigh", "warning")]  # 50 ms, in seconds
    assert "> 0.1\n" in by[("TrainengineServeLatencyHigh", "critical")]
    assert "> 0.01\n" in by[("TrainengineServeErrorRateHigh", "warning")]
    assert "> 0.2\n" in by[("TrainengineServeDriftHigh", "warning")]
    assert "> 0.4\n" in by[("TrainengineServeDriftHigh", "critical")]
    assert "prometheus/alerts.yml" in (bundle / "README.md").read_text()


def test_promtool_accepts_the_rules_and_they_fire_as_the_server_would(bundle, tmp_path) -> None:
    promtool = _promtool()
    shutil.copyfile(bundle / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check.stdout + check.stderr

    def series(metric: str, values: str, /, **labels: str) -> dict:
        shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{metric}{{{shown}}}", "values": values}

    a = {"job": "serve", "instance": "a"}
    b = {"job": "serve", "instance": "b"}
    bucket = "trainengine_serve_request_latency_seconds_bucket"
    requests = "trainengine_serve_requests_total"
    inputs = [
        series("trainengine_serve_model_info", "1x30", name="digits", version="1.0.0", **a),
        # Each minute 90 requests under 50 ms and 10 between 50 and 100 ms: p95 = 75 ms (warning, not critical).
        series(bucket, "0+90x30", endpoint="/predict", le="0.05", **a),
        series(bucket, "0+100x30", endpoint="/predict", le="0.1", **a),
        series(bucket, "0+100x30", endpoint="/predict", le="+Inf", **a),
        # 3 of 200 answers are 5xx (1.5%: warning); the 499s of clients that left do not count.
        series(requests, "0+197x30", endpoint="/predict", status="200", **a),
        series(requests, "0+3x30", endpoint="/predict", status="500", **a),
        series(requests, "0+100x30", endpoint="/predict", status="499", **a),
        series("trainengine_serve_drift_score", "0.3x30", **a),
        # Another model's server, drifted and failing: not this bundle's business.
        series("trainengine_serve_model_info", "1x30", name="other", version="2.0.0", **b),
        series("trainengine_serve_drift_score", "0.9x30", **b),
        series(requests, "0+100x30", endpoint="/predict", status="500", **b),
    ]
    labels = {"model": "digits", "version": "1.0.0", "severity": "warning", **a}

    def expect(alert: str, kind: str, description: str, summary: str) -> dict:
        return {
            "eval_time": "10m",
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": {**labels, "kind": kind},
                    "exp_annotations": {"summary": f"digits: {summary}", "description": description},
                }
            ],
        }

    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [
                    expect(
                        "TrainengineServeLatencyHigh",
                        "latency",
                        "p95 latency of /predict over the last 120s is 75ms, above 0.05 s (latency_threshold_ms 50) "
                        "on a.",
                        "/predict p95 latency is high",
                    ),
                    expect(
                        "TrainengineServeErrorRateHigh",
                        "error_rate",
                        "1.5% of /predict answers over the last 120s were 5xx, above 0.01 (error_rate_threshold) on a.",
                        "/predict error rate is high",
                    ),
                    expect(
                        "TrainengineServeDriftHigh",
                        "drift",
                        "Drift score 0.3 (Jensen-Shannon divergence of recent inputs against the training data) is "
                        "above 0.2 (drift_threshold) on a; retraining recommended.",
                        "inputs drifted from the training data",
                    ),
                    {"eval_time": "3m", "alertname": "TrainengineServeDriftHigh", "exp_alerts": []},  # for: 5m
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        ({"alert_email": "not an address"}, "alert_email"),
        ({"alert_webhook": "file:///etc/passwd"}, "alert_webhook"),
        ({"smtp": {"host": "smtp.example.com", "password": "hunter2"}}, "a password never goes into a bundle"),
        ({"smtp_password": "hunter2"}, "a password never goes into a bundle"),
        ({"alert_window_s": 0}, "alert_window_s"),
    ],
)
def test_bad_alert_settings_are_refused_at_export(tmp_path, monitoring, message) -> None:
    with pytest.raises(ExportError, match=message):
        _export(tmp_path, **monitoring)
    assert not list(tmp_path.iterdir())  # nothing half-written
