"""Alerts: what the :class:`~trainengine.monitoring.MetricsEngine` raises, and what happens next.

An :class:`Alert` is a small record (kind, severity, metric, value, threshold, epoch/step,
message). :class:`AlertConfig` holds the thresholds of the alert rules and the list of
*actions* every new alert is handed to. An action is any callable ``action(alert) -> None``;
four ship here:

- :class:`LogAlert` — a log line (WARNING for warnings, ERROR for critical alerts).
- :class:`CallbackAlert` — calls your function.
- :class:`StopTrainingAlert` — sets ``should_stop`` and asks the trainer to stop.
- :class:`WebhookAlert` — POSTs the alert as JSON (Slack-compatible ``text`` field) with
  ``urllib``; a failing endpoint is logged, never raised into training.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from trainengine.errors import ConfigError

__all__ = [
    "Alert",
    "AlertAction",
    "AlertConfig",
    "AlertKind",
    "AlertSeverity",
    "CallbackAlert",
    "LogAlert",
    "StopTrainingAlert",
    "WebhookAlert",
]

logger = logging.getLogger("trainengine.alerts")

AlertSeverity = Literal["warning", "critical"]
AlertKind = Literal["val_loss_spike", "accuracy_drop", "gradient_norm", "nonfinite", "drift"]

_SEVERITY_RANK = {"warning": 0, "critical": 1}


def _check_severity(value: Any, what: str) -> AlertSeverity:
    if value not in _SEVERITY_RANK:
        raise ConfigError(
            f"{what} must be one of: {', '.join(_SEVERITY_RANK)}; got {value!r}",
            prefix="invalid alert setting",
        )
    return value


def severity_at_least(severity: str, minimum: str) -> bool:
    """True when ``severity`` is ``minimum`` or worse (``critical`` > ``warning``)."""
    return _SEVERITY_RANK[severity] >= _SEVERITY_RANK[minimum]


@dataclass(frozen=True)
class Alert:
    """One alert raised by a rule of the :class:`~trainengine.monitoring.MetricsEngine`.

    Supports item access (``alert["message"]``) as well as attributes, so code written for
    alert dicts keeps working.

    Attributes:
        message: One human-readable line: what happened, the numbers, and what to check.
        severity: ``"warning"`` or ``"critical"``.
        metric: Namespaced metric the rule looked at (``"val/loss"``, ``"grad_norm"``,
            ``"drift/js_divergence"``, ...).
        value: The offending value.
        threshold: The configured threshold of the rule (in the rule's units: relative
            increase for ``val_loss_spike``, absolute drop for ``accuracy_drop``, norm for
            ``gradient_norm``, JS divergence for ``drift``; ``None`` for ``nonfinite``).
        epoch: Epoch the alert belongs to, or ``None`` for step-level checks.
        step: Step the alert belongs to, or ``None``.
        kind: Which rule fired: ``val_loss_spike``, ``accuracy_drop``, ``gradient_norm``,
            ``nonfinite`` or ``drift``.
        time: Wall-clock time (``time.time()``) when the alert was raised.
        details: Rule-specific numbers (best value so far, consecutive epochs, ...).

    Example:
        >>> alert = Alert("val/loss rose", "warning", "val/loss", 1.5, 0.2, epoch=3, kind="val_loss_spike")
        >>> alert["message"], alert.severity, alert.as_dict()["epoch"]
        ('val/loss rose', 'warning', 3)
    """

    message: str
    severity: AlertSeverity
    metric: str
    value: float | None
    threshold: float | None
    epoch: int | None = None
    step: int | None = None
    kind: AlertKind = "val_loss_spike"
    time: float = field(default_factory=time.time)
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_severity(self.severity, "Alert.severity")
        if self.kind not in get_args(AlertKind):
            raise ConfigError(
                f"Alert.kind must be one of: {', '.join(get_args(AlertKind))}; got {self.kind!r}",
                prefix="invalid alert",
            )

    def as_dict(self) -> dict[str, Any]:
        """A plain dict of every field (``details`` copied)."""
        return asdict(self)

    # Mapping-style read access: the seed reads alerts as dicts (``alert['message']``).
    def __getitem__(self, key: str) -> Any:
        data = self.as_dict()
        if key not in data:
            raise KeyError(f"Alert has no field {key!r} — fields: {', '.join(data)}")
        return data[key]

    def get(self, key: str, default: Any = None) -> Any:
        """``alert.get("message")`` like a dict."""
        return self.as_dict().get(key, default)

    def keys(self) -> list[str]:
        """The field names, so ``dict(alert)`` works."""
        return list(self.as_dict())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()


@runtime_checkable
class AlertAction(Protocol):
    """Anything called with each new :class:`Alert` (its return value is ignored)."""

    def __call__(self, alert: Alert) -> None: ...


class LogAlert:
    """Log every alert: WARNING for warnings, ERROR for critical alerts.

    Args:
        logger_name: Logger to write to.
        min_severity: Alerts below this severity are skipped.

    Example:
        >>> action = LogAlert()
        >>> action(Alert("loss spiked", "warning", "val/loss", 2.0, 0.2))  # logs one warning
    """

    def __init__(self, logger_name: str = "trainengine.alerts", min_severity: AlertSeverity = "warning") -> None:
        self.logger_name = logger_name
        self.min_severity = _check_severity(min_severity, "LogAlert.min_severity")
        self._logger = logging.getLogger(logger_name)

    def __call__(self, alert: Alert) -> None:
        if not severity_at_least(alert.severity, self.min_severity):
            return
        level = logging.ERROR if alert.severity == "critical" else logging.WARNING
        self._logger.log(level, "[%s alert] %s", alert.severity, alert.message)

    def __repr__(self) -> str:
        return f"LogAlert(logger_name={self.logger_name!r}, min_severity={self.min_severity!r})"


class CallbackAlert:
    """Call ``fn(alert)`` for every alert at or above ``min_severity``.

    Args:
        fn: Any callable taking the :class:`Alert` (e.g. send an email, page someone).
        min_severity: Alerts below this severity are skipped.

    Raises:
        ConfigError: If ``fn`` is not callable.

    Example:
        >>> seen = []
        >>> CallbackAlert(seen.append)(Alert("x", "critical", "grad_norm", 50.0, 10.0))
        >>> seen[0].metric
        'grad_norm'
    """

    def __init__(self, fn: Callable[[Alert], Any], min_severity: AlertSeverity = "warning") -> None:
        if not callable(fn):
            raise ConfigError(
                f"CallbackAlert needs a callable taking the Alert; got {type(fn).__name__}",
                prefix="invalid alert action",
            )
        self.fn = fn
        self.min_severity = _check_severity(min_severity, "CallbackAlert.min_severity")

    def __call__(self, alert: Alert) -> None:
        if severity_at_least(alert.severity, self.min_severity):
            self.fn(alert)

    def __repr__(self) -> str:
        return f"CallbackAlert({getattr(self.fn, '__qualname__', self.fn)!r}, min_severity={self.min_severity!r})"


class StopTrainingAlert:
    """Stop training on an alert at or above ``min_severity``.

    Sets :attr:`should_stop` (and :attr:`reason`) so any loop can poll it; when built with a
    trainer-like object (anything with ``request_stop(reason)``, e.g.
    :class:`trainengine.Trainer`), also calls ``trainer.request_stop(reason)`` so the loop stops
    after the current optimizer step.

    Args:
        trainer: Optional object with a ``request_stop(reason: str)`` method. Can be set later
            with :meth:`bind`.
        min_severity: Least severity that stops training (default: critical alerts only).

    Raises:
        ConfigError: If ``trainer`` has no callable ``request_stop``.

    Example:
        >>> stop = StopTrainingAlert()
        >>> stop(Alert("loss is nan", "critical", "train/loss", float("nan"), None, kind="nonfinite"))
        >>> stop.should_stop
        True
    """

    def __init__(self, trainer: Any | None = None, min_severity: AlertSeverity = "critical") -> None:
        self.min_severity = _check_severity(min_severity, "StopTrainingAlert.min_severity")
        self.trainer: Any | None = None
        self.should_stop = False
        self.reason: str | None = None
        self.alert: Alert | None = None
        if trainer is not None:
            self.bind(trainer)

    def bind(self, trainer: Any) -> None:
        """Attach the trainer whose ``request_stop(reason)`` is called on a stopping alert."""
        if not callable(getattr(trainer, "request_stop", None)):
            raise ConfigError(
                f"StopTrainingAlert needs an object with a request_stop(reason) method; "
                f"{type(trainer).__name__} has none",
                prefix="invalid alert action",
            )
        self.trainer = trainer

    def __call__(self, alert: Alert) -> None:
        if not severity_at_least(alert.severity, self.min_severity):
            return
        if self.should_stop:
            return  # the first stopping alert is the reason; later ones add nothing
        self.should_stop = True
        self.alert = alert
        self.reason = f"stopped by {alert.severity} alert ({alert.kind}): {alert.message}"
        if self.trainer is not None:
            self.trainer.request_stop(self.reason)

    def reset(self) -> None:
        """Clear :attr:`should_stop` (e.g. before a new run)."""
        self.should_stop, self.reason, self.alert = False, None, None

    def __repr__(self) -> str:
        return f"StopTrainingAlert(min_severity={self.min_severity!r}, should_stop={self.should_stop})"


def _json_safe(value: Any) -> Any:
    # Strict JSON has no NaN/Infinity; many webhook receivers reject them, so send strings.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class WebhookAlert:
    """POST each alert at or above ``min_severity`` as JSON to an HTTP(S) endpoint.

    The body is ``{"text": "<severity>: <message>", "alert": {...Alert.as_dict()...},
    "source": "trainengine"}`` — ``text`` makes it work with Slack/Teams-style incoming
    webhooks as is. Non-finite numbers are sent as strings (``"nan"``, ``"inf"``).

    The request is synchronous with ``timeout`` seconds (alerts are rare: at most a few per
    epoch). Any failure — refused connection, timeout, HTTP error status — is logged on the
    ``trainengine.alerts`` logger and counted in :attr:`num_failed`; it is never raised, so a
    broken endpoint cannot stop training.

    Args:
        url: ``http://`` or ``https://`` address.
        timeout: Seconds to wait for the endpoint.
        min_severity: Alerts below this severity are not sent.
        headers: Extra request headers (e.g. an authorization token).

    Raises:
        ConfigError: For a URL that is not http(s) or a non-positive timeout.

    Example:
        >>> hook = WebhookAlert("https://hooks.example.com/T000/B000", timeout=2.0)
        >>> hook.num_sent, hook.num_failed
        (0, 0)
    """

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        min_severity: AlertSeverity = "warning",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        problems = []
        # Only http(s): urllib would also open file:// and ftp:// URLs.
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            problems.append(f"url must start with http:// or https://, got {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            problems.append(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if problems:
            raise ConfigError(problems, prefix="invalid WebhookAlert settings")
        self.url = url
        self.timeout = float(timeout)
        self.min_severity = _check_severity(min_severity, "WebhookAlert.min_severity")
        self.headers = dict(headers or {})
        self.num_sent = 0
        self.num_failed = 0
        self.last_error: str | None = None

    def payload(self, alert: Alert) -> dict[str, Any]:
        """The JSON body sent for ``alert``."""
        return {
            "text": f"{alert.severity}: {alert.message}",
            "alert": _json_safe(alert.as_dict()),
            "source": "trainengine",
        }

    def __call__(self, alert: Alert) -> None:
        if not severity_at_least(alert.severity, self.min_severity):
            return
        body = json.dumps(self.payload(alert), allow_nan=False).encode("utf-8")
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "trainengine-alerts", **self.headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # http(s) scheme checked above
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # HTTPError (4xx/5xx) is a URLError; socket timeouts are OSErrors.
            self.num_failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.error("webhook alert to %s failed (%s); the alert was: %s", self.url, self.last_error, alert.message)
            return
        self.num_sent += 1

    def __repr__(self) -> str:
        return f"WebhookAlert(url={self.url!r}, timeout={self.timeout:g}, min_severity={self.min_severity!r})"


def _default_actions() -> list[Callable[[Alert], Any]]:
    return [LogAlert()]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class AlertConfig:
    """Thresholds of the :class:`~trainengine.monitoring.MetricsEngine` alert rules and actions.

    Rules evaluated by ``MetricsEngine.log_epoch`` (each at most once per epoch):

    - ``val_loss_spike`` — ``loss_metric`` rose by more than ``val_loss_spike_threshold``
      relative to the best (lowest) value of the earlier epochs:
      ``loss - best > threshold * |best|``.
    - ``accuracy_drop`` — ``accuracy_metric`` fell more than ``accuracy_drop_threshold``
      (absolute) below the best (highest) earlier value.
    - ``gradient_norm`` — the epoch's ``gradient_norm`` is above ``gradient_norm_threshold``.
    - ``nonfinite`` — any logged metric is NaN/Inf (severity ``critical`` when
      ``nonfinite_is_critical``, else ``warning``).
    - ``drift`` — the JS divergence of the data profiles is above ``drift_threshold``.

    **Patience**: the three trend rules (spike, drop, gradient norm) fire only when their
    condition has held for ``patience_epochs`` consecutive epochs in which the metric was
    logged (epochs without the metric leave the count unchanged); ``nonfinite`` and ``drift``
    fire on the first epoch. A rule fires once per streak: it re-arms when its condition
    clears, so a lasting problem gives one alert, not one per epoch.

    **Severity**: ``nonfinite`` as above; the other rules give ``warning``, or ``critical`` when
    the value exceeds ``critical_factor`` times the threshold (e.g. with the defaults a val loss
    40% above its best, or a JS divergence above 0.4).

    Attributes:
        val_loss_spike_threshold: Relative increase of the val loss over its best (0.2 = 20%).
        accuracy_drop_threshold: Absolute drop of accuracy from its best (0.05 = 5 points).
        gradient_norm_threshold: Gradient norm above which the epoch counts as exploding.
        patience_epochs: Consecutive epochs a trend condition must hold before alerting (>= 1).
        drift_threshold: JS divergence (base 2, in [0, 1]) above which data counts as drifted.
        nonfinite_is_critical: Whether NaN/Inf metrics are ``critical`` (else ``warning``).
        critical_factor: A rule is ``critical`` when the value exceeds this many thresholds (>= 1).
        loss_metric: Metric the spike rule watches.
        accuracy_metric: Metric the drop rule watches.
        actions: Callables run with every new alert (default: ``[LogAlert()]``).

    Raises:
        ConfigError: Listing every invalid field.

    Example:
        >>> config = AlertConfig(val_loss_spike_threshold=0.2, patience_epochs=2)
        >>> config.accuracy_drop_threshold, type(config.actions[0]).__name__
        (0.05, 'LogAlert')
    """

    val_loss_spike_threshold: float = 0.2
    accuracy_drop_threshold: float = 0.05
    gradient_norm_threshold: float = 10.0
    patience_epochs: int = 2
    drift_threshold: float = 0.2
    nonfinite_is_critical: bool = True
    critical_factor: float = 2.0
    loss_metric: str = "val/loss"
    accuracy_metric: str = "val/accuracy"
    actions: list[Callable[[Alert], Any]] = field(default_factory=_default_actions)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in (
            "val_loss_spike_threshold",
            "accuracy_drop_threshold",
            "gradient_norm_threshold",
            "drift_threshold",
        ):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        p = self.patience_epochs
        if not isinstance(p, int) or isinstance(p, bool) or p < 1:
            problems.append(f"patience_epochs must be an integer >= 1, got {p!r}")
        f = self.critical_factor
        if not _is_number(f) or not f >= 1:
            problems.append(f"critical_factor must be a number >= 1, got {f!r}")
        if not isinstance(self.nonfinite_is_critical, bool):
            problems.append(f"nonfinite_is_critical must be True or False, got {self.nonfinite_is_critical!r}")
        for name in ("loss_metric", "accuracy_metric"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                problems.append(f"{name} must be a metric name such as 'val/loss', got {value!r}")
        if not isinstance(self.actions, (list, tuple)):
            problems.append(
                f"actions must be a list of callables (LogAlert, CallbackAlert, StopTrainingAlert, "
                f"WebhookAlert, or any fn(alert)), got {type(self.actions).__name__}"
            )
        else:
            self.actions = list(self.actions)
            for i, action in enumerate(self.actions):
                if not callable(action):
                    problems.append(
                        f"actions[{i}] must be callable with the Alert, got {type(action).__name__}; "
                        "wrap functions in CallbackAlert(fn) or pass fn itself"
                    )
        if problems:
            raise ConfigError(problems, prefix="invalid AlertConfig")
