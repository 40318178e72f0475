"""Issue 10 item 8: a run whose steps are all skipped as non-finite stops with the likely cause."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainengine import TaskSpec
from trainengine.engine import Trainer
from trainengine.errors import DataError, TrainEngineError
from trainengine.models import MLP

CLS3 = TaskSpec.classification("blobs", 3)


def _nan_inputs(blobs):
    (x, y), (vx, vy) = blobs
    x = x.clone()
    x[:, 0] = float("nan")  # every training sample holds a NaN: no step can succeed
    return (x, y), (vx.clone().fill_(float("nan")), vy)


def test_all_steps_skipped_stops_naming_the_nan_data(make_config, blobs):
    train, val = _nan_inputs(blobs)
    cfg = make_config(epochs=2).with_tracking(write_run_dir=False).build()
    with pytest.raises(DataError) as info:
        Trainer(MLP(4, 3), None, cfg, CLS3).train(train, val)
    message = str(info.value)
    assert "no optimizer step succeeded in epoch 0: all 10 were skipped" in message
    assert "160 NaN/Inf value(s)" in message and "sample 0" in message
    assert "training.max_nonfinite_fraction 1" in message


def test_a_partial_last_epoch_is_checked_too(make_config, blobs):
    train, val = _nan_inputs(blobs)
    cfg = make_config(max_steps=3).with_tracking(write_run_dir=False).build()
    with pytest.raises(DataError, match="all 3 were skipped"):
        Trainer(MLP(4, 3), None, cfg, CLS3).train(train, val)


class _Diverged(nn.Module):
    """Finite inputs, infinite outputs: the model (not the data) is the cause."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float("inf")


def test_finite_data_points_at_the_training_settings(make_config, blobs):
    cfg = make_config(epochs=1).with_tracking(write_run_dir=False).build()
    with pytest.raises(TrainEngineError) as info:
        Trainer(_Diverged(), None, cfg, CLS3).train(blobs[0], blobs[1])
    assert not isinstance(info.value, DataError)
    assert "holds no NaN/Inf (160 samples checked)" in str(info.value)
    assert "learning_rate" in str(info.value)


def test_a_fraction_below_one_stops_earlier(make_config, blobs):
    (x, y), val = blobs
    x = x.clone()
    x[:80] = float("nan")  # the first half, in order: 10 of the epoch's 20 steps are skipped
    base = make_config(epochs=1, batch_size=8).with_data(shuffle=False).with_tracking(write_run_dir=False)
    results = Trainer(MLP(4, 3), None, base.build(), CLS3).train((x, y), val)  # default 1.0: some steps succeeded
    assert results["nonfinite_steps"] == 10
    cfg = base.with_training(max_nonfinite_fraction=0.5).build()
    with pytest.raises(DataError, match=r"10 of the 20 optimizer steps of epoch 0 \(50%\) were skipped"):
        Trainer(MLP(4, 3), None, cfg, CLS3).train((x, y), val)


def test_opting_out_finishes_but_nan_metrics_are_never_the_best(make_config, blobs):
    train, val = _nan_inputs(blobs)
    cfg = make_config(epochs=2, max_nonfinite_fraction=None).with_tracking(write_run_dir=False).build()
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(train, val)
    assert results["nonfinite_steps"] == results["steps"] == 20
    # Accuracy of NaN logits used to be reported as the best (argmax of NaN picks class 0).
    assert math.isnan(results["final_metrics"]["val/accuracy"])
    assert results["best_metric"] is None and results["best_step"] is None
