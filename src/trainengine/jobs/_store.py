"""The job queue's database: jobs, their status history, schedules and trigger cool-downs.

One SQLite file (the default, ``jobs.db``) or any SQLAlchemy URL (``postgresql://...``), with the
SQL plumbing of the experiment database and the registry (:mod:`trainengine._sql`): WAL,
``BEGIN IMMEDIATE`` and retries on SQLite, so several workers can share one file.

Leasing. A worker takes the best queued job (highest priority, then oldest) in one transaction:
on PostgreSQL with ``SELECT ... FOR UPDATE SKIP LOCKED`` (workers never wait for each other's
rows), on SQLite under the write lock that ``BEGIN IMMEDIATE`` takes up front. The lease carries
a random token and an expiry that the worker's heartbeat extends. A lease that expires (the worker
died) puts the job back in the queue; the next worker resumes it from its checkpoint.

Exactly-once completion. Execution is at least once (a job may run again after its worker died),
but the record of completion is written once: :meth:`JobManager.complete` succeeds only for the
lease that is current (``WHERE lease_token = ... AND status = 'running'``), so a worker whose
lease was taken over cannot record a second completion.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from trainengine._sql import SqlStore, init_versioned_schema, inserted_id, resolve_database
from trainengine.errors import TrainEngineError

__all__ = ["JobManager", "Job", "JobEvent", "JobError", "JOB_STATUSES", "Lease"]

SCHEMA_VERSION = 1
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


class JobError(TrainEngineError):
    """A job-queue operation that cannot be done (unknown job, bad argument, a lease that was lost)."""


_metadata = MetaData()
_jobs = Table(
    "jobs",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_type", String(200), nullable=False),
    Column("config", Text, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_retries", Integer, nullable=False, default=3),
    Column("timeout_s", Float),
    Column("not_before", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("lease_owner", String(200)),
    Column("lease_token", String(64)),
    Column("lease_expires_at", Float),
    Column("heartbeat_at", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("result", Text),
    Column("error", Text),
    Column("log_path", Text),
    Column("log_tail", Text),
    Column("run_id", String(200)),
    Column("run_dir", Text),
    Column("schedule", String(200)),
    Index("ix_jobs_queue", "status", "priority", "id"),
)
_events = Table(
    "job_events",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("status", String(20), nullable=False),
    Column("worker", String(200)),
    Column("message", Text),
)
_schedules = Table(
    "schedules",
    _metadata,
    Column("name", String(200), primary_key=True),
    Column("job_type", String(200), nullable=False),
    Column("config", Text, nullable=False),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(100), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_fired_at", Float),  # the scheduled time (not the wall time) of the last submitted run
)
_triggers = Table(
    "trigger_fires",
    _metadata,
    Column("name", String(200), primary_key=True),
    Column("last_fired_at", Float, nullable=False),
    Column("job_id", Integer),
    Column("reason", Text),
)
_version = Table("job_schema_version", _metadata, Column("version", Integer, nullable=False))


@dataclass
class JobEvent:
    """One entry of a job's status history."""

    at: float
    status: str
    worker: str | None
    message: str | None


@dataclass
class Job:
    """A job as recorded (``config`` and ``result`` decoded from JSON)."""

    id: int
    job_type: str
    config: dict[str, Any]
    priority: int
    status: str
    attempts: int
    max_retries: int
    timeout_s: float | None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    result: dict[str, Any] | None = None
    error: str | None = None
    log_path: str | None = None
    log_tail: str | None = None
    run_id: str | None = None
    run_dir: str | None = None
    schedule: str | None = None
    not_before: float = 0.0
    history: list[JobEvent] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "history"}
        out["history"] = [e.__dict__ for e in self.history]
        return out


@dataclass
class Lease:
    """A worker's hold on a running job: the job and the token that proves the lease is current."""

    job: Job
    token: str
    worker_id: str


def _job(row: Any) -> Job:
    m = row._mapping
    return Job(
        id=int(m["id"]),
        job_type=m["job_type"],
        config=json.loads(m["config"]),
        priority=int(m["priority"]),
        status=m["status"],
        attempts=int(m["attempts"]),
        max_retries=int(m["max_retries"]),
        timeout_s=m["timeout_s"],
        created_at=float(m["created_at"]),
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
        cancel_requested=bool(m["cancel_requested"]),
        result=json.loads(m["result"]) if m["result"] else None,
        error=m["error"],
        log_path=m["log_path"],
        log_tail=m["log_tail"],
        run_id=m["run_id"],
        run_dir=m["run_dir"],
        schedule=m["schedule"],
        not_before=float(m["not_before"] or 0.0),
    )


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise JobError(f"{what} must be JSON (dicts, lists, strings, finite numbers): {exc}") from exc


class JobManager(SqlStore):
    """The job queue: submit, lease, heartbeat, complete, retry, cancel, list.

    Args:
        db: A SQLite file path (created with its folder) or a SQLAlchemy URL.
        clock: Seconds since the epoch (``time.time``); tests pass a fake clock.
        retry_backoff_s: The first retry waits this long; each further one twice as long.
        max_backoff_s: The longest wait between retries.
        busy_timeout_s: SQLite: how long a write waits for the lock before retrying.

    Example:
        >>> manager = JobManager(":memory:")
        >>> job_id = manager.submit_job("training", {"training_config": {}}, priority=5)
        >>> manager.get_job(job_id).status
        'queued'
    """

    _kind = "job queue"
    _error = JobError

    def __init__(
        self,
        db: str | os.PathLike[str] = "jobs.db",
        *,
        clock: Callable[[], float] = time.time,
        retry_backoff_s: float = 30.0,
        max_backoff_s: float = 3600.0,
        busy_timeout_s: float = 30.0,
        max_retries: int = 20,
    ) -> None:
        database = resolve_database(db, kind=self._kind, example="jobs.db", error=JobError, value_error=JobError)
        self.clock = clock
        self.retry_backoff_s = float(retry_backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._connect(database, busy_timeout_s=busy_timeout_s, max_retries=max_retries)
        self._postgres = database.url.get_backend_name() == "postgresql"

    def _init_schema(self, conn: Connection) -> None:
        init_versioned_schema(conn, _metadata, _version, SCHEMA_VERSION, kind=self._kind, error=JobError)

    # ------------------------------------------------------------------ submitting
    def submit_job(
        self,
        job_type: str,
        config: Mapping[str, Any] | None = None,
        priority: int = 0,
        *,
        max_retries: int = 3,
        timeout: float | None = None,
        schedule: str | None = None,
    ) -> int:
        """Queue a job; returns its id.

        Args:
            job_type: ``training``, ``retraining``, ``evaluation``, ``export``, ``tune`` or a
                registered type (:func:`trainengine.registries.register_job_type`).
            config: The job's parameters (JSON); e.g. ``{"training_config": config.to_dict()}``.
            priority: Higher runs first; equal priorities run in submission order.
            max_retries: Runs after the first that a failing job gets (with backoff).
            timeout: Seconds a run may take before it is stopped and counted as a failure.
        """
        if not isinstance(job_type, str) or not job_type.strip():
            raise JobError(f"job_type must be a non-empty string, got {job_type!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise JobError(f"priority must be an int (higher runs first), got {priority!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise JobError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0
        ):
            raise JobError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        payload = _json(dict(config or {}), "config")
        now = self.clock()

        def write(conn: Connection) -> int:
            result = conn.execute(
                insert(_jobs).values(
                    job_type=job_type.strip(), config=payload, priority=priority, status="queued", attempts=0,
                    max_retries=max_retries, timeout_s=None if timeout is None else float(timeout), not_before=0.0,
                    created_at=now, cancel_requested=False, schedule=schedule,
                )
            )  # fmt: skip
            job_id = int(inserted_id(result))
            _event(conn, job_id, now, "queued", None, f"submitted ({job_type}, priority {priority})")
            return job_id

        return int(self._write(write, what="submit a job to"))

    # ------------------------------------------------------------------ leasing
    def lease(self, worker_id: str, *, lease_s: float = 60.0, job_types: Iterable[str] | None = None) -> Lease | None:
        """Take the next job to run (None when the queue has none ready); expired leases are re-queued first."""
        now = self.clock()
        types = list(job_types) if job_types is not None else None
        token = secrets.token_hex(16)

        def write(conn: Connection) -> Lease | None:
            self._expire(conn, now)
            query = (
                select(_jobs.c.id)
                .where(_jobs.c.status == "queued", _jobs.c.not_before <= now)
                .order_by(_jobs.c.priority.desc(), _jobs.c.id.asc())
                .limit(1)
            )
            if types is not None:
                query = query.where(_jobs.c.job_type.in_(types))
            if self._postgres:
                query = query.with_for_update(skip_locked=True)
            job_id = conn.execute(query).scalar_one_or_none()
            if job_id is None:
                return None
            done = conn.execute(
                update(_jobs)
                .where(_jobs.c.id == job_id, _jobs.c.status == "queued")
                .values(
                    status="running", lease_owner=worker_id, lease_token=token, lease_expires_at=now + lease_s,
                    heartbeat_at=now, attempts=_jobs.c.attempts + 1, started_at=now, error=None,
                )
            )  # fmt: skip
            if done.rowcount != 1:
                return None
            row = conn.execute(select(_jobs).where(_jobs.c.id == job_id)).one()
            job = _job(row)
            _event(conn, job_id, now, "running", worker_id, f"attempt {job.attempts} of {job.max_retries + 1}")
            return Lease(job, token, worker_id)

        result: Lease | None = self._write(write, what="lease a job from")
        return result

    def _expire(self, conn: Connection, now: float) -> None:
        """Running jobs whose lease ran out (their worker died): back to the queue, or failed when out of tries."""
        stale = conn.execute(
            select(_jobs.c.id, _jobs.c.attempts, _jobs.c.max_retries, _jobs.c.lease_owner).where(
                _jobs.c.status == "running", _jobs.c.lease_expires_at < now
            )
        ).all()
        for job_id, attempts, max_retries, owner in stale:
            retry = attempts <= max_retries
            status = "queued" if retry else "failed"
            done = conn.execute(
                update(_jobs)
                .where(_jobs.c.id == job_id, _jobs.c.status == "running", _jobs.c.lease_expires_at < now)
                .values(
                    status=status, lease_owner=None, lease_token=None, lease_expires_at=None,
                    error=f"the lease of worker {owner!r} expired (the worker died or stopped answering)",
                    finished_at=None if retry else now,
                )
            )  # fmt: skip
            if done.rowcount == 1:
                message = f"lease of {owner!r} expired; " + ("re-queued" if retry else "no tries left")
                _event(conn, job_id, now, status, None, message)

    def heartbeat(self, lease: Lease, *, lease_s: float = 60.0) -> str:
        """Extend the lease; returns ``"ok"``, ``"cancel"`` (a cancel was requested) or ``"lost"``."""
        now = self.clock()

        def write(conn: Connection) -> str:
            done = conn.execute(
                update(_jobs)
                .where(_jobs.c.id == lease.job.id, _jobs.c.lease_token == lease.token, _jobs.c.status == "running")
                .values(lease_expires_at=now + lease_s, heartbeat_at=now)
            )
            if done.rowcount != 1:
                return "lost"
            wanted = conn.execute(select(_jobs.c.cancel_requested).where(_jobs.c.id == lease.job.id)).scalar_one()
            return "cancel" if wanted else "ok"

        result: str = self._write(write, what="heartbeat in")
        return result

    # ------------------------------------------------------------------ finishing
    def complete(self, lease: Lease, result: Mapping[str, Any] | None = None, **record: Any) -> bool:
        """Record the job as succeeded, once: False when this lease is no longer the job's current one.

        ``record``: ``run_id``, ``run_dir``, ``log_path``, ``log_tail`` to keep on the job.
        """
        return self._finish(lease, "succeeded", result=result, **record)

    def fail(self, lease: Lease, error: str, **record: Any) -> str | None:
        """A failed run: back to the queue after a backoff while tries remain, else failed.

        Returns the job's new status (``queued`` or ``failed``), None when the lease was lost.
        """
        job = self.get_job(lease.job.id, history=False)
        retry = job.attempts <= job.max_retries
        delay = min(self.max_backoff_s, self.retry_backoff_s * 2 ** max(0, job.attempts - 1))
        status = "queued" if retry else "failed"
        done = self._finish(
            lease, status, error=error, not_before=self.clock() + delay if retry else 0.0,
            message=f"{error[:300]}" + (f"; retry in {delay:.0f} s" if retry else "; no tries left"), **record,
        )  # fmt: skip
        return status if done else None

    def requeue(self, lease: Lease, reason: str, **record: Any) -> bool:
        """Put a running job back in the queue without counting the run (the worker is stopping)."""
        return self._finish(lease, "queued", error=None, uncount=True, message=reason, **record)

    def mark_cancelled(self, lease: Lease, **record: Any) -> bool:
        return self._finish(lease, "cancelled", message="cancelled while running", **record)

    def _finish(
        self,
        lease: Lease,
        status: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        not_before: float = 0.0,
        uncount: bool = False,
        message: str | None = None,
        **record: Any,
    ) -> bool:
        unknown = set(record) - {"run_id", "run_dir", "log_path", "log_tail"}
        if unknown:
            raise JobError(f"unknown job fields {sorted(unknown)}")
        now = self.clock()
        payload = _json(dict(result), "result") if result is not None else None

        def write(conn: Connection) -> bool:
            values: dict[str, Any] = {
                "status": status, "lease_owner": None, "lease_token": None, "lease_expires_at": None,
                "error": error, "not_before": not_before, **{k: v for k, v in record.items() if v is not None},
            }  # fmt: skip
            if status in FINISHED:
                values["finished_at"] = now
            if payload is not None:
                values["result"] = payload
            if uncount:
                values["attempts"] = _jobs.c.attempts - 1
            done = conn.execute(
                update(_jobs)
                .where(_jobs.c.id == lease.job.id, _jobs.c.lease_token == lease.token, _jobs.c.status == "running")
                .values(**values)
            )
            if done.rowcount != 1:
                return False
            _event(conn, lease.job.id, now, status, lease.worker_id, message)
            return True

        ok: bool = self._write(write, what="record a job's end in")
        return ok

    def cancel_job(self, job_id: int) -> str:
        """Cancel a job: a queued one at once, a running one at its worker's next heartbeat.

        Returns the job's status after the call (``cancelled``, or ``running`` with the cancel pending).
        """
        now = self.clock()

        def write(conn: Connection) -> str:
            status = conn.execute(select(_jobs.c.status).where(_jobs.c.id == job_id)).scalar_one_or_none()
            if status is None:
                raise JobError(f"no job {job_id} in {self._label!r}")
            if status == "queued":
                conn.execute(update(_jobs).where(_jobs.c.id == job_id).values(status="cancelled", finished_at=now))
                _event(conn, job_id, now, "cancelled", None, "cancelled before it ran")
                return "cancelled"
            if status == "running":
                conn.execute(update(_jobs).where(_jobs.c.id == job_id).values(cancel_requested=True))
                _event(conn, job_id, now, "running", None, "cancel requested")
            return str(status)

        result: str = self._write(write, what="cancel a job in")
        return result

    # ------------------------------------------------------------------ reading
    def get_job(self, job_id: int, *, history: bool = True) -> Job:
        def read(conn: Connection) -> Job:
            row = conn.execute(select(_jobs).where(_jobs.c.id == job_id)).one_or_none()
            if row is None:
                raise JobError(f"no job {job_id} in {self._label!r}")
            job = _job(row)
            if history:
                rows = conn.execute(select(_events).where(_events.c.job_id == job_id).order_by(_events.c.id)).all()
                job.history = [JobEvent(r.at, r.status, r.worker, r.message) for r in rows]
            return job

        result: Job = self._read(read)
        return result

    def list_jobs(self, *, status: str | None = None, job_type: str | None = None, limit: int = 100) -> list[Job]:
        """Jobs, newest first (optionally of one status or type)."""
        if status is not None and status not in JOB_STATUSES:
            raise JobError(f"unknown status {status!r}; one of {', '.join(JOB_STATUSES)}")

        def read(conn: Connection) -> list[Job]:
            query = select(_jobs).order_by(_jobs.c.id.desc()).limit(limit)
            if status is not None:
                query = query.where(_jobs.c.status == status)
            if job_type is not None:
                query = query.where(_jobs.c.job_type == job_type)
            return [_job(r) for r in conn.execute(query).all()]

        result: list[Job] = self._read(read)
        return result

    def counts(self) -> dict[str, int]:
        """Jobs per status."""

        def read(conn: Connection) -> dict[str, int]:
            rows = conn.execute(select(_jobs.c.status)).scalars().all()
            return {s: sum(1 for r in rows if r == s) for s in JOB_STATUSES}

        result: dict[str, int] = self._read(read)
        return result

    # ------------------------------------------------------------------ schedules and triggers (their own modules)
    @property
    def tables(self) -> dict[str, Table]:
        return {"jobs": _jobs, "events": _events, "schedules": _schedules, "triggers": _triggers}

    def write(self, fn: Callable[[Connection], Any], what: str = "write to") -> Any:
        """One write transaction (the scheduler and the retraining trigger use it)."""
        return self._write(fn, what=what)

    def read(self, fn: Callable[[Connection], Any]) -> Any:
        return self._read(fn)

    def add_event(self, conn: Connection, job_id: int, status: str, message: str) -> None:
        _event(conn, job_id, self.clock(), status, None, message)

    def insert_job(self, conn: Connection, **values: Any) -> int:
        """Queue a job inside the caller's transaction (a schedule's tick, a trigger's fire)."""
        now = self.clock()
        values = {
            "priority": 0, "max_retries": 3, "timeout_s": None, "not_before": 0.0, "attempts": 0,
            "cancel_requested": False, **values, "status": "queued", "created_at": now,
        }  # fmt: skip
        values["config"] = _json(values.get("config") or {}, "config")
        job_id = int(inserted_id(conn.execute(insert(_jobs).values(**values))))
        return job_id


def _event(conn: Connection, job_id: int, at: float, status: str, worker: str | None, message: str | None) -> None:
    conn.execute(insert(_events).values(job_id=job_id, at=at, status=status, worker=worker, message=message))
