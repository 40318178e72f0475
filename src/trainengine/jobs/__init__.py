"""Operations: a durable job queue, cron schedules, workers and retraining triggers (docs/operations.md).

* :class:`JobManager` — the queue in SQLite (default ``jobs.db``) or PostgreSQL: submit, lease
  with a heartbeat, retry with backoff, cancel, list; a job's completion is recorded once.
* :class:`TrainingScheduler` — cron schedules (``croniter``, explicit time zones) that submit jobs;
  missed runs fire once, not once per missed time.
* :class:`JobExecutor` — a worker: each job in its own process, logs kept, stops cleanly on SIGTERM
  (the running training checkpoints and goes back to the queue).
* :class:`RetrainingTrigger` — a degraded metric or a drift score submits one retraining job per
  cool-down.

Importing this package loads only the database layer (SQLAlchemy); torch and the engine load in
a job's own process when it starts.
"""

from trainengine.jobs._executor import JobExecutor
from trainengine.jobs._scheduler import Schedule, TrainingScheduler
from trainengine.jobs._store import JOB_STATUSES, Job, JobError, JobEvent, JobManager, Lease
from trainengine.jobs._trigger import RetrainDecision, RetrainingTrigger, retraining_alert_action, scrape_drift_score
from trainengine.jobs._types import JobContext

__all__ = [
    "JobManager",
    "Job",
    "JobEvent",
    "JobError",
    "Lease",
    "JOB_STATUSES",
    "TrainingScheduler",
    "Schedule",
    "JobExecutor",
    "RetrainingTrigger",
    "RetrainDecision",
    "scrape_drift_score",
    "retraining_alert_action",
    "JobContext",
]
