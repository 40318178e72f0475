"""Training-time metrics: precision / recall / F1 / ROC-AUC against scikit-learn, a user
compute_metrics, and any of them as the monitored metric of a run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from trainengine import Trainer, TrainingConfigBuilder
from trainengine.errors import ConfigError, TaskError
from trainengine.models import MLP
from trainengine.tasks import METRIC_MODES, TaskMetrics, TaskSpec

_PRF = ("precision_macro", "precision_weighted", "recall_macro", "recall_weighted", "f1_macro", "f1_weighted")


def _batches(n: int, c: int, seed: int, *, separation: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g)
    logits[torch.arange(n), labels] += separation  # informative but imperfect scores
    return logits, labels


def _feed(metrics: TaskMetrics, logits: torch.Tensor, labels: torch.Tensor, batch: int = 64) -> dict[str, float]:
    for i in range(0, len(labels), batch):
        metrics.update(logits[i : i + batch], labels[i : i + batch])
    return metrics.compute()


@pytest.mark.parametrize("num_classes", [2, 5])
def test_precision_recall_f1_equal_scikit_learn_over_batches(num_classes: int) -> None:
    logits, labels = _batches(1000, num_classes, seed=num_classes)
    labels[::17] = -100  # ignored labels count nowhere
    got = _feed(TaskMetrics("classification", metrics=("loss", *_PRF)), logits, labels)
    keep = labels != -100
    y, p = labels[keep].numpy(), logits[keep].argmax(-1).numpy()
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        for average in ("macro", "weighted"):
            assert got[f"{name}_{average}"] == pytest.approx(fn(y, p, average=average, zero_division=0), abs=1e-12)


def test_a_class_never_seen_nor_predicted_is_left_out_like_scikit_learn() -> None:
    # 4 outputs, labels and predictions only in {0, 1, 2}: sklearn averages over the 3 present classes.
    logits = torch.tensor([[3.0, 0, 0, -9], [0, 3.0, 0, -9], [0, 0, 3.0, -9], [3.0, 0, 0, -9], [0, 3.0, 0, -9]])
    labels = torch.tensor([0, 1, 1, 2, 1])
    got = _feed(TaskMetrics("classification", metrics=("loss", "f1_macro", "recall_macro")), logits, labels)
    pred = logits.argmax(-1).numpy()
    assert got["f1_macro"] == pytest.approx(f1_score(labels.numpy(), pred, average="macro", zero_division=0))
    assert got["recall_macro"] == pytest.approx(recall_score(labels.numpy(), pred, average="macro", zero_division=0))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_roc_auc_matches_scikit_learn_within_the_histogram_resolution(num_classes: int) -> None:
    logits, labels = _batches(3000, num_classes, seed=10 + num_classes, separation=1.5)
    got = _feed(TaskMetrics("classification", metrics=("loss", "roc_auc")), logits, labels)["roc_auc"]
    probs = torch.softmax(logits.double(), -1).numpy()
    expected = (
        roc_auc_score(labels.numpy(), probs[:, 1])
        if num_classes == 2
        else roc_auc_score(labels.numpy(), probs, multi_class="ovr", average="macro")
    )
    assert 0.7 < expected < 0.95  # a non-trivial ranking
    assert got == pytest.approx(expected, abs=2e-3)


def test_roc_auc_separates_confident_scores_that_probabilities_would_tie() -> None:
    # Every probability is within 1e-6 of 0 or 1, yet the ranking inside each end is informative.
    labels = torch.tensor([1] * 50 + [0] * 50)
    margin = torch.cat([torch.linspace(14, 15, 50), torch.linspace(13.5, 14.5, 50)])
    logits = torch.stack([torch.zeros(100), margin], dim=1)
    got = _feed(TaskMetrics("classification", metrics=("loss", "roc_auc")), logits, labels)["roc_auc"]
    assert got == pytest.approx(roc_auc_score(labels.numpy(), margin.numpy()), abs=0.02)


def test_metrics_reset_between_passes_and_nan_without_data() -> None:
    m = TaskMetrics("classification", metrics=("loss", "f1_macro", "roc_auc"))
    assert math.isnan(m.compute()["f1_macro"])
    logits, labels = _batches(200, 3, seed=1)
    first = _feed(m, logits, labels)
    m.reset()
    assert _feed(m, logits, labels) == first


def test_new_metrics_go_up_and_are_opt_in() -> None:
    assert all(METRIC_MODES[n] == "max" for n in (*_PRF, "roc_auc"))
    assert TaskSpec.classification().metrics == ("loss", "accuracy")  # defaults unchanged
    with pytest.raises(TaskError, match="regression tasks — supported: loss, mse"):
        TaskSpec.regression().with_metrics("f1_macro")


def _sklearn_f1(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"my_f1": f1_score(labels, predictions.argmax(-1), average="macro"), "n_seen": len(labels)}


def test_compute_metrics_gets_numpy_arrays_of_the_whole_pass_in_both_shapes() -> None:
    logits, labels = _batches(130, 3, seed=2)
    two_args = _feed(TaskMetrics("classification", compute_metrics=_sklearn_f1), logits, labels, batch=50)
    assert two_args["n_seen"] == 130
    assert two_args["my_f1"] == pytest.approx(f1_score(labels.numpy(), logits.argmax(-1).numpy(), average="macro"))

    def hugging_face_style(eval_pred):  # the seeds' compute_metrics(eval_pred)
        predictions, refs = eval_pred
        return {"acc": float((predictions.argmax(-1) == refs).mean())}

    one_arg = _feed(TaskMetrics("classification", compute_metrics=hugging_face_style), logits, labels)
    assert one_arg["acc"] == pytest.approx(one_arg["accuracy"])


def test_compute_metrics_errors_say_what_is_wrong() -> None:
    logits, labels = _batches(8, 2, seed=3)
    for fn, message in (
        (lambda p, y: {"loss": 1.0}, "returned 'loss', which the task computes itself"),
        (lambda p, y: {"f": "high"}, "returned f='high' \\(str\\); values must be numbers"),
        (lambda p, y: [1.0], "returned list; it must return a dict"),
    ):
        with pytest.raises(TaskError, match=message):
            _feed(TaskMetrics("classification", compute_metrics=fn), logits, labels)
    with pytest.raises(TaskError, match="cannot import module 'no_such_module_xyz'"):
        TaskMetrics("classification", compute_metrics="no_such_module_xyz:fn")
    with pytest.raises(TaskError, match="has no attribute 'nope'"):
        TaskMetrics("classification", compute_metrics="math:nope")


# -- in a run -------------------------------------------------------------------------------------


def _config(tmp_path: Path, **task: object) -> TrainingConfigBuilder:
    return (
        TrainingConfigBuilder()
        .with_training(epochs=2, batch_size=32, learning_rate=0.05, device="cpu", log_interval_steps=5)
        .with_scheduler(name="constant")
        .with_tracking(output_dir=str(tmp_path / "runs"), progress="off", experiment_db=False)
        .with_section("task", **task)
    )


def _imbalanced(
    n: int = 240, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.2).long()  # 20% positives
    x = torch.randn(n, 4, generator=g) + 1.2 * y[:, None]
    return (x[:192], y[:192]), (x[192:], y[192:])


def test_a_run_reports_and_monitors_f1_macro(tmp_path: Path) -> None:
    train, val = _imbalanced()
    cfg = _config(tmp_path, metrics=["accuracy", "roc_auc"]).with_training(monitor="f1_macro").build()
    trainer = Trainer(MLP(4, 2, hidden_dims=(8,)), None, cfg, TaskSpec.classification("imb", 2))
    results = trainer.train(train, val)
    assert trainer.monitor == "val/f1_macro" and trainer.monitor_mode == "max"
    last = results["final_metrics"]
    assert {"val/accuracy", "val/roc_auc", "val/f1_macro"} <= set(last)  # the monitored metric is added
    best = max(r["val/f1_macro"] for r in results["history"]["val"])
    assert results["best_metric_name"] == "val/f1_macro" and results["best_metric"] == best
    run_json = json.loads((Path(results["run_dir"]) / "run.json").read_text())
    assert run_json["task"]["metrics"] == ["loss", "accuracy", "roc_auc", "f1_macro"]


@pytest.fixture
def user_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's metrics module on the path, as a config names it: 'module:function'."""
    (tmp_path / "my_eval_metrics.py").write_text(
        "from sklearn.metrics import f1_score\n\n"
        "def compute(predictions, labels):\n"
        "    return {'my_f1': f1_score(labels, predictions.argmax(-1), average='macro'), 'n_seen': len(labels)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_eval_metrics:compute"


def test_a_user_metric_can_be_monitored_once_its_direction_is_given(tmp_path: Path, user_metrics: str) -> None:
    train, val = _imbalanced()
    ref = user_metrics
    with pytest.raises(ConfigError, match="comes from compute_metrics.*set training.monitor_mode to max"):
        Trainer(MLP(4, 2), None, _config(tmp_path, compute_metrics=ref).with_training(monitor="my_f1").build(),
                TaskSpec.classification("imb", 2))  # fmt: skip
    cfg = _config(tmp_path, compute_metrics=ref).with_training(monitor="my_f1", monitor_mode="max").build()
    results = Trainer(MLP(4, 2), None, cfg, TaskSpec.classification("imb", 2)).train(train, val)
    assert results["best_metric_name"] == "val/my_f1"
    assert results["best_metric"] == max(r["val/my_f1"] for r in results["history"]["val"])
    assert all(r["val/n_seen"] == 48 for r in results["history"]["val"])


def test_a_monitor_compute_metrics_never_returns_fails_at_the_first_evaluation(
    tmp_path: Path, user_metrics: str
) -> None:
    train, val = _imbalanced()
    ref = user_metrics
    cfg = _config(tmp_path, compute_metrics=ref).with_training(monitor="typo_f1", monitor_mode="max").build()
    with pytest.raises(ConfigError, match="training.monitor 'val/typo_f1' is not among the evaluation metrics"):
        Trainer(MLP(4, 2), None, cfg, TaskSpec.classification("imb", 2)).train(train, val)


def test_task_metrics_the_task_cannot_report_are_refused_with_the_list(tmp_path: Path) -> None:
    cfg = _config(tmp_path, metrics=["r2", "f1_macro"]).build()
    with pytest.raises(ConfigError, match="task.metrics 'f1_macro' are not reported by regression tasks — supported"):
        Trainer(MLP(4, 1), None, cfg, TaskSpec.regression("r"))
    with pytest.raises(ConfigError, match="task.compute_metrics: must name a function as 'module:function'"):
        _config(tmp_path, compute_metrics="not a ref").build()
    with pytest.raises(ConfigError, match="distinct metric names without a split prefix"):
        _config(tmp_path, metrics=["val/f1_macro"]).build()
