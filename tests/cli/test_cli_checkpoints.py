"""CLI: train --resume, resume RUN_DIR, checkpoints list|verify, and SIGTERM from outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainengine.cli.main import main

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--dataset",
    "digits",
    "--output-dir",
    "out",
    "--set",
    "tracking.progress=off",
    "--set",
    "checkpointing.enabled=true",
    "--set",
    "checkpointing.save_every_n_steps=3",
    "--set",
    "checkpointing.save_every_n_epochs=null",
]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_list_verify_and_resume_a_run(in_tmp, capsys):
    assert main(["train", *TINY, "--max-steps", "9", "--run-name", "a"]) == 0
    run_dir = in_tmp / "out" / "default" / "a"
    capsys.readouterr()
    assert main(["checkpoints", "list", str(run_dir)]) == 0
    listing = capsys.readouterr().out
    for step in ("3", "6", "9"):
        assert f"ckpt-00000000{step}" in listing
    assert "latest" in listing
    assert "val/accuracy" in listing  # ranked by the metric the run monitored (digits: accuracy)
    assert main(["checkpoints", "verify", str(run_dir)]) == 0
    assert capsys.readouterr().out.count(": ok") == 3

    # Corrupt one: verify names it and fails.
    victim = run_dir / "checkpoints" / "ckpt-000000006" / "state.json"
    victim.write_text(victim.read_text() + " ")
    assert main(["checkpoints", "verify", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert "ckpt-000000006: corrupt" in out and "ckpt-000000009: ok" in out

    # Resume with more steps: continues in the same run directory.
    config = run_dir / "config.yaml"
    text = config.read_text().replace("max_steps: 9", "max_steps: 12")
    config.write_text(text)
    assert main(["resume", str(run_dir)]) == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["resumes"][0]["step"] == 9 and run["results"]["steps"] == 12


def test_train_resume_auto_with_nothing_to_resume_starts_fresh(in_tmp):
    assert main(["train", *TINY, "--max-steps", "3", "--resume", "auto"]) == 0


def test_resume_from_a_missing_path_is_a_clear_error(in_tmp, capsys):
    assert main(["train", *TINY, "--max-steps", "3", "--resume", "nowhere/ckpt-000000001"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _logged_a_training_step(logs: Path) -> bool:
    text = logs.read_text(encoding="utf-8") if logs.is_file() else ""
    complete = text[: text.rfind("\n") + 1]  # a line still being written has no newline yet
    return any(json.loads(line).get("type") == "train" for line in complete.splitlines() if line.strip())


@pytest.mark.slow
def test_sigterm_from_outside_exits_143_with_an_emergency_checkpoint(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "trainengine",
        "train",
        "--config",
        str(REPO / "configs" / "lm_tiny.yaml"),
        "--max-steps",
        "5000",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "long",
        "--set",
        "tracking.progress=plain",
        "--set",
        "data.max_corpus_bytes=200000",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    run_dir = tmp_path / "lm-tiny" / "long"
    # Poll (with a deadline) until the first training record is logged: the run is some steps in.
    logs = run_dir / "logs.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not _logged_a_training_step(logs):
            assert proc.poll() is None, f"training exited early with {proc.returncode}"
            assert time.monotonic() < deadline, "no training step logged within 120 s"
            time.sleep(0.1)
    except BaseException:
        proc.kill()  # never leave the training process behind
        proc.communicate()
        raise
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "emergency checkpoint" in err
    ckpts = list((run_dir / "checkpoints").glob("ckpt-*"))
    assert len(ckpts) == 1
    meta = json.loads((ckpts[0] / "meta.json").read_text())
    assert "emergency" in meta["tags"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"


def test_logs_command_filters_metrics(in_tmp, capsys):
    assert main(["train", *TINY, "--max-steps", "20", "--run-name", "lg"]) == 0
    capsys.readouterr()
    run_dir = in_tmp / "out" / "default" / "lg"
    assert main(["logs", str(run_dir), "--filter", "train/loss", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Logging steps (every 10) plus the checkpoint steps (every 3), which flush the running loss.
    assert {10, 20} <= {r["step"] for r in rows} and all(
        set(r) == {"step", "epoch", "type", "train/loss"} for r in rows
    )
    assert main(["logs", str(run_dir), "--type", "eval"]) == 0
    assert "val/accuracy" in capsys.readouterr().out
    assert main(["logs", str(in_tmp / "nowhere")]) == 2
