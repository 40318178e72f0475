"""Callbacks that feed the Trainer's logs to trackers and the experiment database."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["TrackerCallback", "numeric_metrics"]

logger = logging.getLogger("trainengine")


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The metric entries of a log record (``train/loss``, ``val/accuracy``, ``lr``, ``system/...``)."""
    return {
        k: float(v) for k, v in record.items()
        if k not in ("step", "epoch", "type", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class TrackerCallback:
    """Sends every log record of a run to the ``tracking.backends`` trackers (rank 0 only)."""

    rank_zero_only = True

    def __init__(self, backends: list[str]) -> None:
        self.backends = list(backends)
        self.tracker: Any = None

    def on_train_start(self, trainer: Any) -> None:
        from trainengine.tracking._tracker import ExperimentTracker

        cfg = trainer.config
        name = trainer.run_dir.name if trainer.run_dir is not None else cfg.tracking.experiment_name
        directory = trainer.run_dir if trainer.run_dir is not None else None
        self.tracker = ExperimentTracker(
            cfg.tracking.project, name, cfg.to_dict(), backend=self.backends, log_dir=cfg.tracking.output_dir,
            tags=list(cfg.tracking.tags), notes=cfg.tracking.notes, directory=directory,
        )

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        metrics = numeric_metrics(record)
        if metrics:
            self.tracker.log_metrics(metrics, step=int(record.get("step", trainer.state.step)))

    def on_train_end(self, trainer: Any, results: dict[str, Any]) -> None:
        self.tracker.finish("completed")

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        if self.tracker is not None:
            self.tracker.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
