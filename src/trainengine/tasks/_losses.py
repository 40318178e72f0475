"""Loss strategies: one object per task type that checks, sums and counts a batch's loss.

A strategy splits the loss into ``loss_sum`` (the sum of per-target losses) and
``num_targets`` (how many targets that sum covers) so the trainer can normalise gradient
accumulation correctly: over a window of micro-batches the loss is
``sum(loss_sum_i) / sum(num_targets_i)``, which equals the loss of the concatenated batch even
when micro-batches hold different numbers of targets (uneven padding in language modeling).
Averaging per-micro-batch means instead would over-weight short micro-batches.

Nothing here forces a host-device sync: ``loss_sum``, ``num_targets`` and ``__call__`` return
tensors on the inputs' device, and ``validate_inputs`` reads only shapes and dtypes (host
metadata).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from trainengine.errors import DataError, TaskError
from trainengine.registries import LOSSES, register_loss

__all__ = [
    "LossStrategy",
    "ClassificationLoss",
    "LanguageModelingLoss",
    "RegressionLoss",
    "StepRewardLoss",
    "IGNORE_TARGET",
    "get_loss_strategy",
    "register_loss_strategy",
    "available_loss_strategies",
    "balanced_class_weights",
]


def _describe(t: Tensor) -> str:
    """Render a tensor's dtype and shape for error messages, e.g. ``float32 [4, 2]``."""
    dtype = str(t.dtype).removeprefix("torch.")
    return f"{dtype} [{', '.join(str(s) for s in t.shape)}]"


def _compute_dtype(t: Tensor) -> torch.dtype:
    """Float32 for half/bfloat16/float32 inputs, float64 for float64 ones.

    Half-precision sums over thousands of targets lose digits (bf16 keeps ~3), so losses are
    always accumulated in at least float32; float64 inputs keep their precision.
    """
    return torch.promote_types(t.dtype, torch.float32)


def _check_class_indices(
    labels: Tensor, num_classes: int | None, ignore_index: int, *, task: str, what: str, offset: int = 0
) -> None:
    """Raise :class:`DataError` for a class index outside ``[0, num_classes)`` (``ignore_index`` allowed).

    Vectorised over the whole tensor: one host sync, whatever its size. Sample ``i`` is row ``i``
    of ``labels`` (``[N]`` or ``[N, T]``), numbered from ``offset``.
    """
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.numel() == 0:
        return  # validate_inputs names the dtype problem; nothing to range-check here
    flat = labels.reshape(labels.shape[0], -1) if labels.ndim else labels.reshape(1, 1)  # (N, values per sample)
    bad = (flat != ignore_index) & ((flat < 0) | (flat >= num_classes if num_classes is not None else False))
    if not bool(bad.any()):  # the one sync of the check
        return
    rows = bad.any(dim=1).nonzero()
    first = int(rows[0])
    value = int(flat[first][bad[first]][0])
    count = int(bad.sum())
    valid = f"labels in [0, {num_classes})" if num_classes is not None else "labels >= 0"
    with_n = f" with num_classes={num_classes}" if num_classes is not None else ""
    fix = (
        f"set num_classes to at least {int(flat[flat != ignore_index].max()) + 1} or fix the labels"
        if num_classes is not None and value >= num_classes
        else "class indices start at 0: shift or fix the labels"
    )
    raise DataError(
        f"{what}: sample {offset + first} has label {value}, but {task}{with_n} expects {valid} "
        f"(or ignore_index {ignore_index}); {count} label(s) out of range — {fix}"
    )


def _check_label_smoothing(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise TaskError(
            f"label_smoothing must be a float in [0, 1), got {value!r}; 0.0 disables smoothing, 0.1 is a common choice"
        )
    return float(value)


def _check_ignore_index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskError(
            f"ignore_index must be an int (the label value that marks padding), got {value!r}; the usual value is -100"
        )
    return value


class LossStrategy(ABC):
    """How one task type turns model outputs and labels into a loss.

    Subclasses implement :meth:`validate_inputs`, :meth:`loss_sum` and :meth:`num_targets`;
    ``__call__`` (the mean loss) and :meth:`predictions` come for free.

    Example:
        >>> import torch
        >>> strategy = get_loss_strategy("classification")
        >>> logits, labels = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
        >>> round(float(strategy(logits, labels)), 4)  # uniform logits: log(3)
        1.0986
    """

    #: The task type this strategy implements (registry name of its canonical entry).
    task_type: ClassVar[str] = ""

    @abstractmethod
    def validate_inputs(self, logits: Tensor, labels: Tensor) -> None:
        """Raise :class:`TaskError` naming expected and actual shapes/dtypes if they do not fit."""

    @abstractmethod
    def loss_sum(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Return the sum of per-target losses as a 0-dim float tensor (float32 or wider)."""

    @abstractmethod
    def num_targets(self, labels: Tensor) -> Tensor:
        """Return a 0-dim tensor on ``labels.device``: how many targets ``loss_sum`` covers.

        int64 counts; a float32 sum of the targets' weights when targets are weighted (class
        weights), so ``loss_sum / num_targets`` is the weighted mean ``F.cross_entropy`` gives.
        """

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean loss per target: ``loss_sum / max(num_targets, 1)`` (0 for a batch with no targets)."""
        return self.loss_sum(logits, labels) / self.num_targets(labels).clamp_min(1)

    def mean_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean loss per target without input validation: the training hot path.

        The Trainer validates the first batch once and then calls this every step; subclasses
        override it with a single fused kernel (``reduction="mean"``). A batch with no targets
        gives NaN here, which the Trainer treats as a non-finite step and skips.
        """
        return self.loss_sum(logits, labels) / self.num_targets(labels)

    def predictions(self, logits: Tensor) -> Tensor:
        """Turn model outputs into predictions (class indices by default)."""
        return logits.argmax(dim=-1)

    def check_label_values(
        self, labels: Tensor, *, num_classes: int | None = None, what: str = "labels", offset: int = 0
    ) -> None:
        """Raise :class:`~trainengine.errors.DataError` for label *values* the loss cannot take.

        Unlike :meth:`validate_inputs` this reads the values (one host sync), so the Trainer calls
        it once — on whole in-memory label tensors at setup and on the first batches — never per
        step. The default accepts anything (regression targets).

        Args:
            labels: ``[N, ...]`` labels, one row per sample.
            num_classes: the number of classes (the model's output width) when known.
            what: how to name the data in the message (``"train data"``, ``"val batch 0"``).
            offset: the index of row 0 among the data's samples.
        """

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


class ClassificationLoss(LossStrategy):
    """Cross entropy over class logits ``[B, C]`` and int64 class indices ``[B]``.

    Also serves ``vision`` tasks. The loss is computed in float32 (float64 for float64 logits)
    whatever the logits' dtype, because a bf16 sum over a batch keeps only ~3 significant digits.
    Labels equal to ``ignore_index`` contribute neither loss nor a target, exactly like
    ``F.cross_entropy``; for ordinary labels ``num_targets`` is the batch size ``B``.

    With ``class_weights`` every example's loss is multiplied by its class's weight (the
    ``weight`` of ``F.cross_entropy``) and ``num_targets`` is the sum of those weights, so the mean
    is the weighted mean ``F.cross_entropy(weight=...)`` computes, in training and evaluation alike.

    Args:
        label_smoothing: Mass in [0, 1) spread uniformly over all classes (as in ``F.cross_entropy``).
        ignore_index: Label value that is skipped.
        num_classes: When given, logits must have exactly this many columns.
        class_weights: One finite weight > 0 per class, or None (every class weighs 1).

    Example:
        >>> import torch
        >>> loss = ClassificationLoss(label_smoothing=0.1)
        >>> logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
        >>> float(loss.num_targets(labels))
        8.0
        >>> float(ClassificationLoss(class_weights=[1.0, 3.0]).num_targets(torch.tensor([0, 1, 1])))
        7.0
    """

    task_type: ClassVar[str] = "classification"
    _expects = "classification expects logits [B, C] and int64 labels [B]"

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        num_classes: int | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.ignore_index = _check_ignore_index(ignore_index)
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
        ):
            raise TaskError(f"num_classes must be an int >= 2 or None, got {num_classes!r}")
        self.num_classes = num_classes
        self.class_weights = _check_class_weights(class_weights, num_classes)
        # The weight tensor per (device, dtype): built once, not copied to the device every step.
        self._weights: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def _weight(self, device: torch.device, dtype: torch.dtype) -> Tensor | None:
        if self.class_weights is None:
            return None
        key = (device, dtype)
        if key not in self._weights:
            self._weights[key] = torch.tensor(self.class_weights, dtype=dtype, device=device)  # (C,)
        return self._weights[key]

    def validate_inputs(self, logits: Tensor, labels: Tensor) -> None:
        """Check ``logits`` is floating ``[B, C]`` (C >= 2) and ``labels`` is int64 ``[B]``.

        Raises:
            TaskError: With expected and actual shapes and dtypes, and a hint at the usual fix.
        """
        if logits.ndim != 2 or not logits.is_floating_point():
            raise TaskError(
                f"{self._expects}; got logits {_describe(logits)}. "
                "Logits must be the model's raw floating-point class scores, one row per example"
            )
        if labels.ndim != 1 or labels.dtype != torch.int64:
            hint = (
                "one-hot or probability labels: convert with labels.argmax(-1)"
                if labels.ndim == 2
                else "class indices must be int64: convert with labels.long()"
            )
            raise TaskError(f"{self._expects}; got labels {_describe(labels)}. Hint: {hint}")
        if logits.shape[0] != labels.shape[0]:
            raise TaskError(
                f"{self._expects}; got logits {_describe(logits)} and labels {_describe(labels)}: "
                f"batch sizes differ ({logits.shape[0]} vs {labels.shape[0]})"
            )
        num_cols = logits.shape[1]
        if self.num_classes is not None and num_cols != self.num_classes:
            raise TaskError(
                f"{self._expects} with C = num_classes = {self.num_classes}; got logits "
                f"{_describe(logits)}. Set the model's output size to {self.num_classes}"
            )
        if num_cols < 2:
            # One column makes softmax constant: the loss is 0 and nothing is learned.
            raise TaskError(
                f"{self._expects} with C >= 2; got logits {_describe(logits)}. "
                "For binary classification give the model 2 outputs"
            )
        if self.class_weights is not None and num_cols != len(self.class_weights):
            raise TaskError(
                f"{self._expects}; got logits {_describe(logits)} but {len(self.class_weights)} class weights "
                f"— give one weight per class ({num_cols})"
            )

    def check_label_values(
        self, labels: Tensor, *, num_classes: int | None = None, what: str = "labels", offset: int = 0
    ) -> None:
        """Class indices must lie in ``[0, num_classes)`` (or equal ``ignore_index``).

        Example:
            >>> try:
            ...     ClassificationLoss(num_classes=3).check_label_values(torch.tensor([0, 2, 7]), what="train")
            ... except ValueError as exc:
            ...     print(str(exc)[:66])
            train: sample 2 has label 7, but classification with num_classes=3
        """
        n = self.num_classes if self.num_classes is not None else num_classes
        _check_class_indices(labels, n, self.ignore_index, task="classification", what=what, offset=offset)

    def loss_sum(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Sum of per-example cross entropy, each times its class weight (0-dim, float32 or wider)."""
        self.validate_inputs(logits, labels)
        dtype = _compute_dtype(logits)
        return F.cross_entropy(
            logits.to(dtype),  # (B, C)
            labels,  # (B,)
            weight=self._weight(logits.device, dtype),
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )

    def num_targets(self, labels: Tensor) -> Tensor:
        """Labels not equal to ``ignore_index``: a 0-dim int64 count, or float32 sum of their class weights."""
        valid = labels != self.ignore_index  # (B,)
        weight = self._weight(labels.device, torch.float32)
        if weight is None:
            return valid.sum()
        # Ignored labels (-100) are clamped to a valid index, then zeroed by the mask: no boolean indexing.
        return (weight[labels.clamp(0, weight.shape[0] - 1)] * valid).sum()

    def mean_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        dtype = _compute_dtype(logits)
        return F.cross_entropy(
            logits.to(dtype),  # (B, C)
            labels,  # (B,)
            weight=self._weight(logits.device, dtype),
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class LanguageModelingLoss(LossStrategy):
    """Next-token cross entropy over logits ``[B, T, V]`` and int64 labels ``[B, T]``.

    Labels are already aligned with the logits (``labels[:, t]`` is the target of position ``t``);
    positions whose label is ``ignore_index`` (padding, prompt tokens) are skipped and not counted.
    The logits are upcast to float32 before the softmax, which costs ``B*T*V*4`` bytes of
    temporary memory but keeps the summed loss exact to float32 precision under bf16 autocast.

    Args:
        ignore_index: Label value of positions to skip.
        label_smoothing: Mass in [0, 1) spread uniformly over the vocabulary.

    Example:
        >>> import torch
        >>> loss = LanguageModelingLoss()
        >>> labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
        >>> int(loss.num_targets(labels))
        3
    """

    task_type: ClassVar[str] = "language_modeling"
    _expects = "language_modeling expects logits [B, T, V] and int64 labels [B, T]"

    def __init__(self, *, ignore_index: int = -100, label_smoothing: float = 0.0) -> None:
        self.ignore_index = _check_ignore_index(ignore_index)
        self.label_smoothing = _check_label_smoothing(label_smoothing)

    def validate_inputs(self, logits: Tensor, labels: Tensor) -> None:
        """Check ``logits`` is floating ``[B, T, V]`` and ``labels`` is int64 ``[B, T]``.

        Raises:
            TaskError: With expected and actual shapes and dtypes.
        """
        if logits.ndim != 3 or not logits.is_floating_point():
            raise TaskError(
                f"{self._expects}; got logits {_describe(logits)}. Pass the model's unflattened floating-point logits"
            )
        if labels.ndim != 2 or labels.dtype != torch.int64:
            raise TaskError(
                f"{self._expects}; got labels {_describe(labels)}. Labels are int64 token ids shaped like the input ids"
            )
        if logits.shape[:2] != labels.shape:
            raise TaskError(
                f"{self._expects}; got logits {_describe(logits)} and labels {_describe(labels)}: "
                "[B, T] of logits and labels differ"
            )

    def check_label_values(
        self, labels: Tensor, *, num_classes: int | None = None, what: str = "labels", offset: int = 0
    ) -> None:
        """Token ids must lie in ``[0, vocabulary size)`` (or equal ``ignore_index``)."""
        _check_class_indices(labels, num_classes, self.ignore_index, task="language_modeling", what=what, offset=offset)

    def loss_sum(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Sum of per-token cross entropy over non-ignored positions (0-dim, float32 or wider)."""
        self.validate_inputs(logits, labels)
        vocab = logits.shape[-1]
        return F.cross_entropy(
            logits.reshape(-1, vocab).to(_compute_dtype(logits)),  # (B*T, V)
            labels.reshape(-1),  # (B*T,)
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )

    def num_targets(self, labels: Tensor) -> Tensor:
        """Number of positions whose label is not ``ignore_index`` (0-dim int64)."""
        return (labels != self.ignore_index).sum()

    def mean_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        vocab = logits.shape[-1]
        return F.cross_entropy(
            logits.reshape(-1, vocab).to(_compute_dtype(logits)),  # (B*T, V)
            labels.reshape(-1),  # (B*T,)
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class RegressionLoss(LossStrategy):
    """Squared error between float predictions and float targets.

    Accepted shapes: predictions ``[B]`` or ``[B, 1]`` with labels ``[B]`` (or ``[B, 1]``), and
    predictions ``[B, K]`` with labels ``[B, K]``. Predictions are reshaped to the labels' shape
    and both are computed in float32 (float64 when either is float64). ``num_targets`` is
    ``labels.numel()``, so the mean equals ``F.mse_loss(..., reduction="mean")``.

    Example:
        >>> import torch
        >>> loss = RegressionLoss()
        >>> float(loss(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])))
        2.5
    """

    task_type: ClassVar[str] = "regression"
    _expects = (
        "regression expects float predictions [B], [B, 1] or [B, K] and float labels "
        "[B] or [B, K] with the same number of values per row"
    )

    def validate_inputs(self, logits: Tensor, labels: Tensor) -> None:
        """Check both tensors are floating, 1-D or 2-D, with equal batch size and row width.

        Raises:
            TaskError: With expected and actual shapes and dtypes.
        """
        if logits.ndim not in (1, 2) or not logits.is_floating_point():
            raise TaskError(f"{self._expects}; got predictions {_describe(logits)}")
        if labels.ndim not in (1, 2) or not labels.is_floating_point():
            hint = (
                ". Integer labels look like class indices: use TaskSpec.classification, "
                "or convert real-valued targets with labels.float()"
                if not labels.is_floating_point()
                else ""
            )
            raise TaskError(f"{self._expects}; got labels {_describe(labels)}{hint}")
        pred_row = logits.shape[1] if logits.ndim == 2 else 1
        label_row = labels.shape[1] if labels.ndim == 2 else 1
        if logits.shape[0] != labels.shape[0] or pred_row != label_row:
            raise TaskError(f"{self._expects}; got predictions {_describe(logits)} and labels {_describe(labels)}")

    def _aligned(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        dtype = torch.promote_types(_compute_dtype(logits), _compute_dtype(labels))
        # (B,) / (B, 1) / (B, K) -> labels' shape; a view, no copy for contiguous inputs.
        return logits.reshape(labels.shape).to(dtype), labels.to(dtype)

    def loss_sum(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Sum of squared errors over every element (0-dim, float32 or wider)."""
        self.validate_inputs(logits, labels)
        preds, target = self._aligned(logits, labels)
        return F.mse_loss(preds, target, reduction="sum")

    def num_targets(self, labels: Tensor) -> Tensor:
        """``labels.numel()`` as a 0-dim int64 tensor on the labels' device (no host sync)."""
        return torch.full((), labels.numel(), dtype=torch.int64, device=labels.device)

    def mean_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        preds, target = self._aligned(logits, labels)
        return F.mse_loss(preds, target)

    def predictions(self, logits: Tensor) -> Tensor:
        """Predictions with a trailing singleton output dimension removed (``[B, 1]`` -> ``[B]``)."""
        if logits.ndim == 2 and logits.shape[1] == 1:
            return logits.squeeze(1)
        return logits


#: The label of a padding step in a reward batch: skipped by the loss and the metrics.
IGNORE_TARGET = -100.0


class StepRewardLoss(LossStrategy):
    """Squared error between per-step scores and per-step targets, padding steps skipped.

    A process reward model scores every reasoning step of a solution: predictions ``[B, S]``
    (scores in [0, 1]) against labels ``[B, S]`` (targets in [0, 1], :data:`IGNORE_TARGET` where
    an example has fewer than ``S`` steps). The loss is the mean squared error over the real steps;
    masking is arithmetic (no boolean indexing), so nothing syncs with the host.

    Example:
        >>> import torch
        >>> loss = StepRewardLoss()
        >>> scores = torch.tensor([[0.9, 0.2], [0.5, 0.0]])
        >>> labels = torch.tensor([[1.0, 0.0], [0.5, IGNORE_TARGET]])
        >>> round(float(loss(scores, labels)), 4)  # (0.01 + 0.04 + 0) / 3
        0.0167
    """

    task_type: ClassVar[str] = "reward"
    _expects = "reward expects float scores [B, S] and float labels [B, S] (one per reasoning step, -100.0 = none)"

    def validate_inputs(self, logits: Tensor, labels: Tensor) -> None:
        """Check both tensors are floating ``[B, S]`` with the same shape.

        Raises:
            TaskError: With expected and actual shapes and dtypes.
        """
        ok = logits.ndim == 2 and labels.ndim == 2 and logits.shape == labels.shape
        if not ok or not logits.is_floating_point() or not labels.is_floating_point():
            raise TaskError(f"{self._expects}; got scores {_describe(logits)} and labels {_describe(labels)}")

    def _parts(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        dtype = torch.promote_types(_compute_dtype(logits), _compute_dtype(labels))
        mask = labels.ne(IGNORE_TARGET)
        error = (logits.to(dtype) - labels.to(dtype)).square() * mask
        return error, mask

    def loss_sum(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Sum of squared errors over the real steps (0-dim, float32 or wider)."""
        self.validate_inputs(logits, labels)
        return self._parts(logits, labels)[0].sum()

    def num_targets(self, labels: Tensor) -> Tensor:
        """The number of real steps as a 0-dim int64 tensor (no host sync)."""
        return labels.ne(IGNORE_TARGET).sum()

    def mean_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        error, mask = self._parts(logits, labels)
        return error.sum() / mask.sum()

    def predictions(self, logits: Tensor) -> Tensor:
        """The scores themselves."""
        return logits


# The built-in strategies (classification, language_modeling, regression, and vision, which
# shares the classification loss) are registered lazily in trainengine.registries.LOSSES.


def _check_class_weights(value: Any, num_classes: int | None) -> tuple[float, ...] | None:
    """``value`` as a tuple of floats, or a TaskError naming what is wrong with it."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TaskError(f"class_weights must be a list of numbers, one per class, got {value!r}")
    bad = [w for w in value if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0]
    if bad or len(value) < 2:
        raise TaskError(
            f"class_weights must be finite numbers > 0, one per class (at least 2), got {list(value)!r}"
            + (f"; offending: {bad!r}" if bad else "")
        )
    if num_classes is not None and len(value) != num_classes:
        raise TaskError(f"class_weights has {len(value)} weights for {num_classes} classes — give one per class")
    return tuple(float(w) for w in value)


def balanced_class_weights(labels: Any, num_classes: int, *, ignore_index: int = -100) -> tuple[float, ...]:
    """Inverse-frequency class weights ``n / (num_classes * count_c)`` from training labels.

    scikit-learn's ``compute_class_weight("balanced")``: a class half as frequent as the average
    weighs 2, the weights of a balanced data set are all 1. Labels equal to ``ignore_index`` are
    not counted. One pass over ``labels`` on the host (call it once, at setup).

    Args:
        labels: Class indices (a tensor, array or sequence), any shape.
        num_classes: The number of classes C.
        ignore_index: Label value that is skipped.

    Returns:
        C floats, class ``c``'s weight at index ``c``.

    Raises:
        TaskError: A class has no training example (its weight would be infinite), or a label
            is outside ``[0, num_classes)``.

    Example:
        >>> balanced_class_weights([0, 0, 0, 1], 2)
        (0.6666666666666666, 2.0)
    """
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    y = (labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)).reshape(-1)
    y = y[y != ignore_index].astype(np.int64)
    counts = np.bincount(y[(y >= 0) & (y < num_classes)], minlength=num_classes)
    if y.size == 0 or counts.sum() != y.size:
        out = sorted(set(y[(y < 0) | (y >= num_classes)].tolist()))[:5]
        raise TaskError(
            f"class weights 'auto' need training labels in [0, {num_classes}); "
            + (f"found {out}" if out else "found none")
        )
    missing = np.flatnonzero(counts == 0).tolist()
    if missing:
        raise TaskError(
            f"class weights 'auto': class(es) {missing} have no training example, so their weight would be "
            "infinite — give task.class_weights as a list, or check the labels / num_classes"
        )
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=y)
    return tuple(float(w) for w in weights)


def available_loss_strategies() -> tuple[str, ...]:
    """Names accepted by :func:`get_loss_strategy`, sorted.

    Example:
        >>> {"classification", "language_modeling", "regression", "vision"} <= set(available_loss_strategies())
        True
    """
    return tuple(LOSSES.names())


def register_loss_strategy(task_type: str, cls: type[LossStrategy], *, overwrite: bool = False) -> None:
    """Register ``cls`` as the loss strategy for ``task_type``.

    Args:
        task_type: Registry name, e.g. ``"reward_modeling"``.
        cls: A :class:`LossStrategy` subclass; its keyword arguments become the options of
            :func:`get_loss_strategy`.
        overwrite: Replace an existing registration instead of raising.

    Raises:
        TaskError: If the name is empty, ``cls`` is not a LossStrategy subclass, or the name is
            taken and ``overwrite`` is False.

    Example:
        >>> class MyLoss(RegressionLoss):
        ...     task_type = "my_regression"
        >>> register_loss_strategy("my_regression", MyLoss, overwrite=True)
        >>> type(get_loss_strategy("my_regression")).__name__
        'MyLoss'
    """
    if not isinstance(task_type, str) or not task_type.strip():
        raise TaskError(f"loss strategy name must be a non-empty string, got {task_type!r}")
    if not (isinstance(cls, type) and issubclass(cls, LossStrategy)):
        raise TaskError(
            f"loss strategy for '{task_type}' must be a subclass of trainengine.tasks.LossStrategy, got {cls!r}"
        )
    register_loss(task_type, cls, overwrite=overwrite)


def get_loss_strategy(task_type: str, **options: Any) -> LossStrategy:
    """Build the registered loss strategy for ``task_type`` with ``options``.

    Args:
        task_type: One of :func:`available_loss_strategies` (``"vision"`` gives the
            classification strategy).
        **options: Keyword arguments of the strategy, e.g. ``label_smoothing=0.1``,
            ``ignore_index=-100``.

    Returns:
        A new strategy instance.

    Raises:
        TaskError: For an unknown name (the message lists the available ones) or an option
            the strategy does not accept (the message lists the accepted ones).

    Example:
        >>> get_loss_strategy("vision", label_smoothing=0.1).task_type
        'classification'
    """
    cls = LOSSES.get(task_type)
    try:
        inspect.signature(cls).bind(**options)
    except TypeError:
        accepted = [
            p.name
            for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        unknown = sorted(set(options) - set(accepted))
        raise TaskError(
            f"loss strategy '{task_type}' ({cls.__name__}) does not accept option(s) "
            f"{', '.join(unknown) or sorted(options)} — accepted: {', '.join(accepted) or 'none'}"
        ) from None
    return cls(**options)
