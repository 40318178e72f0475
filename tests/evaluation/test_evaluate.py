"""evaluate(): predictions, intervals, segments, threshold, worst examples and the files written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, roc_curve
from torch import nn
from torch.utils.data import TensorDataset

from trainengine import TaskSpec
from trainengine.errors import TrainEngineError
from trainengine.evaluation import EVAL_SCHEMA_VERSION, evaluate, predict, tune_threshold


class _Fixed(nn.Module):
    """Returns the logits stored in its input's last columns: outputs we choose exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _binary(n: int = 300, seed: int = 0) -> tuple[TensorDataset, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    score = y.float() * 1.2 + torch.randn(n, generator=g)  # (n,) positive-class evidence
    logits = torch.stack([torch.zeros(n), score], dim=1)  # (n, 2)
    return TensorDataset(logits, y), y


def test_classification_report_matches_sklearn_and_writes_its_files(tmp_path) -> None:
    data, y = _binary()
    segments = np.where(np.arange(300) < 100, "a", "b")
    report = evaluate(
        _Fixed(), data, TaskSpec.classification("toy", 2), segment_key=segments, n_bootstrap=300, output_dir=tmp_path
    )
    probs = torch.softmax(data.tensors[0], dim=1).numpy()
    assert report.n == 300
    assert report.overall["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(1)))
    for name, (lo, hi) in report.ci.items():
        assert lo <= report.overall[name] <= hi, name
    # Per segment: the metrics of that slice alone.
    assert report.per_segment["a"]["n"] == 100
    assert report.per_segment["a"]["metrics"]["accuracy"] == pytest.approx(
        accuracy_score(y[:100], probs[:100].argmax(1))
    )
    # worst.jsonl: the highest-loss examples, worst first.
    loss = -np.log(probs[np.arange(300), y.numpy()])
    assert [r["index"] for r in report.worst[:3]] == list(np.argsort(-loss)[:3])
    assert report.worst[0]["loss"] == pytest.approx(loss.max())
    saved = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert saved["schema_version"] == EVAL_SCHEMA_VERSION
    assert {"overall", "per_segment", "ci", "n", "checkpoint", "data_fingerprint", "created_at"} <= set(saved)
    assert saved["ci"]["accuracy"] == report.ci["accuracy"] and saved["data_fingerprint"]
    assert saved["confusion_matrix"] == report.confusion_matrix and sum(map(sum, saved["confusion_matrix"])) == 300
    lines = (tmp_path / "worst.jsonl").read_text().splitlines()
    assert len(lines) == 20 and json.loads(lines[0])["segment"] in ("a", "b")
    assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_threshold_tuned_on_validation_and_applied_to_the_evaluated_data() -> None:
    val, y_val = _binary(seed=1)
    test, y_test = _binary(seed=2)
    report = evaluate(_Fixed(), test, TaskSpec.classification("toy", 2), threshold_data=val, n_bootstrap=50)
    th = report.threshold
    assert th["tuned_on"] == "threshold_data"
    p_val = torch.softmax(val.tensors[0], 1).numpy()[:, 1]
    fpr, tpr, cut = roc_curve(y_val, p_val)
    assert th["youden_j"]["threshold"] == pytest.approx(cut[np.argmax(tpr - fpr)])
    # The best-F1 threshold really is the best on the validation data ...
    best = max(f1_score(y_val, p_val >= t) for t in np.unique(p_val))
    assert th["best_f1"]["f1_tuned"] == pytest.approx(best)
    # ... and the reported F1 is that threshold applied to the evaluated data.
    p_test = torch.softmax(test.tensors[0], 1).numpy()[:, 1]
    assert th["best_f1"]["f1"] == pytest.approx(f1_score(y_test, p_test >= th["best_f1"]["threshold"]))
    assert tune_threshold(np.array([0.2, 0.9]), np.array([0, 1]))["best_f1"]["threshold"] == 0.9


def test_regression_is_reported_in_the_data_units() -> None:
    x = torch.linspace(-1, 1, 50).unsqueeze(1)  # standardised predictions == standardised targets + 0.1
    data = TensorDataset(x + 0.1, x.squeeze(1))
    p = predict(_Fixed(), data, TaskSpec.regression("r"), target_mean=100.0, target_std=10.0)
    assert p.targets == pytest.approx(x.squeeze(1).numpy() * 10 + 100)
    assert mean_squared_error(p.targets, p.outputs) == pytest.approx(1.0)  # (0.1 * 10) ** 2
    report = evaluate(_Fixed(), data, TaskSpec.regression("r"), n_bootstrap=50)
    assert report.overall["mse"] == pytest.approx(0.01) and report.threshold is None
    assert "ece" not in report.overall  # targets outside [0, 1]


def test_language_model_per_example_token_loss() -> None:
    vocab = 256

    class Uniform(nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.zeros(*ids.shape, vocab)  # (B, T, V): every token has probability 1/V

    ids = torch.randint(0, vocab, (6, 8))
    labels = ids.clone()
    labels[0, 4:] = -100  # padding is not scored
    report = evaluate(Uniform(), TensorDataset(ids, labels), TaskSpec.language_modeling("lm"), n_bootstrap=50)
    assert report.overall["loss"] == pytest.approx(np.log(vocab), rel=1e-6)
    assert report.overall["perplexity"] == pytest.approx(vocab, rel=1e-5)
    assert report.overall["bits_per_byte"] == pytest.approx(8.0, rel=1e-6)
    assert report.worst[0]["tokens"] in (4, 8)


def test_errors_say_what_to_pass(tmp_path) -> None:
    data, _ = _binary(20)
    with pytest.raises(TrainEngineError, match="needs task_spec="):
        evaluate(_Fixed(), data)
    with pytest.raises(TrainEngineError, match="no evaluation data"):
        evaluate(_Fixed(), None, TaskSpec.classification("toy", 2))
    with pytest.raises(TrainEngineError, match="segment_key has 3 ids but the data has 20 examples"):
        evaluate(_Fixed(), data, TaskSpec.classification("toy", 2), segment_key=[1, 2, 3], n_bootstrap=10)
    with pytest.raises(TrainEngineError, match="names a column, which needs file data"):
        evaluate(_Fixed(), data, TaskSpec.classification("toy", 2), segment_key="source", n_bootstrap=10)
    with pytest.raises(TrainEngineError, match="does not exist"):
        evaluate(tmp_path / "nope")
