"""Cron schedules that submit jobs: ``TrainingScheduler``.

A schedule is a cron expression (parsed by ``croniter``) in an explicit time zone (UTC unless
given). :meth:`TrainingScheduler.tick` submits the runs that are due; call it from a loop
(:meth:`TrainingScheduler.run`, ``trainengine jobs worker --schedules``) or from your own.

Missed runs. When no scheduler ran for a while (a deploy, a host down), the runs that fell in
the gap are not submitted one by one: a schedule that missed any run submits **one** job, for
its most recent due time, and continues from there. A new schedule starts from its creation
time: it never fires for times before it existed.

Submitting a run and recording that it was submitted happen in one transaction, guarded by the
schedule's previous ``last_fired_at``: two schedulers ticking together submit each run once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from trainengine.jobs._store import JobError, JobManager

__all__ = ["TrainingScheduler", "Schedule"]


@dataclass
class Schedule:
    name: str
    job_type: str
    config: dict[str, Any]
    cron: str
    timezone: str
    priority: int
    max_retries: int
    enabled: bool
    created_at: float
    last_fired_at: float | None


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError as exc:  # pragma: no cover - the jobs extra installs it
        from trainengine.errors import MissingExtraError

        raise MissingExtraError("croniter", "jobs", "cron schedules") from exc
    return croniter


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise JobError(f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'") from None


class TrainingScheduler:
    """Cron schedules on a job queue (seed 000's ``TrainingScheduler('jobs.db')``).

    Args:
        db: The job queue's database (a path or URL), or a :class:`JobManager` to share.
        clock: Seconds since the epoch; defaults to the manager's clock.

    Example:
        >>> scheduler = TrainingScheduler(":memory:")
        >>> scheduler.create_schedule("nightly", "retraining", {"training_config": {}}, "0 2 * * *")
        >>> [t.isoformat() for t in scheduler.next_runs("nightly", 2, after=datetime(2026, 12, 1, 3, tzinfo=UTC))]
        ['2026-12-02T02:00:00+00:00', '2026-12-03T02:00:00+00:00']
    """

    def __init__(
        self, db: str | os.PathLike[str] | JobManager = "jobs.db", *, clock: Callable[[], float] | None = None
    ) -> None:
        if isinstance(db, JobManager):
            self.manager = db
        else:
            self.manager = JobManager(db, clock=clock) if clock is not None else JobManager(db)
        self.clock = clock or self.manager.clock
        self._table = self.manager.tables["schedules"]

    def create_schedule(
        self,
        name: str,
        job_type: str,
        config: Mapping[str, Any] | None,
        schedule_expr: str,
        priority: int = 0,
        *,
        timezone: str = "UTC",
        max_retries: int = 3,
        enabled: bool = True,
    ) -> None:
        """Add a schedule (the name must be new; :meth:`delete_schedule` first to replace one).

        Raises:
            JobError: a bad cron expression, time zone or name, or a name already taken.
        """
        if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
            raise JobError(f"schedule name must be a non-empty word such as 'daily-retrain', got {name!r}")
        croniter = _croniter()
        if not isinstance(schedule_expr, str) or not croniter.is_valid(schedule_expr):
            raise JobError(
                f"invalid cron expression {schedule_expr!r}: five fields 'minute hour day month weekday', "
                "e.g. '0 2 * * *' (daily at 02:00)"
            )
        _zone(timezone)
        payload = json.dumps(dict(config or {}), allow_nan=False, sort_keys=True)
        now = self.clock()

        def write(conn: Connection) -> None:
            taken = conn.execute(select(self._table.c.name).where(self._table.c.name == name)).scalar_one_or_none()
            if taken is not None:
                raise JobError(f"a schedule named {name!r} exists; delete it first or choose another name")
            conn.execute(
                insert(self._table).values(
                    name=name, job_type=job_type, config=payload, cron=schedule_expr, timezone=timezone,
                    priority=int(priority), max_retries=int(max_retries), enabled=bool(enabled), created_at=now,
                    last_fired_at=None,
                )
            )  # fmt: skip

        self.manager.write(write, what="add a schedule to")

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable a schedule (a disabled one submits nothing; re-enabled, it does not catch up)."""
        now = self.clock()

        def write(conn: Connection) -> None:
            values: dict[str, Any] = {"enabled": enabled}
            if enabled:
                values["last_fired_at"] = now  # no catch-up for the time it was off
            if conn.execute(update(self._table).where(self._table.c.name == name).values(**values)).rowcount != 1:
                raise JobError(f"no schedule named {name!r}")

        self.manager.write(write, what="change a schedule in")

    def enable_schedule(self, name: str) -> None:
        self.set_enabled(name, True)

    def disable_schedule(self, name: str) -> None:
        self.set_enabled(name, False)

    def delete_schedule(self, name: str) -> None:
        def write(conn: Connection) -> None:
            if conn.execute(delete(self._table).where(self._table.c.name == name)).rowcount != 1:
                raise JobError(f"no schedule named {name!r}")

        self.manager.write(write, what="delete a schedule from")

    def list_schedules(self) -> list[Schedule]:
        def read(conn: Connection) -> list[Schedule]:
            rows = conn.execute(select(self._table).order_by(self._table.c.name)).all()
            return [
                Schedule(
                    r.name,
                    r.job_type,
                    json.loads(r.config),
                    r.cron,
                    r.timezone,
                    r.priority,
                    r.max_retries,
                    bool(r.enabled),
                    r.created_at,
                    r.last_fired_at,
                )
                for r in rows
            ]

        result: list[Schedule] = self.manager.read(read)
        return result

    def get_schedule(self, name: str) -> Schedule:
        for schedule in self.list_schedules():
            if schedule.name == name:
                return schedule
        raise JobError(f"no schedule named {name!r}")

    def next_runs(self, name: str, n: int = 5, *, after: datetime | None = None) -> list[datetime]:
        """The next ``n`` run times of a schedule, in its time zone."""
        schedule = self.get_schedule(name)
        zone = _zone(schedule.timezone)
        start = (after or datetime.fromtimestamp(self.clock(), UTC)).astimezone(zone)
        it = _croniter()(schedule.cron, start)
        return [it.get_next(datetime) for _ in range(n)]

    def tick(self) -> list[int]:
        """Submit the runs that are due now; returns the new jobs' ids (one per schedule at most)."""
        now = self.clock()
        submitted: list[int] = []
        for schedule in self.list_schedules():
            if not schedule.enabled:
                continue
            due = self._latest_due(schedule, now)
            if due is None:
                continue
            job_id = self._fire(schedule, due)
            if job_id is not None:
                submitted.append(job_id)
        return submitted

    def _latest_due(self, schedule: Schedule, now: float) -> float | None:
        """The most recent scheduled time in (last fired or created, now], or None."""
        zone = _zone(schedule.timezone)
        since = schedule.last_fired_at if schedule.last_fired_at is not None else schedule.created_at
        it = _croniter()(schedule.cron, datetime.fromtimestamp(now, UTC).astimezone(zone))
        latest = it.get_prev(datetime).timestamp()
        return latest if since < latest <= now else None

    def _fire(self, schedule: Schedule, due: float) -> int | None:
        manager = self.manager

        def write(conn: Connection) -> int | None:
            guard = self._table.c.last_fired_at
            claim = update(self._table).where(self._table.c.name == schedule.name)
            claim = claim.where(guard.is_(None) if schedule.last_fired_at is None else guard == schedule.last_fired_at)
            if conn.execute(claim.values(last_fired_at=due)).rowcount != 1:
                return None  # another scheduler submitted this run
            job_id = manager.insert_job(
                conn, job_type=schedule.job_type, config=schedule.config, priority=schedule.priority,
                max_retries=schedule.max_retries, schedule=schedule.name,
            )  # fmt: skip
            when = datetime.fromtimestamp(due, UTC).isoformat()
            manager.add_event(conn, job_id, "queued", f"schedule {schedule.name!r} ({schedule.cron}) for {when}")
            return job_id

        result: int | None = manager.write(write, what="submit a scheduled run to")
        return result

    def run(self, *, poll_interval: float = 30.0, stop: Callable[[], bool] | None = None) -> None:
        """Tick every ``poll_interval`` seconds until ``stop()`` is true."""
        import time

        while stop is None or not stop():
            self.tick()
            time.sleep(poll_interval)

    def close(self) -> None:
        self.manager.close()
