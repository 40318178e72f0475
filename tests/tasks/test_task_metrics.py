"""TaskMetrics accumulated over several update() calls, checked against scikit-learn / torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, r2_score

from trainengine.errors import TaskError
from trainengine.tasks import TaskMetrics, TaskSpec


@pytest.fixture()
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def _feed(metrics: TaskMetrics, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    strategy = metrics.loss_strategy
    for logits, labels in batches:
        metrics.update(logits, labels, strategy.loss_sum(logits, labels), strategy.num_targets(labels))


@pytest.mark.parametrize("factory", [TaskSpec.classification, TaskSpec.vision_tiny])
def test_classification_metrics_match_sklearn(gen: torch.Generator, factory) -> None:
    spec = factory(num_classes=5)
    batches = [(torch.randn(n, 5, generator=gen), torch.randint(0, 5, (n,), generator=gen)) for n in (7, 13, 1, 20)]
    metrics = spec.create_metrics("cpu")
    _feed(metrics, batches)
    out = metrics.compute()
    assert list(out) == ["loss", "accuracy"]

    logits = torch.cat([lg for lg, _ in batches])
    labels = torch.cat([lb for _, lb in batches])
    assert out["accuracy"] == pytest.approx(accuracy_score(labels.numpy(), logits.argmax(-1).numpy()))
    assert out["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)


def test_update_computes_loss_when_not_given(gen: torch.Generator) -> None:
    logits, labels = torch.randn(9, 3, generator=gen), torch.randint(0, 3, (9,), generator=gen)
    metrics = TaskSpec.classification(num_classes=3, label_smoothing=0.1).create_metrics()
    metrics.update(logits, labels)
    ref = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert metrics.compute()["loss"] == pytest.approx(float(ref), rel=1e-6)


def test_classification_accuracy_skips_ignore_index() -> None:
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, -100, 1, 1])  # 2 of the 3 counted labels are right
    metrics = TaskSpec.classification(num_classes=2).create_metrics()
    metrics.update(logits, labels)
    assert metrics.compute()["accuracy"] == pytest.approx(2 / 3)


def test_language_modeling_metrics(gen: torch.Generator) -> None:
    spec = TaskSpec.language_modeling()
    batches = []
    for b, t, pad in ((2, 6, 3), (3, 4, 1), (1, 8, 0)):
        logits = torch.randn(b, t, 17, generator=gen)
        labels = torch.randint(0, 17, (b, t), generator=gen)
        if pad:
            labels[0, -pad:] = -100
        batches.append((logits, labels))
    metrics = spec.create_metrics()
    _feed(metrics, batches)
    out = metrics.compute()
    assert list(out) == ["loss", "perplexity"]

    flat_logits = torch.cat([lg.reshape(-1, 17) for lg, _ in batches])
    flat_labels = torch.cat([lb.reshape(-1) for _, lb in batches])
    ref = float(F.cross_entropy(flat_logits, flat_labels))
    assert out["loss"] == pytest.approx(ref, rel=1e-6)
    assert out["perplexity"] == pytest.approx(math.exp(ref), rel=1e-6)


def test_language_modeling_token_accuracy_is_optional(gen: torch.Generator) -> None:
    metrics = TaskMetrics("language_modeling", metrics=("loss", "perplexity", "accuracy"))
    logits = torch.randn(2, 5, 4, generator=gen)
    labels = logits.argmax(-1).clone()  # all right ...
    labels[0, 0] = (labels[0, 0] + 1) % 4  # ... but one
    labels[1, 3:] = -100  # two ignored
    metrics.update(logits, labels)
    assert metrics.compute()["accuracy"] == pytest.approx(7 / 8)


def test_perplexity_overflow_is_inf() -> None:
    metrics = TaskSpec.language_modeling().create_metrics()
    logits = torch.zeros(1, 2, 3)
    labels = torch.zeros(1, 2, dtype=torch.int64)
    metrics.update(logits, labels, loss_sum=torch.tensor(2000.0), num_targets=torch.tensor(2))
    out = metrics.compute()
    assert out["loss"] == pytest.approx(1000.0)
    assert out["perplexity"] == math.inf


@pytest.mark.parametrize("width", [None, 1, 3])
def test_regression_metrics_match_sklearn(gen: torch.Generator, width: int | None) -> None:
    spec = TaskSpec.regression()
    batches = []
    for n in (5, 11, 2, 30):
        label_shape = (n,) if width is None else (n, width)
        pred_shape = (n, 1) if width is None else (n, width)
        labels = torch.randn(label_shape, generator=gen) * 50 + 150  # diabetes-like scale
        preds = labels.reshape(pred_shape) + torch.randn(pred_shape, generator=gen) * 20
        batches.append((preds, labels))
    metrics = spec.create_metrics()
    _feed(metrics, batches)
    out = metrics.compute()
    assert list(out) == ["loss", "mse", "mae", "r2"]

    y_true = torch.cat([lb for _, lb in batches]).double().numpy()
    y_pred = torch.cat([p.reshape(lb.shape) for p, lb in batches]).double().numpy()
    assert out["mse"] == pytest.approx(mean_squared_error(y_true, y_pred), rel=1e-5)
    assert out["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred), rel=1e-5)
    assert out["r2"] == pytest.approx(r2_score(y_true, y_pred), rel=1e-5)
    # Loss is the mean squared error per target, so it equals mse.
    assert out["loss"] == pytest.approx(float(np.mean((y_true - y_pred) ** 2)), rel=1e-5)


def test_regression_width_change_within_a_pass_is_an_error() -> None:
    metrics = TaskSpec.regression().create_metrics()
    metrics.update(torch.zeros(3), torch.ones(3))
    with pytest.raises(TaskError, match="changed from 1 to 2 values per row"):
        metrics.update(torch.zeros(3, 2), torch.ones(3, 2))
    metrics.reset()
    metrics.update(torch.zeros(3, 2), torch.ones(3, 2))  # fine after reset


def test_reset_starts_a_new_pass(gen: torch.Generator) -> None:
    metrics = TaskSpec.classification(num_classes=3).create_metrics()
    metrics.update(torch.randn(10, 3, generator=gen), torch.randint(0, 3, (10,), generator=gen))
    metrics.reset()
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    labels = torch.tensor([0, 1])
    metrics.update(logits, labels)
    out = metrics.compute()
    assert out["accuracy"] == 1.0
    assert out["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)


def test_compute_before_update_is_nan_and_prefix_is_applied() -> None:
    metrics = TaskSpec.regression().create_metrics()
    out = metrics.compute(prefix="val/")
    assert list(out) == ["val/loss", "val/mse", "val/mae", "val/r2"]
    assert all(math.isnan(v) for v in out.values())


def test_r2_needs_two_rows() -> None:
    metrics = TaskSpec.regression().create_metrics()
    metrics.update(torch.tensor([1.0]), torch.tensor([2.0]))
    out = metrics.compute()
    assert out["mse"] == pytest.approx(1.0)
    assert math.isnan(out["r2"])


def test_update_validates_inputs() -> None:
    metrics = TaskSpec.classification(num_classes=3).create_metrics()
    with pytest.raises(TaskError, match=r"got labels float32 \[4\]"):
        metrics.update(torch.randn(4, 3), torch.zeros(4))


def test_unsupported_metric_name_lists_supported() -> None:
    with pytest.raises(TaskError, match="cannot report metric.*'r2'.*supported: loss, accuracy"):
        TaskMetrics("classification", metrics=("loss", "r2"))
    with pytest.raises(TaskError, match="available: classification, language_modeling"):
        TaskMetrics("ranking")


def test_bf16_logits_are_accepted(gen: torch.Generator) -> None:
    logits = torch.randn(8, 4, generator=gen)
    labels = torch.randint(0, 4, (8,), generator=gen)
    metrics = TaskSpec.classification(num_classes=4).create_metrics()
    metrics.update(logits.bfloat16(), labels)
    ref = F.cross_entropy(logits.bfloat16().float(), labels)
    assert metrics.compute()["loss"] == pytest.approx(float(ref), rel=1e-6)


def test_accuracy_of_nan_logits_is_nan_not_a_number_to_keep() -> None:
    # Issue 10 item 8: argmax of NaN logits is class 0, so 1 label in 4 "matched" (0.25).
    metrics = TaskMetrics("classification")
    metrics.update(torch.full((4, 3), float("nan")), torch.tensor([0, 1, 2, 1]))
    values = metrics.compute()
    assert math.isnan(values["loss"]) and math.isnan(values["accuracy"])
