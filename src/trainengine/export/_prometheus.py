"""``prometheus/alerts.yml``: Prometheus alerting rules with the bundle's thresholds.

The rules watch the metrics the bundle's server exports on ``GET /metrics`` (names below; the
serving tests check that the server exports each of them) and fire on the same conditions as the
server's own alert rules (``trainengine.serve.ServingAlerts``), so a team that routes alerts
through Prometheus and Alertmanager gets the same alerts without relying on the server to send
them:

* ``TrainengineServeLatencyHigh`` — ``/predict`` p95 latency over the alert window above
  ``latency_threshold_ms`` (``histogram_quantile`` of the latency histogram; the server puts the
  threshold on a bucket edge, so the comparison is exact);
* ``TrainengineServeErrorRateHigh`` — the share of ``/predict`` answers with a 5xx status (499,
  a client that went away, left out) above ``error_rate_threshold``;
* ``TrainengineServeDriftHigh`` — the drift score above ``drift_threshold`` (a signal to retrain).

Each comes twice: ``severity: warning`` above the threshold and ``severity: critical`` above
twice the threshold (the server's ``critical_factor``). Every rule is limited to the servers
whose ``trainengine_serve_model_info`` names this bundle's model, and is evaluated per scrape
target (``job``, ``instance``), as each server judges its own traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["ALERTS_FILE", "SERVED_METRICS", "prometheus_rules", "prometheus_rules_yaml"]

ALERTS_FILE = "prometheus/alerts.yml"
CRITICAL_FACTOR = 2.0  # as trainengine.serve.ServingAlerts: critical above twice the threshold
# The metric names the rules read; tests/serve checks that the server exports every one.
LATENCY_BUCKET = "trainengine_serve_request_latency_seconds_bucket"
REQUESTS_TOTAL = "trainengine_serve_requests_total"
DRIFT_SCORE = "trainengine_serve_drift_score"
MODEL_INFO = "trainengine_serve_model_info"
SERVED_METRICS = (LATENCY_BUCKET, REQUESTS_TOTAL, DRIFT_SCORE, MODEL_INFO)


def _duration(seconds: float) -> str:
    """A PromQL duration: whole seconds (``300s``), at least one."""
    return f"{max(1, round(seconds))}s"


def _promql_string(value: str) -> str:
    # A double-quoted PromQL string literal: backslashes and quotes escaped.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prometheus_rules(name: str, version: str | None, monitoring: Mapping[str, Any]) -> dict[str, Any]:
    """The alerting rules of a bundle as a dict (``{"groups": [...]}``), ready for YAML.

    Args:
        name: The bundle's model name (the server's ``trainengine_serve_model_info{name=...}``).
        version: Its version (a label of the alerts), or None.
        monitoring: The bundle's monitoring settings (``latency_threshold_ms``,
            ``error_rate_threshold``, ``drift_threshold``, optionally ``alert_window_s``).

    Example:
        >>> rules = prometheus_rules(
        ...     "digits", "1.0.0", {"latency_threshold_ms": 100, "error_rate_threshold": 0.01, "drift_threshold": 0.2}
        ... )
        >>> [r["alert"] for r in rules["groups"][0]["rules"]][:2]
        ['TrainengineServeLatencyHigh', 'TrainengineServeLatencyHigh']
    """
    window = _duration(float(monitoring.get("alert_window_s") or 300))
    model = f"{MODEL_INFO}{{name={_promql_string(name)}}}"
    scope = f"and on (job, instance) {model}"
    p95 = (
        f"histogram_quantile(0.95, sum by (job, instance, le) "
        f'(rate({LATENCY_BUCKET}{{endpoint="/predict"}}[{window}])))'
    )
    errors = f'sum by (job, instance) (rate({REQUESTS_TOTAL}{{endpoint="/predict",status=~"5.."}}[{window}]))'
    answered = f'sum by (job, instance) (rate({REQUESTS_TOTAL}{{endpoint="/predict",status!="499"}}[{window}]))'
    drift = f"max by (job, instance) ({DRIFT_SCORE})"
    labels = {"model": name, **({"version": version} if version else {})}
    rules: list[dict[str, Any]] = []

    def add(alert: str, expr: str, threshold: float, duration: str, kind: str, summary: str, description: str) -> None:
        for severity, bound in (("warning", threshold), ("critical", threshold * CRITICAL_FACTOR)):
            rules.append(
                {
                    "alert": alert,
                    "expr": f"{expr} > {bound:g}\n{scope}",
                    "for": duration,
                    "labels": {"severity": severity, "kind": kind, **labels},
                    "annotations": {
                        "summary": summary,
                        "description": description.replace("@BOUND@", f"{bound:g}"),
                    },
                }
            )

    latency_ms = float(monitoring["latency_threshold_ms"])
    add(
        "TrainengineServeLatencyHigh",
        p95,
        latency_ms / 1000.0,
        "1m",
        "latency",
        f"{name}: /predict p95 latency is high",
        f"p95 latency of /predict over the last {window} is {{{{ $value | humanizeDuration }}}}, above @BOUND@ s "
        f"(latency_threshold_ms {latency_ms:g}) on {{{{ $labels.instance }}}}.",
    )
    error_rate = float(monitoring["error_rate_threshold"])
    add(
        "TrainengineServeErrorRateHigh",
        f"{errors}\n  / {answered}",
        error_rate,
        "1m",
        "error_rate",
        f"{name}: /predict error rate is high",
        f"{{{{ $value | humanizePercentage }}}} of /predict answers over the last {window} were 5xx, above @BOUND@ "
        "(error_rate_threshold) on {{ $labels.instance }}.",
    )
    drift_threshold = float(monitoring["drift_threshold"])
    add(
        "TrainengineServeDriftHigh",
        drift,
        drift_threshold,
        "5m",
        "drift",
        f"{name}: inputs drifted from the training data",
        "Drift score {{ $value }} (Jensen-Shannon divergence of recent inputs against the training data) is "
        "above @BOUND@ (drift_threshold) on {{ $labels.instance }}; retraining recommended.",
    )
    return {"groups": [{"name": f"trainengine-serve-{name}", "rules": rules}]}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the rules' expressions) as literal blocks, as people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rules_yaml(name: str, version: str | None, monitoring: Mapping[str, Any]) -> str:
    """:func:`prometheus_rules` as the YAML text of ``prometheus/alerts.yml`` (``promtool check rules`` accepts it)."""
    header = (
        f"# Prometheus alerting rules for model {name!r}, written by trainengine export with the thresholds of\n"
        "# monitoring.json. Load with `rule_files: [alerts.yml]`; check with `promtool check rules alerts.yml`.\n"
    )
    rules = prometheus_rules(name, version, monitoring)
    return header + yaml.dump(rules, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
