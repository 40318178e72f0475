"""MetricsEngine: records, derived metrics, back-ends, W&B gating, alert rules and the Trainer callback."""

from __future__ import annotations

import logging
import math
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from trainengine.errors import ConfigError, DataError, MissingExtraError
from trainengine.monitoring import (
    AlertConfig,
    CallbackAlert,
    GradientMonitor,
    MetricsEngine,
    MetricsEngineCallback,
    StopTrainingAlert,
)


class Recorder:
    """A duck-typed back-end: what an ExperimentTracker would receive."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.calls.append((metrics, step))


def quiet(**kw) -> AlertConfig:
    """AlertConfig without the default log action (tests inspect alerts directly)."""
    kw.setdefault("actions", [])
    return AlertConfig(**kw)


def kinds(engine: MetricsEngine) -> list[tuple[str, str, int | None]]:
    return [(a.kind, a.severity, a.epoch) for a in engine.get_alerts()]


# ----------------------------------------------------------------------------- records
def test_log_epoch_builds_a_flat_namespaced_record() -> None:
    engine = MetricsEngine(alert_config=quiet())
    record = engine.log_epoch(
        epoch=5,
        train_metrics={"loss": 0.42, "accuracy": torch.tensor(0.85)},
        val_metrics={"loss": np.float32(0.38), "accuracy": 0.87, "val/f1": 0.5},
        learning_rate=1e-4,
        gradient_norm=0.5,
        epoch_duration=120.5,
    )
    assert record["epoch"] == 5
    assert record["train/loss"] == 0.42 and record["train/accuracy"] == pytest.approx(0.85)
    assert record["val/loss"] == pytest.approx(0.38) and record["val/accuracy"] == 0.87 and record["val/f1"] == 0.5
    assert (record["lr"], record["grad_norm"], record["epoch_duration"]) == (1e-4, 0.5, 120.5)
    # Derived: perplexity = e^loss, computed independently here.
    assert record["train/perplexity"] == pytest.approx(math.exp(0.42))
    assert record["val/perplexity"] == pytest.approx(math.exp(0.38), rel=1e-6)
    assert all(isinstance(v, (int, float)) for v in record.values())
    assert engine.history == [record] and engine.history[0] is not record


def test_given_perplexity_is_kept_and_derivation_can_be_disabled() -> None:
    engine = MetricsEngine(alert_config=quiet())
    record = engine.log_epoch(0, val_metrics={"loss": 1.0, "perplexity": 2.0}, train_metrics={"loss": 800.0})
    assert record["val/perplexity"] == 2.0
    assert record["train/perplexity"] == math.inf  # exp overflow, not an exception
    assert not engine.has_alerts()  # a derived inf is not a non-finite *input*
    plain = MetricsEngine(alert_config=quiet(), derive_perplexity=False)
    assert "val/perplexity" not in plain.log_epoch(0, val_metrics={"loss": 1.0})


def test_history_and_metric_history() -> None:
    engine = MetricsEngine(alert_config=quiet())
    for epoch, loss in enumerate([1.0, 0.8, 0.7]):
        engine.log_epoch(epoch, val_metrics={"loss": loss})
    engine.log_epoch(3, train_metrics={"loss": 0.5})
    assert [r["epoch"] for r in engine.history] == [0, 1, 2, 3]
    assert engine.metric_history("val/loss") == [1.0, 0.8, 0.7]


def test_bad_values_raise_clear_errors() -> None:
    engine = MetricsEngine(alert_config=quiet())
    with pytest.raises(DataError, match="metric 'train/loss' must be a number"):
        engine.log_epoch(0, train_metrics={"loss": "low"})
    with pytest.raises(DataError, match="one-element"):
        engine.log_epoch(0, train_metrics={"loss": torch.ones(3)})
    with pytest.raises(DataError, match="epoch must be an integer >= 0"):
        engine.log_epoch(-1)
    with pytest.raises(DataError, match="only reference_profile was given"):
        engine.log_epoch(0, reference_profile=object())


# ----------------------------------------------------------------------------- back-ends
def test_backends_receive_every_record_with_its_step() -> None:
    a, b = Recorder(), Recorder()
    engine = MetricsEngine(backends=[a, b], alert_config=quiet())
    r0 = engine.log_epoch(0, train_metrics={"loss": 1.0})
    r1 = engine.log_epoch(1, train_metrics={"loss": 0.9}, step=250)
    engine.log_step(260, {"train/loss": torch.tensor(0.85), "lr": 0.01})
    assert a.calls == b.calls
    assert a.calls[0] == (r0, 0) and a.calls[1] == (r1, 250)
    assert a.calls[2][1] == 260 and a.calls[2][0] == {"train/loss": pytest.approx(0.85), "lr": 0.01}
    assert engine.step_history[-1]["step"] == 260


def test_a_failing_backend_is_logged_and_the_others_still_receive(caplog) -> None:
    class Broken:
        def log_metrics(self, metrics, step):
            raise RuntimeError("disk full")

    ok = Recorder()
    engine = MetricsEngine(backends=[Broken(), ok], alert_config=quiet())
    with caplog.at_level(logging.ERROR, logger="trainengine.alerts"):
        engine.log_epoch(0, train_metrics={"loss": 1.0})
        engine.log_epoch(1, train_metrics={"loss": 1.0})
    assert len(ok.calls) == 2
    failures = [r for r in caplog.records if "Broken failed" in r.getMessage()]
    assert len(failures) == 1  # the first failure is logged with its traceback, not every one


def test_backend_without_log_metrics_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"backends\[1\] \(object\) has no log_metrics"):
        MetricsEngine(backends=[Recorder(), object()])


def test_use_wandb_without_wandb_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError, installed or not
    with pytest.raises(MissingExtraError) as info:
        MetricsEngine(use_wandb=True)
    assert 'pip install "trainengine[track]"' in str(info.value) and "'wandb'" in str(info.value)
    MetricsEngine(use_wandb=False)  # never imports wandb


def fake_wandb() -> types.ModuleType:
    module = types.ModuleType("wandb")
    module.run = None
    module.logged, module.inits, module.finished = [], [], 0

    def init(**kwargs):
        module.inits.append(kwargs)
        module.run = object()
        return module.run

    def log(metrics, step=None):
        module.logged.append((metrics, step))

    def finish():
        module.finished += 1
        module.run = None

    module.init, module.log, module.finish = init, log, finish
    return module


def test_use_wandb_starts_a_run_once_and_logs_each_record(monkeypatch) -> None:
    wandb = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    engine = MetricsEngine(use_wandb=True, alert_config=quiet(), wandb_init={"project": "p", "mode": "offline"})
    engine.log_epoch(0, train_metrics={"loss": 1.0})
    engine.log_epoch(1, train_metrics={"loss": 0.5})
    assert wandb.inits == [{"project": "p", "mode": "offline"}]
    assert [(m["train/loss"], s) for m, s in wandb.logged] == [(1.0, 0), (0.5, 1)]
    engine.close()
    assert wandb.finished == 1


# ----------------------------------------------------------------------------- val loss spike
def test_val_loss_spike_fires_exactly_when_patience_is_reached() -> None:
    engine = MetricsEngine(alert_config=quiet(val_loss_spike_threshold=0.25, patience_epochs=2))
    fired_at = []
    # best 0.8 after epoch 1; 1.05 is 31% above it; 1.0 (exactly 25%) is not a spike.
    for epoch, loss in enumerate([1.0, 0.8, 1.05, 1.0, 1.05, 1.1, 1.2, 0.9, 1.1, 1.1]):
        engine.log_epoch(epoch, val_metrics={"loss": loss})
        fired_at += [a.epoch for a in engine.last_alerts]
    # epoch 2 starts a streak, 3 breaks it (not above 25%), 4-5 reach patience -> fires at 5;
    # 6 continues the same streak (no repeat), 7 clears it, 8-9 fire again at 9.
    assert fired_at == [5, 9]
    first = engine.get_alerts()[0]
    assert first.metric == "val/loss" and first.value == 1.1 and first.threshold == 0.25
    assert first.details["best"] == 0.8 and first.kind == "val_loss_spike"
    assert "val/loss" in first["message"] and "0.8" in first["message"]


def test_spike_needs_a_best_and_patience_one_fires_at_once() -> None:
    engine = MetricsEngine(alert_config=quiet(patience_epochs=1))
    engine.log_epoch(0, val_metrics={"loss": 5.0})  # no earlier best: nothing to compare with
    assert not engine.has_alerts()
    engine.log_epoch(1, val_metrics={"loss": 6.5})  # 30% above 5.0
    assert kinds(engine) == [("val_loss_spike", "warning", 1)]


def test_spike_severity_escalates_past_critical_factor() -> None:
    engine = MetricsEngine(alert_config=quiet(patience_epochs=1, critical_factor=2.0))
    engine.log_epoch(0, val_metrics={"loss": 1.0})
    engine.log_epoch(1, val_metrics={"loss": 1.39})  # 39% < 2 * 20%: warning
    engine.log_epoch(2, val_metrics={"loss": 1.0})
    engine.log_epoch(3, val_metrics={"loss": 1.41})  # 41% > 40%: critical
    assert [a.severity for a in engine.get_alerts()] == ["warning", "critical"]
    assert engine.has_alerts("critical") and len(engine.get_alerts(severity="warning")) == 1


def test_epochs_without_the_metric_do_not_break_a_streak() -> None:
    engine = MetricsEngine(alert_config=quiet(patience_epochs=2))
    engine.log_epoch(0, val_metrics={"loss": 1.0})
    engine.log_epoch(1, val_metrics={"loss": 2.0})
    engine.log_epoch(2, train_metrics={"loss": 0.1})  # no evaluation this epoch
    assert not engine.has_alerts()
    engine.log_epoch(3, val_metrics={"loss": 2.0})
    assert kinds(engine) == [("val_loss_spike", "critical", 3)]


# ----------------------------------------------------------------------------- accuracy drop
def test_accuracy_drop_is_absolute_from_the_best_with_patience() -> None:
    engine = MetricsEngine(alert_config=quiet(accuracy_drop_threshold=0.05, patience_epochs=2))
    sequence = [0.80, 0.90, 0.86, 0.84, 0.84, 0.89, 0.70, 0.70]
    fired = []
    for epoch, acc in enumerate(sequence):
        engine.log_epoch(epoch, val_metrics={"accuracy": acc})
        fired += [(a.epoch, a.severity) for a in engine.last_alerts]
    # 0.86 is 0.04 below 0.90 (no); 0.84 twice (0.06 drop) fires at 4; 0.89 clears;
    # 0.70 twice (0.20 > 2 * 0.05) fires critical at 7.
    assert fired == [(4, "warning"), (7, "critical")]
    alert = engine.get_alerts()[0]
    assert alert.metric == "val/accuracy" and alert.details["best"] == 0.90
    assert alert.details["drop"] == pytest.approx(0.06)


# ----------------------------------------------------------------------------- gradient norm
def test_gradient_norm_rule_with_patience() -> None:
    engine = MetricsEngine(alert_config=quiet(gradient_norm_threshold=10.0, patience_epochs=2))
    fired = []
    for epoch, norm in enumerate([5.0, 11.0, 10.0, 12.0, 25.0, 30.0]):
        engine.log_epoch(epoch, gradient_norm=norm)
        fired += [(a.epoch, a.severity, a.value) for a in engine.last_alerts]
    # 10.0 is not above 10: the streak restarts at epoch 3 and reaches 2 at epoch 4 (25 > 20).
    assert fired == [(4, "critical", 25.0)]


# ----------------------------------------------------------------------------- nonfinite
def test_nonfinite_metrics_alert_at_once_and_do_not_become_the_best() -> None:
    engine = MetricsEngine(alert_config=quiet(patience_epochs=3))
    engine.log_epoch(0, val_metrics={"loss": 1.0})
    engine.log_epoch(1, train_metrics={"loss": float("nan")}, val_metrics={"loss": float("inf")})
    (alert,) = engine.get_alerts()
    assert (alert.kind, alert.severity, alert.epoch) == ("nonfinite", "critical", 1)
    assert "train/loss=nan" in alert.message and "val/loss=inf" in alert.message
    assert alert.details["metrics"] == ["train/loss", "val/loss"]
    engine.log_epoch(2, train_metrics={"loss": float("nan")})  # same streak: no repeat
    assert len(engine.get_alerts()) == 1
    engine.log_epoch(3, train_metrics={"loss": 0.5})
    engine.log_epoch(4, train_metrics={"loss": float("nan")})  # a new streak
    assert [a.epoch for a in engine.get_alerts(kind="nonfinite")] == [1, 4]
    assert engine._best_loss == 1.0


def test_nonfinite_can_be_a_warning() -> None:
    engine = MetricsEngine(alert_config=quiet(nonfinite_is_critical=False))
    engine.log_epoch(0, gradient_norm=float("inf"))
    assert kinds(engine) == [("nonfinite", "warning", 0)]  # not also a gradient_norm alert


def test_log_step_checks_for_nonfinite_values() -> None:
    engine = MetricsEngine(alert_config=quiet())
    engine.log_step(10, {"train/loss": 0.5})
    engine.log_step(20, {"train/loss": float("nan"), "lr": 0.1})
    (alert,) = engine.get_alerts()
    assert (alert.kind, alert.step, alert.epoch, alert.metric) == ("nonfinite", 20, None, "train/loss")


# ----------------------------------------------------------------------------- alerts API
def test_get_clear_and_validate_alerts() -> None:
    engine = MetricsEngine(alert_config=quiet(patience_epochs=1))
    engine.log_epoch(0, val_metrics={"loss": 1.0})
    engine.log_epoch(1, val_metrics={"loss": 1.3}, train_metrics={"loss": float("nan")})
    assert engine.has_alerts() and engine.has_alerts("warning") and engine.has_alerts("critical")
    assert [a.kind for a in engine.get_alerts(kind="val_loss_spike")] == ["val_loss_spike"]
    with pytest.raises(ConfigError, match="severity must be"):
        engine.get_alerts("error")
    engine.clear_alerts()
    assert not engine.has_alerts() and engine.get_alerts() == []


def test_actions_run_for_each_alert_and_a_failing_action_is_contained(caplog) -> None:
    seen = []

    def broken(alert):
        raise RuntimeError("smtp down")

    engine = MetricsEngine(alert_config=AlertConfig(patience_epochs=1, actions=[broken, CallbackAlert(seen.append)]))
    engine.log_epoch(0, val_metrics={"loss": 1.0})
    with caplog.at_level(logging.ERROR, logger="trainengine.alerts"):
        engine.log_epoch(1, val_metrics={"loss": 2.0})
    assert [a.kind for a in seen] == ["val_loss_spike"]
    assert any("alert action" in r.getMessage() for r in caplog.records)


def test_default_action_logs_the_alert(caplog) -> None:
    engine = MetricsEngine(alert_config=AlertConfig(patience_epochs=1))
    engine.log_epoch(0, val_metrics={"loss": 1.0})
    with caplog.at_level(logging.WARNING, logger="trainengine.alerts"):
        engine.log_epoch(1, val_metrics={"loss": 1.3})
    assert any("[warning alert] val/loss spiked at epoch 1" in r.getMessage() for r in caplog.records)


def test_stop_training_action_reaches_the_trainer() -> None:
    class FakeTrainer:
        reason = None

        def request_stop(self, reason):
            self.reason = reason

    trainer = FakeTrainer()
    stop = StopTrainingAlert()
    engine = MetricsEngine(alert_config=quiet(actions=[stop]))
    engine.bind_trainer(trainer)
    engine.log_epoch(0, train_metrics={"loss": 1.0})
    assert not engine.should_stop
    engine.log_epoch(1, train_metrics={"loss": float("nan")})
    assert engine.should_stop and stop.should_stop and "non-finite" in trainer.reason


# ----------------------------------------------------------------------------- gradient health
def _model_with_grads(*grads: torch.Tensor) -> nn.Module:
    model = nn.Module()
    for i, g in enumerate(grads):
        p = nn.Parameter(torch.zeros(g.shape))
        p.grad = g.clone()
        model.register_parameter(f"p{i}", p)
    return model


def test_check_gradient_health_turns_monitor_findings_into_alerts() -> None:
    rec = Recorder()
    engine = MetricsEngine(backends=[rec], alert_config=quiet(gradient_norm_threshold=100.0))
    monitor = GradientMonitor(norm_threshold_warning=1.0, norm_threshold_critical=10.0)
    healthy = monitor.check_step(_model_with_grads(torch.tensor([0.3, 0.4])), step=0)
    assert engine.check_gradient_health(healthy) == []
    exploding = monitor.check_step(_model_with_grads(torch.tensor([30.0, 40.0])), step=10)  # norm 50
    (alert,) = engine.check_gradient_health(exploding)
    assert (alert.kind, alert.severity, alert.step, alert.value) == ("gradient_norm", "critical", 10, 50.0)
    assert (
        engine.check_gradient_health(monitor.check_step(_model_with_grads(torch.tensor([30.0, 40.0])), step=20)) == []
    )
    bad = monitor.check_step(_model_with_grads(torch.tensor([float("nan"), 1.0])), step=30)
    (alert,) = engine.check_gradient_health(bad, epoch=2)
    assert (alert.kind, alert.severity, alert.step, alert.epoch) == ("nonfinite", "critical", 30, 2)
    # Metrics were logged at each check's step.
    assert [s for _, s in rec.calls] == [0, 10, 20, 30]
    assert rec.calls[1][0]["grad/total_norm"] == pytest.approx(50.0)
    with pytest.raises(DataError, match="needs a GradientHealth"):
        engine.check_gradient_health({"total_norm": 1.0})


def test_engine_threshold_applies_to_health_below_the_monitor_critical() -> None:
    engine = MetricsEngine(alert_config=quiet(gradient_norm_threshold=2.0))
    monitor = GradientMonitor(norm_threshold_warning=1.0, norm_threshold_critical=100.0)
    health = monitor.check_step(_model_with_grads(torch.tensor([3.0, 4.0])), step=0)  # norm 5
    (alert,) = engine.check_gradient_health(health, log=False)
    assert alert.severity == "critical" and alert.threshold == 2.0  # 5 > 2 * 2.0
    assert engine.step_history == []


# ----------------------------------------------------------------------------- Trainer callback
def _digits_trainer(make_callbacks, **training):
    from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
    from trainengine.data import load_builtin
    from trainengine.models import MLP

    splits = load_builtin("digits", max_train_samples=256, max_val_samples=128)
    training = {
        "epochs": 2,
        "batch_size": 32,
        "learning_rate": 1e-2,
        "log_interval_steps": 4,
        "device": "cpu",
        **training,
    }
    cfg = (
        TrainingConfigBuilder()
        .with_training(**training)
        .with_scheduler(name="constant")
        .with_tracking(write_run_dir=False, progress="off")
        .build()
    )
    monitor = GradientMonitor(check_interval=1)
    trainer = Trainer(
        MLP(64, 10),
        None,
        cfg,
        TaskSpec.classification("digits", 10),
        gradient_monitor=monitor,
        callbacks=make_callbacks(),
    )
    return trainer, splits


def test_callback_logs_one_record_per_trainer_epoch() -> None:
    rec = Recorder()
    engine = MetricsEngine(backends=[rec], alert_config=quiet(gradient_norm_threshold=1e6))
    trainer, splits = _digits_trainer(lambda: [MetricsEngineCallback(engine)])
    trainer.train(splits.train, splits.val)
    assert [r["epoch"] for r in engine.history] == [0, 1]
    for record in engine.history:
        assert {"train/loss", "val/loss", "val/accuracy", "val/perplexity", "lr", "grad_norm", "epoch_duration"} <= set(
            record
        )
        assert record["val/perplexity"] == pytest.approx(math.exp(record["val/loss"]))
    assert engine.history[1]["val/loss"] == trainer.history["val"][-1]["val/loss"]
    assert [s for _, s in rec.calls] == [8, 16]  # 256 samples / 32 per step = 8 steps per epoch


def test_critical_alert_stops_the_trainer() -> None:
    engine = MetricsEngine(alert_config=quiet(gradient_norm_threshold=0.0, actions=[StopTrainingAlert()]))
    trainer, splits = _digits_trainer(lambda: [MetricsEngineCallback(engine)], epochs=3)
    results = trainer.train(splits.train, splits.val)
    assert engine.should_stop
    assert results["steps"] < 24 and "stopped by critical alert (gradient_norm)" in results["stop_reason"]
