"""Shared helpers for Trainer tests: tiny configs and data that finish in well under a second."""

from __future__ import annotations

import pytest
import torch

from trainengine import TrainingConfigBuilder


@pytest.fixture
def make_config(tmp_path):
    """Factory: ``make_config(**training) -> TrainingConfigBuilder`` (small, fast, runs under tmp_path)."""
    return lambda **training: _make_config(tmp_path, **training)


def _make_config(tmp_path, **training):
    training.setdefault("epochs", 1)
    training.setdefault("batch_size", 16)
    training.setdefault("learning_rate", 1e-2)
    training.setdefault("log_interval_steps", 5)
    training.setdefault("device", "cpu")  # exact CPU math everywhere; GPU tests ask for auto
    return (
        TrainingConfigBuilder()
        .with_training(**training)
        .with_scheduler(name="constant")
        .with_tracking(output_dir=str(tmp_path / "runs"), progress="off")
    )


@pytest.fixture
def blobs():
    """A separable 3-class problem: (train X, train y), (val X, val y)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    y = torch.randint(0, 3, (192,), generator=g)
    x = centers[y] + 0.3 * torch.randn(192, 4, generator=g)
    return (x[:160], y[:160]), (x[160:], y[160:])
