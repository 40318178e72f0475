"""GradientMonitor: exact norms, classification, and its trainer-callback behaviour."""

from __future__ import annotations

import dataclasses
import logging
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainengine.errors import ConfigError
from trainengine.monitoring import GradientHealth, GradientMonitor


def _model_with_grads(*grads: torch.Tensor | None) -> nn.Module:
    """A module whose parameters p0, p1, ... carry exactly the given gradients."""
    model = nn.Module()
    for i, g in enumerate(grads):
        shape = (3,) if g is None else g.shape
        p = nn.Parameter(torch.zeros(shape))
        p.grad = None if g is None else g.clone()
        model.register_parameter(f"p{i}", p)
    return model


def _scaled_model(total: float) -> nn.Module:
    """Two parameters whose gradients have total L2 norm ``total`` (3-4-5 triangle)."""
    return _model_with_grads(torch.tensor([0.6 * total]), torch.tensor([0.0, 0.8 * total]))


def test_exact_norms_against_vector_norm() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(4, 5), torch.randn(7) * 3, torch.randn(2, 2, 2) * 0.1]
    model = _model_with_grads(*grads)
    monitor = GradientMonitor(norm_threshold_warning=100, norm_threshold_critical=1000)
    health = monitor.check_step(model)

    per_param = [torch.linalg.vector_norm(g).item() for g in grads]
    total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])).item()
    assert health.total_norm == pytest.approx(total, rel=1e-6)
    assert health.max_norm == pytest.approx(max(per_param), rel=1e-6)
    assert health.min_norm == pytest.approx(min(per_param), rel=1e-6)
    assert health.max_norm_param == f"p{per_param.index(max(per_param))}"
    assert health.min_norm_param == f"p{per_param.index(min(per_param))}"
    expected = {f"p{i}": n for i, n in enumerate(per_param)}
    assert health.per_layer == pytest.approx(expected, rel=1e-6)
    by_norm = sorted(health.per_layer, key=health.per_layer.get, reverse=True)
    assert list(health.per_layer) == by_norm
    assert health.num_params == 3 and health.num_nonfinite == 0 and not health.no_gradients


def test_low_precision_grads_are_measured_in_float32() -> None:
    g = torch.full((100_000,), 1.0, dtype=torch.bfloat16)  # norm sqrt(1e5) ~ 316
    model = nn.Module()
    p = nn.Parameter(torch.zeros(100_000, dtype=torch.bfloat16))
    p.grad = g
    model.register_parameter("w", p)
    health = GradientMonitor(norm_threshold_critical=1e6).check_step(model)
    assert health.total_norm == pytest.approx(math.sqrt(1e5), rel=1e-6)


def test_params_without_grads_are_skipped() -> None:
    model = _model_with_grads(None, torch.tensor([3.0, 4.0]), None)
    health = GradientMonitor(norm_threshold_warning=10).check_step(model)
    assert health.num_params == 1
    assert health.total_norm == pytest.approx(5.0)
    assert health.max_norm_param == health.min_norm_param == "p1"
    assert set(health.per_layer) == {"p1"}


def test_no_gradients_at_all() -> None:
    health = GradientMonitor().check_step(_model_with_grads(None, None))
    assert health.no_gradients
    assert (health.total_norm, health.max_norm, health.min_norm) == (0.0, 0.0, 0.0)
    assert health.num_params == 0
    assert not health.has_exploding_gradients and not health.has_vanishing_gradients
    assert health.severity == "warning"


@pytest.mark.parametrize(
    ("total", "severity", "exploding"),
    [
        (0.5, "ok", False),
        (1.0, "ok", False),
        (1.5, "warning", False),
        (10.0, "warning", False),
        (10.5, "critical", True),
        (1e6, "critical", True),
    ],
)
def test_thresholds_classify(total: float, severity: str, exploding: bool) -> None:
    monitor = GradientMonitor(norm_threshold_warning=1.0, norm_threshold_critical=10.0)
    health = monitor.check_step(_scaled_model(total))
    assert health.total_norm == pytest.approx(total, rel=1e-6)
    assert health.severity == severity
    assert health.has_exploding_gradients is exploding
    assert not health.has_vanishing_gradients


def test_vanishing_detection() -> None:
    monitor = GradientMonitor(vanishing_threshold=1e-7)
    tiny = monitor.check_step(_scaled_model(1e-9))
    assert tiny.has_vanishing_gradients and tiny.severity == "warning"
    assert not tiny.has_exploding_gradients
    zero = monitor.check_step(_model_with_grads(torch.zeros(4)))
    assert zero.has_vanishing_gradients
    # One tiny layer in an otherwise healthy model is not "vanishing gradients".
    mixed = monitor.check_step(_model_with_grads(torch.tensor([1e-12]), torch.tensor([0.5])))
    assert not mixed.has_vanishing_gradients and mixed.severity == "ok"
    assert mixed.min_norm_param == "p0"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_grad_counted_and_exploding(bad: float) -> None:
    # The culprit is registered last so that ranking it first needs NaN-aware sorting.
    model = _model_with_grads(torch.tensor([0.1]), torch.tensor([0.2]), torch.tensor([1.0, bad]))
    health = GradientMonitor().check_step(model)
    assert health.num_nonfinite == 1
    assert health.has_exploding_gradients and health.severity == "critical"
    assert not math.isfinite(health.total_norm)
    assert health.max_norm_param == "p2"
    assert list(health.per_layer) == ["p2", "p1", "p0"]  # the culprit is listed first
    assert health.min_norm_param == "p0" and health.min_norm == pytest.approx(0.1)


def test_health_is_frozen() -> None:
    health = GradientMonitor().check_step(_scaled_model(1.0))
    assert isinstance(health, GradientHealth)
    with pytest.raises(dataclasses.FrozenInstanceError):
        health.total_norm = 0.0  # type: ignore[misc]  # assigning a frozen field on purpose


def test_real_backward_matches_clip_grad_norm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    model(torch.randn(5, 8)).pow(2).sum().backward()
    monitor = GradientMonitor(norm_threshold_warning=1e3, norm_threshold_critical=1e4)
    health = monitor.check_step(model)
    expected = nn.utils.clip_grad_norm_(model.parameters(), max_norm=float("inf")).item()
    assert health.total_norm == pytest.approx(expected, rel=1e-6)
    assert set(health.per_layer) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_history_summary_and_default_steps() -> None:
    monitor = GradientMonitor(norm_threshold_warning=1.0, norm_threshold_critical=10.0, max_history=2)
    for total in [0.5, 5.0, 50.0, float("nan")]:
        if math.isnan(total):
            monitor.check_step(_model_with_grads(torch.tensor([total])))
        else:
            monitor.check_step(_scaled_model(total))
    assert [h.step for h in monitor.history] == [2, 3]  # oldest dropped, steps count calls
    summary = monitor.summary()
    assert summary["num_checks"] == 4
    assert summary["num_warnings"] == 1
    assert summary["num_critical"] == 2
    assert summary["num_nonfinite"] == 1
    assert summary["max_total_norm"] == pytest.approx(50.0)  # NaN is not a maximum
    assert summary["last_severity"] == "critical"


def test_should_check() -> None:
    monitor = GradientMonitor(check_interval=5)
    assert [s for s in range(16) if monitor.should_check(s)] == [0, 5, 10, 15]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"check_interval": 0},
        {"norm_threshold_warning": 5.0, "norm_threshold_critical": 1.0},
        {"vanishing_threshold": -1.0},
        {"norm_threshold_warning": 0.0},
    ],
)
def test_invalid_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        GradientMonitor(**kwargs)


# ---------------------------------------------------------------- callback use
def test_callback_checks_every_interval_only() -> None:
    messages: list[str] = []
    monitor = GradientMonitor(check_interval=3, norm_threshold_warning=1.0, log_fn=messages.append)
    trainer = SimpleNamespace(model=_scaled_model(20.0), state=SimpleNamespace(step=0))
    for step in range(10):
        trainer.state.step = step
        monitor.on_before_optimizer_step(trainer, step)
    assert [h.step for h in monitor.history] == [0, 3, 6, 9]
    assert len(messages) == 4
    # Without the explicit step argument the trainer's state is used.
    trainer.state.step = 12
    monitor.on_before_optimizer_step(trainer)
    assert monitor.history[-1].step == 12


def test_callback_message_content() -> None:
    messages: list[str] = []
    monitor = GradientMonitor(check_interval=1, norm_threshold_critical=10.0, log_fn=messages.append)
    model = _model_with_grads(torch.tensor([0.1]), torch.tensor([30.0, 40.0]))
    monitor.on_before_optimizer_step(SimpleNamespace(model=model), 7)
    (message,) = messages
    assert "step 7" in message
    assert "50" in message  # total norm
    assert "'p1'" in message  # the worst parameter
    assert "critical" in message
    assert "lower the learning rate or set training.max_grad_norm" in message


def test_callback_is_silent_when_healthy() -> None:
    messages: list[str] = []
    monitor = GradientMonitor(check_interval=1, log_fn=messages.append)
    monitor.on_before_optimizer_step(SimpleNamespace(model=_scaled_model(0.5)), 0)
    assert messages == [] and monitor.history[-1].severity == "ok"


def test_logger_levels_without_log_fn(caplog: pytest.LogCaptureFixture) -> None:
    monitor = GradientMonitor(check_interval=1, norm_threshold_warning=1.0)
    with caplog.at_level(logging.WARNING, logger="trainengine.monitoring"):
        monitor.on_before_optimizer_step(SimpleNamespace(model=_scaled_model(5.0)), 0)
        monitor.on_before_optimizer_step(SimpleNamespace(model=_model_with_grads(torch.tensor([float("nan")]))), 1)
    records = [r for r in caplog.records if r.name == "trainengine.monitoring"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.ERROR]
    assert "warning threshold" in records[0].getMessage()
    assert "non-finite" in records[1].getMessage() and "step 1" in records[1].getMessage()
