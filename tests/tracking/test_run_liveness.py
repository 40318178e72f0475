"""One live process per run directory (the lock), callbacks safe in any event order, heartbeats and stale runs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trainengine._liveness import RunDirLock, liveness
from trainengine.cli.main import main
from trainengine.tracking import ExperimentDB

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = ["--dataset", "digits", "--output-dir", "runs", "--set", "tracking.progress=off"]
# Little data, no evaluation, no data profile: the lock tests need a run, not a good model.
_FAST = ["--set", "data.max_train_samples=32", "--set", "data.max_val_samples=8"]
_FAST += ["--set", "training.eval_every_epoch=false", "--set", "monitoring.profile_data=false"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


# -- item 1: one live process per run directory ---------------------------------------------------------


def test_resume_of_a_run_another_process_owns_exits_2_and_touches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--max-steps", "2", "--batch-size", "8", "--run-name", "r", *_FAST]
    args += ["--set", "checkpointing.enabled=true", "--set", "checkpointing.save_every_n_steps=1"]
    assert main(["train", *TINY, *args]) == 0
    run_dir = tmp_path / "runs" / "default" / "r"
    capsys.readouterr()

    # A child process owns the run (as a live `trainengine resume` would) until it is killed. It
    # loads the lock module by path: importing trainengine (and torch) would cost seconds.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import importlib.util, sys, time, types; sys.modules['trainengine.errors'] = types.SimpleNamespace("
            "TrainEngineError=RuntimeError); spec = importlib.util.spec_from_file_location('lv', "
            f"{str(SRC / 'trainengine' / '_liveness.py')!r}); lv = importlib.util.module_from_spec(spec); "
            f"spec.loader.exec_module(lv); lv.RunDirLock({str(run_dir)!r}).acquire(); print('locked', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = _snapshot(tmp_path / "runs")
        assert main(["resume", str(run_dir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: run directory"), err
        assert f"in use by process {holder.pid} on " in err[0]
        # No log records, run.json unchanged, nothing new, the experiment database untouched.
        assert _snapshot(tmp_path / "runs") == before
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock, no stale lock is left
        holder.wait()
    assert main(["resume", str(run_dir)]) == 0
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert run["status"] == "completed" and len(run["resumes"]) == 1
    ends = [r for r in map(json.loads, (run_dir / "logs.jsonl").read_text().splitlines()) if r["type"] == "end"]
    assert len(ends) == 2  # the first run's and the one resume's: nothing twice


def test_the_lock_is_free_again_after_a_run_and_names_its_holder(tmp_path):
    first = RunDirLock(tmp_path)
    first.acquire()
    holder = json.loads((tmp_path / ".lock").read_text())
    assert holder["pid"] == os.getpid() and holder["host"]
    first.release()
    again = RunDirLock(tmp_path)
    again.acquire()  # released on exit: never a stale lock
    again.release()


# -- item 3: every built-in callback survives on_exception as its first event ------------------------------


def _all_builtin_callbacks(tmp_path: Path) -> list[object]:
    from trainengine import EarlyStopping, GradientMonitor, TrainingConfigBuilder
    from trainengine.assembly import build_callbacks
    from trainengine.monitoring import MetricsEngine, MetricsEngineCallback

    cfg = (
        TrainingConfigBuilder()
        .with_tracking(write_run_dir=True, progress="plain", backends=["jsonl"], output_dir=str(tmp_path))
        .with_export(enabled=True, formats=["onnx"])
        .build()
    )
    cfg.monitoring.gradient_monitor = True
    callbacks = build_callbacks(cfg)
    names = {type(cb).__name__ for cb in callbacks}
    expected = {"ExportOnTrainEnd", "RunDirectory", "TrackerCallback", "ExperimentDBCallback", "ConsoleProgress"}
    assert expected | {"GradientMonitor"} <= names, names
    return [*callbacks, EarlyStopping(patience=2), GradientMonitor(), MetricsEngineCallback(MetricsEngine())]


@pytest.mark.parametrize("exc", [RuntimeError("setup failed"), KeyboardInterrupt()])
def test_every_builtin_callback_takes_on_exception_before_any_other_event(tmp_path, caplog, exc):
    from types import SimpleNamespace

    from trainengine import TrainState

    trainer = SimpleNamespace(state=TrainState(), run_dir=None, config=None, resume_from=None)
    caplog.set_level(logging.DEBUG)
    for cb in _all_builtin_callbacks(tmp_path):
        handler = getattr(cb, "on_exception", None)
        if handler is not None:
            handler(trainer, exc)  # must not raise
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert list(tmp_path.iterdir()) == []  # and records nothing for a run that never started


def test_a_reused_run_name_fails_with_one_line_and_no_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, *_FAST, "--max-steps", "2", "--run-name", "same"]) == 0
    capsys.readouterr()
    assert main(["train", *TINY, *_FAST, "--max-steps", "2", "--run-name", "same"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "_pending" not in err
    assert err.strip().splitlines() == [err.strip()] and "already exists" in err


# -- item 12: heartbeats, and a killed run shown as stale --------------------------------------------------


def test_liveness_thresholds():
    assert liveness("running", 1000.0, 15.0, now=1059.0) == "running"  # max(3 x 15, 60) = 60 s
    assert liveness("running", 1000.0, 15.0, now=1061.0) == "stale"
    assert liveness("running", 1000.0, 60.0, now=1179.0) == "running"  # 3 x 60 = 180 s
    assert liveness("running", 1000.0, 1.0, stale_after=0.5, now=1001.0) == "stale"
    assert liveness("completed", 0.0, 15.0, now=1e9) == "completed"
    assert liveness("running", None, None, now=1e9) == "running"  # an old run without heartbeats


@pytest.mark.slow
def test_a_killed_run_is_shown_stale_by_runs_list_and_the_database(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    script = textwrap.dedent(
        """
        import sys
        from trainengine.tracking import _callbacks, _run_dir
        _run_dir.RunDirectory.__init__.__defaults__ = (0.2,)  # heartbeat every 0.2 s
        _callbacks.ExperimentDBCallback.__init__.__defaults__ = (0.2,)
        from trainengine.cli.main import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    argv = ["train", *TINY, *_FAST, "--epochs", "1000", "--max-steps", "1000000", "--run-name", "k"]
    child = subprocess.Popen([sys.executable, "-c", script, *argv], env=_env(), stderr=subprocess.DEVNULL)
    run_json = tmp_path / "runs" / "default" / "k" / "run.json"
    try:
        beats: set[str] = set()
        deadline = time.monotonic() + 60
        while len(beats) < 3 and time.monotonic() < deadline:  # the heartbeat moves while it lives
            if run_json.is_file():
                beats.add(json.loads(run_json.read_text())["heartbeat_time"])
            time.sleep(0.1)
        assert len(beats) >= 3
        assert main(["runs", "list", "--stale-after", "5"]) == 0
        assert "running" in capsys.readouterr().out
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    last = json.loads(run_json.read_text())["heartbeat_time"]
    time.sleep(0.8)
    assert json.loads(run_json.read_text())["heartbeat_time"] == last  # dead: no more heartbeats
    assert main(["runs", "list", "--stale-after", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "stale" in out and "running" not in out
    db = ExperimentDB(tmp_path / "runs" / "experiments.db")
    run = db.list_runs()[0]
    assert run["status"] == "running" and run["heartbeat_interval_s"] == 0.2
    assert liveness(run["status"], run["heartbeat_time"], stale_after=0.6) == "stale"
    db.close()


def test_an_old_heartbeat_is_stale_at_the_default_threshold(tmp_path, monkeypatch, capsys):
    """Injected: a run.json left "running" by a process killed two minutes ago."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "default" / "old"
    run_dir.mkdir(parents=True)
    beat = lambda ago: (datetime.now(UTC) - timedelta(seconds=ago)).isoformat()  # noqa: E731 - two uses, one line
    facts = {"run_id": "old", "status": "running", "start_time": beat(600), "heartbeat_interval_s": 15.0}
    (run_dir / "run.json").write_text(json.dumps({**facts, "heartbeat_time": beat(120)}))
    assert main(["runs", "list"]) == 0
    assert "stale" in capsys.readouterr().out
    assert main(["runs", "show", "default/old"]) == 0
    assert "stale" in capsys.readouterr().out
    (run_dir / "run.json").write_text(json.dumps({**facts, "heartbeat_time": beat(10)}))
    assert main(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert "running" in out and "stale" not in out


def test_database_heartbeat_and_stale_flag(tmp_path):
    db = ExperimentDB(tmp_path / "e.db")
    rid = db.log_run("r", heartbeat_interval_s=15.0)
    assert db.get_run(rid)["stale"] is False
    db._write(lambda conn: conn.exec_driver_sql("UPDATE runs SET heartbeat_time = heartbeat_time - 120"))
    assert db.get_run(rid)["stale"] is True  # the shared database says what a lock cannot
    db.heartbeat(rid, 15.0)
    assert db.get_run(rid)["stale"] is False
    db.update_run_status(rid, "completed")
    db._write(lambda conn: conn.exec_driver_sql("UPDATE runs SET heartbeat_time = 0"))
    assert db.get_run(rid)["stale"] is False  # only running runs go stale
    db.close()
