"""Several processes writing to one ExperimentDB at once lose nothing (8 processes x 200 metrics).

Each test runs on a SQLite file and on a throwaway PostgreSQL database (``sql_db``, tests/_postgres.py).
"""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from trainengine.tracking import ExperimentDB

NUM_PROCESSES = 8
NUM_METRICS = 200


def _expected(worker: int, i: int) -> float:
    return worker * 1000 + i / 8  # exact in binary floating point, distinct per worker and step


def _worker(path: str, worker: int, start, results) -> None:
    start.wait(timeout=30)  # all processes open the fresh file and create the schema together
    try:
        with ExperimentDB(path) as db:
            run_id = db.log_run(f"worker-{worker}", {"worker": worker}, experiment="concurrency")
            for i in range(NUM_METRICS):
                db.log_metric(run_id, "train/loss", _expected(worker, i), step=i, epoch=i // 50)
            db.update_run_status(run_id, "completed")
        results.put((worker, run_id, None))
    except BaseException as exc:  # noqa: BLE001 - a child process reports any failure instead of dying silently
        results.put((worker, None, repr(exc)))


@pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork"
)
def test_eight_processes_lose_no_metric(sql_db):
    # fork, not spawn: a spawned child re-imports torch (about 3 s of CPU each), and a test module
    # imported with --import-mode=importlib cannot be re-imported by name in a child.
    ctx = multiprocessing.get_context("fork")
    path = sql_db("shared/experiments.db")
    start, results = ctx.Barrier(NUM_PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, w, start, results)) for w in range(NUM_PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    outcomes = [results.get(timeout=5) for _ in procs]
    assert [p.exitcode for p in procs] == [0] * NUM_PROCESSES
    assert [err for _, _, err in outcomes if err] == []
    run_ids = {w: rid for w, rid, _ in outcomes}
    assert len(set(run_ids.values())) == NUM_PROCESSES

    # count rows independently of ExperimentDB
    assert sql_db.raw(path, "SELECT count(*) FROM metrics") == [(NUM_PROCESSES * NUM_METRICS,)]
    assert sql_db.raw(path, "SELECT count(*) FROM runs") == [(NUM_PROCESSES,)]
    with ExperimentDB(path) as db:
        for worker, run_id in run_ids.items():
            run = db.get_run(run_id)
            assert run["run_name"] == f"worker-{worker}" and run["status"] == "completed"
            points = run["metrics"]["train/loss"]
            assert [p["value"] for p in points] == [_expected(worker, i) for i in range(NUM_METRICS)]
            assert [p["step"] for p in points] == list(range(NUM_METRICS))


def _log_from_inherited(db: ExperimentDB, run_id: int, results) -> None:
    try:
        db.log_metrics(run_id, {"child/value": 1.5}, step=1)
        results.put(None)
    except BaseException as exc:  # noqa: BLE001 - a child process reports any failure instead of dying silently
        results.put(repr(exc))


@pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork"
)
def test_forked_child_can_use_the_parents_instance(sql_db):
    # The child drops the parent's pooled connection (sharing one across fork corrupts SQLite
    # files) and opens its own; the parent keeps working with its connection afterwards.
    ctx = multiprocessing.get_context("fork")
    db = ExperimentDB(sql_db("e.db"))
    run_id = db.log_run("parent")
    db.log_metric(run_id, "parent/value", 0.5, step=0)  # the pool now holds an open connection
    results = ctx.Queue()
    child = ctx.Process(target=_log_from_inherited, args=(db, run_id, results))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0 and results.get(timeout=5) is None
    db.log_metric(run_id, "parent/value", 0.75, step=2)
    metrics = db.get_run(run_id)["metrics"]
    assert [p["value"] for p in metrics["parent/value"]] == [0.5, 0.75]
    assert [p["value"] for p in metrics["child/value"]] == [1.5]
    db.close()
