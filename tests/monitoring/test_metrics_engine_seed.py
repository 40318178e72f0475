"""Seed 000's "Metrics & Monitoring Best Practices" examples, run with only their imports changed.

Changes beyond imports, each forced by the seed's text not being a full program:

* ``engine.log_epoch(..., reference_profile=..., current_profile=...)``: the ``...`` stands for
  the arguments of the previous example; it is written out as ``epoch=6``.
* ``engine.log_epoch(...)`` in the alerts example stands for a run's epochs; it is written out
  as the run the seed's anti-pattern describes (loss spikes to 10.0 at epoch 50, gradient
  explosion).
* ``use_wandb=True`` needs the ``wandb`` package (the ``track`` extra). A stand-in module
  records what would be sent; without it the constructor raises ``MissingExtraError``, which
  ``test_metrics_engine.py`` checks.

The anti-patterns use ``MetricsTracker``, the seed's older name with no counterpart here.
"""

from __future__ import annotations

import logging
import sys
import types

import pytest

from trainengine.data import load_builtin
from trainengine.monitoring import (
    AlertConfig,
    MetricsEngine,
    profile_dataset,  # was: from utils.training.drift_metrics import profile_dataset
)
from trainengine.tasks import TaskSpec


@pytest.fixture
def wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.run = None
    module.logged = []

    def init(**kwargs):
        module.run = object()
        return module.run

    def log(metrics, step=None):
        module.logged.append(dict(metrics))

    module.init, module.log, module.finish = init, log, lambda: None
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


@pytest.fixture
def digits():
    splits = load_builtin("digits")
    return splits.train, splits.val, TaskSpec.for_dataset("digits")


def test_log_all_relevant_metrics_and_detect_drift(wandb, digits):
    train_dataset, val_dataset, task_spec = digits

    # 1. Log All Relevant Metrics
    engine = MetricsEngine(use_wandb=True)

    engine.log_epoch(
        epoch=5,
        train_metrics={"loss": 0.42, "accuracy": 0.85, "perplexity": 1.53},
        val_metrics={"loss": 0.38, "accuracy": 0.87, "perplexity": 1.46},
        learning_rate=1e-4,
        gradient_norm=0.5,
        epoch_duration=120.5,
    )
    # W&B logs: loss, accuracy, perplexity, LR, gradients, timing
    (logged,) = wandb.logged
    for key in (
        "train/loss",
        "train/accuracy",
        "train/perplexity",
        "val/loss",
        "val/accuracy",
        "val/perplexity",
        "lr",
        "grad_norm",
        "epoch_duration",
    ):
        assert key in logged
    assert logged["val/perplexity"] == 1.46  # reported perplexity is kept, not re-derived

    # 2. Use Drift Detection for Data Quality
    # Profile training data
    ref_profile = profile_dataset(train_dataset, task_spec)

    # During validation
    current_profile = profile_dataset(val_dataset, task_spec)

    engine.log_epoch(epoch=6, reference_profile=ref_profile, current_profile=current_profile)

    # Engine detects drift, alerts if JS divergence > threshold
    # Trigger retraining if drift critical
    assert "drift/js_divergence" in wandb.logged[-1]
    assert engine.history[-1]["drift/js_divergence"] < 0.2  # train and val of one split: no drift
    assert not engine.has_alerts()


def test_set_up_alerts_for_anomalies(wandb, caplog):
    # 3. Set Up Alerts for Anomalies
    engine = MetricsEngine(
        use_wandb=True,
        alert_config=AlertConfig(
            val_loss_spike_threshold=0.2,  # 20% increase = alert
            accuracy_drop_threshold=0.05,  # 5% drop = alert
            gradient_norm_threshold=10.0,
            patience_epochs=2,
        ),
    )

    for epoch in range(52):  # the seed's `engine.log_epoch(...)`: loss spikes to 10.0 at epoch 50
        exploded = epoch >= 50
        engine.log_epoch(
            epoch=epoch,
            train_metrics={"loss": 10.0 if exploded else 2.0 / (1 + epoch)},
            val_metrics={"loss": 10.0 if exploded else 2.1 / (1 + epoch), "accuracy": 0.1 if exploded else 0.9},
            gradient_norm=80.0 if exploded else 0.5,
        )

    with caplog.at_level(logging.ERROR):
        if engine.has_alerts():
            for alert in engine.get_alerts():
                logging.error(f"Alert: {alert['message']}")
                # Email, Slack, or auto-stop training

    raised = {(a.kind, a.epoch, a.severity) for a in engine.get_alerts()}
    assert raised == {
        ("val_loss_spike", 51, "critical"),
        ("accuracy_drop", 51, "critical"),
        ("gradient_norm", 51, "critical"),
    }
    assert sum(r.getMessage().startswith("Alert: ") for r in caplog.records) == 3
