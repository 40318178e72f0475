"""Alert rules of training: what the :class:`~trainengine.monitoring.MetricsEngine` raises, and what happens next.

An :class:`Alert` is a small record (kind, severity, metric, value, threshold, epoch/step,
message). :class:`AlertConfig` holds the thresholds of the alert rules and the list of
*actions* every new alert is handed to. An action is any callable ``action(alert) -> None``;
five ship:

- :class:`LogAlert` — a log line (WARNING for warnings, ERROR for critical alerts).
- :class:`CallbackAlert` — calls your function.
- :class:`StopTrainingAlert` — sets ``should_stop`` and asks the trainer to stop.
- :class:`WebhookAlert` — POSTs the alert as JSON (Slack-compatible ``text`` field) with
  ``urllib``; a failing endpoint is logged, never raised into training.
- :class:`EmailAlert` — sends the alert through an SMTP server.

The record and the four delivery actions live in :mod:`trainengine._alerting` (standard library
only), which export also copies into every bundle: ``trainengine serve`` and a bundle's
``server.py`` raise their latency, error-rate and drift alerts through the same actions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainengine._alerting import (
    Alert,
    AlertAction,
    AlertKind,
    AlertSeverity,
    CallbackAlert,
    EmailAlert,
    LogAlert,
    WebhookAlert,
    _check_severity,
    _is_number,
    dispatch_alert,
    severity_at_least,
)
from trainengine.errors import ConfigError

__all__ = [
    "Alert",
    "AlertAction",
    "AlertConfig",
    "AlertKind",
    "AlertSeverity",
    "CallbackAlert",
    "EmailAlert",
    "LogAlert",
    "StopTrainingAlert",
    "WebhookAlert",
    "dispatch_alert",
    "severity_at_least",
]


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
        if alert.resolved or not severity_at_least(alert.severity, self.min_severity):
            return  # a resolved notice is no reason to stop
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


def _default_actions() -> list[Callable[[Alert], Any]]:
    return [LogAlert()]


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
                f"WebhookAlert, EmailAlert, or any fn(alert)), got {type(self.actions).__name__}"
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
