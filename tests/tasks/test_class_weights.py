"""Class weights: the weighted cross entropy, its accumulation and evaluation, and task.class_weights auto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss

from trainengine import Trainer, TrainingConfigBuilder
from trainengine.errors import ConfigError, TaskError
from trainengine.models import MLP
from trainengine.tasks import ClassificationLoss, TaskSpec, balanced_class_weights


def test_balanced_weights_are_n_over_classes_times_count() -> None:
    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 4 + [-100] * 3)  # ignored labels are not counted
    # n = 12 counted labels, C = 3: 12 / (3 * 6), 12 / (3 * 2), 12 / (3 * 4)
    assert balanced_class_weights(labels, 3) == pytest.approx((2 / 3, 2.0, 1.0))
    with pytest.raises(TaskError, match=r"class\(es\) \[3\] have no training example"):
        balanced_class_weights(labels, 4)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_weighted_loss_is_torchs_weighted_cross_entropy_and_accumulates_exactly(smoothing: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(12, 3, generator=g), torch.randint(0, 3, (12,), generator=g)
    labels[5] = -100
    weights = [0.5, 2.0, 1.5]
    strategy = ClassificationLoss(class_weights=weights, label_smoothing=smoothing)
    reference = F.cross_entropy(logits, labels, weight=torch.tensor(weights), label_smoothing=smoothing)
    assert strategy.mean_loss(logits, labels) == pytest.approx(float(reference), rel=1e-6)
    # Micro-batches of different class mixes: sum of loss_sum / sum of num_targets = the whole batch's mean.
    parts = [(logits[:4], labels[:4]), (logits[4:], labels[4:])]
    total = sum(strategy.loss_sum(x, y) for x, y in parts) / sum(strategy.num_targets(y) for _, y in parts)
    assert float(total) == pytest.approx(float(reference), rel=1e-6)


def test_evaluation_loss_is_the_weighted_log_loss() -> None:
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(90, 3, generator=g), torch.randint(0, 3, (90,), generator=g)
    weights = (1.0, 3.0, 0.5)
    metrics = TaskSpec.classification("w", 3, class_weights=weights).create_metrics()
    for i in range(0, 90, 32):
        metrics.update(logits[i : i + 32], labels[i : i + 32])
    probs = torch.softmax(logits.double(), -1).numpy()
    expected = log_loss(labels.numpy(), probs, sample_weight=torch.tensor(weights)[labels].numpy())
    assert metrics.compute()["loss"] == pytest.approx(expected, rel=1e-6)


def test_task_spec_checks_and_round_trips_class_weights() -> None:
    spec = TaskSpec.classification("w", 2, class_weights=[1, 4])
    assert spec.class_weights == (1.0, 4.0)
    assert TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(TaskError, match="class_weights has 3 weights for 2 classes"):
        TaskSpec.classification("w", 2, class_weights=[1, 2, 3])
    with pytest.raises(TaskError, match="class_weights apply to class targets; a regression task takes none"):
        TaskSpec.from_dict({**TaskSpec.regression().to_dict(), "class_weights": [1.0, 2.0]})
    with pytest.raises(TaskError, match="finite numbers > 0"):
        TaskSpec.classification("w", 2, class_weights=[1, 0])


def _config(tmp_path: Path, class_weights: object) -> TrainingConfigBuilder:
    return (
        TrainingConfigBuilder()
        .with_training(epochs=3, batch_size=32, learning_rate=0.05, device="cpu", log_interval_steps=5, seed=0)
        .with_scheduler(name="constant")
        .with_tracking(output_dir=str(tmp_path / "runs"), progress="off", experiment_db=False)
        .with_section("task", class_weights=class_weights, metrics=["recall_macro"])
    )


def _imbalanced() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    # 10% positives that overlap the negatives: unweighted training mostly predicts the majority.
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(400, generator=g) < 0.1).long()
    x = torch.randn(400, 4, generator=g) + 0.8 * y[:, None]
    return (x[:320], y[:320]), (x[320:], y[320:])


def test_auto_weights_come_from_the_training_labels_are_recorded_and_lift_minority_recall(tmp_path: Path) -> None:
    train, val = _imbalanced()
    counts = torch.bincount(train[1], minlength=2)
    expected = [len(train[1]) / (2 * int(c)) for c in counts]

    def fit(weights: object) -> tuple[Trainer, dict]:
        torch.manual_seed(0)
        trainer = Trainer(
            MLP(4, 2, hidden_dims=(8,)), None, _config(tmp_path, weights).build(), TaskSpec.classification("i", 2)
        )
        return trainer, trainer.train(train, val)

    trainer, weighted = fit("auto")
    assert trainer.task_spec.class_weights == pytest.approx(expected)
    run_json = json.loads((Path(weighted["run_dir"]) / "run.json").read_text())
    assert run_json["task"]["class_weights"] == pytest.approx(expected)
    _, plain = fit(None)
    assert weighted["final_metrics"]["val/recall_macro"] > plain["final_metrics"]["val/recall_macro"]


def test_class_weight_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task.class_weights applies to class targets; the task is regression"):
        Trainer(
            MLP(4, 1),
            None,
            _config(tmp_path, "auto").with_section("task", metrics=None).build(),
            TaskSpec.regression("r"),
        )
    with pytest.raises(ConfigError, match="class_weights has 3 weights for 2 classes"):
        Trainer(MLP(4, 2), None, _config(tmp_path, [1.0, 2.0, 3.0]).build(), TaskSpec.classification("c", 2))
    with pytest.raises(ConfigError, match="task.class_weights: must be 'auto' or one finite weight > 0"):
        _config(tmp_path, [1.0, -2.0]).build()
    spec = TaskSpec.classification("c", 2, class_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match="are both set — set one of them"):
        Trainer(MLP(4, 2), None, _config(tmp_path, "auto").build(), spec)
