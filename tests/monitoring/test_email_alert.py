"""EmailAlert: alerts delivered to a real SMTP server (aiosmtpd on loopback), logins, refusals."""

from __future__ import annotations

import email
import email.policy
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from trainengine.errors import ConfigError
from trainengine.monitoring import Alert, AlertConfig, EmailAlert, MetricsEngine


@dataclass
class Inbox:
    """What the SMTP server received: one (sender, recipients, parsed message) per email."""

    received: list[tuple[str, list[str], email.message.EmailMessage]] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A plain SMTP server on loopback that accepts the login alerts/s3cret (no TLS: loopback only)."""
    inbox = Inbox()

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"alerts", b"s3cret")
        if isinstance(auth_data, LoginPassword):
            inbox.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _alert(**kw) -> Alert:
    fields = {
        "message": "/predict p95 latency 240.0 ms over the last 300 s is above the threshold of 100 ms",
        "severity": "critical",
        "metric": "serve/latency_p95_ms",
        "value": 240.0,
        "threshold": 100.0,
        "kind": "latency",
        "details": {"model": "digits", "version": "1.0.0"},
    }
    fields.update(kw)
    return Alert(**fields)


def test_alert_is_delivered_to_the_smtp_server(smtp_server) -> None:
    inbox, port = smtp_server
    mail = EmailAlert(
        ["oncall@example.com", "ml@example.com"], smtp_host="127.0.0.1", smtp_port=port, sender="alerts@example.com"
    )
    mail(_alert())
    mail(_alert(resolved=True, severity="critical", message="/predict p95 latency is back under 100 ms"))
    assert (mail.num_sent, mail.num_failed) == (2, 0)
    (sender, rcpts, first), (_, _, second) = inbox.received
    assert sender == "alerts@example.com" and rcpts == ["oncall@example.com", "ml@example.com"]
    assert first["Subject"].startswith("[trainengine] critical: latency — /predict p95 latency 240.0 ms")
    assert first["To"] == "oncall@example.com, ml@example.com" and first["Message-ID"]
    body = first.get_content()
    assert "threshold: 100.0" in body and "model: digits" in body
    assert json.loads(body.split("As JSON:", 1)[1])["kind"] == "latency"
    assert second["Subject"].startswith("[trainengine] resolved: latency")


def test_login_with_the_password_from_the_environment(smtp_server, monkeypatch) -> None:
    inbox, port = smtp_server
    monkeypatch.setenv("TE_SMTP_PASSWORD", "s3cret")
    mail = EmailAlert(
        "oncall@example.com", smtp_host="127.0.0.1", smtp_port=port, username="alerts", password_env="TE_SMTP_PASSWORD"
    )
    assert "s3cret" not in repr(mail)
    mail(_alert())
    assert mail.num_sent == 1 and inbox.logins == [(b"alerts", b"s3cret")] and len(inbox.received) == 1

    monkeypatch.setenv("TE_SMTP_PASSWORD", "wrong")
    refused = EmailAlert(
        "oncall@example.com", smtp_host="127.0.0.1", smtp_port=port, username="alerts", password_env="TE_SMTP_PASSWORD"
    )
    refused(_alert())  # a refused login is counted and logged, never raised
    assert (refused.num_sent, refused.num_failed) == (0, 1) and "SMTPAuthenticationError" in refused.last_error
    assert len(inbox.received) == 1


def test_unreachable_server_is_logged_not_raised(caplog) -> None:
    mail = EmailAlert("oncall@example.com", smtp_host="127.0.0.1", smtp_port=_free_port(), timeout=2.0)
    with caplog.at_level("ERROR", logger="trainengine.alerts"):
        mail(_alert())
    assert mail.num_failed == 1 and "email alert to oncall@example.com" in caplog.text


def test_training_alerts_reach_the_inbox_through_alert_config(smtp_server) -> None:
    inbox, port = smtp_server
    mail = EmailAlert("oncall@example.com", smtp_host="127.0.0.1", smtp_port=port, min_severity="critical")
    engine = MetricsEngine(alert_config=AlertConfig(patience_epochs=1, actions=[mail]))
    engine.log_epoch(0, {"val/loss": 1.0})
    engine.log_epoch(1, {"val/loss": float("nan")})  # nonfinite: critical
    ((_, _, message),) = inbox.received  # the warning-level rules sent nothing: min_severity="critical"
    assert message["Subject"].startswith("[trainengine] critical: nonfinite")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"to": "not-an-address"}, "'not-an-address' is not an email address"),
        ({"to": "a@example.com\nBcc: x@evil.com"}, "is not an email address"),
        ({"smtp_port": 0}, "smtp_port must be an integer in 1..65535"),
        ({"username": "alerts"}, "username and password_env go together"),
        ({"username": "u", "password_env": "TE_UNSET_PASSWORD_VAR"}, "TE_UNSET_PASSWORD_VAR is unset or empty"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(kwargs, message) -> None:
    settings = {"to": "oncall@example.com", "smtp_host": "127.0.0.1", **kwargs}
    with pytest.raises(ConfigError, match=message):
        EmailAlert(settings.pop("to"), **settings)


def test_credentials_to_a_remote_server_need_starttls(monkeypatch) -> None:
    monkeypatch.setenv("TE_SMTP_PASSWORD", "x")
    with pytest.raises(ConfigError, match="refusing to send SMTP credentials to smtp.example.com unencrypted"):
        EmailAlert("a@example.com", smtp_host="smtp.example.com", username="u", password_env="TE_SMTP_PASSWORD")
    mail = EmailAlert(
        "a@example.com", smtp_host="smtp.example.com", username="u", password_env="TE_SMTP_PASSWORD", starttls=True
    )
    assert mail.starttls and mail.smtp_port == 25
