"""Job queue throughput (no-op jobs per second, 1 and 4 workers) and trigger-to-start latency.

    python benchmarks/jobs_throughput.py [--jobs 40] [--backends sqlite,postgresql]

Each worker is a real ``trainengine jobs worker`` process; each job runs in its own process (the
isolation that keeps one job's crash or OOM from taking the worker down), so a no-op job's cost
is mostly that process's start. PostgreSQL is a throwaway server started the way the test suite
starts one (``tests/_postgres.py``: needs the ``postgres`` binaries, which ``make test`` installs).

The latency is from :meth:`RetrainingTrigger.fire` returning to the retraining job's ``started_at``,
with one idle worker polling every ``--poll-interval`` seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from trainengine.jobs import JobManager, RetrainingTrigger  # noqa: E402

PLUGIN = """
from trainengine.registries import register_job_type
register_job_type("noop", lambda config, context: {"ok": True})
"""


def _postgres() -> object:
    spec = importlib.util.spec_from_file_location("_te_postgres", REPO / "tests" / "_postgres.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["_te_postgres"] = module
    spec.loader.exec_module(module)
    return module.PostgresServer.start()


def _workers(db: str, n: int, folder: Path, *extra: str) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{REPO / 'src'}"}
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainengine",
                "jobs",
                "worker",
                "--db",
                db,
                "--worker-id",
                f"w{i}",
                "--log-dir",
                str(folder / "logs"),
                *extra,
            ],
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for i in range(n)
    ]


def throughput(db: str, n_workers: int, n_jobs: int, folder: Path) -> float:
    manager = JobManager(db)
    for _ in range(n_jobs):
        manager.submit_job("noop", {"plugins": ["bench_jobs"]})
    start = time.perf_counter()
    procs = _workers(db, n_workers, folder, "--exit-when-idle", "--poll-interval", "0.05")
    for p in procs:
        p.wait(600)
    wall = time.perf_counter() - start
    done = manager.counts()["succeeded"]
    manager.close()
    if done < n_jobs:
        raise RuntimeError(f"only {done} of {n_jobs} jobs succeeded")
    return n_jobs / wall


def latency(db: str, folder: Path, poll: float, repeats: int) -> list[float]:
    manager = JobManager(db)
    procs = _workers(db, 1, folder, "--poll-interval", str(poll))
    time.sleep(3.0)  # the worker is up and polling
    out = []
    try:
        for i in range(repeats):
            trigger = RetrainingTrigger("val_loss", min_days_between_retrains=0, name=f"bench-{i}")
            fired = time.time()
            job_id = trigger.fire(manager, {"plugins": ["bench_jobs"]}, drift_score=1.0, job_type="noop")
            assert job_id is not None
            while (job := manager.get_job(job_id, history=False)).started_at is None:
                time.sleep(0.01)
            out.append(job.started_at - fired)
            while manager.get_job(job_id, history=False).status == "running":
                time.sleep(0.01)
    finally:
        for p in procs:
            p.terminate()
            p.wait(60)
        manager.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench_jobs.py").write_text(PLUGIN)
        server = None
        for backend in args.backends.split(","):
            if backend == "postgresql":
                server = _postgres()
                url = lambda name: server.create_database()  # noqa: E731
            else:
                url = lambda name: str(folder / f"{name}.db")  # noqa: E731
            row: dict[str, object] = {}
            for n in (1, 4):
                row[f"jobs_per_s_{n}_workers"] = round(throughput(url(f"t{n}"), n, args.jobs, folder), 2)
            lat = latency(url("lat"), folder, args.poll_interval, args.repeats)
            row["trigger_to_start_s_median"] = round(statistics.median(lat), 3)
            row["trigger_to_start_s_max"] = round(max(lat), 3)
            results[backend] = row
            print(backend, json.dumps(row), flush=True)
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    print(json.dumps({"cpu_count": os.cpu_count(), "jobs": args.jobs, "poll_interval": args.poll_interval,
                      "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
