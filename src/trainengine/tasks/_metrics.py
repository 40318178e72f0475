"""Per-task evaluation metrics accumulated on device over an evaluation pass.

Every accumulator is a ``torchmetrics.Metric`` with ``sum`` reduction, so ``compute()`` syncs
across processes when ``torch.distributed`` is initialised. ``update()`` launches only device
kernels (no ``.item()``, no boolean-mask indexing), so an evaluation loop never stalls on the host;
``compute()`` is where values come back to Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, R2Score

from trainengine.errors import TaskError
from trainengine.tasks._losses import LossStrategy, get_loss_strategy

__all__ = ["TaskMetrics", "SUPPORTED_METRICS", "METRIC_MODES"]

#: Metric names each task type can report (``"loss"`` is always reported).
SUPPORTED_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy"),
    "vision": ("loss", "accuracy"),
    "language_modeling": ("loss", "perplexity", "accuracy"),
    "regression": ("loss", "mse", "mae", "r2"),
}

#: Whether a lower ("min") or higher ("max") value of each metric is better.
METRIC_MODES: dict[str, str] = {
    "loss": "min",
    "accuracy": "max",
    "perplexity": "min",
    "mse": "min",
    "mae": "min",
    "r2": "max",
}

# exp(709.78) is the largest finite float64; beyond it perplexity is reported as inf.
_MAX_LOG_PERPLEXITY = 709.0


class _RunningLoss(Metric):
    """Running ``sum(loss_sum)`` and ``sum(num_targets)``; the mean is their ratio."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False
    # States registered by add_state (declared so they type as tensors, not Tensor | Module).
    loss_sum: Tensor
    count: Tensor

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.add_state("loss_sum", default=torch.zeros((), dtype=dtype), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, loss_sum: Tensor, num_targets: Tensor) -> None:
        self.loss_sum += loss_sum.detach().to(self.loss_sum.dtype)
        self.count += num_targets.detach().to(torch.int64)

    def compute(self) -> tuple[Tensor, Tensor]:
        return self.loss_sum, self.count


class _MaskedAccuracy(Metric):
    """Micro accuracy that skips ``ignore_index`` labels without boolean-mask indexing.

    ``torchmetrics.MulticlassAccuracy`` drops ignored labels with ``preds[target != ignore]``,
    which needs the mask's count on the host (a device sync every update); counting through a
    multiplied mask gives the same number with no sync. Works for ``[B]`` and ``[B, T]`` labels.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    # States registered by add_state (declared so they type as tensors, not Tensor | Module).
    correct: Tensor
    total: Tensor

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.add_state("correct", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        valid = target != self.ignore_index  # (B,) or (B, T)
        self.correct += ((preds == target) & valid).sum()
        self.total += valid.sum()

    def compute(self) -> Tensor:
        # float64 division on the host side of compute(); nan when nothing was counted.
        total = int(self.total)
        return torch.tensor(int(self.correct) / total if total else math.nan, dtype=torch.float64)


class TaskMetrics:
    """Accumulates a task's loss and metrics over an evaluation pass.

    Usually built by :meth:`TaskSpec.create_metrics`. Feed it every batch with :meth:`update`,
    read the results with :meth:`compute` (keys without a prefix: ``"loss"``, ``"accuracy"``,
    ``"perplexity"``, ``"mse"``, ``"mae"``, ``"r2"`` as the task reports them), then
    :meth:`reset` before the next pass.

    Args:
        task_type: ``"classification"``, ``"vision"``, ``"language_modeling"`` or ``"regression"``.
        metrics: Names to report; ``None`` reports every supported metric of the task type.
        device: Where the running sums live; must be the device of the tensors given to
            :meth:`update`.
        ignore_index: Label value skipped by accuracy (classification, language modeling).
        loss_strategy: Used to validate inputs and to compute ``loss_sum`` / ``num_targets``
            when :meth:`update` is not given them; defaults to ``get_loss_strategy(task_type)``.

    Example:
        >>> import torch
        >>> m = TaskMetrics("classification", metrics=("loss", "accuracy"))
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
        >>> m.update(logits, torch.tensor([0, 1, 1]))
        >>> round(m.compute()["accuracy"], 4)
        0.6667
    """

    def __init__(
        self,
        task_type: str,
        *,
        metrics: Sequence[str] | None = None,
        device: torch.device | str = "cpu",
        ignore_index: int = -100,
        loss_strategy: LossStrategy | None = None,
    ) -> None:
        if task_type not in SUPPORTED_METRICS:
            raise TaskError(
                f"no metrics for task type '{task_type}' — available: {', '.join(sorted(SUPPORTED_METRICS))}"
            )
        supported = SUPPORTED_METRICS[task_type]
        names = tuple(metrics) if metrics is not None else supported
        unknown = [n for n in names if n not in supported]
        if unknown:
            raise TaskError(
                f"task type '{task_type}' cannot report metric(s) {', '.join(map(repr, unknown))} "
                f"— supported: {', '.join(supported)}"
            )
        self.task_type = task_type
        # "loss" first and always: the trainer and the perplexity both need it.
        self.names: tuple[str, ...] = ("loss", *(n for n in dict.fromkeys(names) if n != "loss"))
        self.device = torch.device(device)
        self.ignore_index = ignore_index
        self.loss_strategy = loss_strategy if loss_strategy is not None else get_loss_strategy(task_type)
        # float64 sums keep a whole evaluation pass exact; MPS has no float64.
        self._dtype = torch.float32 if self.device.type == "mps" else torch.float64

        self._loss = _RunningLoss(self._dtype).to(self.device)
        self._accuracy = _MaskedAccuracy(ignore_index).to(self.device) if "accuracy" in self.names else None
        self._mse = self._regression_metric(MeanSquaredError) if "mse" in self.names else None
        self._mae = self._regression_metric(MeanAbsoluteError) if "mae" in self.names else None
        self._r2 = self._regression_metric(R2Score) if "r2" in self.names else None
        # R2 states broadcast to the first batch's row width; a later batch of another width
        # would broadcast silently into nonsense, so the width is pinned per pass.
        self._row_width: int | None = None
        self._num_updates = 0  # host-side counter: no sync to know whether anything was seen

    def _regression_metric(self, cls: type[Metric]) -> Metric:
        metric = cls()
        metric.set_dtype(self._dtype)
        return metric.to(self.device)

    @torch.no_grad()
    def update(
        self,
        logits: Tensor,
        labels: Tensor,
        loss_sum: Tensor | None = None,
        num_targets: Tensor | None = None,
    ) -> None:
        """Add one batch. Launches device kernels only; never syncs with the host.

        Args:
            logits: Model outputs (``[B, C]``, ``[B, T, V]`` or regression predictions).
            labels: Targets matching the task's loss strategy.
            loss_sum: The batch's summed loss from ``strategy.loss_sum``; computed when omitted.
            num_targets: The batch's target count from ``strategy.num_targets``; computed when
                omitted.

        Raises:
            TaskError: If the shapes or dtypes do not fit the task.
        """
        strategy = self.loss_strategy
        strategy.validate_inputs(logits, labels)
        if self.task_type == "regression":
            width = labels.shape[1] if labels.ndim == 2 else 1
            if self._row_width is None:
                self._row_width = width
            elif width != self._row_width:
                raise TaskError(
                    f"regression labels changed from {self._row_width} to {width} values per row "
                    "within one evaluation pass; call reset() between data sets of different widths"
                )
        logits = logits.detach()
        if loss_sum is None:
            loss_sum = strategy.loss_sum(logits, labels)
        if num_targets is None:
            num_targets = strategy.num_targets(labels)
        self._loss.update(loss_sum, num_targets)

        if self._accuracy is not None:
            self._accuracy.update(logits.argmax(dim=-1), labels)

        if self.task_type == "regression":
            # (B,) / (B, 1) / (B, K) -> labels' shape, accumulated in float64.
            preds = logits.reshape(labels.shape).to(self._dtype)
            target = labels.to(self._dtype)
            if self._mse is not None:
                self._mse.update(preds, target)
            if self._mae is not None:
                self._mae.update(preds, target)
            if self._r2 is not None:
                self._r2.update(preds, target)
        self._num_updates += 1

    def compute(self, prefix: str = "") -> dict[str, float]:
        """Return the accumulated metrics as Python floats (syncs; call once per pass).

        Args:
            prefix: Prepended to every key, e.g. ``"val/"`` gives ``"val/loss"``.

        Returns:
            ``{"loss": ..., <metric>: ...}`` in :attr:`names` order; ``nan`` for a metric with
            nothing to average (no updates, every label ignored, R2 on fewer than 2 rows), and
            for accuracy when the loss is not finite (the model produced NaN/Inf outputs).
        """
        values = dict.fromkeys(self.names, math.nan)
        if self._num_updates:
            loss_sum, count = self._loss.compute()
            n = int(count)
            loss = float(loss_sum) / n if n else math.nan
            values["loss"] = loss
            if "perplexity" in values:
                values["perplexity"] = (
                    loss if math.isnan(loss) else math.inf if loss > _MAX_LOG_PERPLEXITY else math.exp(loss)
                )
            if self._accuracy is not None:
                # argmax of NaN logits is an arbitrary class: an accuracy from non-finite outputs
                # (which make the loss non-finite) would be a number that means nothing.
                values["accuracy"] = float(self._accuracy.compute()) if math.isfinite(loss) else math.nan
            if self._mse is not None:
                values["mse"] = float(self._mse.compute())
            if self._mae is not None:
                values["mae"] = float(self._mae.compute())
            # R2Score's sample count (an add_state tensor): R² needs at least two samples.
            if self._r2 is not None and int(cast(Tensor, self._r2.total)) >= 2:
                values["r2"] = float(self._r2.compute())
        return {f"{prefix}{k}": v for k, v in values.items()}

    def reset(self) -> None:
        """Clear every running sum for the next evaluation pass."""
        for metric in (self._loss, self._accuracy, self._mse, self._mae, self._r2):
            if metric is not None:
                metric.reset()
        self._row_width = None
        self._num_updates = 0

    def __repr__(self) -> str:
        return f"TaskMetrics(task_type={self.task_type!r}, names={self.names!r}, device={str(self.device)!r})"
