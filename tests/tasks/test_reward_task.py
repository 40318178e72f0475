"""The reward task: per-step squared error with padding steps skipped, and its metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from trainengine.errors import TaskError
from trainengine.tasks import TaskSpec
from trainengine.tasks._losses import IGNORE_TARGET, StepRewardLoss


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(16, 6, generator=g)
    targets = (scores + 0.2 * torch.randn(16, 6, generator=g)).clamp(0, 1)
    lengths = torch.randint(1, 7, (16,), generator=g)
    targets[torch.arange(6) >= lengths[:, None]] = IGNORE_TARGET
    return scores, targets


def test_the_loss_is_the_mse_of_the_real_steps_and_ignores_padding():
    scores, targets = _batch()
    mask = targets != IGNORE_TARGET
    loss = StepRewardLoss()
    expected = float(((scores - targets)[mask] ** 2).mean())
    assert float(loss(scores, targets)) == pytest.approx(expected, rel=1e-6)
    assert float(loss.mean_loss(scores, targets)) == pytest.approx(expected, rel=1e-6)
    assert int(loss.num_targets(targets)) == int(mask.sum())
    # Whatever the model outputs at padding steps changes nothing.
    noisy = scores.clone()
    noisy[~mask] = 123.0
    assert float(loss(noisy, targets)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(TaskError, match=r"\[B, S\]"):
        loss(scores[:, :3], targets)


def test_metrics_match_scikit_learn_over_the_real_steps_across_batches():
    spec = TaskSpec.reward()
    metrics = spec.create_metrics("cpu")
    all_s, all_t = [], []
    for seed in range(3):
        s, t = _batch(seed)
        metrics.update(s, t)
        mask = t != IGNORE_TARGET
        all_s.append(s[mask].numpy())
        all_t.append(t[mask].numpy())
    out = metrics.compute("val/")
    s, t = np.concatenate(all_s), np.concatenate(all_t)
    assert out["val/mse"] == pytest.approx(mean_squared_error(t, s), rel=1e-5)
    assert out["val/loss"] == pytest.approx(out["val/mse"], rel=1e-6)
    assert out["val/mae"] == pytest.approx(mean_absolute_error(t, s), rel=1e-5)
    assert out["val/r2"] == pytest.approx(r2_score(t, s), rel=1e-5)
    bins = np.minimum((s * 15).astype(int), 14)
    ece = sum(abs(s[bins == b].mean() - t[bins == b].mean()) * (bins == b).sum() for b in set(bins)) / len(s)
    assert out["val/ece"] == pytest.approx(ece, rel=1e-5)
    metrics.reset()
    empty = metrics.compute()
    assert all(math.isnan(v) for v in empty.values())


def test_the_reward_spec_round_trips_and_monitors_loss():
    spec = TaskSpec.reward("prm")
    assert (spec.task_type, spec.monitor, spec.monitor_mode, spec.default_architecture) == (
        "reward",
        "val/loss",
        "min",
        "reward_model",
    )
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    assert TaskSpec.for_dataset("prm") == spec
    with pytest.raises(TaskError, match="no classes"):
        TaskSpec(name="x", task_type="reward", num_classes=3, modality="tokens", metrics=("loss",))
