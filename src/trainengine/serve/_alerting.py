"""Serving alerts: p95 latency, error rate and drift over a sliding window, evaluated off the request path.

:class:`ServingAlerts` reads the server's *cumulative* counters every ``interval_s`` seconds on a
background thread (the same numbers ``/metrics`` exports: the ``/predict`` latency histogram, the
request counts by status, the drift gauge), keeps the readings of the last ``window_s`` seconds,
and compares what happened inside the window with the bundle's thresholds:

* ``latency`` — the 95th percentile of ``/predict`` latency, from the histogram's bucket counts
  with Prometheus's ``histogram_quantile`` interpolation. The server puts the threshold itself on
  a bucket edge, so "p95 above the threshold" (more than 5% of the window's requests took longer)
  is decided exactly, and agrees with the bundle's Prometheus rule.
* ``error_rate`` — ``/predict`` answers with a 5xx status over all ``/predict`` answers but 499
  (the client went away; not the server's fault).
* ``drift`` — the drift score of the server's drift window (the last ``drift_window`` inputs
  against the training data's profile).

Latency and error rate are judged only when the window holds at least ``min_requests`` requests.
A rule that crosses its threshold fires one :class:`~trainengine.monitoring.Alert` (``warning``,
or ``critical`` above ``critical_factor`` times the threshold) to every action; while it stays
breached it repeats at most every ``repeat_s`` seconds (at once when it escalates to critical),
and once it has been clear for ``resolve_after`` evaluations in a row a *resolved* notice goes
out. Nothing here runs on a request: requests only update the counters, as they always did.

The module imports only the standard library and the alert actions (``trainengine._alerting``);
export copies it into every bundle as ``alerting.py``, beside ``server.py``.

Example:
    >>> counts = [WindowCounts(0.0, ((0.1, 0.0), (float("inf"), 0.0)), 0.0, 0.0, None)]
    >>> seen = []
    >>> alerts = ServingAlerts(
    ...     lambda: counts[-1],
    ...     [seen.append],
    ...     latency_threshold_ms=100.0,
    ...     min_requests=10,
    ...     clock=lambda: counts[-1].time,
    ... )
    >>> counts.append(WindowCounts(5.0, ((0.1, 80.0), (float("inf"), 100.0)), 100.0, 0.0, None))  # 20% > 100 ms
    >>> [a.kind for a in alerts.evaluate()], alerts.active()
    (['latency'], ['latency'])
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

if __package__:  # trainengine.serve._alerting
    from trainengine._alerting import (
        Alert,
        ConfigError,
        EmailAlert,
        LogAlert,
        WebhookAlert,
        dispatch_alert,
    )
else:  # a bundle's alerting.py: export copied _alerting.py beside it
    sys.dont_write_bytecode = True
    from _alerting import (  # type: ignore[no-redef]  # the bundle's copy; mypy sees both branches
        Alert,
        ConfigError,
        EmailAlert,
        LogAlert,
        WebhookAlert,
        dispatch_alert,
    )

__all__ = [
    "RULES",
    "WindowCounts",
    "ServingAlerts",
    "histogram_quantile",
    "build_alert_actions",
    "smtp_settings",
    "AlertLeader",
]

log = logging.getLogger("trainengine.serve.alerts")

RULES = ("latency", "error_rate", "drift")
DEFAULT_WINDOW_S = 300.0
DEFAULT_INTERVAL_S = 5.0
DEFAULT_REPEAT_S = 3600.0
DEFAULT_MIN_REQUESTS = 20
SMTP_KEYS = ("host", "port", "sender", "starttls", "username", "password_env")


@dataclass(frozen=True)
class WindowCounts:
    """The server's cumulative counters at one moment; a window is the difference of two readings.

    Attributes:
        time: When they were read (``time.monotonic()`` seconds).
        latency_buckets: ``(upper bound in seconds, cumulative count)`` of the ``/predict``
            latency histogram, ascending, the last bound ``inf``.
        requests: ``/predict`` answers counted for the error rate (every status but 499).
        errors: ``/predict`` answers with a 5xx status.
        drift: The drift score now (``None`` while the drift window holds too few examples).
        drift_examples: Examples in the drift window.
    """

    time: float
    latency_buckets: tuple[tuple[float, float], ...]
    requests: float
    errors: float
    drift: float | None
    drift_examples: int = 0


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram's cumulative buckets, as Prometheus's ``histogram_quantile``.

    Linear interpolation inside the bucket where the rank ``q * count`` falls (the first bucket
    starts at 0); a rank in the ``+Inf`` bucket gives the largest finite bound.

    Args:
        q: The quantile, in [0, 1].
        buckets: ``(upper bound, cumulative count)`` ascending, the last bound ``inf``.

    Returns:
        The estimate, or ``None`` for an empty histogram.

    Example:
        >>> histogram_quantile(0.95, [(0.1, 90.0), (0.25, 100.0), (float("inf"), 100.0)])
        0.175
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower  # the largest finite bound, as Prometheus answers
            if cumulative == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return lower


def _delta(new: WindowCounts, old: WindowCounts) -> tuple[list[tuple[float, float]], float, float]:
    # Counters only grow; a smaller reading means they were reset (a restarted worker): count anew.
    before = dict(old.latency_buckets)
    reset = new.requests < old.requests or any(c < before.get(le, 0.0) for le, c in new.latency_buckets)
    if reset:
        return list(new.latency_buckets), new.requests, new.errors
    buckets = [(le, c - before.get(le, 0.0)) for le, c in new.latency_buckets]
    return buckets, new.requests - old.requests, max(new.errors - old.errors, 0.0)


@dataclass
class _Rule:
    kind: str
    threshold: float | None  # in the rule's unit: ms, a fraction, a JS divergence
    active: bool = False
    severity: str = "warning"
    since: float | None = None  # wall-clock time it started firing
    last_sent: float = -math.inf  # monotonic
    clear_count: int = 0
    value: float | None = None  # the last evaluation's value (None: not enough data)
    num_fired: int = 0
    details: dict[str, Any] = field(default_factory=dict)


class ServingAlerts:
    """Sliding-window alert rules of a model server: p95 latency, error rate and drift.

    Args:
        sample: Returns the server's :class:`WindowCounts` now (called on the alert thread).
        actions: Callables each new alert and resolved notice is handed to (``LogAlert``,
            ``WebhookAlert``, ``EmailAlert``, your own ``fn(alert)``).
        latency_threshold_ms: p95 latency above which ``latency`` fires; None: rule off.
        error_rate_threshold: Fraction of 5xx answers above which ``error_rate`` fires; None: off.
        drift_threshold: Drift score above which ``drift`` fires; None: off.
        window_s: Length of the sliding window, seconds.
        interval_s: Seconds between two evaluations on the background thread.
        repeat_s: While a rule stays breached, send it again at most this often.
        min_requests: Fewer requests in the window leave latency and error rate unjudged.
        resolve_after: Evaluations in a row a rule must be clear before it resolves.
        critical_factor: A value above this many thresholds is ``critical``.
        labels: Put into every alert's ``details`` (the model's name and version).
        clock: Monotonic seconds (tests drive time through it).
        dispatch: Whether this process sends alerts (with several workers only one does; the
            others evaluate for their ``/metrics`` and ``/alerts`` only); a callable is asked at
            each evaluation.
        on_evaluate: Called after each evaluation with this object and the alerts this process sent
            (the server updates its gauges and counters).

    Raises:
        ConfigError: Listing every invalid setting.
    """

    def __init__(
        self,
        sample: Callable[[], WindowCounts],
        actions: Sequence[Callable[[Alert], Any]],
        *,
        latency_threshold_ms: float | None = None,
        error_rate_threshold: float | None = None,
        drift_threshold: float | None = None,
        window_s: float = DEFAULT_WINDOW_S,
        interval_s: float = DEFAULT_INTERVAL_S,
        repeat_s: float = DEFAULT_REPEAT_S,
        min_requests: int = DEFAULT_MIN_REQUESTS,
        resolve_after: int = 2,
        critical_factor: float = 2.0,
        labels: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        dispatch: bool | Callable[[], bool] = True,
        on_evaluate: Callable[[ServingAlerts, list[Alert]], None] | None = None,
    ) -> None:
        problems = []
        for name, value in (
            ("latency_threshold_ms", latency_threshold_ms),
            ("error_rate_threshold", error_rate_threshold),
            ("drift_threshold", drift_threshold),
        ):
            if value is not None and not _positive(value):
                problems.append(f"{name} must be a positive number or None (rule off), got {value!r}")
        for name, value in (("window_s", window_s), ("interval_s", interval_s), ("repeat_s", repeat_s)):
            if not _positive(value):
                problems.append(f"{name} must be a positive number of seconds, got {value!r}")
        if _positive(window_s) and _positive(interval_s) and interval_s > window_s:
            problems.append(f"interval_s ({interval_s:g}) must not exceed window_s ({window_s:g})")
        for name, value in (("min_requests", min_requests), ("resolve_after", resolve_after)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if not _positive(critical_factor) or critical_factor < 1:
            problems.append(f"critical_factor must be a number >= 1, got {critical_factor!r}")
        for i, action in enumerate(actions):
            if not callable(action):
                problems.append(f"actions[{i}] must be callable with the Alert, got {type(action).__name__}")
        if problems:
            raise ConfigError(problems, prefix="invalid serving alert settings")
        self.sample = sample
        self.actions = list(actions)
        self.window_s = float(window_s)
        self.interval_s = float(interval_s)
        self.repeat_s = float(repeat_s)
        self.min_requests = min_requests
        self.resolve_after = resolve_after
        self.critical_factor = float(critical_factor)
        self.labels = dict(labels or {})
        self.clock = clock
        self.dispatch = dispatch
        self.on_evaluate = on_evaluate
        self.rules = {
            "latency": _Rule("latency", latency_threshold_ms),
            "error_rate": _Rule("error_rate", error_rate_threshold),
            "drift": _Rule("drift", drift_threshold),
        }
        self.num_evaluations = 0
        self.last_evaluated: float | None = None  # wall-clock
        self.window: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._readings: deque[WindowCounts] = deque([sample()])  # the baseline: counts so far are not news

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self) -> list[Alert]:
        """Read the counters, judge the window, send what changed; returns the alerts sent (or due).

        Safe to call from any thread (the background thread calls it every ``interval_s``).
        """
        with self._lock:
            reading = self.sample()
            self._readings.append(reading)
            start = reading.time - self.window_s
            # Keep one reading at or before the window's start: the baseline the window is measured from.
            while len(self._readings) > 2 and self._readings[1].time <= start:
                self._readings.popleft()
            buckets, requests, errors = _delta(reading, self._readings[0])
            span = reading.time - self._readings[0].time
            timed = buckets[-1][1] if buckets else 0.0
            p95_s = histogram_quantile(0.95, buckets) if timed >= self.min_requests else None
            error_rate = errors / requests if requests >= self.min_requests else None
            drift = reading.drift if reading.drift is not None and math.isfinite(reading.drift) else None
            self.window = {
                "seconds": round(span, 3),
                "requests": int(requests),
                "errors": int(errors),
                "latency_p95_ms": None if p95_s is None else p95_s * 1000.0,
                "error_rate": error_rate,
                "drift": drift,
                "drift_examples": reading.drift_examples,
            }
            values = {"latency": self.window["latency_p95_ms"], "error_rate": error_rate, "drift": drift}
            sending = self.dispatch() if callable(self.dispatch) else self.dispatch
            sent: list[Alert] = []
            for kind, rule in self.rules.items():
                alert = self._judge(rule, values[kind])
                if alert is not None:
                    sent.append(alert)
            self.num_evaluations += 1
            self.last_evaluated = time.time()
        if sending:
            for alert in sent:
                dispatch_alert(alert, self.actions)
        if self.on_evaluate is not None:
            self.on_evaluate(self, sent if sending else [])
        return sent

    def _judge(self, rule: _Rule, value: float | None) -> Alert | None:
        rule.value = value
        if rule.threshold is None:
            return None
        now = self.clock()
        if value is not None and value > rule.threshold:
            rule.clear_count = 0
            severity = "critical" if value > self.critical_factor * rule.threshold else "warning"
            if not rule.active:
                rule.active, rule.severity, rule.since = True, severity, time.time()
                return self._fire(rule, value, now, "")
            if severity == "critical" and rule.severity == "warning":
                rule.severity = severity
                return self._fire(rule, value, now, "now critical: ")
            if now - rule.last_sent >= self.repeat_s:
                return self._fire(rule, value, now, "still firing: ")
            return None
        if not rule.active:
            return None
        rule.clear_count += 1
        if rule.clear_count < self.resolve_after:
            return None
        rule.active, rule.clear_count = False, 0
        started = rule.since
        rule.since = None
        return self._alert(rule, value, resolved=True, prefix="", started=started)

    def _fire(self, rule: _Rule, value: float, now: float, prefix: str) -> Alert:
        rule.last_sent = now
        rule.num_fired += 1
        return self._alert(rule, value, resolved=False, prefix=prefix, started=rule.since)

    def _alert(self, rule: _Rule, value: float | None, *, resolved: bool, prefix: str, started: float | None) -> Alert:
        w = self.window
        model = " ".join(str(self.labels[k]) for k in ("model", "version") if self.labels.get(k) is not None)
        of_model = f" (model {model})" if model else ""
        window = f"the last {self.window_s:g} s"
        threshold = rule.threshold
        if rule.kind == "latency":
            metric = "serve/latency_p95_ms"
            if resolved:
                now_text = "too little traffic to judge" if value is None else f"{value:.1f} ms"
                text = f"/predict p95 latency is back under {threshold:g} ms ({now_text} over {window}){of_model}"
            else:
                text = (
                    f"/predict p95 latency {value:.1f} ms over {window} ({w['requests']} requests) is above the "
                    f"threshold of {threshold:g} ms{of_model}"
                )
        elif rule.kind == "error_rate":
            metric = "serve/error_rate"
            if resolved:
                now_text = "too little traffic to judge" if value is None else f"{value:.2%}"
                text = f"/predict error rate is back under {threshold:.2%} ({now_text} over {window}){of_model}"
            else:
                text = (
                    f"/predict error rate {value:.2%} ({w['errors']} of {w['requests']} requests answered 5xx in "
                    f"{window}) is above the threshold of {threshold:.2%}{of_model}"
                )
        else:
            metric = "serve/drift_score"
            if resolved:
                now_text = "not enough inputs to judge" if value is None else f"{value:.3f}"
                text = f"input drift is back under {threshold:g} ({now_text}){of_model}"
            else:
                text = (
                    f"input drift {value:.3f} (Jensen-Shannon divergence of the last {w['drift_examples']} inputs "
                    f"against the training data) is above the threshold of {threshold:g}{of_model}; the inputs no "
                    "longer look like the training data — retraining recommended"
                )
        details = {
            **self.labels,
            "window_s": self.window_s,
            "window_requests": w.get("requests"),
            "window_errors": w.get("errors"),
            "drift_examples": w.get("drift_examples"),
        }
        if started is not None:
            details["firing_since"] = started
        if prefix:
            details["repeat"] = prefix.rstrip(": ")
        return Alert(
            prefix + text,
            rule.severity,  # type: ignore[arg-type]  # always "warning" or "critical"
            metric,
            value,
            threshold,
            kind=rule.kind,  # type: ignore[arg-type]  # one of RULES, all AlertKinds
            details=details,
            resolved=resolved,
        )

    # -- state -----------------------------------------------------------------------------------
    def active(self) -> list[str]:
        """The kinds firing now."""
        return [kind for kind, rule in self.rules.items() if rule.active]

    def state(self) -> dict[str, Any]:
        """What ``GET /alerts`` answers: the window, and per rule its threshold, value and status."""
        with self._lock:
            rules = {}
            for kind, rule in self.rules.items():
                status = "off" if rule.threshold is None else ("firing" if rule.active else "ok")
                rules[kind] = {
                    "status": status,
                    "severity": rule.severity if rule.active else None,
                    "threshold": rule.threshold,
                    "value": _finite_or_none(rule.value),
                    "firing_since": rule.since,
                    "times_sent": rule.num_fired,
                }
            return {
                "window_s": self.window_s,
                "interval_s": self.interval_s,
                "repeat_s": self.repeat_s,
                "min_requests": self.min_requests,
                "evaluations": self.num_evaluations,
                "last_evaluated": self.last_evaluated,
                "window": {k: _finite_or_none(v) for k, v in self.window.items()},
                "rules": rules,
                "active": [kind for kind, rule in self.rules.items() if rule.active],
                "actions": [repr(a) for a in self.actions],
            }

    # -- the background thread -------------------------------------------------------------------
    def start(self) -> None:
        """Evaluate every ``interval_s`` seconds on a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="trainengine-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waits up to ``timeout`` seconds for an evaluation in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.evaluate()
            except Exception:  # the alert thread must outlive one bad reading
                log.exception("evaluating the serving alerts failed")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def smtp_settings(monitoring: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The SMTP settings: the bundle's ``monitoring.json`` ``smtp`` table with ``overrides`` on top.

    Keys: ``host``, ``port``, ``sender``, ``starttls``, ``username``, ``password_env`` (never a
    password: the variable holding it is named instead). ``None`` values in ``overrides`` are
    ignored.

    Raises:
        ConfigError: an unknown key, or a password given as a value.
    """
    merged: dict[str, Any] = {}
    problems = []
    for source, table in (("monitoring.json smtp", (monitoring or {}).get("smtp")), ("smtp", overrides)):
        if table is None:
            continue
        if not isinstance(table, Mapping):
            problems.append(f"{source} must be a table of {', '.join(SMTP_KEYS)}, got {type(table).__name__}")
            continue
        for key, value in table.items():
            if "password" in str(key).lower() and key != "password_env":
                problems.append(
                    f"{source}: {key!r} — a password is never stored in settings; put it in an environment variable "
                    "and name that variable in password_env"
                )
            elif key not in SMTP_KEYS:
                problems.append(f"{source}: unknown key {key!r} — known: {', '.join(SMTP_KEYS)}")
            elif value is not None:
                merged[key] = value
    if problems:
        raise ConfigError(problems, prefix="invalid SMTP settings")
    return merged


def build_alert_actions(
    monitoring: Mapping[str, Any] | None,
    *,
    webhooks: Sequence[str] = (),
    emails: Sequence[str] = (),
    smtp: Mapping[str, Any] | None = None,
    extra: Sequence[Callable[[Alert], Any]] = (),
) -> list[Callable[[Alert], Any]]:
    """The actions of a server's alerts: a log line always, plus webhooks, email and your own.

    Targets come from the bundle's ``monitoring.json`` (``alert_webhook``, ``alert_email``, the
    ``smtp`` table) and from the server's options (added to the bundle's; SMTP options win over
    the bundle's table). Email needs an SMTP host: recipients without one are logged as a warning
    and email stays off.

    Raises:
        ConfigError: an invalid webhook URL, address or SMTP setting (every problem listed).
    """
    monitoring = monitoring or {}
    actions: list[Callable[[Alert], Any]] = [LogAlert()]
    problems: list[str] = []
    urls = list(dict.fromkeys([*_as_list(monitoring.get("alert_webhook")), *webhooks]))
    for url in urls:
        try:
            actions.append(WebhookAlert(url))
        except ConfigError as exc:
            problems += exc.problems
    recipients = list(dict.fromkeys([*_as_list(monitoring.get("alert_email")), *emails]))
    settings = smtp_settings(monitoring, smtp)
    if recipients and not settings.get("host"):
        log.warning(
            "alert_email %s is set but no SMTP server is: email alerts are off (pass --smtp-host, or set "
            "monitoring_config['smtp']['host'] at export)",
            ", ".join(map(str, recipients)),
        )
    elif recipients:
        try:
            actions.append(
                EmailAlert(
                    recipients,
                    smtp_host=settings["host"],
                    smtp_port=int(settings.get("port", 25)),
                    sender=settings.get("sender"),
                    starttls=bool(settings.get("starttls", False)),
                    username=settings.get("username"),
                    password_env=settings.get("password_env"),
                )
            )
        except ConfigError as exc:
            problems += exc.problems
        except (TypeError, ValueError) as exc:
            problems.append(f"smtp port must be an integer, got {settings.get('port')!r} ({exc})")
    if problems:
        raise ConfigError(problems, prefix="invalid alert targets")
    return actions + list(extra)


class AlertLeader:
    """With several worker processes, one sends the alerts: the one holding a lock file.

    Every worker evaluates the same aggregated counters (for its ``/metrics`` and ``/alerts``);
    :meth:`__call__` says whether this one sends. A worker that exits releases the lock and
    another takes over at its next evaluation. Without ``fcntl`` (Windows) every worker sends.

    Args:
        folder: A folder the workers share (the Prometheus multiprocess folder), or None: this
            process alone serves, and always sends.
    """

    def __init__(self, folder: str | None) -> None:
        self.path = os.path.join(folder, "trainengine-alerts.lock") if folder else None
        self._fd: int | None = None

    def __call__(self) -> bool:
        if self.path is None or self._fd is not None:
            return True
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: each worker sends its own
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd  # held until the process exits
        return True

    def release(self) -> None:
        """Give the lock up (at shutdown)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
