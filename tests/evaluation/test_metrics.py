"""Every metric equals scikit-learn / torchmetrics on the same data, point estimate and per resample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from trainengine.evaluation import compute_metrics, confusion_matrix, get_weighted_metric, higher_is_better, metrics_for


def _data(classes: int, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return np.round(probs, 3) / np.round(probs, 3).sum(axis=1, keepdims=True), labels  # rounding: score ties


def _reference(classes: int, probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The libraries called directly, independently of compute_metrics."""
    pred = probs.argmax(axis=1)
    ref = {"accuracy": skm.accuracy_score(labels, pred)}
    for avg in ("macro", "weighted"):
        ref[f"precision_{avg}"] = skm.precision_score(labels, pred, average=avg, zero_division=0)
        ref[f"recall_{avg}"] = skm.recall_score(labels, pred, average=avg, zero_division=0)
        ref[f"f1_{avg}"] = skm.f1_score(labels, pred, average=avg, zero_division=0)
    p_t, y_t = torch.tensor(probs), torch.tensor(labels)
    if classes == 2:
        ref["roc_auc"] = skm.roc_auc_score(labels, probs[:, 1])
        ref["brier"] = skm.brier_score_loss(labels, probs[:, 1])
        ref["ece"] = float(binary_calibration_error(p_t[:, 1].contiguous(), y_t, n_bins=15))
    else:
        ref["roc_auc"] = skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
        ref["brier"] = skm.brier_score_loss(labels, probs, labels=list(range(classes)))
        ref["ece"] = float(multiclass_calibration_error(p_t, y_t, num_classes=classes, n_bins=15))
    ref["log_loss"] = skm.log_loss(labels, probs, labels=list(range(classes)))
    return ref


@pytest.mark.parametrize("classes", [2, 5])
def test_classification_metrics_equal_the_libraries(classes: int) -> None:
    probs, labels = _data(classes)
    ref = _reference(classes, probs, labels)
    got = compute_metrics("classification", probs, labels)
    assert set(got) == set(ref)
    ones = np.ones((1, len(labels)))
    for name, value in ref.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name
        # The bootstrap form with every example drawn once is the same number.
        assert get_weighted_metric(name)(ones, probs, labels)[0] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("classes", [2, 5])
def test_weighted_forms_equal_the_libraries_on_resampled_data(classes: int) -> None:
    probs, labels = _data(classes, n=150, seed=1)
    rng = np.random.default_rng(2)
    for _ in range(3):
        idx = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[idx])) < classes:
            continue
        weights = np.bincount(idx, minlength=len(labels))[None].astype(float)
        ref = _reference(classes, probs[idx], labels[idx])
        for name, value in ref.items():
            assert get_weighted_metric(name)(weights, probs, labels)[0] == pytest.approx(value, abs=1e-6), name


def test_regression_metrics_equal_sklearn_and_ece_needs_probability_targets() -> None:
    rng = np.random.default_rng(3)
    targets = rng.normal(size=300)
    preds = targets + rng.normal(scale=0.4, size=300)
    got = compute_metrics("regression", preds, targets)
    assert got == pytest.approx(
        {
            "mse": skm.mean_squared_error(targets, preds),
            "rmse": skm.root_mean_squared_error(targets, preds),
            "mae": skm.mean_absolute_error(targets, preds),
            "r2": skm.r2_score(targets, preds),
        }
    )
    # Step scores in [0, 1] (seed 001): ECE joins, equal to torchmetrics' binning of the soft targets.
    scores = rng.random(300)
    pred_scores = np.clip(scores + rng.normal(scale=0.1, size=300), 0, 1)
    assert "ece" in metrics_for("regression", pred_scores, scores)
    got = compute_metrics("regression", pred_scores, scores)
    conf = torch.tensor(pred_scores)
    bins = torch.bucketize(conf, torch.linspace(0, 1, 16, dtype=conf.dtype), right=True) - 1
    expected = sum(
        abs(scores[(bins == b).numpy()].sum() - pred_scores[(bins == b).numpy()].sum()) for b in range(16)
    ) / len(scores)
    assert got["ece"] == pytest.approx(expected)
    idx = rng.integers(0, 300, 300)
    w = np.bincount(idx, minlength=300)[None].astype(float)
    for name in ("mse", "rmse", "mae", "r2", "ece"):
        resampled = compute_metrics("regression", pred_scores[idx], scores[idx])[name]
        assert get_weighted_metric(name)(w, pred_scores, scores)[0] == pytest.approx(resampled), name


def test_language_modeling_metrics() -> None:
    loss_sums, tokens = np.array([20.0, 10.0, 30.0]), np.array([10.0, 10.0, 20.0])
    got = compute_metrics("language_modeling", loss_sums, tokens, tokens)
    token_loss = 60.0 / 40.0
    assert got["loss"] == pytest.approx(token_loss)
    assert got["perplexity"] == pytest.approx(np.exp(token_loss))
    assert got["bits_per_token"] == pytest.approx(token_loss / np.log(2))
    assert got["bits_per_byte"] == pytest.approx(token_loss / np.log(2))  # one byte per token
    assert "bits_per_byte" not in compute_metrics("language_modeling", loss_sums, tokens)


def test_confusion_matrix_and_directions() -> None:
    probs, labels = _data(3)
    assert confusion_matrix(probs, labels) == skm.confusion_matrix(labels, probs.argmax(1)).tolist()
    assert higher_is_better("f1_macro") and higher_is_better("r2")
    assert not higher_is_better("log_loss") and not higher_is_better("perplexity")
