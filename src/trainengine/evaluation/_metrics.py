"""Evaluation metrics: point estimates from scikit-learn / torchmetrics, and their weighted forms.

Each task kind takes one tuple of arrays (first dimension = examples):

- classification: ``(probs (n, C), labels (n,))``
- regression: ``(predictions (n,), targets (n,))``
- language modelling: ``(loss_sums (n,), token_counts (n,), byte_counts (n,))`` (bytes optional)

:func:`compute_metrics` gives the reported numbers and calls scikit-learn / torchmetrics.
The *weighted* forms (``WEIGHTED_METRICS``) take bootstrap weights ``(B, n)`` and return ``(B,)``
values with matrix products, which is what makes 1000 resamples of 10k examples take a fraction
of a second; with all-ones weights each equals its library point estimate (tested metric by
metric), so each resample's value is the library's value on the resampled data.

Example:
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> labels = np.array([0, 1, 1, 1])
    >>> m = compute_metrics("classification", probs, labels)
    >>> m["accuracy"], m["f1_macro"] == m["f1_macro"], sorted(m)[:3]
    (0.75, True, ['accuracy', 'brier', 'ece'])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from trainengine.errors import TrainEngineError

__all__ = [
    "TaskKind",
    "ECE_BINS",
    "WEIGHTED_METRICS",
    "compute_metrics",
    "confusion_matrix",
    "get_weighted_metric",
    "higher_is_better",
    "list_metrics",
    "metrics_for",
]

TaskKind = Literal["classification", "regression", "language_modeling"]
ECE_BINS = 15  # torchmetrics' default number of calibration bins, used everywhere here
_LN2 = math.log(2.0)


# ---------------------------------------------------------------- weighted building blocks


def _wsum(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weighted sum of per-example values for each resample: (B, n) x (n,) -> (B,).

    einsum's own loop, not BLAS: as fast for a matrix-vector product, and BLAS worker threads
    spinning on a busy machine made the bootstrap 2-3x slower.
    """
    return np.einsum("bn,n->b", weights, values)


def _wmean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weighted mean of per-example values for each resample: (B, n) x (n,) -> (B,)."""
    return _wsum(weights, values) / weights.sum(axis=1)


def _group_sums(weights: np.ndarray, codes: np.ndarray, n_groups: int, values: np.ndarray | None = None) -> np.ndarray:
    """Per-resample sums of ``weights * values`` by group code: (B, n) -> (B, n_groups).

    The examples are sorted by code once and summed per run with ``np.add.reduceat``; groups
    with no example are zero.
    """
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    w = weights[:, order] if values is None else weights[:, order] * values[order]
    present, starts = np.unique(sorted_codes, return_index=True)
    out = np.zeros((weights.shape[0], n_groups))
    out[:, present] = np.add.reduceat(w, starts, axis=1)
    return out


def _confusion(weights: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-resample confusion counts (B, C, C): rows = true class, columns = predicted class."""
    c = probs.shape[1]
    codes = labels.astype(np.int64) * c + probs.argmax(axis=1)
    return _group_sums(weights, codes, c * c).reshape(-1, c, c)


def _prf(weights: np.ndarray, probs: np.ndarray, labels: np.ndarray, which: str, average: str) -> np.ndarray:
    # scikit-learn's definitions: per-class scores over the labels present in y_true or y_pred,
    # 0 where undefined (zero_division), averaged plainly (macro) or by support (weighted).
    cm = _confusion(weights, probs, labels)
    tp = np.diagonal(cm, axis1=1, axis2=2)  # (B, C)
    true_count, pred_count = cm.sum(axis=2), cm.sum(axis=1)
    denom = {"precision": pred_count, "recall": true_count, "f1": (true_count + pred_count) / 2}[which]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.where(denom > 0, tp / denom, 0.0)
    if average == "weighted":
        return (per_class * true_count).sum(axis=1) / true_count.sum(axis=1)
    present = (true_count + pred_count) > 0
    return (per_class * present).sum(axis=1) / present.sum(axis=1)


def _binary_auc(weights: np.ndarray, scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney ROC-AUC (ties count one half), equal to roc_auc_score: (B,)."""
    order = np.argsort(scores, kind="stable")
    s, pos = scores[order], positive[order].astype(bool)
    w = weights[:, order]  # (B, n) in ascending score order
    # Negative weight strictly below each example and inside its tie group, from one cumsum.
    cum = np.zeros((w.shape[0], w.shape[1] + 1))
    np.cumsum(np.where(pos, 0.0, w), axis=1, out=cum[:, 1:])
    new_group = np.r_[True, s[1:] != s[:-1]]
    start = np.maximum.accumulate(np.where(new_group, np.arange(len(s)), 0))  # first index of each tie group
    end = np.r_[start[1:][new_group[1:]], len(s)][np.cumsum(new_group) - 1]  # one past its last index
    below, tied = cum[:, start[pos]], cum[:, end[pos]] - cum[:, start[pos]]
    wp = w[:, pos]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (wp * (below + 0.5 * tied)).sum(axis=1) / (wp.sum(axis=1) * (w.sum(axis=1) - wp.sum(axis=1)))


def _roc_auc(weights: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    c = probs.shape[1]
    if c == 2:
        return _binary_auc(weights, probs[:, 1], labels == 1)
    # One-vs-rest macro average; a class absent from a resample is left out of its average.
    per_class = np.stack([_binary_auc(weights, probs[:, k], labels == k) for k in range(c)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_class, axis=1)


def _true_class_prob(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    eps = np.finfo(probs.dtype).eps  # scikit-learn's log_loss clipping
    return np.clip(probs[np.arange(len(labels)), labels.astype(np.int64)], eps, 1 - eps)


def _brier_terms(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    onehot = np.eye(probs.shape[1])[labels.astype(np.int64)]
    if probs.shape[1] == 2:  # scikit-learn's binary Brier score: the positive class only
        return (probs[:, 1] - onehot[:, 1]) ** 2
    return ((probs - onehot) ** 2).sum(axis=1)


def _ece_bins(confidence: np.ndarray) -> np.ndarray:
    # The same bucketing as torchmetrics (bucketize right=True over linspace(0, 1, bins + 1)).
    conf = torch.as_tensor(np.ascontiguousarray(confidence))
    return (torch.bucketize(conf, torch.linspace(0, 1, ECE_BINS + 1, dtype=conf.dtype), right=True) - 1).numpy()


def _ece_parts(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, accuracy) per example: top-label for probs (n, C); (prediction, target) for 1-D."""
    if first.ndim == 2:
        if first.shape[1] == 2:  # torchmetrics' binary calibration: p(class 1) against the label
            return first[:, 1], second.astype(np.float64)
        return first.max(axis=1), (first.argmax(axis=1) == second).astype(np.float64)
    return first.astype(np.float64), second.astype(np.float64)


def _ece(weights: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    conf, acc = _ece_parts(first, second)
    bins = _ece_bins(conf)
    conf_sum = _group_sums(weights, bins, ECE_BINS + 1, conf)  # (B, bins)
    acc_sum = _group_sums(weights, bins, ECE_BINS + 1, acc)
    return np.abs(acc_sum - conf_sum).sum(axis=1) / weights.sum(axis=1)


def _r2(weights: np.ndarray, preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    y = targets - targets.mean()  # centring changes no R^2 and keeps the sums well conditioned
    total = weights.sum(axis=1)
    ss_res = _wsum(weights, (preds - targets) ** 2)
    sq = _wsum(weights, y**2)
    ss_tot = sq - _wsum(weights, y) ** 2 / total
    # A resample whose targets are all equal has no variance: R^2 is undefined there (NaN), not
    # the huge number that rounding left in ss_tot would give.
    ss_tot = np.where(ss_tot > 1e-9 * sq, ss_tot, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - ss_res / ss_tot


def _lm_loss(weights: np.ndarray, loss_sums: np.ndarray, token_counts: np.ndarray, *_: np.ndarray) -> np.ndarray:
    return _wsum(weights, loss_sums) / _wsum(weights, token_counts)


def _bits_per_byte(weights: np.ndarray, loss_sums: np.ndarray, _tokens: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    if not rest:
        raise TrainEngineError("bits_per_byte needs byte counts: pass (loss_sums, token_counts, byte_counts)")
    return _wsum(weights, loss_sums) / _LN2 / _wsum(weights, rest[0])


WEIGHTED_METRICS: dict[str, Callable[..., np.ndarray]] = {
    # classification: (probs (n, C), labels (n,))
    "accuracy": lambda w, p, y: _wmean(w, (p.argmax(axis=1) == y).astype(np.float64)),
    "precision_macro": lambda w, p, y: _prf(w, p, y, "precision", "macro"),
    "recall_macro": lambda w, p, y: _prf(w, p, y, "recall", "macro"),
    "f1_macro": lambda w, p, y: _prf(w, p, y, "f1", "macro"),
    "precision_weighted": lambda w, p, y: _prf(w, p, y, "precision", "weighted"),
    "recall_weighted": lambda w, p, y: _prf(w, p, y, "recall", "weighted"),
    "f1_weighted": lambda w, p, y: _prf(w, p, y, "f1", "weighted"),
    "roc_auc": _roc_auc,
    "log_loss": lambda w, p, y: _wmean(w, -np.log(_true_class_prob(p, y))),
    "brier": lambda w, p, y: _wmean(w, _brier_terms(p, y)),
    "ece": _ece,  # also regression with probability targets: (predictions (n,), targets (n,))
    # regression: (predictions (n,), targets (n,))
    "mse": lambda w, p, t: _wmean(w, (p - t) ** 2),
    "rmse": lambda w, p, t: np.sqrt(_wmean(w, (p - t) ** 2)),
    "mae": lambda w, p, t: _wmean(w, np.abs(p - t)),
    "r2": _r2,
    # language modelling: (loss_sums (n,), token_counts (n,)[, byte_counts (n,)])
    "loss": _lm_loss,
    "perplexity": lambda w, *a: np.exp(_lm_loss(w, *a)),
    "bits_per_token": lambda w, *a: _lm_loss(w, *a) / _LN2,
    "bits_per_byte": _bits_per_byte,
}
for _name, _fn in WEIGHTED_METRICS.items():
    _fn.__name__ = _name

_LOWER_IS_BETTER = {
    "log_loss",
    "brier",
    "ece",
    "mse",
    "rmse",
    "mae",
    "loss",
    "perplexity",
    "bits_per_token",
    "bits_per_byte",
}

_BY_TASK: dict[str, tuple[str, ...]] = {
    "classification": (
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
        "roc_auc",
        "log_loss",
        "brier",
        "ece",
    ),
    "regression": ("mse", "rmse", "mae", "r2", "ece"),
    "language_modeling": ("loss", "perplexity", "bits_per_token", "bits_per_byte"),
}


def list_metrics() -> list[str]:
    """Names of the built-in metrics (any of them works in ``bootstrap_ci`` / ``paired_bootstrap``)."""
    return sorted(WEIGHTED_METRICS)


def get_weighted_metric(name: str) -> Callable[..., np.ndarray]:
    """The weighted (bootstrap) form of a built-in metric.

    Raises:
        TrainEngineError: an unknown name (the message lists the available ones).
    """
    try:
        return WEIGHTED_METRICS[name]
    except KeyError:
        raise TrainEngineError(f"unknown metric {name!r} — available: {', '.join(list_metrics())}") from None


def higher_is_better(name: str) -> bool:
    """Direction of a built-in metric (accuracy: True; log_loss: False)."""
    get_weighted_metric(name)
    return name not in _LOWER_IS_BETTER


def metrics_for(task: TaskKind, *arrays: np.ndarray) -> tuple[str, ...]:
    """The metric names that apply to ``task`` on these arrays (ECE of regression only for [0, 1] targets, ...)."""
    if task not in _BY_TASK:
        raise TrainEngineError(f"unknown task kind {task!r} — available: {', '.join(_BY_TASK)}")
    names = _BY_TASK[task]
    if task == "regression":
        preds, targets = arrays[0], arrays[1]
        in_unit = bool(((targets >= 0) & (targets <= 1)).all() and ((preds >= 0) & (preds <= 1)).all())
        names = tuple(n for n in names if n != "ece" or in_unit)
    if task == "classification" and len(np.unique(arrays[1])) < 2:
        names = tuple(n for n in names if n != "roc_auc")  # undefined with one class present
    if task == "language_modeling" and len(arrays) < 3:
        names = tuple(n for n in names if n != "bits_per_byte")
    return names


def _classification(probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    from sklearn import metrics as skm
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    c = probs.shape[1]
    pred = probs.argmax(axis=1)
    classes = list(range(c))
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero_division / undefined-recall warnings: 0 is the documented value
        out["accuracy"] = skm.accuracy_score(labels, pred)
        for average in ("macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(labels, pred, average=average, zero_division=0)
            out[f"precision_{average}"], out[f"recall_{average}"], out[f"f1_{average}"] = p, r, f
        if "roc_auc" in names:
            if c == 2:
                out["roc_auc"] = skm.roc_auc_score(labels, probs[:, 1])
            else:
                # OvR macro over the classes present (scikit-learn refuses a class absent from labels).
                present = np.unique(labels)
                scores = [skm.roc_auc_score(labels == k, probs[:, k]) for k in present]
                out["roc_auc"] = float(np.mean(scores))
        out["log_loss"] = skm.log_loss(labels, probs, labels=classes)
        out["brier"] = (
            skm.brier_score_loss(labels, probs[:, 1]) if c == 2 else skm.brier_score_loss(labels, probs, labels=classes)
        )
    p_t, y_t = torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.long)
    if c == 2:
        out["ece"] = binary_calibration_error(p_t[:, 1].contiguous(), y_t, n_bins=ECE_BINS)
    else:
        out["ece"] = multiclass_calibration_error(p_t, y_t, num_classes=c, n_bins=ECE_BINS)
    return {k: float(v) for k, v in out.items() if k in names}


def _regression(preds: np.ndarray, targets: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    from sklearn import metrics as skm
    from torchmetrics.functional.classification import binary_calibration_error

    out = {
        "mse": skm.mean_squared_error(targets, preds),
        "rmse": skm.root_mean_squared_error(targets, preds),
        "mae": skm.mean_absolute_error(targets, preds),
        "r2": skm.r2_score(targets, preds),
    }
    if "ece" in names:
        # Probability targets (seed 001's step scores): torchmetrics' binary calibration error with
        # the soft target as the "accuracy" of each prediction (validation would demand 0/1 labels).
        out["ece"] = binary_calibration_error(
            torch.as_tensor(preds, dtype=torch.float64),
            torch.as_tensor(targets, dtype=torch.float64),
            n_bins=ECE_BINS,
            validate_args=False,
        )
    return {k: float(v) for k, v in out.items() if k in names}


def _language_modeling(arrays: tuple[np.ndarray, ...], names: tuple[str, ...]) -> dict[str, float]:
    # Per-token cross-entropy summed on the device by predict(); the corpus loss is the token-
    # weighted mean, and perplexity / bits are its definitions (exp, / ln 2), as torchmetrics'
    # Perplexity computes them.
    ones = np.ones((1, len(arrays[0])))
    return {n: float(WEIGHTED_METRICS[n](ones, *arrays)[0]) for n in names}


def compute_metrics(task: TaskKind, *arrays: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Point estimates of every metric of ``task`` (scikit-learn / torchmetrics).

    Args:
        task: ``"classification"``, ``"regression"`` or ``"language_modeling"``.
        *arrays: the task's arrays (see the module docstring).
        names: a subset of metrics; default: ``metrics_for(task, *arrays)``.

    Returns:
        ``{metric: value}``.

    Example:
        >>> compute_metrics("regression", np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0]))["mae"]
        0.3333333333333333
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    chosen = metrics_for(task, *arrays) if names is None else names
    if task == "classification":
        return _classification(arrays[0], arrays[1], chosen)
    if task == "regression":
        return _regression(arrays[0], arrays[1], chosen)
    return _language_modeling(arrays, chosen)


def confusion_matrix(probs: np.ndarray, labels: np.ndarray) -> list[list[int]]:
    """scikit-learn's confusion matrix (rows = true class, columns = predicted) over all C classes."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    c = probs.shape[1]
    return sk_confusion(labels, probs.argmax(axis=1), labels=list(range(c))).tolist()
