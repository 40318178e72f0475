"""EvaluationReport and the files it writes: eval_metrics.json, worst.jsonl and the figures."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainengine._io import atomic_write_text
from trainengine.evaluation._predict import Predictions

__all__ = ["EVAL_SCHEMA_VERSION", "EvaluationReport"]

EVAL_SCHEMA_VERSION = 1


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, nan / inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class EvaluationReport:
    """What :func:`evaluate` found, and :meth:`save` to write it.

    ``eval_metrics.json`` (schema version 1)::

        {
          "schema_version": 1,
          "task": "classification" | "regression" | "language_modeling",
          "n": 360,                                   # examples evaluated
          "overall": {"accuracy": 0.93, ...},         # point estimates (scikit-learn / torchmetrics)
          "ci": {"accuracy": [0.90, 0.95], ...},      # percentile bootstrap interval per metric
          "confidence": 0.95, "n_bootstrap": 1000, "seed": 0,
          "per_segment": {"<segment>": {"n": 120, "metrics": {...}, "ci": {...}}, ...},  # {} without segments
          "confusion_matrix": [[...], ...],           # classification: rows true, columns predicted; else null
          "threshold": {                              # binary classification only, else null
            "tuned_on": "threshold_data" | "evaluation data",
            "best_f1": {"threshold": 0.42, "f1_tuned": 0.91, "f1": 0.90},
            "youden_j": {"threshold": 0.37, "j_tuned": 0.83, "j": 0.81}
          },
          "checkpoint": "runs/x/checkpoints/ckpt-00000100" | null,
          "data_fingerprint": "sha256..." | null,
          "created_at": "2026-11-30T16:00:00+00:00",
          "files": {"worst": "worst.jsonl", "reliability": "reliability.png", ...}
        }

    Undefined values (ROC-AUC with one class present) are ``null``. ``worst.jsonl`` holds the
    ``worst_k`` examples with the highest loss, one JSON object a line: ``index`` (position in the
    data), ``label``, ``prediction``, ``loss`` (and ``probability`` of the predicted class for
    classification, ``segment`` when segments were given).
    """

    task: str
    n: int
    overall: dict[str, float]
    ci: dict[str, list[float]]
    confidence: float
    n_bootstrap: int
    seed: int
    per_segment: dict[str, dict[str, Any]] = field(default_factory=dict)
    confusion_matrix: list[list[int]] | None = None
    threshold: dict[str, Any] | None = None
    checkpoint: str | None = None
    data_fingerprint: str | None = None
    created_at: str = ""
    worst: list[dict[str, Any]] = field(default_factory=list)
    predictions: Predictions | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The ``eval_metrics.json`` content (without ``files``)."""
        return _clean(
            {
                "schema_version": EVAL_SCHEMA_VERSION,
                "task": self.task,
                "n": self.n,
                "overall": self.overall,
                "ci": self.ci,
                "confidence": self.confidence,
                "n_bootstrap": self.n_bootstrap,
                "seed": self.seed,
                "per_segment": self.per_segment,
                **({"per_dataset": self.per_dataset()} if self._by_source() else {}),
                "confusion_matrix": self.confusion_matrix,
                "threshold": self.threshold,
                "checkpoint": self.checkpoint,
                "data_fingerprint": self.data_fingerprint,
                "created_at": self.created_at,
            }
        )

    def _by_source(self) -> bool:
        return self.predictions is not None and self.predictions.groups is not None and bool(self.per_segment)

    def per_dataset(self) -> dict[str, dict[str, Any]]:
        """Reward models: each data source's metrics (``{"prm800k": {"n": ..., "mse": ...}}``)."""
        return {name: {"n": seg["n"], **seg["metrics"]} for name, seg in self.per_segment.items()}

    def summary(self) -> str:
        """``metric  value  [low, high]`` lines."""
        lines = [f"{self.task} on {self.n} examples ({self.confidence:.0%} bootstrap CI, {self.n_bootstrap} resamples)"]
        for name, value in self.overall.items():
            lo, hi = self.ci.get(name, [float("nan"), float("nan")])
            lines.append(f"  {name:<20} {value:.4f}  [{lo:.4f}, {hi:.4f}]")
        return "\n".join(lines)

    def save(self, output_dir: str | Path) -> Path:
        """Write eval_metrics.json, worst.jsonl and the figures into ``output_dir``; returns the JSON path."""
        from trainengine.evaluation._plots import reliability_diagram, residual_plot

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"worst": "worst.jsonl"}
        atomic_write_text(out / "worst.jsonl", "".join(json.dumps(_clean(r)) + "\n" for r in self.worst))
        p = self.predictions
        if p is not None and p.task == "classification":
            probs, labels = p.outputs, p.targets
            if probs.shape[1] == 2:
                conf, hit = probs[:, 1], labels == 1
            else:
                conf, hit = probs.max(axis=1), probs.argmax(axis=1) == labels
            reliability_diagram(conf, hit.astype(np.float64), out / "reliability.png")
            files["reliability"] = "reliability.png"
        elif p is not None and p.task == "regression":
            residual_plot(p.outputs, p.targets, out / "residuals.png")
            files["residuals"] = "residuals.png"
            if "ece" in self.overall:  # probability targets: calibration of the predicted probability
                reliability_diagram(np.clip(p.outputs, 0, 1), p.targets, out / "reliability.png")
                files["reliability"] = "reliability.png"
        payload = self.to_dict() | {"files": files}
        path = out / "eval_metrics.json"
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
        return path
