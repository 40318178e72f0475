"""Drift arithmetic: histogram binning and the Jensen–Shannon divergence (numpy + stdlib only).

The one home of the formulas that ``trainengine.monitoring`` (profiles, ``compare_profiles``)
and the standalone inference runtime (``serve/_runtime.py``, a bundle's ``inference.py``) both
use, so a drift score means the same number in training and in serving. It imports nothing from
trainengine because export copies it verbatim into every bundle, beside ``inference.py``.

A histogram vector is ``[nonfinite, underflow, *counts, overflow]``: values outside the
reference edges and NaN/Inf values are counted, so data that leaves the reference range shows up
as drift instead of being dropped.

Example:
    >>> import numpy as np
    >>> edges = np.array([0.0, 0.5, 1.0])
    >>> bin_vector(np.array([0.2, 0.7, 3.0, np.nan]), edges).tolist()
    [1.0, 0.0, 1.0, 1.0, 1.0]
    >>> js_divergence([1, 0], [0, 1]), js_divergence([2, 2], [1, 1])
    (1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["js_divergence", "bin_counts", "bin_vector", "histogram_vector", "categorical_js"]


def js_divergence(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between two count or probability vectors.

    ``JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M)`` with ``M = (P + Q) / 2``; the vectors are
    normalised first. Two empty vectors give 0.0; one empty and one not give 1.0. (This equals
    ``scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2``, which returns the distance, but
    keeps the bundle's runtime free of scipy and defines the empty cases.)

    Raises:
        ValueError: For vectors of different shapes or negative entries.
    """
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"js_divergence needs vectors of one length; got {a.shape} and {b.shape}")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("js_divergence needs non-negative counts or probabilities")
    sa, sb = a.sum(), b.sum()
    if sa == 0 or sb == 0:
        return 0.0 if sa == sb else 1.0
    a, b = a / sa, b / sb
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        nz = x > 0  # 0 * log 0 = 0; where x > 0, m > 0 too
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    # Clamp: rounding can put the sum a hair outside [0, 1].
    return float(min(max(0.5 * kl(a) + 0.5 * kl(b), 0.0), 1.0))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Count ``values`` (any shape, flattened) on increasing ``edges``.

    Bin ``i`` is ``[edges[i], edges[i+1])``; the last bin also holds ``edges[-1]``.

    Returns:
        ``(counts (bins,) int64, underflow, overflow, nonfinite)``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    e = np.asarray(edges, dtype=np.float64)
    bins = e.size - 1
    finite = np.isfinite(v)
    v = v[finite]
    below = v < e[0]
    above = v > e[-1]
    inside = v[~below & ~above]
    # side="right" - 1 puts a value equal to an inner edge in the bin it opens;
    # the value edges[-1] gives index `bins` and belongs to the last bin.
    idx = np.minimum(np.searchsorted(e, inside, side="right") - 1, bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.int64)
    return counts, int(below.sum()), int(above.sum()), int((~finite).sum())


def bin_vector(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``[nonfinite, underflow, *counts, overflow]`` of ``values`` on ``edges``, as float64."""
    counts, underflow, overflow, nonfinite = bin_counts(values, edges)
    return np.array([nonfinite, underflow, *counts, overflow], dtype=np.float64)


def histogram_vector(hist: Mapping[str, Any]) -> np.ndarray:
    """The vector of a stored histogram (``Histogram.to_dict()`` / a profile's JSON)."""
    return np.array(
        [hist.get("nonfinite", 0), hist.get("underflow", 0), *hist["counts"], hist.get("overflow", 0)],
        dtype=np.float64,
    )


def categorical_js(reference: Mapping[str, int], current: Mapping[str, int]) -> float:
    """JS divergence of two ``{category: count}`` tables over the union of their categories.

    Example:
        >>> categorical_js({"a": 1}, {"b": 3})
        1.0
    """
    keys = sorted(set(reference) | set(current))
    return js_divergence([reference.get(k, 0) for k in keys], [current.get(k, 0) for k in keys])
