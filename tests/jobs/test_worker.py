"""Workers as real processes: a killed worker's job completes once, SIGTERM re-queues, plugins, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainengine.jobs import JobManager

pytestmark = pytest.mark.timeout(240)

TRAINING = {
    "data": {"dataset": "digits"},
    "model": {"architecture": "mlp"},
    "training": {"epochs": 3, "batch_size": 16, "log_interval_steps": 50},
    "checkpointing": {"enabled": True, "save_every_n_steps": 25, "save_every_n_epochs": None},
    "tracking": {"progress": "off", "experiment_db": False},
}


def _training_job(manager: JobManager, out: Path) -> int:
    from trainengine.config import TrainingConfig

    raw = {**TRAINING, "tracking": {**TRAINING["tracking"], "output_dir": str(out)}}
    config = TrainingConfig.from_dict(raw)
    return manager.submit_job("training", {"training_config": config.to_dict()}, max_retries=2)


def _worker(db: str, tmp: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "trainengine", "jobs", "worker", "--db", db, "--lease-s", "2",
               "--poll-interval", "0.1", "--log-dir", str(tmp / "logs"), *extra]  # fmt: skip
    return subprocess.Popen(
        command, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
    )


def _wait_for(predicate, timeout: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_killed_worker_job_resumes_elsewhere_and_completes_once(sql_db, tmp_path):
    db = sql_db("jobs.db")
    manager = JobManager(db)
    job_id = _training_job(manager, tmp_path / "runs")
    checkpoints = tmp_path / "runs" / "default" / f"job-{job_id}" / "checkpoints"
    first = _worker(db, tmp_path, "--worker-id", "doomed", "--max-jobs", "1")
    _wait_for(lambda: checkpoints.is_dir() and any(p.name.startswith("ckpt-") for p in checkpoints.iterdir()),
              what="the first checkpoint")  # fmt: skip
    first.send_signal(signal.SIGKILL)  # no goodbye: its job's process dies with it, the lease runs out
    first.wait(30)
    assert manager.get_job(job_id).status == "running"  # still leased by the dead worker
    second = _worker(db, tmp_path, "--worker-id", "heir", "--max-jobs", "1")
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, out
    job = manager.get_job(job_id)
    assert job.status == "succeeded", (job.error, job.log_tail)
    assert job.attempts == 2 and job.lease_owner is None
    assert [e.status for e in job.history].count("succeeded") == 1  # recorded complete exactly once
    assert any("doomed" in (e.message or "") and "expired" in (e.message or "") for e in job.history)
    assert job.result["resumed_from"] and "ckpt-" in job.result["resumed_from"]  # continued, not restarted
    assert job.run_id == f"job-{job_id}" and job.result["steps"] == 3 * 90  # 1437 training digits / 16: 90 a epoch
    assert Path(job.log_path).is_file() and job.log_path.endswith("attempt-2.log")


def test_sigterm_checkpoints_the_running_job_and_puts_it_back(tmp_path):
    db = str(tmp_path / "jobs.db")
    manager = JobManager(db)
    job_id = _training_job(manager, tmp_path / "runs")
    checkpoints = tmp_path / "runs" / "default" / f"job-{job_id}" / "checkpoints"
    worker = _worker(db, tmp_path, "--max-jobs", "1")
    _wait_for(lambda: checkpoints.is_dir() and any(p.name.startswith("ckpt-") for p in checkpoints.iterdir()),
              what="the first checkpoint")  # fmt: skip
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    job = manager.get_job(job_id)
    assert job.status == "queued" and job.attempts == 0, (job.status, job.error)  # not lost, not counted
    assert "stopped" in job.history[-1].message
    emergency = [p for p in checkpoints.iterdir() if p.name.startswith("ckpt-")]
    assert any("emergency" in json.loads((p / "meta.json").read_text())["tags"] for p in emergency)
    again = _worker(db, tmp_path, "--exit-when-idle")
    out, _ = again.communicate(timeout=180)
    job = manager.get_job(job_id)
    assert job.status == "succeeded" and job.attempts == 1, out
    assert job.result["resumed_from"] is not None


PLUGIN = """
from trainengine.registries import register_job_type


def echo(config, context):
    print("echo job running", context.job_id, context.attempt, flush=True)
    return {"echo": config["message"], "attempt": context.attempt}


def broken(config, context):
    raise RuntimeError("the data source is down")


register_job_type("echo", echo)
register_job_type("broken", broken)
"""


def test_user_job_types_come_from_plugins_and_failures_keep_their_log(tmp_path):
    (tmp_path / "myjobs.py").write_text(textwrap.dedent(PLUGIN))
    db = str(tmp_path / "jobs.db")
    manager = JobManager(db)
    ok = manager.submit_job("echo", {"plugins": ["myjobs"], "message": "hello"})
    bad = manager.submit_job("broken", {"plugins": ["myjobs"]}, max_retries=1)
    worker = _worker(db, tmp_path, "--exit-when-idle", "--retry-backoff-s", "0", env={"PYTHONPATH": str(tmp_path)})
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    done, failed = manager.get_job(ok), manager.get_job(bad)
    assert done.status == "succeeded" and done.result == {"echo": "hello", "attempt": 1}
    assert "echo job running" in done.log_tail
    assert failed.status == "failed" and failed.attempts == 2  # one retry, then out of tries
    assert "RuntimeError: the data source is down" in failed.error and "Traceback" in failed.log_tail


def test_the_jobs_command_line(tmp_path, monkeypatch):
    from trainengine.cli.main import app

    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    db = str(tmp_path / "cli.db")
    r = run(app, ["jobs", "submit", "training", "--set", "data.dataset=digits", "--priority", "4", "--db", db])
    assert r.exit_code == 0 and "submitted job 1" in r.output, r.output
    assert run(app, ["jobs", "submit", "evaluation", "--json", '{"checkpoint": "x"}', "--db", db]).exit_code == 0
    listed = run(app, ["jobs", "list", "--db", db]).output
    assert "training" in listed and "evaluation" in listed
    shown = json.loads(run(app, ["jobs", "show", "1", "--json", "--db", db]).output)
    assert shown["config"]["training_config"]["data"]["dataset"] == "digits" and shown["priority"] == 4
    assert "cancelled" in run(app, ["jobs", "cancel", "2", "--db", db]).output
    added = run(app, ["jobs", "schedule", "add", "nightly", "0 2 * * *", "--json", "{}", "--db", db])
    assert added.exit_code == 0 and "next runs" in added.output, added.output
    assert "nightly" in run(app, ["jobs", "schedule", "list", "--db", db]).output
    bad = run(app, ["jobs", "schedule", "add", "oops", "every day", "--db", db])
    assert bad.exit_code != 0 and "invalid cron expression" in str(bad.exception or bad.output)
    assert run(app, ["jobs", "schedule", "remove", "nightly", "--db", db]).exit_code == 0
    assert "nightly" not in run(app, ["jobs", "schedule", "list", "--db", db]).output


def test_a_drift_read_from_a_servers_metrics_submits_one_retraining_job(tmp_path, monkeypatch):
    # A /metrics page as `trainengine serve` writes it (the drift gauge), served over HTTP; the trigger
    # command run twice (e.g. from cron) submits one retraining job for the cool-down window.
    import http.server
    import threading

    from trainengine.cli.main import app

    page = (
        b"# HELP trainengine_serve_drift_score Jensen-Shannon divergence\n"
        b"# TYPE trainengine_serve_drift_score gauge\n"
        b"trainengine_serve_drift_score 0.35\n"
    )

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "jobs.db")
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    command = ["jobs", "trigger", "--metrics-url", url, "--set", "data.dataset=digits", "--db", db]
    try:
        first = CliRunner().invoke(app, command)
        second = CliRunner().invoke(app, command)
    finally:
        server.shutdown()
    assert first.exit_code == 0 and "submitted retraining job 1: drift score 0.35 above 0.2" in first.output
    assert second.exit_code == 0 and "within the last 7 days" in second.output
    jobs = JobManager(db).list_jobs()
    assert [(j.job_type, j.priority) for j in jobs] == [("retraining", 8)]
    assert jobs[0].config["training_config"]["data"]["dataset"] == "digits"
