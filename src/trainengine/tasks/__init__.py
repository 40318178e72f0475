"""Tasks: what a run learns, how its loss is computed, and which metrics it reports.

- :class:`TaskSpec` — task type, classes, loss options, metrics and the metric to monitor;
  factories ``language_modeling``, ``classification``, ``regression``, ``vision_tiny``,
  ``for_dataset``.
- Loss strategies (:func:`get_loss_strategy`, :func:`register_loss_strategy`) — input
  validation with clear errors, and a loss split into ``loss_sum`` / ``num_targets`` so
  gradient accumulation normalises by the true number of targets in the window.
- :class:`TaskMetrics` — on-device accumulation of loss, accuracy, perplexity, MSE/MAE/R2 over an
  evaluation pass.

Example:
    >>> import torch
    >>> from trainengine.tasks import TaskSpec
    >>> spec = TaskSpec.classification(name="digits", num_classes=10)
    >>> logits, labels = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    >>> loss = spec.loss_strategy(logits, labels)  # mean cross entropy, 0-dim tensor
    >>> metrics = spec.create_metrics()
    >>> metrics.update(logits, labels)
    >>> sorted(metrics.compute())
    ['accuracy', 'loss']
"""

from trainengine.tasks._losses import (
    ClassificationLoss,
    LanguageModelingLoss,
    LossStrategy,
    RegressionLoss,
    available_loss_strategies,
    balanced_class_weights,
    get_loss_strategy,
    register_loss_strategy,
)
from trainengine.tasks._metrics import METRIC_MODES, SUPPORTED_METRICS, ComputeMetricsFn, TaskMetrics
from trainengine.tasks._spec import Architecture, Modality, MonitorMode, TaskSpec, TaskType

__all__ = [
    "TaskSpec",
    "TaskType",
    "Modality",
    "Architecture",
    "MonitorMode",
    "LossStrategy",
    "ClassificationLoss",
    "LanguageModelingLoss",
    "RegressionLoss",
    "get_loss_strategy",
    "register_loss_strategy",
    "available_loss_strategies",
    "balanced_class_weights",
    "TaskMetrics",
    "ComputeMetricsFn",
    "SUPPORTED_METRICS",
    "METRIC_MODES",
]
