"""Per-task evaluation metrics accumulated on device over an evaluation pass.

Every accumulator is a ``torchmetrics.Metric`` with ``sum`` reduction, so ``compute()`` syncs
across processes when ``torch.distributed`` is initialised. ``update()`` launches only device
kernels (no ``.item()``, no boolean-mask indexing), so an evaluation loop never stalls on the host;
``compute()`` is where values come back to Python.

Classification's precision / recall / F1 (macro and weighted) come from a confusion matrix and
its ROC-AUC from per-class score histograms, both sum-reducible counts filled by scatter-adds
(torchmetrics' own classes index with boolean masks and call ``bincount``, which sync on CUDA);
the values are computed from those counts by scikit-learn at ``compute()``. A user
``compute_metrics(predictions, labels)`` is the one exception to "on device": it gets the whole
pass's outputs and labels as numpy arrays, copied to the host at ``compute()``.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, R2Score

from trainengine.errors import TaskError
from trainengine.tasks._losses import LossStrategy, get_loss_strategy

__all__ = ["TaskMetrics", "SUPPORTED_METRICS", "METRIC_MODES"]

# Classification metrics beyond accuracy, from the confusion matrix / score histograms.
_CLASS_METRICS = (
    "precision_macro",
    "precision_weighted",
    "recall_macro",
    "recall_weighted",
    "f1_macro",
    "f1_weighted",
    "roc_auc",
)

#: Metric names each task type can report (``"loss"`` is always reported).
SUPPORTED_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy", *_CLASS_METRICS),
    "vision": ("loss", "accuracy", *_CLASS_METRICS),
    "language_modeling": ("loss", "perplexity", "accuracy"),
    "regression": ("loss", "mse", "mae", "r2"),
    "reward": ("loss", "mse", "mae", "r2", "ece"),
}

#: Whether a lower ("min") or higher ("max") value of each metric is better.
METRIC_MODES: dict[str, str] = {
    "loss": "min",
    "accuracy": "max",
    "perplexity": "min",
    "mse": "min",
    "mae": "min",
    "r2": "max",
    "ece": "min",
    **dict.fromkeys(_CLASS_METRICS, "max"),
}

#: What a user's ``compute_metrics`` is: ``fn(predictions, labels) -> {name: number}`` (numpy
#: arrays over the whole evaluation pass), or the seeds' ``fn((predictions, labels))``.
ComputeMetricsFn = Callable[..., Mapping[str, Any]]

# ROC-AUC histogram: log-odds of each class's probability in _AUC_BINS bins over +-_AUC_RANGE
# (bin width 1/64). Log-odds, not probabilities: a trained model's scores crowd near 0 and 1,
# where equal-width probability bins would tie most pairs. Ties inside a bin count half, as
# scikit-learn counts tied scores, so the AUC is exact up to pairs closer than one bin.
_AUC_BINS = 2048
_AUC_RANGE = 16.0

# exp(709.78) is the largest finite float64; beyond it perplexity is reported as inf.
_MAX_LOG_PERPLEXITY = 709.0


class _RunningLoss(Metric):
    """Running ``sum(loss_sum)`` and ``sum(num_targets)``; the mean is their ratio.

    The target count is int64, or float (``count_dtype``) when targets are weighted: a sum of
    class weights must not be truncated to an integer.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False
    # States registered by add_state (declared so they type as tensors, not Tensor | Module).
    loss_sum: Tensor
    count: Tensor

    def __init__(self, dtype: torch.dtype, count_dtype: torch.dtype = torch.int64) -> None:
        super().__init__()
        self.add_state("loss_sum", default=torch.zeros((), dtype=dtype), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=count_dtype), dist_reduce_fx="sum")

    def update(self, loss_sum: Tensor, num_targets: Tensor) -> None:
        self.loss_sum += loss_sum.detach().to(self.loss_sum.dtype)
        self.count += num_targets.detach().to(self.count.dtype)

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


class _ConfusionMatrix(Metric):
    """``[C, C]`` counts (row = true class, column = predicted), ``ignore_index`` labels skipped, no sync."""

    full_state_update = False
    is_differentiable = False
    confmat: Tensor

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state(
            "confmat", default=torch.zeros(num_classes * num_classes, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        c = self.num_classes
        valid = (target != self.ignore_index).to(torch.int64)  # (B,)
        # Ignored labels are clamped into range and added with weight 0 (no boolean indexing).
        index = target.clamp(0, c - 1) * c + preds  # (B,)
        self.confmat.scatter_add_(0, index, valid)

    def compute(self) -> Tensor:
        return self.confmat.reshape(self.num_classes, self.num_classes)


class _ScoreHistogram(Metric):
    """Per class, histograms of that class's log-odds over its positives and its negatives: ``[C, 2, K]``."""

    full_state_update = False
    is_differentiable = False
    counts: Tensor

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state(
            "counts", default=torch.zeros(num_classes * 2 * _AUC_BINS, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(self, logits: Tensor, target: Tensor) -> None:
        c = self.num_classes
        log_p = torch.log_softmax(logits.float(), dim=-1)  # (B, C)
        # log(1 - p) stably: log(-expm1(log p)) near p = 1, log1p(-p) elsewhere.
        log_not_p = torch.where(log_p > -math.log(2), torch.log(-torch.expm1(log_p)), torch.log1p(-log_p.exp()))
        log_odds = (log_p - log_not_p).nan_to_num(nan=0.0)  # (B, C); p = 1 gives +inf, clamped below
        bins = ((log_odds + _AUC_RANGE) * (_AUC_BINS / (2 * _AUC_RANGE))).floor().clamp(0, _AUC_BINS - 1).long()
        classes = torch.arange(c, device=target.device)
        negative = (target.unsqueeze(1) != classes).to(torch.int64)  # (B, C): 0 = positive of class c, 1 = negative
        index = (classes * 2 + negative) * _AUC_BINS + bins  # (B, C)
        valid = (target != self.ignore_index).to(torch.int64).unsqueeze(1).expand(-1, c)  # (B, C)
        self.counts.scatter_add_(0, index.reshape(-1), valid.reshape(-1))

    def compute(self) -> Tensor:
        return self.counts.reshape(self.num_classes, 2, _AUC_BINS)


class _Gathered(Metric):
    """The pass's raw outputs and labels, kept on the device until ``compute()`` (for compute_metrics)."""

    full_state_update = False
    is_differentiable = False
    outputs: list[Tensor]
    targets: list[Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("outputs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, outputs: Tensor, target: Tensor) -> None:
        self.outputs.append(outputs.detach())
        self.targets.append(target.detach())

    def compute(self) -> tuple[Tensor, Tensor]:
        # After a distributed sync the lists are already one concatenated tensor each.
        def cat(x: list[Tensor] | Tensor) -> Tensor:
            return torch.cat(x) if isinstance(x, list) else x

        return cat(self.outputs), cat(self.targets)


# Calibration bins of the reward task's ECE (as trainengine.evaluation's: torchmetrics' default).
_ECE_BINS = 15


class _StepScores(Metric):
    """Sums over the real steps of a reward pass: error moments, target moments and calibration
    bins, all filled by arithmetic masks and scatter-adds (no boolean indexing: no host sync).

    ``ignore`` marks padding steps (labels equal to it are left out).
    """

    full_state_update = False
    n: Tensor
    sq_err: Tensor
    abs_err: Tensor
    t_sum: Tensor
    t_sq: Tensor
    bin_n: Tensor
    bin_pred: Tensor
    bin_target: Tensor

    def __init__(self, ignore: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.ignore = ignore
        for name in ("n", "sq_err", "abs_err", "t_sum", "t_sq"):
            self.add_state(name, default=torch.zeros((), dtype=dtype), dist_reduce_fx="sum")
        for name in ("bin_n", "bin_pred", "bin_target"):
            self.add_state(name, default=torch.zeros(_ECE_BINS, dtype=dtype), dist_reduce_fx="sum")

    def update(self, scores: Tensor, labels: Tensor) -> None:
        dtype = self.n.dtype
        mask = labels.ne(self.ignore).to(dtype)
        pred, target = scores.to(dtype), labels.to(dtype) * mask
        err = (pred - target) * mask
        self.n += mask.sum()
        self.sq_err += err.square().sum()
        self.abs_err += err.abs().sum()
        self.t_sum += target.sum()
        self.t_sq += target.square().sum()
        # 15 equal-width bins of the score; a score outside [0, 1] lands in the end bins.
        bins = (pred.clamp(0, 1) * _ECE_BINS).long().clamp_max(_ECE_BINS - 1).flatten()
        self.bin_n.scatter_add_(0, bins, mask.flatten())
        self.bin_pred.scatter_add_(0, bins, (pred * mask).flatten())
        self.bin_target.scatter_add_(0, bins, target.flatten())

    def compute(self) -> dict[str, float]:
        n = float(self.n)
        if not n:
            return dict.fromkeys(("mse", "mae", "r2", "ece"), math.nan)
        sst = float(self.t_sq) - float(self.t_sum) ** 2 / n
        gaps = (self.bin_pred - self.bin_target).abs().sum()  # sum over bins of n_b * |mean pred - mean target|
        return {
            "mse": float(self.sq_err) / n,
            "mae": float(self.abs_err) / n,
            "r2": 1.0 - float(self.sq_err) / sst if n >= 2 and sst > 0 else math.nan,
            "ece": float(gaps) / n,
        }


def resolve_compute_metrics(ref: str | ComputeMetricsFn) -> ComputeMetricsFn:
    """The function a ``"module:function"`` reference names (a callable is returned as it is).

    Raises:
        TaskError: The module cannot be imported, it has no such attribute, or it is not callable.

    Example:
        >>> resolve_compute_metrics("math:fsum").__name__
        'fsum'
    """
    if callable(ref):
        return ref
    module_name, _, attr = str(ref).partition(":")
    if not module_name or not attr:
        raise TaskError(f"compute_metrics must be 'module:function' (e.g. my_metrics:compute), got {ref!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(
            f"compute_metrics {ref!r}: cannot import module {module_name!r} ({exc}); is it on PYTHONPATH?"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TaskError(f"compute_metrics {ref!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TaskError(f"compute_metrics {ref!r} is a {type(obj).__name__}, not a function")
    return cast(ComputeMetricsFn, obj)


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is the Hugging Face shape ``compute_metrics(eval_pred)`` (one positional argument)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    return len(required) == 1 and len(positional) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in params)


class TaskMetrics:
    """Accumulates a task's loss and metrics over an evaluation pass.

    Usually built by :meth:`TaskSpec.create_metrics`. Feed it every batch with :meth:`update`,
    read the results with :meth:`compute` (keys without a prefix: ``"loss"``, ``"accuracy"``,
    ``"perplexity"``, ``"mse"``, ``"mae"``, ``"r2"`` as the task reports them), then
    :meth:`reset` before the next pass.

    Classification and vision also report ``precision_macro``, ``precision_weighted``,
    ``recall_macro``, ``recall_weighted``, ``f1_macro``, ``f1_weighted`` (scikit-learn's
    definitions over the classes present in the labels or predictions, 0 where undefined) and
    ``roc_auc`` (binary: of class 1; multiclass: one-vs-rest macro over the classes that have
    positives and negatives) when asked for.

    Args:
        task_type: ``"classification"``, ``"vision"``, ``"language_modeling"`` or ``"regression"``.
        metrics: Names to report; ``None`` reports the task type's default metrics (``loss`` and
            ``accuracy`` / ``perplexity`` / ``mse, mae, r2``).
        device: Where the running sums live; must be the device of the tensors given to
            :meth:`update`.
        ignore_index: Label value skipped by accuracy (classification, language modeling).
        loss_strategy: Used to validate inputs and to compute ``loss_sum`` / ``num_targets``
            when :meth:`update` is not given them; defaults to ``get_loss_strategy(task_type)``.
        compute_metrics: A user function (or ``"module:function"``) called at :meth:`compute` with
            numpy arrays of the pass: ``fn(predictions, labels) -> {name: number}`` —
            ``predictions`` are the model's raw outputs (logits ``[N, C]``, ``[N, T, V]``, or
            regression outputs), ``labels`` the targets as given (``ignore_index`` included). A
            one-argument ``fn(eval_pred)`` gets the tuple ``(predictions, labels)`` (Hugging Face
            style). Its names join the results (a built-in name is replaced; ``loss`` cannot be).
            Host cost: every output of the pass is kept on the device and copied to the host.

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
        compute_metrics: str | ComputeMetricsFn | None = None,
    ) -> None:
        if task_type not in SUPPORTED_METRICS:
            raise TaskError(
                f"no metrics for task type '{task_type}' — available: {', '.join(sorted(SUPPORTED_METRICS))}"
            )
        supported = SUPPORTED_METRICS[task_type]
        names = tuple(metrics) if metrics is not None else _DEFAULT_METRICS[task_type]
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

        weighted = getattr(self.loss_strategy, "class_weights", None) is not None
        self._loss = _RunningLoss(self._dtype, self._dtype if weighted else torch.int64).to(self.device)
        self._accuracy = _MaskedAccuracy(ignore_index).to(self.device) if "accuracy" in self.names else None
        self._mse = self._regression_metric(MeanSquaredError) if "mse" in self.names else None
        self._mae = self._regression_metric(MeanAbsoluteError) if "mae" in self.names else None
        self._r2 = self._regression_metric(R2Score) if "r2" in self.names else None
        if task_type == "reward":  # masked per-step moments instead of the regression metrics
            from trainengine.tasks._losses import IGNORE_TARGET

            self._mse = self._mae = self._r2 = None
            self._steps: _StepScores | None = _StepScores(IGNORE_TARGET, self._dtype).to(self.device)
        else:
            self._steps = None
        # Built at the first update, when the number of classes (the logits' width) is known.
        self._confmat: _ConfusionMatrix | None = None
        self._auc: _ScoreHistogram | None = None
        self._compute_metrics = resolve_compute_metrics(compute_metrics) if compute_metrics is not None else None
        self._gathered = _Gathered().to(self.device) if self._compute_metrics is not None else None
        # R2 states broadcast to the first batch's row width; a later batch of another width
        # would broadcast silently into nonsense, so the width is pinned per pass.
        self._row_width: int | None = None
        self._num_updates = 0  # host-side counter: no sync to know whether anything was seen

    def _class_metrics(self, num_classes: int) -> None:
        """Create the confusion matrix / histograms for ``num_classes`` (a host int: no sync)."""
        if self._confmat is not None and self._confmat.num_classes != num_classes:
            raise TaskError(
                f"logits changed from {self._confmat.num_classes} to {num_classes} classes within one evaluation "
                "pass; call reset() between models of different widths"
            )
        if self._confmat is None and any(n in self.names for n in _CLASS_METRICS if n != "roc_auc"):
            self._confmat = _ConfusionMatrix(num_classes, self.ignore_index).to(self.device)
        if self._auc is None and "roc_auc" in self.names:
            self._auc = _ScoreHistogram(num_classes, self.ignore_index).to(self.device)

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
        if self.task_type in ("classification", "vision") and any(n in self.names for n in _CLASS_METRICS):
            self._class_metrics(logits.shape[-1])
            if self._confmat is not None:
                self._confmat.update(logits.argmax(dim=-1), labels)
            if self._auc is not None:
                self._auc.update(logits, labels)
        if self._gathered is not None:
            self._gathered.update(logits, labels)
        if self._steps is not None:
            self._steps.update(logits, labels)

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
            n = float(count)  # a count, or a sum of class weights
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
            if self._steps is not None:
                values.update({k: v for k, v in self._steps.compute().items() if k in values})
            if math.isfinite(loss):  # metrics of non-finite outputs mean nothing (as accuracy above)
                if self._confmat is not None:
                    values.update(_confusion_metrics(self._confmat.compute().cpu().numpy(), self.names))
                if self._auc is not None:
                    values["roc_auc"] = _roc_auc(self._auc.compute().cpu().numpy())
            if self._gathered is not None:
                values.update(self._user_metrics())
        return {f"{prefix}{k}": v for k, v in values.items()}

    def _user_metrics(self) -> dict[str, float]:
        """Call the user's compute_metrics on the pass's outputs and labels (host copies)."""
        assert self._gathered is not None and self._compute_metrics is not None  # set together in __init__
        outputs, targets = self._gathered.compute()
        predictions, labels = outputs.float().cpu().numpy(), targets.cpu().numpy()
        fn = self._compute_metrics
        result = fn((predictions, labels)) if _takes_one_argument(fn) else fn(predictions, labels)
        name = getattr(fn, "__qualname__", repr(fn))
        if not isinstance(result, Mapping):
            raise TaskError(
                f"compute_metrics {name} returned {type(result).__name__}; it must return a dict name -> number"
            )
        out: dict[str, float] = {}
        for key, value in result.items():
            if not isinstance(key, str) or not key or "/" in key:
                raise TaskError(
                    f"compute_metrics {name} returned the key {key!r}; names are non-empty strings without '/'"
                )
            if key == "loss":
                raise TaskError(f"compute_metrics {name} returned 'loss', which the task computes itself — rename it")
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                raise TaskError(
                    f"compute_metrics {name} returned {key}={value!r} ({type(value).__name__}); values must be numbers"
                ) from None
        return out

    def reset(self) -> None:
        """Clear every running sum for the next evaluation pass."""
        for metric in (
            self._loss,
            self._accuracy,
            self._mse,
            self._mae,
            self._r2,
            self._confmat,
            self._auc,
            self._gathered,
            self._steps,
        ):
            if metric is not None:
                metric.reset()
        self._row_width = None
        self._num_updates = 0

    def __repr__(self) -> str:
        return f"TaskMetrics(task_type={self.task_type!r}, names={self.names!r}, device={str(self.device)!r})"


# What a task reports when no metric list is given (the extra classification metrics are opt-in).
_DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy"),
    "vision": ("loss", "accuracy"),
    "language_modeling": ("loss", "perplexity", "accuracy"),
    "regression": ("loss", "mse", "mae", "r2"),
    "reward": ("loss", "mse", "mae", "r2", "ece"),
}


def _confusion_metrics(confmat: Any, names: Sequence[str]) -> dict[str, float]:
    """Precision / recall / F1 (macro, weighted) of a ``[C, C]`` confusion matrix, by scikit-learn.

    The matrix becomes C² (true, predicted) pairs weighted by their counts, which is exactly
    scikit-learn on the raw labels: the same classes (those in the labels or the predictions),
    the same support weights, 0 where a class's value is undefined.
    """
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    c = confmat.shape[0]
    present = np.flatnonzero(confmat.sum(axis=0) + confmat.sum(axis=1))
    wanted = [n for n in names if n in _CLASS_METRICS and n != "roc_auc"]
    if present.size == 0:
        return dict.fromkeys(wanted, math.nan)
    y_true, y_pred = np.repeat(np.arange(c), c), np.tile(np.arange(c), c)
    out: dict[str, float] = {}
    for average in ("macro", "weighted"):
        if not any(n.endswith(f"_{average}") for n in wanted):
            continue
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, sample_weight=confmat.reshape(-1), labels=present, average=average, zero_division=0
        )
        for metric, value in (("precision", precision), ("recall", recall), ("f1", f1)):
            if f"{metric}_{average}" in wanted:
                out[f"{metric}_{average}"] = float(value)
    return out


def _roc_auc(counts: Any) -> float:
    """ROC-AUC from ``[C, 2, K]`` score histograms by scikit-learn (binary: class 1; else OvR macro).

    Each bin is one score value weighted by its count, so scikit-learn sees the binned scores
    themselves (ties within a bin count half). Classes without positives or negatives have no
    AUC and are left out of the macro mean; with none left the result is nan.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    num_classes, _, k = counts.shape
    scores = np.concatenate([np.arange(k), np.arange(k)]).astype(np.float64)
    y_true = np.concatenate([np.ones(k), np.zeros(k)])
    per_class = []
    for c in [1] if num_classes == 2 else range(num_classes):
        positives, negatives = counts[c]
        if positives.sum() and negatives.sum():
            weight = np.concatenate([positives, negatives]).astype(np.float64)
            per_class.append(roc_auc_score(y_true, scores, sample_weight=weight))
    return float(np.mean(per_class)) if per_class else math.nan
