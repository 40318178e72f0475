"""Evaluation figures: the reliability diagram and the residual plot (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["reliability_diagram", "residual_plot"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def reliability_diagram(confidence: np.ndarray, correct: np.ndarray, path: str | Path, *, n_bins: int = 15) -> Path:
    """Write a reliability diagram: observed frequency against mean confidence per bin.

    Args:
        confidence: predicted probability per example (top-label, or p(positive) for binary).
        correct: 1 where the prediction was right (or the positive class / soft target).
        path: the PNG to write.
        n_bins: equal-width confidence bins (torchmetrics' ECE uses 15).

    Returns:
        ``path``.

    Example:
        >>> import tempfile
        >>> p = reliability_diagram(np.array([0.9, 0.8, 0.3]), np.array([1, 0.5, 0]), tempfile.mktemp(suffix=".png"))
        >>> p.read_bytes()[:4] == b"\\x89PNG"
        True
    """
    plt = _pyplot()
    # scikit-learn's calibration_curve, but for soft targets too (a reward model's 0 / 0.5 / 1):
    # equal-width bins of the confidence, each bin's mean confidence against its mean target.
    conf, target = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    bins = np.clip((conf * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    kept = count > 0
    predicted = np.bincount(bins, weights=conf, minlength=n_bins)[kept] / count[kept]
    observed = np.bincount(bins, weights=target, minlength=n_bins)[kept] / count[kept]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def residual_plot(predictions: np.ndarray, targets: np.ndarray, path: str | Path) -> Path:
    """Write a residual plot (target - prediction against prediction) as a PNG; returns ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(predictions, targets - predictions, s=6, alpha=0.5)
    ax.axhline(0.0, color="grey", linestyle="--")
    ax.set_xlabel("prediction")
    ax.set_ylabel("residual (target - prediction)")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
