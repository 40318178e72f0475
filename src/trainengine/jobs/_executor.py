"""The worker: ``JobExecutor(manager, worker_id).run_worker(max_jobs)``.

Each job runs in its own subprocess (:mod:`trainengine.jobs._child`), so a crash or an
out-of-memory kill ends that job only. While it runs, the worker extends the job's lease every
``heartbeat_s`` seconds, watches for a cancel request and the job's timeout, and writes the
job's output to ``<log_dir>/job-<id>/attempt-<n>.log`` (its path and last lines go on the job
record). The worker imports only the database layer: torch and the engine load in the job's
process.

Stopping. SIGTERM or SIGINT to the worker is passed on to the running job: a training job
writes its emergency checkpoint and exits, and the job goes back to the queue without counting
as a try. The next worker resumes it from that checkpoint. A worker killed outright (SIGKILL,
a lost host) takes its job's process with it, and the job's lease expires: another worker
re-queues the job and resumes it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from trainengine.jobs._store import JobManager, Lease

__all__ = ["JobExecutor"]

logger = logging.getLogger("trainengine")

_INTERRUPTED = (130, 143)  # the job stopped on SIGINT / SIGTERM after its emergency checkpoint


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            return b"".join(deque(f, maxlen=lines)).decode("utf-8", errors="replace")
    except OSError:
        return ""


class JobExecutor:
    """Runs jobs from a queue, one at a time, each in its own process.

    Args:
        manager: The queue (:class:`JobManager`).
        worker_id: This worker's name on the job records (default: ``<host>-<pid>``).
        lease_s: How long a lease lasts without a heartbeat: after a worker dies, its job waits
            this long before another worker takes it.
        heartbeat_s: How often the lease is extended (default: a third of ``lease_s``).
        log_dir: Where job logs and result files go.
        job_types: Run only these types (default: all).
        stop_grace_s: After passing SIGTERM on, how long to wait for the job to checkpoint and exit
            before killing it.
        scheduler: A :class:`TrainingScheduler` whose due runs this worker submits between jobs.
    """

    def __init__(
        self,
        manager: JobManager,
        worker_id: str | None = None,
        *,
        lease_s: float = 60.0,
        heartbeat_s: float | None = None,
        log_dir: str | os.PathLike[str] = "job_logs",
        job_types: list[str] | None = None,
        stop_grace_s: float = 120.0,
        scheduler: Any = None,
    ) -> None:
        self.manager = manager
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.lease_s = float(lease_s)
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s is not None else max(0.2, self.lease_s / 3)
        self.log_dir = Path(log_dir)
        self.job_types = job_types
        self.stop_grace_s = float(stop_grace_s)
        self.scheduler = scheduler
        self._stop = threading.Event()
        self._stop_signal: int | None = None
        self._child: subprocess.Popen[bytes] | None = None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop after the running job (which is asked to checkpoint and exit now)."""
        self._stop_signal = signum
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def run_worker(
        self, max_jobs: int | None = None, poll_interval: float = 5.0, *, exit_when_idle: bool = False
    ) -> int:
        """Lease and run jobs until ``max_jobs`` ran, a stop signal arrives, or (``exit_when_idle``) the queue is empty.

        Returns:
            The number of jobs this worker ran (whatever their outcome).
        """
        previous = self._install_signals()
        ran = 0
        try:
            while not self._stop.is_set() and (max_jobs is None or ran < max_jobs):
                if self.scheduler is not None:
                    self.scheduler.tick()
                lease = self.manager.lease(self.worker_id, lease_s=self.lease_s, job_types=self.job_types)
                if lease is None:
                    if exit_when_idle:
                        break
                    self._stop.wait(poll_interval)
                    continue
                self.run_job(lease)
                ran += 1
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return ran

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda s, _f: self.stop(s))
        return previous

    def run_job(self, lease: Lease) -> str:
        """Run one leased job to its end; returns the status recorded (``lost`` when the lease was taken over)."""
        job = lease.job
        work_dir = (self.log_dir / f"job-{job.id}").resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
        log_path = work_dir / f"attempt-{job.attempts}.log"
        result_file = work_dir / f"attempt-{job.attempts}.result.json"
        result_file.unlink(missing_ok=True)
        spec = {
            "job_id": job.id, "job_type": job.job_type, "config": job.config, "attempt": job.attempts,
            "work_dir": str(work_dir.resolve()), "result_file": str(result_file.resolve()), "parent": os.getpid(),
        }  # fmt: skip
        spec_file = work_dir / f"attempt-{job.attempts}.spec.json"
        spec_file.write_text(json.dumps(spec))
        logger.info("worker %s: job %d (%s), attempt %d", self.worker_id, job.id, job.job_type, job.attempts)
        with log_path.open("ab") as log:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "trainengine.jobs._child", str(spec_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            if self._stop.is_set():  # a stop arrived while the job was starting
                self._child.send_signal(self._stop_signal or signal.SIGTERM)
            outcome = self._watch(lease, self._child)
            rc = self._child.returncode
            self._child = None
        record = {"log_path": str(log_path), "log_tail": _tail(log_path)}
        return self._record(lease, outcome, rc, result_file, record)

    def _watch(self, lease: Lease, child: subprocess.Popen[bytes]) -> str:
        """Heartbeat until the child exits: ``exited``, ``lost``, ``cancelled`` or ``timeout``."""
        started = time.monotonic()
        timeout = lease.job.timeout_s
        outcome = "exited"
        while True:
            try:
                child.wait(timeout=self.heartbeat_s)
                return outcome
            except subprocess.TimeoutExpired:
                pass
            if outcome != "exited":
                continue  # already stopping the child
            beat = self.manager.heartbeat(lease, lease_s=self.lease_s)
            if beat == "lost":
                logger.error("job %d: lease lost (another worker took it over); stopping its run", lease.job.id)
                child.kill()
                outcome = "lost"
            elif beat == "cancel":
                self._terminate(child)
                outcome = "cancelled"
            elif timeout is not None and time.monotonic() - started > timeout:
                self._terminate(child)
                outcome = "timeout"

    def _terminate(self, child: subprocess.Popen[bytes]) -> None:
        child.terminate()

        def kill_if_running() -> None:
            if child.poll() is None:
                child.kill()

        timer = threading.Timer(self.stop_grace_s, kill_if_running)
        timer.daemon = True
        timer.start()

    def _record(self, lease: Lease, outcome: str, rc: int | None, result_file: Path, record: dict[str, Any]) -> str:
        job, m = lease.job, self.manager
        if outcome == "lost":
            return "lost"
        if outcome == "cancelled":
            m.mark_cancelled(lease, **record)
            return "cancelled"
        if outcome == "timeout":
            return m.fail(lease, f"timed out after {job.timeout_s:g} s", **record) or "lost"
        if rc == 0 and result_file.is_file():
            result = json.loads(result_file.read_text())
            ids = {k: str(result[k]) for k in ("run_id", "run_dir") if result.get(k)}
            return "succeeded" if m.complete(lease, result, **ids, **record) else "lost"
        if rc in _INTERRUPTED and self._stop.is_set():
            why = f"worker {self.worker_id} stopped (signal {self._stop_signal}); resumes from its checkpoint"
            m.requeue(lease, why, **record)
            return "queued"
        last = record["log_tail"].strip().splitlines()[-1:] or [""]
        return m.fail(lease, f"exit code {rc}: {last[0][:500]}", **record) or "lost"
