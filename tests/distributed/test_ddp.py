"""DDP under torchrun on the CPU (gloo): two processes train like one with the same global batch.

Each test launches ``python -m torch.distributed.run --standalone --nproc-per-node 2`` on
``_ddp_script.py`` (≈ 10 s on 2 cores: two interpreters importing torch); the suite has at most
a handful of such launches (issue 18).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, script, one_process):
    """One process with micro-batch 32 and two DDP processes with 16 each (accumulation 2): the same global batch."""
    folder = tmp_path_factory.mktemp("ddp")
    shutil.copy(one_process / "one.json", folder / "one.json")  # the one-process reference, run once per session
    two = script.run(folder, "two", "16", "2", procs=2, env={"LOG_EVERY": "4"})  # like the reference
    assert two.returncode == 0, two.stderr[-3000:]
    return folder


def test_two_processes_train_like_one_with_the_same_global_batch(runs, script):
    # Rank r loads order[r::2]: the same 64 samples per step; the loss of the global window, token-exact.
    a, b = script.result(runs, "one"), script.result(runs, "two")
    assert a["steps"] == b["steps"] == 6
    assert b["losses"] == pytest.approx(a["losses"], abs=1e-5)
    assert b["val"]["val/loss"] == pytest.approx(a["val"]["val/loss"], abs=1e-5)  # metrics reduced over ranks
    for name, w in a["weights"].items():
        np.testing.assert_allclose(b["weights"][name], w, atol=1e-5, err_msg=name)
    # Rank 0 alone writes: one run directory, one set of checkpoints.
    runs_json = list((runs / "two").rglob("run.json"))
    assert len(runs_json) == 1
    checkpoints = sorted(p.name for p in (runs_json[0].parent / "checkpoints").iterdir() if p.is_dir())
    assert len(checkpoints) == 2, checkpoints  # one per epoch, written once


def test_a_ddp_checkpoint_is_refused_on_another_world_size(runs):
    # The data order depends on the number of processes: a whole (DDP) checkpoint continues only on as many.
    from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
    from trainengine.errors import CheckpointError
    from trainengine.models import build_model

    checkpoint = sorted((runs / "two").rglob("ckpt-*"))[0]
    cfg = (
        TrainingConfigBuilder()
        .with_training(epochs=2, batch_size=32, device="cpu")
        .with_tracking(output_dir=str(runs / "again"), progress="off", experiment_db=False)
        .build()
    )
    model = build_model("mlp", input_dim=8, output_dim=3, hidden_dims=(16,), dropout=0.0)
    trainer = Trainer(model, None, cfg, TaskSpec.classification("blobs", 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    with pytest.raises(CheckpointError, match=r"it was written by 2, .*--nproc-per-node 2.*fsdp2"):
        trainer.train((x, y), resume_from=checkpoint)


def test_a_rank_that_raises_stops_the_other_without_a_hang(tmp_path, script):
    run = script.run(tmp_path, "boom", "16", "1", "1", procs=2)
    assert run.returncode != 0
    log = run.stdout + run.stderr
    assert "rank 1 fails on purpose" in log
    assert "another process of this run failed" in log  # rank 0's own message, not only gloo's


def test_a_preempted_two_rank_run_resumes_bit_identical(runs, script):
    # Rank 0 sends SIGTERM to torchrun at step 2 (a scheduler's preemption): the ranks agree to stop at the
    # same step, rank 0 writes the emergency checkpoint there, and the relaunch with resume_from="auto" ends
    # with exactly the weights of the run that was never stopped ("two": the same config).
    stopped = script.run(runs, "cut", "16", "2", "-1", "2", procs=2)
    # The flags ride in the next step's reduction: every rank stops at step 3, as interrupted (mid-epoch).
    assert stopped.returncode != 0 and "training interrupted by SIGTERM after step 3" in stopped.stderr
    assert list((runs / "cut").rglob("ckpt-000000003"))
    resumed = script.run(runs, "cut", "16", "2", "-1", "0", "resume", procs=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = script.result(runs, "two"), script.result(runs, "cut")
    assert a["steps"] == b["steps"] == 6
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
