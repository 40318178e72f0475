"""One batched, gradient-free pass of a model over data, gathered into numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainengine.errors import TrainEngineError
from trainengine.evaluation._metrics import TaskKind
from trainengine.tasks import TaskSpec

__all__ = ["Predictions", "predict", "task_kind"]

_IGNORE_TARGET = -100.0  # a padding step of a reward batch (trainengine.tasks.IGNORE_TARGET)


def task_kind(task_spec: TaskSpec) -> TaskKind:
    """The metric family of a task: vision is classification."""
    if task_spec.task_type in ("classification", "vision"):
        return "classification"
    if task_spec.task_type in ("regression", "reward"):
        return "regression"  # reward: every scored reasoning step is one regression example
    return "language_modeling"


@dataclass(frozen=True)
class Predictions:
    """A model's outputs on ``n`` examples, in data order, as numpy arrays.

    Attributes:
        task: the metric family.
        outputs: classification: probabilities ``(n, C)``; regression: predictions ``(n,)``
            (un-scaled to the data's units when the data was standardised); LM: per-example
            summed token cross-entropy ``(n,)`` (nats).
        targets: classification: labels ``(n,)``; regression: targets ``(n,)``; LM: the number of
            scored tokens per example ``(n,)``.
        byte_counts: LM with a byte-level vocabulary (256 logits): bytes per example; else None.
        groups: reward: the data source of each scored step (an index into the data's
            ``sources``); else None.
    """

    task: TaskKind
    outputs: np.ndarray
    targets: np.ndarray
    byte_counts: np.ndarray | None = None
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays every metric of the task takes (``compute_metrics(task, *arrays)``)."""
        if self.task == "language_modeling" and self.byte_counts is not None:
            return (self.outputs, self.targets, self.byte_counts)
        return (self.outputs, self.targets)

    def subset(self, index: np.ndarray) -> Predictions:
        """The predictions of the examples at ``index`` (a segment)."""
        bytes_ = None if self.byte_counts is None else self.byte_counts[index]
        groups = None if self.groups is None else self.groups[index]
        return Predictions(self.task, self.outputs[index], self.targets[index], bytes_, groups)

    def concat(self, other: Predictions) -> Predictions:
        """These predictions followed by ``other``'s (the same task)."""

        def join(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else np.concatenate([a, b])

        return Predictions(
            self.task,
            np.concatenate([self.outputs, other.outputs]),
            np.concatenate([self.targets, other.targets]),
            join(self.byte_counts, other.byte_counts),
            join(self.groups, other.groups),
        )

    def example_losses(self) -> np.ndarray:
        """Per-example loss ``(n,)``: cross-entropy, squared error, or mean token loss (nats)."""
        if self.task == "classification":
            p = self.outputs[np.arange(len(self)), self.targets.astype(np.int64)]
            return -np.log(np.clip(p, np.finfo(self.outputs.dtype).eps, 1.0))
        if self.task == "regression":
            return (self.outputs - self.targets) ** 2
        return self.outputs / np.maximum(self.targets, 1)

    def predicted(self) -> np.ndarray:
        """Predicted class (classification), prediction (regression), or per-token loss (LM)."""
        return self.outputs.argmax(axis=1) if self.task == "classification" else self.example_losses()


def _split(batch: Any) -> tuple[Any, torch.Tensor]:
    from trainengine.engine._step import split_batch

    return split_batch(batch)


def predict(
    model: nn.Module,
    data: Any,
    task_spec: TaskSpec,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    target_mean: float | None = None,
    target_std: float | None = None,
) -> Predictions:
    """Run ``model`` over ``data`` once (eval mode, no grad) and gather its outputs.

    Everything stays on the device until the end of each batch's forward pass; the host copy is
    one transfer per batch (this is evaluation, not the training hot path).

    Args:
        model: the model; put in eval mode for the pass and restored afterwards.
        data: a map-style dataset or any iterable of ``(inputs, labels)`` / dict batches
            (a DataLoader is used as it is).
        task_spec: the task (its type picks what is gathered; ``ignore_index`` is honoured for LM).
        batch_size: examples per forward pass when ``data`` is a dataset.
        device: where the model runs.
        target_mean: regression: the train target mean the data was standardised with (predictions
            and targets are returned in the original units).
        target_std: regression: the train target standard deviation.

    Returns:
        :class:`Predictions` in data order.

    Raises:
        TrainEngineError: no examples in ``data``.

    Example:
        >>> from trainengine import MLP, TaskSpec
        >>> from trainengine.data import load_builtin
        >>> splits = load_builtin("digits", max_val_samples=40)
        >>> model = MLP(input_dim=64, hidden_dims=[16], output_dim=10)
        >>> p = predict(model, splits.val, TaskSpec.classification("digits", 10))
        >>> p.outputs.shape, p.targets.shape
        ((40, 10), (40,))
    """
    from trainengine.data import build_dataloader

    kind = task_kind(task_spec)
    loader = data if isinstance(data, torch.utils.data.DataLoader) else None
    if loader is None:
        is_dataset = hasattr(data, "__getitem__") and hasattr(data, "__len__")
        loader = build_dataloader(data, batch_size=batch_size, shuffle=False, seed=0) if is_dataset else data
    dev = torch.device(device)
    was_training = model.training
    model.to(dev).eval()
    outputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    reward = task_spec.task_type == "reward"
    vocab = 0
    from trainengine.engine._step import call_model, extract_logits

    try:
        with torch.no_grad():
            for batch in loader:
                inputs, labels = _split(batch)
                inputs = _to(inputs, dev)
                labels = labels.to(dev)
                logits = extract_logits(call_model(model, inputs)).float()
                vocab = logits.shape[-1]
                if reward:  # the scored steps: (n_steps,) scores, targets and their sources
                    scored = labels != _IGNORE_TARGET
                    out, tgt = logits[scored], labels[scored].float()
                    sources = inputs.get("source_ids") if isinstance(inputs, dict) else None
                    if sources is not None:
                        groups.append(sources.reshape(-1, 1).expand_as(labels)[scored].cpu().numpy())
                else:
                    out, tgt = _gather(kind, logits, labels, task_spec.ignore_index)
                outputs.append(out.cpu().numpy())
                targets.append(tgt.cpu().numpy())
    finally:
        model.train(was_training)
    if not outputs:
        raise TrainEngineError("predict: the data produced no batches; pass a non-empty dataset")
    out_arr, tgt_arr = np.concatenate(outputs).astype(np.float64), np.concatenate(targets)
    if kind == "regression":
        tgt_arr = tgt_arr.astype(np.float64)
        if target_mean is not None and target_std is not None:
            out_arr, tgt_arr = out_arr * target_std + target_mean, tgt_arr * target_std + target_mean
    byte_counts = None
    if kind == "language_modeling" and vocab == 256:
        byte_counts = tgt_arr.astype(np.float64)  # a byte-level vocabulary: one byte per token
    group_arr = np.concatenate(groups) if reward and len(groups) == len(outputs) else None
    return Predictions(kind, out_arr, tgt_arr, byte_counts, group_arr)


def _to(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return {k: _to(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to(v, device) for v in inputs)
    return inputs


def _gather(kind: TaskKind, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> tuple[Any, Any]:
    if kind == "classification":
        return torch.softmax(logits, dim=-1), labels.reshape(-1)  # (B, C), (B,)
    if kind == "regression":
        return logits.reshape(labels.shape[0], -1)[:, 0], labels.reshape(labels.shape[0], -1)[:, 0].float()
    # LM: (B, T, V) logits, (B, T) labels -> per-example summed loss and scored-token count.
    token_loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=ignore_index, reduction="none"
    ).reshape(labels.shape)
    return token_loss.sum(dim=1), (labels != ignore_index).sum(dim=1)
