"""Vectorised bootstrap confidence intervals and the paired bootstrap test.

A bootstrap resample of ``n`` examples is the same as giving each example a weight: how many
times it was drawn. ``B`` resamples are one weight matrix ``(B, n)`` (built from an index matrix
by one ``bincount``), and every built-in metric is written as a *weighted metric* that takes that
matrix and the un-resampled arrays and returns ``(B,)`` values with a few matrix products —
no Python loop over resamples and no ``(B, n, C)`` copies of the data. The interval is the
percentile interval of the ``B`` values.

A weighted metric with all-ones weights equals the scikit-learn / torchmetrics point estimate
(tests/evaluation/test_metrics.py checks each one), so resample ``b`` is exactly the metric on
the resampled data.

Example:
    >>> import numpy as np
    >>> from trainengine.evaluation import bootstrap_ci, paired_bootstrap
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 2, 500)
    >>> probs = np.eye(2)[np.where(rng.random(500) < 0.8, labels, 1 - labels)]  # 80% right
    >>> ci = bootstrap_ci("accuracy", probs, labels, n_bootstrap=1000, seed=0)
    >>> bool(ci.low < 0.8 < ci.high)
    True
    >>> result = paired_bootstrap("accuracy", (probs, labels), (np.full((500, 2), 0.5), labels))
    >>> result.p_value < 0.01
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from trainengine.errors import TrainEngineError

__all__ = [
    "ConfidenceInterval",
    "PairedBootstrapResult",
    "WeightedMetric",
    "bootstrap_weights",
    "bootstrap_distribution",
    "bootstrap_ci",
    "bootstrap_cis",
    "paired_bootstrap",
    "from_unweighted",
]

# Resamples are drawn in chunks so the (chunk, n) weight matrix stays small (~32 MB of float64):
# 10k examples x 1000 resamples never materialises more than this at once.
_CHUNK_ELEMENTS = 4_000_000


class WeightedMetric(Protocol):
    """A metric over bootstrap weights: ``(B, n)`` weights and ``n``-row arrays -> ``(B,)`` values."""

    def __call__(self, weights: np.ndarray, *arrays: np.ndarray) -> np.ndarray: ...


MetricLike = str | WeightedMetric


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with its percentile bootstrap interval.

    Attributes:
        estimate: the metric on the data as given.
        low: lower bound of the interval.
        high: upper bound of the interval.
        confidence: the interval's nominal coverage (0.95).
        n_bootstrap: resamples it was computed from.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    n_bootstrap: int

    def to_list(self) -> list[float]:
        """``[low, high]`` as eval_metrics.json stores it."""
        return [self.low, self.high]

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Candidate vs baseline on the same resamples.

    Attributes:
        delta: ``metric(candidate) - metric(baseline)`` on the data as given.
        ci: percentile interval ``(low, high)`` of the per-resample delta.
        p_value: one-sided: the share of resamples where the candidate is NOT better
            (delta <= 0 when higher is better, delta >= 0 when lower is better). Small means
            the candidate is better with confidence ``1 - p_value``.
        candidate: the candidate's own interval (same resamples).
        baseline: the baseline's own interval (same resamples).
        higher_is_better: the direction ``p_value`` was computed for.
        confidence: the nominal coverage of the intervals.
    """

    delta: float
    ci: tuple[float, float]
    p_value: float
    candidate: ConfidenceInterval
    baseline: ConfidenceInterval
    higher_is_better: bool
    confidence: float

    def is_significant(self, confidence: float | None = None) -> bool:
        """True when the candidate is better at ``confidence`` (default: the run's): p < 1 - confidence."""
        level = self.confidence if confidence is None else confidence
        return self.p_value < 1.0 - level


def _resolve(metric: MetricLike) -> tuple[WeightedMetric, str]:
    if isinstance(metric, str):
        from trainengine.evaluation._metrics import get_weighted_metric

        return get_weighted_metric(metric), metric
    if not callable(metric):
        raise TypeError(f"metric must be a metric name or a weighted metric callable, got {type(metric).__name__}")
    return metric, getattr(metric, "__name__", "metric")


def _check_arrays(arrays: Sequence[Any], what: str) -> tuple[list[np.ndarray], int]:
    if not arrays:
        raise TrainEngineError(f"{what}: no arrays given; pass e.g. (probs, labels) or (predictions, targets)")
    out = [np.asarray(a) for a in arrays]
    n = len(out[0])
    bad = [a.shape for a in out if len(a) != n]
    if bad:
        shapes = ", ".join(str(a.shape) for a in out)
        raise TrainEngineError(f"{what}: arrays must share their first dimension (examples); got shapes {shapes}")
    if n < 2:
        raise TrainEngineError(f"{what}: a bootstrap needs at least 2 examples, got {n}")
    return out, n


def _check_options(n_bootstrap: int, confidence: float) -> None:
    if not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 1:
        raise TrainEngineError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    if not 0.0 < confidence < 1.0:
        raise TrainEngineError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")


def bootstrap_weights(n: int, n_bootstrap: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Bootstrap weight matrices over ``n`` examples, in chunks, drawn reproducibly from ``seed``.

    Args:
        n: number of examples.
        n_bootstrap: total resamples ``B``.
        seed: seed of the index draws; the same ``(n, n_bootstrap, seed)`` gives the same weights.

    Yields:
        ``(rows, n)`` float64 matrices of draw counts (each row sums to ``n``); together their
        rows are the ``B`` resamples.

    Example:
        >>> w = np.concatenate(list(bootstrap_weights(5, 3, seed=0)))
        >>> w.shape, w.sum(axis=1).tolist()
        ((3, 5), [5.0, 5.0, 5.0])
    """
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_bootstrap:
        rows = min(rows_per_chunk, n_bootstrap - done)
        idx = rng.integers(0, n, size=(rows, n))  # (rows, n): the index matrix
        # Each row's draw counts by one bincount: offset row r's indices by r * n.
        idx += (np.arange(rows) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)
        done += rows


def bootstrap_distribution(
    metric: MetricLike, *arrays: Any, n_bootstrap: int = 1000, seed: int = 0
) -> tuple[float, np.ndarray]:
    """The metric on the data and on ``n_bootstrap`` resamples of it.

    Args:
        metric: a built-in metric name (``list_metrics()``) or a :class:`WeightedMetric`.
        *arrays: the metric's arrays, first dimension = examples.
        n_bootstrap: resamples.
        seed: resampling seed.

    Returns:
        ``(estimate, values)`` with ``values`` of shape ``(n_bootstrap,)``.
    """
    fn, name = _resolve(metric)
    data, n = _check_arrays(arrays, f"bootstrap of {name!r}")
    _check_options(n_bootstrap, 0.5)
    estimate = float(fn(np.ones((1, n)), *data)[0])
    values = np.concatenate([fn(w, *data) for w in bootstrap_weights(n, n_bootstrap, seed)])
    return estimate, values


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    # nan-aware: a resample where a metric is undefined (ROC-AUC of a one-class resample) is skipped.
    quantile = np.nanquantile if np.isnan(values).any() else np.quantile  # the nan-aware one is slower
    low, high = quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    metric: MetricLike,
    *arrays: Any,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap confidence interval of a metric, vectorised over resamples.

    Args:
        metric: a built-in metric name (``"accuracy"``, ``"f1_macro"``, ``"roc_auc"``, ``"mse"``,
            ``"r2"``, ``"perplexity"``, ...; ``list_metrics()``) or a :class:`WeightedMetric`
            (``from_unweighted(fn)`` adapts a plain ``fn(*arrays) -> float``, slowly).
        *arrays: the metric's arrays, first dimension = examples: ``(probs (n, C), labels (n,))``
            for classification, ``(predictions (n,), targets (n,))`` for regression,
            ``(loss_sums (n,), token_counts (n,))`` for language modelling.
        n_bootstrap: resamples ``B``.
        confidence: nominal coverage of the interval.
        seed: resampling seed (same seed, same interval).

    Returns:
        A :class:`ConfidenceInterval`.

    Raises:
        TrainEngineError: arrays of different lengths, fewer than 2 examples, bad options.

    Example:
        >>> y = np.array([0.0, 1.0, 2.0, 3.0] * 25)
        >>> ci = bootstrap_ci("mae", y + 0.5, y, n_bootstrap=200)
        >>> (ci.estimate, ci.low, ci.high)
        (0.5, 0.5, 0.5)
    """
    _check_options(n_bootstrap, confidence)
    estimate, values = bootstrap_distribution(metric, *arrays, n_bootstrap=n_bootstrap, seed=seed)
    low, high = _interval(values, confidence)
    return ConfidenceInterval(estimate, low, high, confidence, int(n_bootstrap))


def bootstrap_cis(
    metrics: Sequence[MetricLike],
    *arrays: Any,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, ConfidenceInterval]:
    """Intervals of several metrics of the same arrays from ONE set of resamples (what evaluate uses).

    Args:
        metrics: metric names or weighted metrics.
        *arrays: the metrics' shared arrays.
        n_bootstrap: resamples.
        confidence: nominal coverage.
        seed: resampling seed (each metric gets the interval ``bootstrap_ci`` would give it).

    Returns:
        ``{metric name: ConfidenceInterval}``.

    Example:
        >>> y = np.arange(100.0)
        >>> cis = bootstrap_cis(["mae", "mse"], y + 1.0, y, n_bootstrap=100)
        >>> cis["mae"].estimate, cis["mse"].high
        (1.0, 1.0)
    """
    _check_options(n_bootstrap, confidence)
    resolved = [_resolve(m) for m in metrics]
    data, n = _check_arrays(arrays, "bootstrap")
    ones = np.ones((1, n))
    values: dict[str, list[np.ndarray]] = {name: [] for _, name in resolved}
    for w in bootstrap_weights(n, n_bootstrap, seed):
        for fn, name in resolved:
            values[name].append(fn(w, *data))
    out = {}
    for fn, name in resolved:
        low, high = _interval(np.concatenate(values[name]), confidence)
        out[name] = ConfidenceInterval(float(fn(ones, *data)[0]), low, high, confidence, int(n_bootstrap))
    return out


def paired_bootstrap(
    metric: MetricLike,
    candidate: Sequence[Any],
    baseline: Sequence[Any],
    *,
    higher_is_better: bool | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrapResult:
    """Is the candidate better than the baseline on the same examples? A paired bootstrap.

    Both models are scored on the same resamples (one weight matrix), so the per-example
    correlation between them cancels out of the difference.

    Args:
        metric: a built-in metric name or a :class:`WeightedMetric`.
        candidate: the candidate's arrays, e.g. ``(probs_candidate, labels)``.
        baseline: the baseline's arrays on the SAME examples in the same order, e.g.
            ``(probs_baseline, labels)``.
        higher_is_better: direction of the metric; None takes it from the built-in metric's
            definition (required for a custom callable).
        n_bootstrap: resamples.
        confidence: coverage of the intervals (and the default level of ``is_significant``).
        seed: resampling seed.

    Returns:
        A :class:`PairedBootstrapResult` (delta, its interval, the one-sided p-value, both intervals).

    Raises:
        TrainEngineError: the two sides have different numbers of examples, or no direction is known.

    Example:
        >>> labels = np.array([0, 1] * 100)
        >>> good, bad = np.eye(2)[labels] * 0.8 + 0.1, np.full((200, 2), 0.5)
        >>> r = paired_bootstrap("log_loss", (good, labels), (bad, labels))
        >>> bool(r.delta < 0 and r.is_significant())
        True
    """
    fn, name = _resolve(metric)
    if higher_is_better is None:
        if not isinstance(metric, str):
            raise TrainEngineError(
                "paired_bootstrap with a custom metric needs higher_is_better=True or False "
                "(built-in metric names know their direction)"
            )
        from trainengine.evaluation._metrics import higher_is_better as _direction

        higher_is_better = _direction(metric)
    _check_options(n_bootstrap, confidence)
    cand, n = _check_arrays(candidate, f"paired bootstrap of {name!r} (candidate)")
    base, n_base = _check_arrays(baseline, f"paired bootstrap of {name!r} (baseline)")
    if n != n_base:
        raise TrainEngineError(
            f"paired bootstrap of {name!r}: candidate has {n} examples, baseline {n_base}; "
            "both must be scored on the same examples in the same order"
        )
    ones = np.ones((1, n))
    est_c, est_b = float(fn(ones, *cand)[0]), float(fn(ones, *base)[0])
    vc, vb = [], []
    for w in bootstrap_weights(n, n_bootstrap, seed):  # the SAME weights for both sides
        vc.append(fn(w, *cand))
        vb.append(fn(w, *base))
    values_c, values_b = np.concatenate(vc), np.concatenate(vb)
    deltas = values_c - values_b
    valid = deltas[~np.isnan(deltas)]
    if valid.size == 0:
        raise TrainEngineError(f"paired bootstrap of {name!r}: the metric is undefined on every resample")
    not_better = valid <= 0 if higher_is_better else valid >= 0
    return PairedBootstrapResult(
        delta=est_c - est_b,
        ci=_interval(deltas, confidence),
        p_value=float(np.mean(not_better)),
        candidate=ConfidenceInterval(est_c, *_interval(values_c, confidence), confidence, int(n_bootstrap)),
        baseline=ConfidenceInterval(est_b, *_interval(values_b, confidence), confidence, int(n_bootstrap)),
        higher_is_better=higher_is_better,
        confidence=confidence,
    )


def from_unweighted(fn: Callable[..., float]) -> WeightedMetric:
    """Adapt a plain ``fn(*arrays) -> float`` into a weighted metric (one call per resample: slow).

    For a metric with no vectorised form; the built-ins need none of this.

    Example:
        >>> from sklearn.metrics import median_absolute_error
        >>> m = from_unweighted(median_absolute_error)
        >>> y = np.arange(10.0)
        >>> bootstrap_ci(m, y, y + 1.0, n_bootstrap=50).estimate
        1.0
    """

    def weighted(weights: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
        positions = np.arange(weights.shape[1])
        out = np.empty(weights.shape[0])
        for row, w in enumerate(weights):
            idx = np.repeat(positions, w.astype(np.int64))  # the resample's indices back from its counts
            out[row] = fn(*(a[idx] for a in arrays))
        return out

    weighted.__name__ = getattr(fn, "__name__", "metric")
    return weighted
