"""DDP under torchrun on the CPU (gloo): two processes train like one with the same global batch.

Each test launches ``python -m torch.distributed.run --standalone --nproc-per-node 2`` on
``_ddp_script.py`` (≈ 10 s on 2 cores: two interpreters importing torch); the suite has at most
a handful of such launches (issue 18).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("_ddp_script.py")

pytestmark = pytest.mark.timeout(180)


def _run(tmp_path: Path, name: str, *args: str, procs: int) -> subprocess.CompletedProcess[str]:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    command = [*(launch if procs > 1 else [sys.executable]), str(SCRIPT), str(tmp_path / f"{name}.json"),
               str(tmp_path / name), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=170, cwd=tmp_path)


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    # One process: micro-batch 32, accumulation 2. Two: micro-batch 16 each, accumulation 2 — the same
    # 64 samples per step (rank r loads order[r::2]); the loss of the global window, token-exact.
    one = _run(tmp_path, "one", "32", "2", procs=1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(tmp_path, "two", "16", "2", procs=2)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert a["steps"] == b["steps"] == 6
    assert b["losses"] == pytest.approx(a["losses"], abs=1e-5)
    assert b["val"]["val/loss"] == pytest.approx(a["val"]["val/loss"], abs=1e-5)  # metrics reduced over ranks
    for name, w in a["weights"].items():
        np.testing.assert_allclose(b["weights"][name], w, atol=1e-5, err_msg=name)
    # Rank 0 alone writes: one run directory, one set of checkpoints.
    runs = list((tmp_path / "two").rglob("run.json"))
    assert len(runs) == 1
    checkpoints = sorted(p.name for p in (runs[0].parent / "checkpoints").iterdir() if p.is_dir())
    assert len(checkpoints) == 2, checkpoints  # one per epoch, written once


def test_a_rank_that_raises_stops_the_other_without_a_hang(tmp_path):
    run = _run(tmp_path, "boom", "16", "1", "1", procs=2)
    assert run.returncode != 0
    log = run.stdout + run.stderr
    assert "rank 1 fails on purpose" in log
    assert "another process of this run failed" in log  # rank 0's own message, not only gloo's


def test_a_preempted_two_rank_run_resumes_bit_identical(tmp_path):
    # Rank 0 sends SIGTERM to torchrun at step 2 (a scheduler's preemption): the ranks agree to stop at the
    # same step, rank 0 writes the emergency checkpoint there, and the relaunch with resume_from="auto" ends
    # with exactly the weights of a run that was never stopped.
    whole = _run(tmp_path, "whole", "16", "1", procs=2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    stopped = _run(tmp_path, "cut", "16", "1", "-1", "2", procs=2)
    # The flags ride in the next step's reduction: every rank stops at step 3, as interrupted (mid-epoch:
    # 5 steps per epoch; the epoch-boundary resume is tested in one process, tests/engine/test_faults.py).
    assert stopped.returncode != 0 and "training interrupted by SIGTERM after step 3" in stopped.stderr
    assert list((tmp_path / "cut").rglob("ckpt-000000003"))
    resumed = _run(tmp_path, "cut", "16", "1", "-1", "0", "resume", procs=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("whole", "cut"))
    assert a["steps"] == b["steps"] == 10
    for name, w in a["weights"].items():
        assert np.array_equal(np.asarray(b["weights"][name]), np.asarray(w)), name


def test_trainengine_train_nproc_per_node_launches_ddp_through_torchrun(tmp_path):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "trainengine", "train", "--preset", "quick_prototype",
               "--set", "data.dataset=digits", "--set", "training.epochs=1", "--set", f"tracking.output_dir={out}",
               "--set", "tracking.progress=off", "--nproc-per-node", "2"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=170, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torch.distributed.run --nproc-per-node 2" in run.stdout + run.stderr
    facts = [json.loads(p.read_text()) for p in out.rglob("run.json")]
    assert len(facts) == 1 and facts[0]["status"] == "completed"
    assert facts[0]["runtime"] == {"device": "cpu", "precision": "fp32", "world_size": 2, "backend": "gloo",
                                   "strategy": "ddp"}  # fmt: skip
