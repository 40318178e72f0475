"""Callbacks that feed the Trainer's logs to trackers and the experiment database.

Both hand every record to one background thread (:class:`BackgroundSink`), so the training
thread never waits on a tracker's disk or network I/O or on a database lock; the queue is
drained before the run is marked finished, so nothing logged is lost on a normal end or an
exception. The database's sink also refreshes the run's heartbeat while the run lives.

Every callback here is safe for any order of events (state is declared in ``__init__``): a run
that fails before ``on_train_start`` reaches them still gets a clean ``on_exception``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from trainengine._liveness import HEARTBEAT_INTERVAL_S

__all__ = ["TrackerCallback", "ExperimentDBCallback", "BackgroundSink", "numeric_metrics"]

logger = logging.getLogger("trainengine")


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The metric entries of a log record (``train/loss``, ``val/accuracy``, ``lr``, ``system/...``)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k not in ("step", "epoch", "type", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class BackgroundSink:
    """Runs submitted calls in order on one daemon thread; ``close`` drains and joins.

    ``heartbeat`` (optional) runs on the same thread every ``heartbeat_s`` seconds until closed.
    """

    _STOP = object()

    def __init__(
        self, name: str, *, heartbeat: Callable[[], Any] | None = None, heartbeat_s: float = HEARTBEAT_INTERVAL_S
    ) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._errors: list[BaseException] = []
        self._heartbeat, self._heartbeat_s = heartbeat, heartbeat_s
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put((fn, args))

    def _run(self) -> None:
        next_beat = time.monotonic() + self._heartbeat_s
        while True:
            try:
                wait = max(0.0, next_beat - time.monotonic()) if self._heartbeat is not None else None
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is self._STOP:
                return
            if item is not None:
                self._call(*item)
            if self._heartbeat is not None and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self._heartbeat_s
                self._call(self._heartbeat, ())

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker failure must not kill training
            if not self._errors:
                logger.error("tracking failed (training goes on): %s: %s", type(exc).__name__, exc)
            self._errors.append(exc)

    def close(self) -> list[BaseException]:
        self._queue.put(self._STOP)
        self._thread.join()
        return self._errors


class TrackerCallback:
    """Sends every log record of a run to the ``tracking.backends`` trackers (rank 0 only)."""

    rank_zero_only = True

    def __init__(self, backends: list[str]) -> None:
        self.backends = list(backends)
        self.tracker: Any = None
        self._sink: BackgroundSink | None = None
        self._pending: list[tuple[dict[str, float], int]] = []
        self._last_flush = time.monotonic()

    def on_train_start(self, trainer: Any) -> None:
        from trainengine.tracking._tracker import ExperimentTracker

        cfg = trainer.config
        name = trainer.run_dir.name if trainer.run_dir is not None else cfg.tracking.experiment_name
        self.tracker = ExperimentTracker(
            cfg.tracking.project,
            name,
            cfg.to_dict(),
            backend=self.backends,
            log_dir=cfg.tracking.output_dir,
            tags=list(cfg.tracking.tags),
            notes=cfg.tracking.notes,
            directory=trainer.run_dir,
        )
        self._pending = []
        self._last_flush = time.monotonic()
        self._sink = BackgroundSink("trainengine-trackers")

    flush_seconds = 1.0

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        metrics = numeric_metrics(record)
        if metrics and self._sink is not None:
            self._pending.append((metrics, int(record.get("step", trainer.state.step))))
            now = time.monotonic()
            if record.get("type") not in ("train", "gradient") or now - self._last_flush >= self.flush_seconds:
                self._flush(now)

    def _flush(self, now: float | None = None) -> None:
        if self._pending and self._sink is not None:
            batch, self._pending = self._pending, []
            self._sink.submit(self._log_batch, batch)
        self._last_flush = time.monotonic() if now is None else now

    def _log_batch(self, batch: list[tuple[dict[str, float], int]]) -> None:
        for metrics, step in batch:
            self.tracker.log_metrics(metrics, step)

    def _finish(self, status: str) -> None:
        self._flush()
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        if self.tracker is not None:
            self.tracker.finish(status)

    def on_train_end(self, trainer: Any, results: dict[str, Any]) -> None:
        self._finish("completed")

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        self._finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")


class ExperimentDBCallback:
    """Records the run in the experiment database: running -> completed / failed / interrupted
    (with the failure reason), and every logged metric with its step and epoch."""

    rank_zero_only = True

    def __init__(self, url: str, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.url = url
        self.heartbeat_interval_s = heartbeat_interval_s
        self.db: Any = None
        self.run_id: int | None = None
        self._sink: BackgroundSink | None = None
        self._pending: list[tuple[dict[str, float], Any, Any]] = []
        self._last_flush = time.monotonic()

    def on_train_start(self, trainer: Any) -> None:
        from trainengine.tracking._db import ExperimentDB

        cfg = trainer.config
        self.db = ExperimentDB(self.url)
        existing = trainer.state.extra.get("experiment_db_run_id") if trainer.resume_from is not None else None
        if existing is not None:
            self.run_id = existing
            self.db.update_run_status(existing, "running")
            self.db.heartbeat(existing, self.heartbeat_interval_s)
        else:
            name = (
                trainer.run_dir.name
                if trainer.run_dir is not None
                else cfg.tracking.run_name or cfg.tracking.experiment_name
            )
            self.run_id = self.db.log_run(
                name,
                config=cfg.to_dict(),
                notes=cfg.tracking.notes,
                tags=list(cfg.tracking.tags),
                experiment=cfg.tracking.experiment_name,
                run_dir=str(trainer.run_dir) if trainer.run_dir else None,
                heartbeat_interval_s=self.heartbeat_interval_s,
            )
        trainer.state.extra["experiment_db_run_id"] = self.run_id  # a resumed run continues this row
        self._pending = []
        self._last_flush = time.monotonic()
        run_id = self.run_id
        self._sink = BackgroundSink(
            "trainengine-experiment-db",
            heartbeat=lambda: self.db.heartbeat(run_id, self.heartbeat_interval_s),
            heartbeat_s=self.heartbeat_interval_s,
        )

    # One transaction per batch: a commit per logging step would cost more than the step.
    flush_every_records = 500
    flush_every_seconds = 10.0

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        metrics = numeric_metrics(record)
        if metrics and self._sink is not None:
            self._pending.append((metrics, record.get("step"), record.get("epoch")))
            now = time.monotonic()
            if (
                record.get("type") not in ("train", "gradient")
                or len(self._pending) >= self.flush_every_records
                or now - self._last_flush >= self.flush_every_seconds
            ):
                self._flush(now)

    def _flush(self, now: float | None = None) -> None:
        if self._pending and self._sink is not None:
            batch, self._pending = self._pending, []
            self._sink.submit(self.db.log_metrics_batch, self.run_id, batch)
        self._last_flush = time.monotonic() if now is None else now

    def _finish(self, status: str, error: str | None = None) -> None:
        self._flush()
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        if self.db is not None and self.run_id is not None:
            self.db.update_run_status(self.run_id, status, error=error)
            self.db.close()

    def on_train_end(self, trainer: Any, results: dict[str, Any]) -> None:
        # A tuning trial stopped by its pruner ended on purpose, early: "pruned", not "completed".
        self._finish("pruned" if results.get("stop_reason") == "pruned" else "completed")

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        self._finish(status, f"{type(exc).__name__}: {exc}")
