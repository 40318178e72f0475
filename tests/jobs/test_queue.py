"""The job queue's records: leasing, exactly-once completion, retries, cancel; schedules; triggers.

The queue tests run on SQLite and on PostgreSQL (the ``sql_db`` fixture); the clock is fake.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from trainengine.jobs import JobError, JobManager, RetrainingTrigger, TrainingScheduler


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_jobs_are_leased_by_priority_then_age(sql_db):
    m = JobManager(sql_db("jobs.db"))
    low, high, high_later = (m.submit_job("training", {"n": i}, p) for i, p in enumerate((1, 8, 8)))
    order = [m.lease("w", lease_s=60).job.id for _ in range(3)]
    assert order == [high, high_later, low]
    assert m.lease("w") is None


def test_two_workers_never_lease_one_job(sql_db):
    # Four threads, each its own connection pool, race for 40 jobs: every job is leased exactly once.
    location = sql_db("jobs.db")
    setup = JobManager(location)
    ids = {setup.submit_job("noop", {"i": i}) for i in range(40)}
    taken: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        m = JobManager(location)
        while (lease := m.lease(name, lease_s=60)) is not None:
            with lock:
                taken.append(lease.job.id)
        m.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)  # none twice, none missed


def test_an_expired_lease_is_re_queued_and_its_old_worker_cannot_complete(sql_db):
    clock = Clock()
    m = JobManager(sql_db("jobs.db"), clock=clock)
    job_id = m.submit_job("training", {}, max_retries=3)
    first = m.lease("dead-worker", lease_s=10)
    assert m.heartbeat(first, lease_s=10) == "ok"
    clock.advance(11)  # no heartbeat: the worker died
    second = m.lease("live-worker", lease_s=10)
    assert second is not None and second.job.id == job_id and second.job.attempts == 2
    assert m.heartbeat(first) == "lost"
    assert m.complete(first, {"from": "the dead worker"}) is False  # a late completion is refused
    assert m.complete(second, {"from": "the live worker"}, run_id="job-1") is True
    assert m.complete(second, {"again": True}) is False  # recorded once
    job = m.get_job(job_id)
    assert job.status == "succeeded" and job.result == {"from": "the live worker"} and job.run_id == "job-1"
    statuses = [e.status for e in job.history]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]
    assert "expired" in job.history[2].message


def test_failures_retry_with_backoff_then_fail(sql_db):
    clock = Clock()
    m = JobManager(sql_db("jobs.db"), clock=clock, retry_backoff_s=10)
    job_id = m.submit_job("training", {}, max_retries=1)
    assert m.fail(m.lease("w"), "boom") == "queued"
    assert m.lease("w") is None  # backing off
    clock.advance(10.5)
    lease = m.lease("w")
    assert lease is not None and lease.job.attempts == 2
    assert m.fail(lease, "boom again") == "failed"
    job = m.get_job(job_id)
    assert job.status == "failed" and job.error == "boom again" and job.finished_at is not None


def test_cancel_and_requeue(sql_db):
    m = JobManager(sql_db("jobs.db"))
    queued = m.submit_job("training", {})
    running = m.submit_job("training", {}, priority=5)
    lease = m.lease("w")
    assert lease.job.id == running
    assert m.cancel_job(queued) == "cancelled"
    assert m.cancel_job(running) == "running" and m.heartbeat(lease) == "cancel"
    assert m.requeue(lease, "worker stopping") is True
    job = m.get_job(running)
    assert job.status == "queued" and job.attempts == 0  # a stopped worker's run does not count as a try
    with pytest.raises(JobError, match="no job 999"):
        m.cancel_job(999)


def test_submit_refuses_bad_arguments():
    m = JobManager(":memory:")
    for kwargs, match in (
        ({"job_type": ""}, "non-empty"),
        ({"job_type": "training", "config": {"x": float("nan")}}, "JSON"),
        ({"job_type": "training", "max_retries": -1}, "max_retries"),
        ({"job_type": "training", "timeout": 0}, "timeout"),
    ):
        with pytest.raises(JobError, match=match):
            m.submit_job(**kwargs)


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_a_cron_schedule_fires_at_its_times_under_a_fake_clock(sql_db):
    clock = Clock(_ts(2026, 12, 1, 0, 30))
    scheduler = TrainingScheduler(JobManager(sql_db("jobs.db"), clock=clock))
    scheduler.create_schedule("nightly", "retraining", {"training_config": {}}, "0 2 * * *", priority=3)
    assert scheduler.tick() == []  # 00:30: nothing due yet
    clock.now = _ts(2026, 12, 1, 2, 0, 5)
    fired = scheduler.tick()
    assert len(fired) == 1 and scheduler.tick() == []  # once per due time
    job = scheduler.manager.get_job(fired[0])
    assert (job.job_type, job.priority, job.schedule) == ("retraining", 3, "nightly")
    clock.now = _ts(2026, 12, 5, 9, 0)  # no scheduler ran for 3 nights: one run, not three
    assert len(scheduler.tick()) == 1 and scheduler.tick() == []
    assert scheduler.get_schedule("nightly").last_fired_at == _ts(2026, 12, 5, 2, 0)
    scheduler.disable_schedule("nightly")
    clock.now = _ts(2026, 12, 6, 2, 1)
    assert scheduler.tick() == []
    names = [t.isoformat() for t in scheduler.next_runs("nightly", 2)]
    assert names == ["2026-12-07T02:00:00+00:00", "2026-12-08T02:00:00+00:00"]


def test_a_schedule_in_another_time_zone_and_two_schedulers_ticking_together(sql_db):
    clock = Clock(_ts(2026, 7, 1, 0, 0))
    location = sql_db("jobs.db")
    a = TrainingScheduler(JobManager(location, clock=clock))
    b = TrainingScheduler(JobManager(location, clock=clock))
    a.create_schedule("berlin", "training", {}, "0 9 * * *", timezone="Europe/Berlin")
    clock.now = _ts(2026, 7, 1, 7, 0, 30)  # 09:00 in Berlin (summer time, UTC+2)
    assert len(a.tick()) + len(b.tick()) == 1  # the run is claimed once
    for bad, match in (("61 * * * *", "invalid cron"), ("0 2 * * *", "exists")):
        with pytest.raises(JobError, match=match):
            a.create_schedule("berlin", "training", {}, bad)
    with pytest.raises(JobError, match="unknown time zone"):
        a.create_schedule("mars", "training", {}, "0 2 * * *", timezone="Mars/Olympus")


def test_should_retrain_says_why():
    trigger = RetrainingTrigger("val_loss", degradation_threshold=0.1, min_days_between_retrains=7, drift_threshold=0.2)
    assert not trigger.should_retrain({"val_loss": 0.52}, {"val_loss": 0.5}, drift_score=0.1)
    decision = trigger.should_retrain({"val/loss": 0.52}, {"val/loss": 0.5}, drift_score=0.35)
    assert decision and "drift score 0.35 above 0.2" in decision.reason
    accuracy = RetrainingTrigger("val/accuracy", degradation_threshold=0.05)
    assert accuracy.should_retrain({"accuracy": 0.80}, {"accuracy": 0.90})  # higher is better: 11% worse
    assert not accuracy.should_retrain({"accuracy": 0.95}, {"accuracy": 0.90})
    recent = trigger.should_retrain({"val_loss": 0.9}, {"val_loss": 0.5}, last_retrain_at=trigger.clock() - 3600)
    assert not recent and "cool-down" in recent.reason
    with pytest.raises(JobError, match="mode='min' or mode='max'"):
        RetrainingTrigger("business_kpi")


def test_a_drift_enqueues_one_retraining_job_per_cool_down(sql_db):
    clock = Clock()
    location = sql_db("jobs.db")
    manager = JobManager(location, clock=clock)
    # Two monitors (e.g. two server replicas) watching the same model share the trigger's name.
    triggers = [RetrainingTrigger("val_loss", min_days_between_retrains=7, drift_threshold=0.2, clock=clock)
                for _ in range(2)]  # fmt: skip
    config = {"training_config": {"training": {"epochs": 1}}}
    assert triggers[0].fire(manager, config, drift_score=0.1) is None  # below the threshold
    first = triggers[0].fire(manager, config, drift_score=0.5)
    assert first is not None
    assert triggers[1].fire(JobManager(location, clock=clock), config, drift_score=0.6) is None  # same window
    clock.advance(3 * 86400)
    assert triggers[0].fire(manager, config, drift_score=0.9) is None
    clock.advance(5 * 86400)  # 8 days after the first
    second = triggers[1].fire(manager, config, drift_score=0.4)
    assert second is not None and second != first
    jobs = manager.list_jobs(job_type="retraining")
    assert [j.id for j in jobs] == [second, first] and jobs[0].priority == 8
    assert "drift score 0.4" in manager.get_job(second).history[0].message


def test_a_worker_imports_only_the_database_layer():
    # torch and the engine load in a job's own process; the worker stays small and starts fast.
    import subprocess
    import sys

    code = (
        "import sys, trainengine.jobs, trainengine.cli._jobs_cmd; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
