"""lr_find: the exponential learning-rate range test, its suggestion, its files, and what it leaves alone."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import yaml

from trainengine import TaskSpec, TrainingConfigBuilder
from trainengine.config import TrainingConfig, deep_merge
from trainengine.data import load_builtin
from trainengine.errors import ConfigError
from trainengine.models import MLP
from trainengine.tune import lr_find, smooth_losses, suggest_lr


def _config(**training):
    return (
        TrainingConfigBuilder.quick_prototype()
        .with_data(dataset="digits", max_train_samples=256, max_val_samples=32)
        .with_training(batch_size=32, **training)
        .with_tracking(write_run_dir=False, progress="off")
        .build()
    )


def test_range_test_grows_lr_stops_on_divergence_and_writes_an_override(tmp_path):
    # AdamW on an MLP diverges long before lr 10: the test must stop there, not run all 60 steps.
    result = lr_find(_config(), min_lr=1e-4, max_lr=10.0, num_steps=60, output_dir=tmp_path)

    assert result.diverged and 5 < result.num_steps < 60
    ratios = np.asarray(result.lrs[1:]) / np.asarray(result.lrs[:-1])
    assert result.lrs[0] == pytest.approx(1e-4)
    assert np.allclose(ratios, (10.0 / 1e-4) ** (1 / 59))  # exponential: the same factor every step
    # It stopped at the first point above 4x the best smoothed loss, and not before.
    smoothed = result.smoothed_losses
    assert not (smoothed[-1] <= 4 * min(smoothed[:-1]))
    assert all(s <= 4 * min(smoothed[: i + 1]) for i, s in enumerate(smoothed[:-1]))
    # The loss went down first (learning happens at moderate lrs): the suggestion lies on the descent.
    assert min(smoothed) < 0.8 * smoothed[0]
    assert result.method == "steepest"
    assert 1e-4 <= result.suggested_lr <= result.min_loss_lr

    png = tmp_path / "lr_find.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "lr_find.yaml").read_text()
    assert f"--set training.learning_rate={result.suggested_lr:g}" in text
    override = yaml.safe_load(text)
    assert override == {"training": {"learning_rate": result.suggested_lr}}
    # The override is a valid config layer.
    merged = TrainingConfig.from_dict(deep_merge(_config().to_dict(), override))
    assert merged.training.learning_rate == result.suggested_lr


def test_the_given_model_and_the_rng_states_are_left_alone():
    splits = load_builtin("digits", max_train_samples=128)
    model = MLP(64, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    user_opt = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)

    result = lr_find(
        _config(),
        model=model,
        task_spec=TaskSpec.classification("digits", 10),
        train_data=splits.train,
        min_lr=1e-3,
        max_lr=1.0,
        num_steps=12,
    )

    assert result.num_steps >= 2  # it really trained (a copy)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert user_opt.param_groups[0]["lr"] == 0.05 and not user_opt.state
    after = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]


def test_suggestion_is_the_steepest_descent_per_decade():
    # A known curve: loss falls like a sigmoid centred at lr 1e-3 (steepest there), then blows up.
    lrs = list(np.logspace(-6, 0, 61))
    x = np.log10(lrs)
    losses = list(2.0 - np.tanh(2 * (x + 3)) + np.where(x > -1, 50 * (x + 1) ** 2, 0.0))
    lr, method, steepest, min_loss_lr = suggest_lr(lrs, losses)
    assert method == "steepest" and lr == steepest
    assert lr == pytest.approx(1e-3, rel=0.01)
    assert 1e-2 < min_loss_lr <= 1e-1  # the minimum lies right of the steepest point


def test_suggestion_falls_back_to_min_loss_over_10_and_refuses_an_all_nan_curve():
    lrs = [1e-3, 1e-2, 1e-1, 1.0]
    assert suggest_lr(lrs, [1.0, 0.5, 9.0, 20.0]) == (pytest.approx(1e-3), "min_loss/10", None, 1e-2)
    with pytest.raises(ConfigError, match="no finite loss"):
        suggest_lr(lrs, [math.nan] * 4)


def test_smoothing_is_bias_corrected():
    # The first smoothed value is the first loss (no pull towards zero), and a constant stays constant.
    assert smooth_losses([3.0, 3.0, 3.0, 3.0], 0.98) == pytest.approx([3.0] * 4)
    assert smooth_losses([1.0, 2.0], 0.0) == [1.0, 2.0]


def test_bad_ranges_are_listed_together():
    with pytest.raises(ConfigError) as info:
        lr_find(_config(), min_lr=0.0, max_lr=-1.0, num_steps=1, smoothing=1.5, diverge_factor=1.0)
    text = str(info.value)
    for needle in ("min_lr", "max_lr", "num_steps", "smoothing", "diverge_factor"):
        assert needle in text
    with pytest.raises(ConfigError, match="task_spec"):
        lr_find(_config(), model=MLP(64, 10))
