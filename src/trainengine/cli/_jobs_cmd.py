"""``trainengine jobs submit|list|show|cancel|worker|schedule add|list|remove``: the job queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from trainengine.errors import TrainEngineError

__all__ = ["jobs_app"]

jobs_app = typer.Typer(
    help="A durable job queue: submit jobs, run workers, schedule runs with cron.", no_args_is_help=True
)
schedule_app = typer.Typer(help="Cron schedules that submit jobs.", no_args_is_help=True)
jobs_app.add_typer(schedule_app, name="schedule")

_DB_HELP = "Job database: a SQLite file or a SQLAlchemy URL (env TRAINENGINE_JOBS_DB; default jobs.db)."


def _db_option() -> Any:
    return typer.Option("jobs.db", "--db", envvar="TRAINENGINE_JOBS_DB", help=_DB_HELP)


def _manager(db: str) -> Any:
    from trainengine.jobs import JobManager

    return JobManager(db)


def _time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _job_config(config: Path | None, training_config: Path | None, sets: list[str] | None, raw: str | None) -> dict:
    """The job's config: ``--training-config FILE`` (with ``--set``), ``--config FILE.json`` or ``--json``."""
    out: dict[str, Any] = {}
    if config is not None:
        try:
            out.update(json.loads(config.read_text()))
        except (OSError, ValueError) as exc:
            raise TrainEngineError(f"--config {config}: not a readable JSON object ({exc})") from exc
    if raw:
        try:
            out.update(json.loads(raw))
        except ValueError as exc:
            raise TrainEngineError(f"--json: not a JSON object ({exc})") from exc
    if training_config is not None or sets:
        from trainengine.cli._common import resolve_config

        cfg = resolve_config(training_config, None, sets or [])
        out["training_config"] = cfg.to_dict()
    return out


@jobs_app.command("submit")
def submit_command(
    job_type: str = typer.Argument(..., help="training, retraining, evaluation, export, tune or a registered type."),
    training_config: Path | None = typer.Option(None, "--training-config", help="A training config YAML."),
    sets: list[str] | None = typer.Option(None, "--set", help="Override a training config field: key=value."),
    config: Path | None = typer.Option(None, "--config", help="The job's config as a JSON file."),
    raw: str | None = typer.Option(None, "--json", help="The job's config as JSON text."),
    priority: int = typer.Option(0, "--priority", help="Higher runs first."),
    max_retries: int = typer.Option(3, "--max-retries", min=0, help="Runs after a failed first one."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.001, help="Seconds a run may take."),
    db: str = _db_option(),
) -> None:
    """Queue a job; prints its id."""
    payload = _job_config(config, training_config, sets, raw)
    with _manager(db) as manager:
        job_id = manager.submit_job(job_type, payload, priority, max_retries=max_retries, timeout=timeout)
    typer.echo(f"submitted job {job_id} ({job_type}, priority {priority})")


@jobs_app.command("list")
def list_command(
    status: str | None = typer.Option(None, "--status", help="Only jobs of this status."),
    limit: int = typer.Option(50, "--limit", min=1),
    db: str = _db_option(),
) -> None:
    """The newest jobs: id, type, status, priority, tries, worker, run."""
    with _manager(db) as manager:
        jobs = manager.list_jobs(status=status, limit=limit)
    table = Table(title=f"jobs in {db}")
    for col in ("id", "type", "status", "priority", "tries", "created", "worker", "run"):
        table.add_column(col)
    for job in jobs:
        tries = f"{job.attempts}/{job.max_retries + 1}"
        table.add_row(
            str(job.id), job.job_type, job.status, str(job.priority), tries, _time(job.created_at),
            job.lease_owner or "-", job.run_id or "-",
        )  # fmt: skip
    Console(soft_wrap=True).print(table)


@jobs_app.command("show")
def show_command(
    job_id: int = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json", help="The whole record as JSON."),
    db: str = _db_option(),
) -> None:
    """One job: its record, status history and the last lines of its log."""
    with _manager(db) as manager:
        job = manager.get_job(job_id)
    if as_json:
        typer.echo(json.dumps(job.to_dict(), indent=2, default=str))
        return
    typer.echo(f"job {job.id}: {job.job_type}, {job.status}, priority {job.priority}, tries {job.attempts}")
    for key in ("run_id", "run_dir", "log_path", "error"):
        if getattr(job, key):
            typer.echo(f"  {key}: {getattr(job, key)}")
    if job.result:
        typer.echo(f"  result: {json.dumps(job.result, default=str)}")
    typer.echo("history:")
    for event in job.history:
        typer.echo(f"  {_time(event.at)}  {event.status:<9} {event.worker or '':<20} {event.message or ''}")
    if job.log_tail:
        typer.echo("log (last lines):")
        typer.echo(job.log_tail.rstrip())


@jobs_app.command("cancel")
def cancel_command(job_id: int = typer.Argument(...), db: str = _db_option()) -> None:
    """Cancel a queued job, or ask a running one's worker to stop it."""
    with _manager(db) as manager:
        status = manager.cancel_job(job_id)
    typer.echo(f"job {job_id}: {'cancelled' if status == 'cancelled' else f'{status} (cancel requested)'}")


@jobs_app.command("worker")
def worker_command(
    worker_id: str | None = typer.Option(None, "--worker-id", help="Name on the job records (default host-pid)."),
    max_jobs: int | None = typer.Option(None, "--max-jobs", min=1, help="Stop after this many jobs."),
    poll_interval: float = typer.Option(5.0, "--poll-interval", min=0.01, help="Seconds between empty polls."),
    lease_s: float = typer.Option(
        60.0, "--lease-s", min=0.1, help="Lease length (a dead worker's job waits this long)."
    ),
    log_dir: Path = typer.Option(Path("job_logs"), "--log-dir", help="Folder for the jobs' logs."),
    job_types: list[str] | None = typer.Option(None, "--type", help="Only jobs of this type (repeatable)."),
    schedules: bool = typer.Option(False, "--schedules", help="Also submit due scheduled runs between jobs."),
    exit_when_idle: bool = typer.Option(False, "--exit-when-idle", help="Stop when no job is ready to run."),
    retry_backoff_s: float = typer.Option(
        30.0, "--retry-backoff-s", min=0.0, help="Wait before a failed job's first retry (doubling after each)."
    ),
    db: str = _db_option(),
) -> None:
    """Run jobs, each in its own process; SIGTERM re-queues the running job after its checkpoint."""
    from trainengine.jobs import JobExecutor, JobManager, TrainingScheduler

    with JobManager(db, retry_backoff_s=retry_backoff_s) as manager:
        scheduler = TrainingScheduler(manager) if schedules else None
        executor = JobExecutor(
            manager, worker_id, lease_s=lease_s, log_dir=log_dir, job_types=job_types or None, scheduler=scheduler
        )
        typer.echo(f"worker {executor.worker_id} on {db}", err=True)
        ran = executor.run_worker(max_jobs, poll_interval, exit_when_idle=exit_when_idle)
    typer.echo(f"worker {executor.worker_id}: {ran} job(s) run", err=True)


@jobs_app.command("trigger")
def trigger_command(
    training_config: Path | None = typer.Option(None, "--training-config", help="The retraining job's config YAML."),
    sets: list[str] | None = typer.Option(None, "--set", help="Override a training config field: key=value."),
    metrics_url: str | None = typer.Option(None, "--metrics-url", help="A server's /metrics: read its drift score."),
    drift_score: float | None = typer.Option(None, "--drift-score", help="A drift score computed elsewhere."),
    current: Path | None = typer.Option(None, "--current", help="JSON file of current metrics."),
    reference: Path | None = typer.Option(None, "--reference", help="JSON file of the reference metrics."),
    monitor_metric: str = typer.Option("val_loss", "--monitor-metric"),
    degradation_threshold: float = typer.Option(0.1, "--degradation-threshold", min=0.0),
    drift_threshold: float = typer.Option(0.2, "--drift-threshold", min=0.0),
    cooldown_days: float = typer.Option(7.0, "--min-days-between-retrains", min=0.0),
    name: str | None = typer.Option(None, "--name", help="The trigger's name (its cool-down is kept per name)."),
    priority: int = typer.Option(8, "--priority"),
    db: str = _db_option(),
) -> None:
    """Submit one retraining job when a metric degraded or the drift is too high (once per cool-down).

    Run it from cron or a monitoring hook: several triggers firing together submit one job.
    """
    from trainengine.jobs import RetrainingTrigger, scrape_drift_score

    def metrics(path: Path | None) -> dict[str, Any] | None:
        if path is None:
            return None
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TrainEngineError(f"{path}: not a readable JSON object of metrics ({exc})") from exc
        return dict(loaded)

    score = scrape_drift_score(metrics_url) if metrics_url else drift_score
    payload = _job_config(None, training_config, sets, None)
    if "training_config" not in payload:
        raise TrainEngineError("the retraining job needs --training-config FILE (and/or --set key=value)")
    trigger = RetrainingTrigger(monitor_metric, degradation_threshold, cooldown_days, drift_threshold, name=name)
    now, ref = metrics(current), metrics(reference)
    decision = trigger.should_retrain(now, ref, score, last_retrain_at=0.0 if cooldown_days == 0 else None)
    with _manager(db) as manager:
        job_id = trigger.fire(
            manager, payload, current_metrics=now, reference_metrics=ref, drift_score=score, priority=priority
        )
    if job_id is not None:
        typer.echo(f"submitted retraining job {job_id}: {decision.reason}")
    elif decision.reason.startswith("no degradation"):
        typer.echo(f"no retraining: {decision.reason} (drift score {score})")
    else:
        typer.echo(f"no retraining: a retraining job was submitted within the last {cooldown_days:g} days")


@schedule_app.command("add")
def schedule_add_command(
    name: str = typer.Argument(..., help="The schedule's name (one word)."),
    cron: str = typer.Argument(..., help="Cron expression, e.g. '0 2 * * *' (daily at 02:00)."),
    job_type: str = typer.Option("retraining", "--type", help="The job type it submits."),
    training_config: Path | None = typer.Option(None, "--training-config", help="A training config YAML."),
    sets: list[str] | None = typer.Option(None, "--set", help="Override a training config field: key=value."),
    config: Path | None = typer.Option(None, "--config", help="The job's config as a JSON file."),
    raw: str | None = typer.Option(None, "--json", help="The job's config as JSON text."),
    priority: int = typer.Option(0, "--priority"),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA time zone of the cron expression."),
    db: str = _db_option(),
) -> None:
    """Add a cron schedule; prints its next run times."""
    from trainengine.jobs import TrainingScheduler

    payload = _job_config(config, training_config, sets, raw)
    with _manager(db) as manager:
        scheduler = TrainingScheduler(manager)
        scheduler.create_schedule(name, job_type, payload, cron, priority, timezone=timezone)
        runs = scheduler.next_runs(name, 3)
    typer.echo(f"schedule {name!r}: {cron} ({timezone}); next runs: {', '.join(t.isoformat() for t in runs)}")


@schedule_app.command("list")
def schedule_list_command(db: str = _db_option()) -> None:
    """Every schedule with its next run time."""
    from trainengine.jobs import TrainingScheduler

    with _manager(db) as manager:
        scheduler = TrainingScheduler(manager)
        table = Table(title=f"schedules in {db}")
        for col in ("name", "cron", "timezone", "type", "priority", "enabled", "last run", "next run"):
            table.add_column(col)
        for s in scheduler.list_schedules():
            upcoming = scheduler.next_runs(s.name, 1)[0].isoformat() if s.enabled else "-"
            table.add_row(
                s.name, s.cron, s.timezone, s.job_type, str(s.priority), "yes" if s.enabled else "no",
                _time(s.last_fired_at), upcoming,
            )  # fmt: skip
    Console(soft_wrap=True).print(table)


@schedule_app.command("remove")
def schedule_remove_command(name: str = typer.Argument(...), db: str = _db_option()) -> None:
    """Delete a schedule (jobs it already submitted stay)."""
    from trainengine.jobs import TrainingScheduler

    with _manager(db) as manager:
        TrainingScheduler(manager).delete_schedule(name)
    typer.echo(f"removed schedule {name!r}")


@schedule_app.command("enable")
def schedule_enable_command(name: str = typer.Argument(...), db: str = _db_option()) -> None:
    """Enable a schedule (it does not catch up on the runs missed while disabled)."""
    from trainengine.jobs import TrainingScheduler

    with _manager(db) as manager:
        TrainingScheduler(manager).enable_schedule(name)
    typer.echo(f"enabled schedule {name!r}")


@schedule_app.command("disable")
def schedule_disable_command(name: str = typer.Argument(...), db: str = _db_option()) -> None:
    """Disable a schedule."""
    from trainengine.jobs import TrainingScheduler

    with _manager(db) as manager:
        TrainingScheduler(manager).disable_schedule(name)
    typer.echo(f"disabled schedule {name!r}")
