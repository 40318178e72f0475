"""Alerts and the actions they are handed to: one home for training and serving (standard library only).

An :class:`Alert` is a small record (kind, severity, metric, value, threshold, message, and
``resolved`` for the notice that a condition cleared). An *action* is any callable
``action(alert) -> None``; these ship here:

- :class:`LogAlert` — a log line (WARNING for warnings, ERROR for critical alerts, INFO for
  resolved notices).
- :class:`CallbackAlert` — calls your function.
- :class:`WebhookAlert` — POSTs the alert as JSON (Slack-compatible ``text`` field) with
  ``urllib``; a failing endpoint is logged, never raised.
- :class:`EmailAlert` — sends the alert as an email through an SMTP server (``smtplib``), with
  optional STARTTLS and a login whose password is read from an environment variable.

Training raises alerts through :class:`trainengine.monitoring.AlertConfig` (``StopTrainingAlert``
lives there); ``trainengine serve`` raises latency, error-rate and drift alerts through the
same actions (``trainengine.serve.ServingAlerts``).

This module imports nothing but the standard library (and, inside the package, the package's
``ConfigError``) because export copies it verbatim into every bundle as ``_alerting.py``: a
bundle's ``server.py`` sends the same alerts without trainengine installed.

Example:
    >>> seen = []
    >>> dispatch_alert(
    ...     Alert("p95 latency 240 ms > 100 ms", "warning", "serve/latency_p95_ms", 240.0, 100.0, kind="latency"),
    ...     [CallbackAlert(seen.append)],
    ... )
    >>> seen[0].kind, seen[0].resolved
    ('latency', False)
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import re
import smtplib
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal, Protocol, get_args, runtime_checkable

if __package__:  # trainengine._alerting
    from trainengine.errors import ConfigError
else:  # a bundle's _alerting.py, beside server.py: trainengine is not installed there
    sys.dont_write_bytecode = True  # no __pycache__ inside the bundle's folder

    class ConfigError(ValueError):  # type: ignore[no-redef]  # the bundle's stand-in for trainengine's ConfigError
        """Invalid alert settings (the bundle's copy of trainengine's ``ConfigError``)."""

        def __init__(self, problems: list[str] | str, *, prefix: str = "invalid configuration") -> None:
            self.problems = [problems] if isinstance(problems, str) else list(problems)
            lines = "\n".join(f"  - {p}" for p in self.problems)
            n = len(self.problems)
            super().__init__(f"{prefix} ({n} problem{'s' if n != 1 else ''}):\n{lines}")


__all__ = [
    "Alert",
    "AlertAction",
    "AlertKind",
    "AlertSeverity",
    "LogAlert",
    "CallbackAlert",
    "WebhookAlert",
    "EmailAlert",
    "dispatch_alert",
    "severity_at_least",
]

logger = logging.getLogger("trainengine.alerts")

AlertSeverity = Literal["warning", "critical"]
#: Training rules (``val_loss_spike`` ... ``drift``) and serving rules (``latency``, ``error_rate``, ``drift``).
AlertKind = Literal["val_loss_spike", "accuracy_drop", "gradient_norm", "nonfinite", "drift", "latency", "error_rate"]

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
    """One alert raised by a training rule (``MetricsEngine``) or a serving rule (``ServingAlerts``).

    Supports item access (``alert["message"]``) as well as attributes, so code written for
    alert dicts keeps working.

    Attributes:
        message: One human-readable line: what happened, the numbers, and what to check.
        severity: ``"warning"`` or ``"critical"``.
        metric: Namespaced metric the rule looked at (``"val/loss"``, ``"grad_norm"``,
            ``"drift/js_divergence"``, ``"serve/latency_p95_ms"``, ...).
        value: The offending value.
        threshold: The configured threshold of the rule (in the rule's units: relative
            increase for ``val_loss_spike``, absolute drop for ``accuracy_drop``, norm for
            ``gradient_norm``, JS divergence for ``drift``, milliseconds for ``latency``, a
            fraction for ``error_rate``; ``None`` for ``nonfinite``).
        epoch: Epoch the alert belongs to, or ``None`` for step-level and serving checks.
        step: Step the alert belongs to, or ``None``.
        kind: Which rule fired: ``val_loss_spike``, ``accuracy_drop``, ``gradient_norm``,
            ``nonfinite``, ``drift``, ``latency`` or ``error_rate``.
        time: Wall-clock time (``time.time()``) when the alert was raised.
        details: Rule-specific numbers (best value so far, the window's request count, the
            model's name and version, ...).
        resolved: ``True`` for the notice that a firing alert's condition has cleared (serving
            rules send one); the other fields describe the value that cleared it.

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
    resolved: bool = False

    def __post_init__(self) -> None:
        _check_severity(self.severity, "Alert.severity")
        if self.kind not in get_args(AlertKind):
            raise ConfigError(
                f"Alert.kind must be one of: {', '.join(get_args(AlertKind))}; got {self.kind!r}",
                prefix="invalid alert",
            )

    @property
    def status(self) -> str:
        """``"resolved"`` for a resolved notice, else the severity (what a subject line shows)."""
        return "resolved" if self.resolved else self.severity

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


def dispatch_alert(alert: Alert, actions: Iterable[Callable[[Alert], Any]]) -> None:
    """Hand ``alert`` to every action; one that raises is logged and the others still run.

    Args:
        alert: The alert (or resolved notice).
        actions: Callables taking the alert.
    """
    for action in actions:
        try:
            action(alert)
        except Exception:  # one broken action must not silence the others or stop the caller
            logger.exception("alert action %r failed on: %s", action, alert.message)


class LogAlert:
    """Log every alert: WARNING for warnings, ERROR for critical alerts, INFO for resolved notices.

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
        if alert.resolved:
            self._logger.info("[resolved] %s", alert.message)
            return
        level = logging.ERROR if alert.severity == "critical" else logging.WARNING
        self._logger.log(level, "[%s alert] %s", alert.severity, alert.message)

    def __repr__(self) -> str:
        return f"LogAlert(logger_name={self.logger_name!r}, min_severity={self.min_severity!r})"


class CallbackAlert:
    """Call ``fn(alert)`` for every alert at or above ``min_severity``.

    Args:
        fn: Any callable taking the :class:`Alert` (e.g. page someone, submit a retraining job).
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


def _json_safe(value: Any) -> Any:
    # Strict JSON has no NaN/Infinity; many webhook receivers reject them, so send strings.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_timeout(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and value > 0


class WebhookAlert:
    """POST each alert at or above ``min_severity`` as JSON to an HTTP(S) endpoint.

    The body is ``{"text": "<severity or resolved>: <message>", "alert": {...Alert.as_dict()...},
    "source": "trainengine"}`` — ``text`` makes it work with Slack/Teams-style incoming
    webhooks as is. Non-finite numbers are sent as strings (``"nan"``, ``"inf"``).

    The request is synchronous with ``timeout`` seconds (alerts are rare: at most a few per
    epoch, or per evaluation of a server's window). Any failure — refused connection, timeout,
    HTTP error status — is logged on the ``trainengine.alerts`` logger and counted in
    :attr:`num_failed`; it is never raised, so a broken endpoint cannot stop training or serving.

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
            "text": f"{alert.status}: {alert.message}",
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


# An address as SMTP takes it: one @, no spaces, no header-breaking characters (CR/LF, <, >, comma).
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _one_line(text: str, limit: int) -> str:
    # Header values must not break lines (header injection) and subjects stay readable.
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class EmailAlert:
    """Send each alert at or above ``min_severity`` as an email through an SMTP server.

    One plain-text message per alert (and per resolved notice): the subject says the status,
    the kind and the message; the body lists the alert's fields and its JSON. Sending is
    synchronous with ``timeout`` seconds; any failure (refused connection, rejected login or
    recipient, TLS error) is logged on the ``trainengine.alerts`` logger and counted in
    :attr:`num_failed`, never raised.

    The password is never a setting: name the environment variable that holds it
    (``password_env``). It is read once, when the action is built, so a missing variable is an
    error at start-up rather than at the first alert. Credentials are only sent over STARTTLS,
    except to a relay on this machine (``localhost``, ``127.0.0.1``, ``::1``).

    Args:
        to: One address or a list of addresses.
        smtp_host: The SMTP server (a relay, or your provider's submission host).
        smtp_port: Its port (25 for a relay, 587 for submission with STARTTLS).
        sender: The ``From`` address; default ``trainengine@<this host's name>``.
        starttls: Upgrade the connection with STARTTLS (the server's certificate is checked
            against the system's trusted CAs) before logging in and sending.
        username: Login name; needs ``password_env``.
        password_env: Name of the environment variable holding the password; needs ``username``.
        timeout: Seconds for the connection and each SMTP command.
        min_severity: Alerts below this severity are not sent.
        subject_prefix: Put before every subject (filters and inbox rules match it).

    Raises:
        ConfigError: Listing every invalid setting: a malformed address, host or port, a
            non-positive timeout, a username without ``password_env`` (or the reverse), an
            unset password variable, or credentials to a remote server without ``starttls``.

    Example:
        >>> mail = EmailAlert("oncall@example.com", smtp_host="smtp.example.com", smtp_port=587, starttls=True)
        >>> mail.recipients, mail.num_sent
        (['oncall@example.com'], 0)
    """

    def __init__(
        self,
        to: str | Sequence[str],
        *,
        smtp_host: str,
        smtp_port: int = 25,
        sender: str | None = None,
        starttls: bool = False,
        username: str | None = None,
        password_env: str | None = None,
        timeout: float = 10.0,
        min_severity: AlertSeverity = "warning",
        subject_prefix: str = "[trainengine]",
    ) -> None:
        problems: list[str] = []
        recipients = [to] if isinstance(to, str) else list(to) if isinstance(to, (list, tuple)) else None
        if not recipients:
            problems.append(f"to must be an email address or a non-empty list of them, got {to!r}")
            recipients = []
        for address in recipients:
            if not isinstance(address, str) or not _ADDRESS.match(address):
                problems.append(f"to: {address!r} is not an email address such as 'oncall@example.com'")
        if sender is None:
            sender = f"trainengine@{socket.gethostname() or 'localhost'}"
        if not isinstance(sender, str) or not _ADDRESS.match(sender):
            problems.append(f"sender must be an email address such as 'alerts@example.com', got {sender!r}")
        if not isinstance(smtp_host, str) or not smtp_host.strip() or any(c.isspace() for c in smtp_host):
            problems.append(f"smtp_host must be a host name or address, got {smtp_host!r}")
        if isinstance(smtp_port, bool) or not isinstance(smtp_port, int) or not 0 < smtp_port < 65536:
            problems.append(f"smtp_port must be an integer in 1..65535, got {smtp_port!r}")
        if not isinstance(starttls, bool):
            problems.append(f"starttls must be True or False, got {starttls!r}")
        if not _positive_timeout(timeout):
            problems.append(f"timeout must be a number of seconds > 0, got {timeout!r}")
        password: str | None = None
        if (username is None) != (password_env is None):
            problems.append(
                "username and password_env go together: give both (the password is read from the environment "
                "variable password_env names) or neither"
            )
        elif username is not None:
            if not isinstance(username, str) or not username:
                problems.append(f"username must be a non-empty string, got {username!r}")
            if not isinstance(password_env, str) or not _ENV_NAME.match(password_env):
                problems.append(
                    f"password_env must name an environment variable (e.g. SMTP_PASSWORD), got {password_env!r}"
                )
            else:
                password = os.environ.get(password_env)
                if not password:
                    problems.append(
                        f"the SMTP password variable {password_env} is unset or empty; export {password_env}=<password>"
                    )
            if starttls is False and isinstance(smtp_host, str) and not _is_loopback(smtp_host):
                problems.append(
                    f"refusing to send SMTP credentials to {smtp_host} unencrypted; set starttls=True (port 587), "
                    "or log in only to a relay on this machine"
                )
        if not isinstance(subject_prefix, str):
            problems.append(f"subject_prefix must be a string, got {subject_prefix!r}")
        if problems:
            raise ConfigError(problems, prefix="invalid EmailAlert settings")
        self.recipients: list[str] = list(recipients)
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.sender = sender
        self.starttls = starttls
        self.username = username
        self.password_env = password_env
        self._password = password
        self.timeout = float(timeout)
        self.min_severity = _check_severity(min_severity, "EmailAlert.min_severity")
        self.subject_prefix = subject_prefix
        self.num_sent = 0
        self.num_failed = 0
        self.last_error: str | None = None

    def message(self, alert: Alert) -> EmailMessage:
        """The email sent for ``alert``."""
        msg = EmailMessage()
        prefix = f"{self.subject_prefix} " if self.subject_prefix else ""
        msg["Subject"] = _one_line(f"{prefix}{alert.status}: {alert.kind} — {alert.message}", 200)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(alert.time, localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.sender.rsplit("@", 1)[1])
        lines = [
            alert.message,
            "",
            f"status:    {alert.status}",
            f"kind:      {alert.kind}",
            f"metric:    {alert.metric}",
            f"value:     {alert.value}",
            f"threshold: {alert.threshold}",
            f"time:      {formatdate(alert.time, localtime=False)}",
        ]
        lines += [f"{key}: {value}" for key, value in sorted(alert.details.items())]
        lines += ["", "As JSON:", json.dumps(_json_safe(alert.as_dict()), indent=2, sort_keys=True), ""]
        msg.set_content("\n".join(lines))
        return msg

    def __call__(self, alert: Alert) -> None:
        if not severity_at_least(alert.severity, self.min_severity):
            return
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if self.username is not None and self._password is not None:
                    smtp.login(self.username, self._password)
                smtp.send_message(self.message(alert))
        except (smtplib.SMTPException, OSError) as exc:
            # Refused logins and recipients are SMTPExceptions; TLS errors, timeouts and refused
            # connections are OSErrors.
            self.num_failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.error(
                "email alert to %s via %s:%d failed (%s); the alert was: %s",
                ", ".join(self.recipients),
                self.smtp_host,
                self.smtp_port,
                self.last_error,
                alert.message,
            )
            return
        self.num_sent += 1

    def __repr__(self) -> str:
        login = f", username={self.username!r}, password_env={self.password_env!r}" if self.username else ""
        return (
            f"EmailAlert(to={self.recipients!r}, smtp_host={self.smtp_host!r}, smtp_port={self.smtp_port}, "
            f"starttls={self.starttls}{login})"
        )
