"""ExperimentDB: runs, metrics, status, queries, persistence, errors and lock handling.

Tests taking ``db`` or ``sql_db`` run twice: on a SQLite file and on a throwaway PostgreSQL
database (tests/_postgres.py). Lock handling and path/URL resolution are SQLite matters and run there.
"""

from __future__ import annotations

import doctest
import math
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from trainengine import _sql
from trainengine.errors import TrainEngineError
from trainengine.tracking import ExperimentDB, ExperimentDBError, ExperimentDBValueError, UnknownRunError, _db

# Input validation that fails before any SQL runs: one back-end is enough (keeps the PostgreSQL
# runs within their time budget).
SQLITE_ONLY = pytest.mark.parametrize("sql_db", ["sqlite"], indirect=True)


@pytest.fixture
def db(sql_db):
    with ExperimentDB(sql_db("experiments.db")) as database:
        yield database


def test_module_doctests_pass():
    result = doctest.testmod(_db, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


# ------------------------------------------------------------------------------------- log_run / get_run
def test_log_run_and_get_run_round_trip(db, tmp_path):
    config = {"training": {"learning_rate": 3e-4, "batch_size": 8}, "name": "mlp", "layers": [64, 32]}
    rid = db.log_run(
        "trial-1",
        config,
        notes="hypothesis: smaller lr",
        tags=["sweep", "mlp", "sweep"],
        experiment="lr-search",
        run_dir=tmp_path / "runs" / "x",
    )
    other = db.log_run("trial-2")
    assert isinstance(rid, int) and other > rid
    run = db.get_run(rid)
    assert run["run_id"] == rid and run["run_name"] == "trial-1" and run["experiment"] == "lr-search"
    assert run["config"] == config
    assert run["notes"] == "hypothesis: smaller lr"
    assert run["tags"] == ["sweep", "mlp"]  # order kept, duplicate dropped
    assert run["status"] == "running" and run["error"] is None and run["end_time"] is None and run["duration_s"] is None
    assert run["run_dir"] == str(tmp_path / "runs" / "x")
    assert abs(datetime.fromisoformat(run["start_time"]).timestamp() - time.time()) < 60
    assert run["metrics"] == {}
    defaults = db.get_run(other)
    assert (
        defaults["config"] == {}
        and defaults["tags"] == []
        and defaults["notes"] == ""
        and defaults["experiment"] == "default"
    )


def test_config_objects_and_exotic_values_are_serialised(db, tmp_path):
    class Cfg:
        def to_dict(self):
            return {"lr": 0.1}

    rid = db.log_run("r", Cfg())
    assert db.get_run(rid)["config"] == {"lr": 0.1}
    rid = db.log_run(
        "r", {"path": tmp_path, "np": np.float32(0.5), "t": torch.tensor([1, 2]), "set": {3}, "obj": object()}
    )
    cfg = db.get_run(rid)["config"]
    assert cfg["path"] == str(tmp_path) and cfg["np"] == 0.5 and cfg["t"] == [1, 2] and cfg["set"] == [3]
    assert cfg["obj"].startswith("<object object")


# ------------------------------------------------------------------------------------------- metrics
def test_metrics_keep_order_step_epoch_and_slash_names(db):
    rid = db.log_run("r")
    for step, loss in enumerate([2.0, 1.5, 1.25]):
        db.log_metric(rid, "train/loss", loss, step=step * 10, epoch=step // 2)
    db.log_metrics(rid, {"val/loss": 1.1, "val/accuracy": 0.7, "lr": 1e-3}, step=20, epoch=1)
    metrics = db.get_run(rid)["metrics"]
    assert [p["value"] for p in metrics["train/loss"]] == [2.0, 1.5, 1.25]
    assert [p["step"] for p in metrics["train/loss"]] == [0, 10, 20]
    assert [p["epoch"] for p in metrics["train/loss"]] == [0, 0, 1]
    assert metrics["val/accuracy"] == [
        {"value": 0.7, "step": 20, "epoch": 1, "time": metrics["val/accuracy"][0]["time"]}
    ]
    datetime.fromisoformat(metrics["lr"][0]["time"])
    assert db.metric_names(rid) == ["lr", "train/loss", "val/accuracy", "val/loss"]
    assert db.metric_names() == db.metric_names(experiment="default") and db.metric_names(experiment="other") == []


def test_numpy_and_tensor_values_are_accepted(db):
    rid = db.log_run("r")
    db.log_metrics(rid, {"a": np.float64(0.25), "b": torch.tensor(0.5), "c": 3, "d": np.int64(4)}, step=np.int64(7))
    metrics = db.get_run(rid)["metrics"]
    assert {k: v[0]["value"] for k, v in metrics.items()} == {"a": 0.25, "b": 0.5, "c": 3.0, "d": 4.0}
    assert metrics["a"][0]["step"] == 7


def test_non_finite_values_round_trip_and_are_skipped_by_best(db):
    rid = db.log_run("r")
    for v in [float("nan"), float("inf"), float("-inf"), 0.5]:
        db.log_metric(rid, "loss", v)
    values = [p["value"] for p in db.get_run(rid)["metrics"]["loss"]]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf, 0.5]
    assert db.get_best_run("loss", "min")["best_value"] == 0.5  # -inf is not a real best
    assert db.get_best_run("loss", "max")["best_value"] == 0.5
    summary = db.compare_runs([rid])[0]["metrics"]["loss"]
    assert summary["best"] == 0.5 and summary["last"] == 0.5 and summary["count"] == 4
    only_nan = db.log_run("nan-only")
    db.log_metric(only_nan, "acc", float("nan"))
    assert db.get_best_run("acc", "max") is None
    s = db.compare_runs([only_nan])[0]["metrics"]["acc"]
    assert s["best"] is None and math.isnan(s["last"])


def test_log_metrics_is_all_or_nothing(db):
    rid = db.log_run("r")
    with pytest.raises(ExperimentDBValueError, match="metric 'bad'"):
        db.log_metrics(rid, {"good": 1.0, "bad": "oops"})
    assert db.get_run(rid)["metrics"] == {}
    db.log_metrics(rid, {})  # nothing to do, no error
    assert db.get_run(rid)["metrics"] == {}


# --------------------------------------------------------------------------------------------- status
def test_update_run_status_sets_end_time_and_error(db):
    rid = db.log_run("r")
    db.update_run_status(rid, "failed", error="RuntimeError: CUDA out of memory")
    run = db.get_run(rid)
    assert run["status"] == "failed" and run["error"] == "RuntimeError: CUDA out of memory"
    assert datetime.fromisoformat(run["end_time"]) >= datetime.fromisoformat(run["start_time"])
    assert run["duration_s"] >= 0
    db.update_run_status(rid, "running")  # resumed
    run = db.get_run(rid)
    assert run["status"] == "running" and run["end_time"] is None and run["error"] is None
    db.update_run_status(rid, "interrupted", error=KeyboardInterrupt())
    assert db.get_run(rid)["error"] == "KeyboardInterrupt()"
    db.update_run_status(rid, "completed")
    assert db.get_run(rid)["status"] == "completed" and db.get_run(rid)["end_time"] is not None
    assert db.get_run(db.log_run("done", status="completed"))["end_time"] is not None


def test_unknown_status_lists_valid_ones(db):
    rid = db.log_run("r")
    with pytest.raises(ValueError, match=r"unknown run status 'done' — valid: running, completed, failed, interrupted"):
        db.update_run_status(rid, "done")
    with pytest.raises(ValueError, match="unknown run status"):
        db.log_run("r", status="finished")
    assert db.get_run(rid)["status"] == "running"


def test_unknown_run_id_is_named(db):
    rid = db.log_run("r")
    for call in (
        lambda: db.get_run(rid + 41),
        lambda: db.log_metric(rid + 41, "x", 1.0),
        lambda: db.update_run_status(rid + 41, "completed"),
    ):
        with pytest.raises(UnknownRunError, match=f"no run with run_id {rid + 41}") as info:
            call()
        assert isinstance(info.value, KeyError) and isinstance(info.value, TrainEngineError)
        assert str(info.value).startswith("no run with run_id")  # not wrapped in quotes like KeyError
    with pytest.raises(UnknownRunError, match=f"run_id {rid + 5}, {rid + 6}"):
        db.compare_runs([rid, rid + 5, rid + 6])


# ------------------------------------------------------------------------------------------ list_runs
@pytest.fixture
def populated(db):
    ids = {
        "a": db.log_run("sweep-lr-0.1", {"training": {"lr": 0.1, "bs": 8}}, tags=["sweep", "mlp"], experiment="lr"),
        "b": db.log_run("sweep-lr-0.01", {"training": {"lr": 0.01, "bs": 8}}, tags=["sweep"], experiment="lr"),
        "c": db.log_run("baseline", {"training": {"lr": 0.01, "bs": 16}}, tags=["mlp"], experiment="base"),
        "d": db.log_run("sweep_x%", {"training": {"lr": 0.5}}, experiment="lr"),
    }
    db.update_run_status(ids["a"], "completed")
    db.update_run_status(ids["c"], "failed", error="nan loss")
    return db, ids


def _names(runs):
    return [r["run_name"] for r in runs]


def test_list_runs_newest_first_and_filters(populated):
    db, _ = populated
    assert _names(db.list_runs()) == ["sweep_x%", "baseline", "sweep-lr-0.01", "sweep-lr-0.1"]
    assert "metrics" not in db.list_runs()[0]
    assert _names(db.list_runs(experiment="lr")) == ["sweep_x%", "sweep-lr-0.01", "sweep-lr-0.1"]
    assert _names(db.list_runs({"experiment": "lr"})) == _names(db.list_runs(experiment="lr"))
    assert _names(db.list_runs(status="completed")) == ["sweep-lr-0.1"]
    assert _names(db.list_runs(status=["completed", "failed"])) == ["baseline", "sweep-lr-0.1"]
    assert _names(db.list_runs(tag="mlp")) == ["baseline", "sweep-lr-0.1"]
    assert _names(db.list_runs(tag=["mlp", "sweep"])) == ["sweep-lr-0.1"]  # runs having all tags
    assert _names(db.list_runs({"run_name": "sweep-*"})) == ["sweep-lr-0.01", "sweep-lr-0.1"]
    assert _names(db.list_runs({"run_name": "sweep_x%"})) == ["sweep_x%"]  # exact, % is not a wildcard
    assert _names(db.list_runs({"run_name": "sweep_?%"})) == ["sweep_x%"]  # _ and % literal, ? one char
    assert _names(db.list_runs({"config.training.lr": 0.01})) == ["baseline", "sweep-lr-0.01"]
    assert _names(db.list_runs({"config.training.lr": 0.01, "config.training.bs": 8})) == ["sweep-lr-0.01"]
    assert _names(db.list_runs({"config.training.missing": 1})) == []
    assert _names(db.list_runs({"config.training.lr": 0.01}, limit=1)) == ["baseline"]
    assert _names(db.list_runs(limit=2)) == ["sweep_x%", "baseline"]
    assert _names(db.list_runs({"experiment": "lr", "tag": "sweep"}, status="running")) == ["sweep-lr-0.01"]
    failed = db.list_runs(status="failed")[0]
    assert failed["error"] == "nan loss" and failed["config"] == {"training": {"lr": 0.01, "bs": 16}}


def test_list_runs_include_metrics(populated):
    db, ids = populated
    db.log_metric(ids["b"], "val/loss", 0.3, step=5)
    runs = {r["run_name"]: r for r in db.list_runs(experiment="lr", include_metrics=True)}
    assert [p["value"] for p in runs["sweep-lr-0.01"]["metrics"]["val/loss"]] == [0.3]
    assert runs["sweep-lr-0.1"]["metrics"] == {}


def test_list_runs_bad_filters(populated):
    db, _ = populated
    with pytest.raises(
        ValueError, match=r"unknown list_runs filter 'statuss' — valid: experiment, status, tag, run_name, config"
    ):
        db.list_runs({"statuss": "completed"})
    with pytest.raises(ValueError, match="given twice"):
        db.list_runs({"experiment": "lr"}, experiment="base")
    with pytest.raises(ValueError, match="unknown run status 'ok'"):
        db.list_runs(status="ok")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            db.list_runs(limit=bad)
    with pytest.raises(ValueError, match="filters must be a dict"):
        db.list_runs(["lr"])


# --------------------------------------------------------------------------------------- best / compare
def test_get_best_run_min_and_max(populated):
    db, ids = populated
    curves = {"a": [0.9, 0.4, 0.5], "b": [0.8, 0.6], "c": [0.3, 0.35], "d": [1.0]}
    accs = {"a": 0.7, "b": 0.9, "c": 0.6, "d": 0.1}
    for key, losses in curves.items():
        for step, loss in enumerate(losses):
            db.log_metrics(
                ids[key],
                {"val/loss": loss, "val/acc": accs[key] - 0.1 * (len(losses) - 1 - step)},
                step=step,
                epoch=step,
            )
    best = db.get_best_run("val/loss", mode="min")
    assert best["run_name"] == "baseline" and best["best_value"] == 0.3 and best["step"] == 0 and best["epoch"] == 0
    assert (
        best["config"] == {"training": {"lr": 0.01, "bs": 16}}
        and best["metric"] == "val/loss"
        and best["mode"] == "min"
    )
    lr_best = db.get_best_run("val/loss", "min", experiment="lr")
    assert lr_best["run_name"] == "sweep-lr-0.1" and lr_best["best_value"] == 0.4 and lr_best["step"] == 1
    assert db.get_best_run("val/loss", "max")["run_name"] == "sweep_x%"
    assert db.get_best_run("val/acc", "max")["run_name"] == "sweep-lr-0.01"
    assert db.get_best_run("val/loss", "min", status="completed")["run_name"] == "sweep-lr-0.1"
    assert db.get_best_run("val/los") is None
    assert db.get_best_run("val/loss", experiment="nope") is None


def test_get_best_run_ties_go_to_earliest(db):
    first, second = db.log_run("first"), db.log_run("second")
    db.log_metric(second, "loss", 0.5)
    db.log_metric(first, "loss", 0.5)
    assert db.get_best_run("loss")["run_id"] == second


def test_get_best_run_bad_mode(db):
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'lowest'"):
        db.get_best_run("loss", mode="lowest")


def test_compare_runs_best_and_last(db):
    a, b = db.log_run("a", {"lr": 0.1}), db.log_run("b", {"lr": 0.2})
    for step, (loss, acc) in enumerate([(1.0, 0.5), (0.6, 0.8), (0.7, 0.75)]):
        db.log_metrics(a, {"val/loss": loss, "val/accuracy": acc, "test/r2": acc / 2, "top1_acc": acc}, step=step)
    db.log_metric(b, "val/loss", 0.9, step=0)
    db.update_run_status(a, "completed")
    rows = db.compare_runs([b, a])
    assert (
        [r["run_name"] for r in rows] == ["b", "a"]
        and rows[1]["status"] == "completed"
        and rows[1]["config"] == {"lr": 0.1}
    )
    ma = rows[1]["metrics"]
    assert ma["val/loss"] == {"mode": "min", "best": 0.6, "best_step": 1, "last": 0.7, "last_step": 2, "count": 3}
    assert (
        ma["val/accuracy"]["mode"] == "max" and ma["val/accuracy"]["best"] == 0.8 and ma["val/accuracy"]["last"] == 0.75
    )
    assert ma["test/r2"]["mode"] == "max" and ma["top1_acc"]["mode"] == "max"
    mb = rows[0]["metrics"]
    assert set(mb) == set(ma)  # every metric any compared run logged
    assert mb["val/accuracy"] == {
        "mode": "max",
        "best": None,
        "best_step": None,
        "last": None,
        "last_step": None,
        "count": 0,
    }
    only = db.compare_runs([a], metrics=["val/loss"], modes={"val/loss": "max"})
    assert list(only[0]["metrics"]) == ["val/loss"] and only[0]["metrics"]["val/loss"]["best"] == 1.0


def test_compare_runs_bad_arguments(db):
    rid = db.log_run("r")
    with pytest.raises(ValueError, match="run_ids is empty"):
        db.compare_runs([])
    with pytest.raises(ValueError, match="run_ids must be a list"):
        db.compare_runs(rid)
    with pytest.raises(ValueError, match=r"metrics must be a list of names, got str 'loss'"):
        db.compare_runs([rid], metrics="loss")
    with pytest.raises(ValueError, match="mode of metric 'loss' must be 'min' or 'max'"):
        db.compare_runs([rid], modes={"loss": "lower"})


# ------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda db, r: db.log_run(""), "run_name must be a non-empty string"),
        (lambda db, r: db.log_run(None), "run_name must be a non-empty string, got NoneType"),
        (lambda db, r: db.log_run("x" * 300), "run_name is 300 characters long; the limit is 255"),
        (
            lambda db, r: db.log_run("r", tags="sweep"),
            r"tags must be a list of strings, got str 'sweep'; e.g. tags=\['baseline'\]",
        ),
        (lambda db, r: db.log_run("r", tags=["ok", 3]), "each tag must be a non-empty string, got int 3"),
        (lambda db, r: db.log_run("r", config=[1, 2]), "config must be a dict"),
        (lambda db, r: db.log_run("r", notes=None), "notes must be a string"),
        (lambda db, r: db.log_run("r", experiment=""), "experiment must be a non-empty string"),
        (lambda db, r: db.log_metric(r, "loss", "0.5"), "metric 'loss': value must be a number, got str '0.5'"),
        (lambda db, r: db.log_metric(r, "loss", None), "metric 'loss': value must be a number, got NoneType"),
        (lambda db, r: db.log_metric(r, "loss", torch.ones(3)), r"metric 'loss': value must be a number, got Tensor"),
        (lambda db, r: db.log_metric(r, "", 1.0), "metric name must be a non-empty string"),
        (lambda db, r: db.log_metric(r, "loss", 1.0, step=-1), "step must be a non-negative integer or None, got -1"),
        (
            lambda db, r: db.log_metric(r, "loss", 1.0, epoch=1.5),
            "epoch must be a non-negative integer or None, got float 1.5",
        ),
        (lambda db, r: db.log_metric(str(r), "loss", 1.0), "run_id must be an integer returned by log_run, got str"),
        (lambda db, r: db.log_metric(True, "loss", 1.0), "run_id must be an integer returned by log_run, got bool"),
        (lambda db, r: db.log_metrics(r, [("loss", 1.0)]), "metrics must be a dict of name -> number, got list"),
    ],
)
@SQLITE_ONLY
def test_bad_inputs_give_clear_errors(db, call, message):
    rid = db.log_run("r")
    with pytest.raises(ExperimentDBValueError, match=message) as info:
        call(db, rid)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TrainEngineError)
    assert db.get_run(rid)["metrics"] == {}


# ------------------------------------------------------------------------------- storage and lifetime
def test_persists_across_reopen(sql_db):
    path = sql_db("deep/nested/experiments.db")  # SQLite: parent folders are created
    with ExperimentDB(path) as first:
        rid = first.log_run("keep-me", {"lr": 0.1}, notes="n", tags=["t"])
        first.log_metric(rid, "val/loss", 0.25, step=3)
        first.update_run_status(rid, "completed")
    with ExperimentDB(str(path)) as again:
        run = again.get_run(rid)
        assert (run["run_name"], run["config"], run["notes"], run["tags"], run["status"]) == (
            "keep-me",
            {"lr": 0.1},
            "n",
            ["t"],
            "completed",
        )
        assert run["metrics"]["val/loss"][0]["value"] == 0.25
        assert again.log_run("next") == rid + 1
    if sql_db.is_sqlite:
        assert sql_db.raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert sql_db.raw(path, "SELECT version FROM schema_version") == [
        (3,)
    ]  # version 3: heartbeat columns (2), parent/child runs (3)
    assert sql_db.raw(path, "SELECT count(*) FROM metrics") == [(1,)]


def test_sqlalchemy_url_and_memory(tmp_path):
    path = tmp_path / "via_url" / "x.db"
    with ExperimentDB(f"sqlite:///{path}") as db:
        db.log_metric(db.log_run("r"), "loss", 1.0)
    assert path.exists()
    with ExperimentDB(path) as db:
        assert db.get_best_run("loss")["best_value"] == 1.0
    mem = ExperimentDB(":memory:")
    rid = mem.log_run("m")
    done = []
    reader = threading.Thread(target=lambda: done.append(mem.get_run(rid)["run_name"]))  # shared across threads
    reader.start()
    reader.join(timeout=30)
    assert done == ["m"]
    assert not list(Path.cwd().glob(":memory:"))


def test_schema_newer_than_code_is_refused(sql_db):
    path = sql_db("e.db")
    ExperimentDB(path).close()
    sql_db.raw(path, "UPDATE schema_version SET version = 99")
    with pytest.raises(ExperimentDBError, match="schema version 99, newer than this trainengine supports"):
        ExperimentDB(path)


def test_bad_locations_are_reported(tmp_path):
    with pytest.raises(ExperimentDBError, match="is a folder; give a file path"):
        ExperimentDB(tmp_path)
    with pytest.raises(ExperimentDBError, match="cannot open experiment database 'nosuchdialect://x'"):
        ExperimentDB("nosuchdialect://x")
    with pytest.raises(ExperimentDBValueError, match="path_or_url must be a file path or a SQLAlchemy URL"):
        ExperimentDB(42)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExperimentDBError, match="cannot create the folder"):
        ExperimentDB(blocker / "sub" / "e.db")


def test_close_is_idempotent_and_blocks_later_use(sql_db):
    db = ExperimentDB(sql_db("e.db"))
    rid = db.log_run("r")
    db.close()
    db.close()
    assert "closed" in repr(db)
    with pytest.raises(ExperimentDBError, match="is closed; open a new one"):
        db.get_run(rid)


# ------------------------------------------------------------------------------------- lock handling
def _hold_write_lock(path):
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    raw.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    return raw


def test_locked_database_is_retried_until_free(tmp_path, monkeypatch):
    path = tmp_path / "e.db"
    db = ExperimentDB(path, busy_timeout_s=0.02, max_retries=20)  # each try waits 20 ms, then backs off
    rid = db.log_run("r")
    holder = _hold_write_lock(path)
    backoffs = []
    real_sleep = time.sleep

    def backoff(seconds):
        # The other writer commits while ours backs off after its second failed try: no clock involved.
        backoffs.append(seconds)
        if len(backoffs) == 2:
            holder.execute("COMMIT")
        real_sleep(seconds)

    monkeypatch.setattr(_sql.time, "sleep", backoff)
    db.log_metric(rid, "loss", 1.0)
    monkeypatch.undo()
    holder.close()
    assert len(backoffs) == 2  # it waited for the lock instead of failing, and stopped once free
    assert [p["value"] for p in db.get_run(rid)["metrics"]["loss"]] == [1.0]
    db.close()


def test_lock_held_past_all_retries_is_a_clear_error(tmp_path):
    path = tmp_path / "e.db"
    db = ExperimentDB(path, busy_timeout_s=0.01, max_retries=1)
    rid = db.log_run("r")
    holder = _hold_write_lock(path)
    with pytest.raises(ExperimentDBError, match="still locked after retries"):
        db.log_metric(rid, "loss", 1.0)
    holder.execute("COMMIT")
    holder.close()
    db.log_metric(rid, "loss", 2.0)  # usable again once the lock is gone
    assert [p["value"] for p in db.get_run(rid)["metrics"]["loss"]] == [2.0]
    db.close()
