"""``RetrainingTrigger``: decide when a model needs retraining, and submit exactly one job per cool-down.

:meth:`RetrainingTrigger.should_retrain` compares the current metric with a reference (the
model's metric at deployment) and a drift score with its threshold, and says why. The result is
truthy when retraining is due. :meth:`RetrainingTrigger.fire` also submits the retraining job.
The cool-down (``min_days_between_retrains``) is recorded in the job database and checked in the
same transaction that queues the job, so several monitors or servers firing together submit one
job per window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from trainengine.jobs._store import JobError, JobManager

__all__ = ["RetrainingTrigger", "RetrainDecision", "scrape_drift_score", "retraining_alert_action", "retrain_on_drift"]

DRIFT_METRIC = "trainengine_serve_drift_score"

DAY = 86400.0


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain, and why (truthy when retraining is due)."""

    retrain: bool
    reason: str
    degradation: float | None = None
    drift_score: float | None = None

    def __bool__(self) -> bool:
        return self.retrain


def _lookup(metrics: Mapping[str, Any], name: str) -> float | None:
    """``val_loss`` / ``val/loss`` / ``loss``: the metric under any of its spellings."""
    bare = name.split("/", 1)[-1].removeprefix("val_")
    for key in (name, f"val/{bare}", f"val_{bare}", bare):
        if key in metrics and metrics[key] is not None:
            return float(metrics[key])
    return None


class RetrainingTrigger:
    """Seed 000's retraining trigger.

    Args:
        monitor_metric: The metric to watch (``val_loss``, ``val/accuracy``, ``accuracy``, ...).
        degradation_threshold: Relative worsening that calls for retraining (0.1 = 10% worse
            than the reference: higher for a loss, lower for an accuracy).
        min_days_between_retrains: The cool-down between two retraining jobs.
        drift_threshold: A drift score above it calls for retraining (None: drift is ignored).
        mode: ``min`` / ``max`` (whether lower or higher is better); ``auto`` from the metric's name.
        name: The trigger's name in the job database (its cool-down is kept per name).

    Example:
        >>> trigger = RetrainingTrigger("val_loss", degradation_threshold=0.1, drift_threshold=0.2)
        >>> decision = trigger.should_retrain({"val_loss": 0.60}, {"val_loss": 0.50}, drift_score=0.05)
        >>> bool(decision), decision.reason
        (True, 'val_loss is 20.0% worse than the reference (0.6 vs 0.5; threshold 10%)')
    """

    def __init__(
        self,
        monitor_metric: str = "val_loss",
        degradation_threshold: float = 0.1,
        min_days_between_retrains: float = 7.0,
        drift_threshold: float | None = 0.2,
        *,
        mode: Literal["auto", "min", "max"] = "auto",
        name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(degradation_threshold, (int, float)) and degradation_threshold >= 0):
            raise JobError(f"degradation_threshold must be a number >= 0, got {degradation_threshold!r}")
        if not (isinstance(min_days_between_retrains, (int, float)) and min_days_between_retrains >= 0):
            raise JobError(f"min_days_between_retrains must be a number >= 0, got {min_days_between_retrains!r}")
        if mode == "auto":
            from trainengine.tasks import METRIC_MODES

            bare = monitor_metric.split("/", 1)[-1].removeprefix("val_")
            if bare not in METRIC_MODES:
                raise JobError(
                    f"cannot tell whether {monitor_metric!r} should go up or down: pass mode='min' or mode='max'"
                )
            mode = "min" if METRIC_MODES[bare] == "min" else "max"
        self.monitor_metric = monitor_metric
        self.degradation_threshold = float(degradation_threshold)
        self.cooldown_s = float(min_days_between_retrains) * DAY
        self.drift_threshold = drift_threshold
        self.mode = mode
        self.name = name or f"retrain:{monitor_metric}"
        self.clock = clock
        self.last_retrain_at: float | None = None  # this process's last decision to retrain

    def should_retrain(
        self,
        current_metrics: Mapping[str, Any] | None = None,
        reference_metrics: Mapping[str, Any] | None = None,
        drift_score: float | None = None,
        *,
        last_retrain_at: float | None = None,
    ) -> RetrainDecision:
        """Whether retraining is due now (degraded metric or drift, and the cool-down over), with the reason."""
        last = last_retrain_at if last_retrain_at is not None else self.last_retrain_at
        reasons, degradation = self._assess(current_metrics, reference_metrics, drift_score)
        if not reasons:
            return RetrainDecision(False, "no degradation or drift above the thresholds", degradation, drift_score)
        now = self.clock()
        if last is not None and now - last < self.cooldown_s:
            left = (self.cooldown_s - (now - last)) / 3600
            return RetrainDecision(
                False, f"{'; '.join(reasons)} — but the last retraining was less than "
                f"{self.cooldown_s / DAY:g} days ago ({left:.1f} h of cool-down left)", degradation, drift_score,
            )  # fmt: skip
        return RetrainDecision(True, "; ".join(reasons), degradation, drift_score)

    def _assess(
        self, current_metrics: Mapping[str, Any] | None, reference_metrics: Mapping[str, Any] | None,
        drift_score: float | None,
    ) -> tuple[list[str], float | None]:  # fmt: skip
        """The reasons to retrain (empty: none) and the relative degradation."""
        reasons: list[str] = []
        degradation = None
        current = _lookup(current_metrics or {}, self.monitor_metric)
        reference = _lookup(reference_metrics or {}, self.monitor_metric)
        if current is not None and not math.isfinite(current):
            reasons.append(f"{self.monitor_metric} is {current}")
        elif current is not None and reference is not None:
            worse = current - reference if self.mode == "min" else reference - current
            degradation = worse / abs(reference) if reference != 0 else (math.inf if worse > 0 else 0.0)
            if degradation > self.degradation_threshold:
                reasons.append(
                    f"{self.monitor_metric} is {degradation:.1%} worse than the reference ({current:g} vs "
                    f"{reference:g}; threshold {self.degradation_threshold:.0%})"
                )
        if drift_score is not None and self.drift_threshold is not None and drift_score > self.drift_threshold:
            reasons.append(f"drift score {drift_score:.3g} above {self.drift_threshold:g}")
        return reasons, degradation

    def fire(
        self,
        manager: JobManager,
        config: Mapping[str, Any],
        *,
        current_metrics: Mapping[str, Any] | None = None,
        reference_metrics: Mapping[str, Any] | None = None,
        drift_score: float | None = None,
        priority: int = 8,
        job_type: str = "retraining",
    ) -> int | None:
        """Submit a retraining job when :meth:`should_retrain` says so and the cool-down (kept in the database) allows.

        Returns:
            The new job's id, or None (no retraining due, or one was submitted within the cool-down).
        """
        reasons, _ = self._assess(current_metrics, reference_metrics, drift_score)
        if not reasons:
            return None
        reason = "; ".join(reasons)
        table = manager.tables["triggers"]
        now = self.clock()

        def write(conn: Connection) -> int | None:
            last = conn.execute(select(table.c.last_fired_at).where(table.c.name == self.name)).scalar_one_or_none()
            if last is not None and now - last < self.cooldown_s:
                return None
            job_id = manager.insert_job(conn, job_type=job_type, config=dict(config), priority=priority)
            manager.add_event(conn, job_id, "queued", f"retraining trigger {self.name!r}: {reason}")
            values = {"last_fired_at": now, "job_id": job_id, "reason": reason}
            if last is None:
                conn.execute(insert(table).values(name=self.name, **values))
            else:
                guard = update(table).where(table.c.name == self.name, table.c.last_fired_at == last)
                if conn.execute(guard.values(**values)).rowcount != 1:
                    raise JobError("another trigger fired at the same time")  # rolls back this job
            return job_id

        try:
            job_id: int | None = manager.write(write, what="submit a retraining job to")
        except JobError as exc:
            if "same time" in str(exc) or "UNIQUE" in str(exc).upper() or "duplicate key" in str(exc):
                return None  # the other trigger's job is the one for this window
            raise
        if job_id is not None:
            self.last_retrain_at = now
        return job_id


def scrape_drift_score(metrics_url: str, *, timeout_s: float = 10.0) -> float | None:
    """The drift score a ``trainengine serve`` exposes at ``metrics_url`` (its ``/metrics``); None while NaN.

    Raises:
        JobError: the server cannot be reached, or exposes no drift score.
    """
    import urllib.error
    import urllib.request

    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError as exc:
        from trainengine.errors import MissingExtraError

        raise MissingExtraError("prometheus-client", "serve", "reading a server's /metrics") from exc
    if not metrics_url.startswith(("http://", "https://")):
        raise JobError(f"metrics URL must be http(s)://..., got {metrics_url!r}")
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as exc:
        raise JobError(f"cannot read {metrics_url}: {exc}") from exc
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == DRIFT_METRIC
    ]
    if not values:
        raise JobError(f"{metrics_url} exposes no {DRIFT_METRIC}: is it a trainengine server's /metrics?")
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) if finite else None


def retraining_alert_action(
    db: str | JobManager,
    config: Mapping[str, Any],
    *,
    min_days_between_retrains: float = 7.0,
    priority: int = 8,
    name: str = "retrain:serve-drift",
) -> Callable[[Any], int | None]:
    """An alert action for a model server: a drift alert submits one retraining job per cool-down.

    Give it to ``create_app(..., alert_actions=[action])``. Alerts other than a firing drift
    alert (latency, error rate, resolved notices) are ignored.

    Args:
        db: The job database (path or URL), or a :class:`JobManager`.
        config: The retraining job's config, e.g. ``{"training_config": config.to_dict()}``.
    """
    state: dict[str, Any] = {"manager": db if isinstance(db, JobManager) else None}
    location = None if isinstance(db, JobManager) else db

    def action(alert: Any) -> int | None:
        if getattr(alert, "kind", None) != "drift" or getattr(alert, "resolved", False):
            return None
        if state["manager"] is None:
            state["manager"] = JobManager(location or "jobs.db")  # opened on the first drift alert
        threshold = getattr(alert, "threshold", None)
        trigger = RetrainingTrigger(
            "drift", 0.0, min_days_between_retrains, float(threshold) if threshold is not None else 0.0,
            mode="min", name=name,
        )  # fmt: skip
        return trigger.fire(state["manager"], config, drift_score=float(alert.value), priority=priority)

    return action


_FROM_ENV: dict[str, Any] = {}


def retrain_on_drift(alert: Any) -> int | None:
    """The ``retrain`` alert action (``trainengine serve BUNDLE --alert-action retrain``).

    Configured by environment variables: ``TRAINENGINE_RETRAIN_CONFIG`` (the training config YAML
    of the retraining job; required), ``TRAINENGINE_JOBS_DB`` (default ``jobs.db``) and
    ``TRAINENGINE_RETRAIN_COOLDOWN_DAYS`` (default 7).
    """
    import os

    if "action" not in _FROM_ENV:
        path = os.environ.get("TRAINENGINE_RETRAIN_CONFIG")
        if not path:
            raise JobError(
                "the retrain alert action needs TRAINENGINE_RETRAIN_CONFIG=<training config YAML> in the server's "
                "environment (and TRAINENGINE_JOBS_DB for a database other than jobs.db)"
            )
        from trainengine.config import TrainingConfig

        config = {"training_config": TrainingConfig.load(path).to_dict()}
        days = float(os.environ.get("TRAINENGINE_RETRAIN_COOLDOWN_DAYS", "7"))
        _FROM_ENV["action"] = retraining_alert_action(
            os.environ.get("TRAINENGINE_JOBS_DB", "jobs.db"), config, min_days_between_retrains=days
        )
    result: int | None = _FROM_ENV["action"](alert)
    return result
