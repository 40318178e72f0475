"""Exact resume: a run killed with SIGKILL (also mid-checkpoint-write) and resumed ends bit-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = textwrap.dedent(
    """
    import os, signal, sys, json
    import torch
    from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
    from trainengine.data import load_builtin
    from trainengine.models import MLP

    out, kill_at, kill_in_save, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
    config = (
        TrainingConfigBuilder()
        .with_training(epochs=3, batch_size=32, gradient_accumulation_steps=2, learning_rate=3e-3,
                       deterministic=True, device="cpu", eval_interval_steps=10, log_interval_steps=5)
        .with_model(dropout=0.2)
        .with_scheduler(name="cosine", warmup_steps=5)
        .with_checkpointing(save_every_n_steps=7, save_every_n_epochs=None, keep_last_n=2, keep_best_k=1)
        .with_tracking(output_dir=out, run_name="r", progress="off")
        .build()
    )
    splits = load_builtin("digits", max_train_samples=640, max_val_samples=128)
    torch.manual_seed(1)
    model = MLP(64, 10, hidden_dims=(32,), dropout=0.2)

    if kill_in_save:
        # Die in the middle of writing the checkpoint of step kill_at: just before the
        # temporary folder would be renamed into place.
        real_rename, real_replace = os.rename, os.replace
        def deadly(src, dst, *a, **k):
            if os.path.basename(str(src)).startswith(".tmp-") and "%09d" % kill_at in str(src):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_rename(src, dst, *a, **k)
        def deadly_replace(src, dst, *a, **k):
            if os.path.basename(str(src)).startswith(".tmp-") and "%09d" % kill_at in str(src):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst, *a, **k)
        os.rename, os.replace = deadly, deadly_replace

    class Killer:
        def on_step_end(self, trainer, output):
            if not kill_in_save and trainer.state.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    trainer = Trainer(model, None, config, TaskSpec.classification("digits", 10), callbacks=[Killer()])
    results = trainer.train(splits.train, splits.val, resume_from="auto" if resume else None)
    torch.save({k: v for k, v in model.state_dict().items()}, os.path.join(out, "final.pt"))
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(results["history"], f)
    """
)


def _run(
    tmp_path: Path, out: Path, kill_at: int = -1, kill_in_save: bool = False, resume: bool = False
) -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    return subprocess.run(
        [sys.executable, str(script), str(out), str(kill_at), "1" if kill_in_save else "0", "1" if resume else "0"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    proc = _run(tmp, tmp / "out")
    assert proc.returncode == 0, proc.stderr
    # torch.load of our own file written a moment ago (weights_only: no code can run).
    weights = torch.load(tmp / "out" / "final.pt", weights_only=True)
    history = json.loads((tmp / "out" / "history.json").read_text())
    return weights, history


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_at, kill_in_save",
    [(9, False), (23, False), (14, True), (28, True)],
    ids=["kill-after-step-9", "kill-after-step-23", "kill-writing-ckpt-14", "kill-writing-ckpt-28"],
)
def test_killed_and_resumed_run_is_bit_identical(tmp_path, reference, kill_at, kill_in_save):
    out = tmp_path / "out"
    killed = _run(tmp_path, out, kill_at=kill_at, kill_in_save=kill_in_save)
    assert killed.returncode == -9, killed.stderr  # really SIGKILLed
    assert not (out / "final.pt").exists()
    resumed = _run(tmp_path, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    weights = torch.load(out / "final.pt", weights_only=True)
    ref_weights, ref_history = reference
    for name, tensor in ref_weights.items():
        assert torch.equal(weights[name], tensor), name
    history = json.loads((out / "history.json").read_text())
    assert history["train"] == ref_history["train"]
    assert history["val"] == ref_history["val"]
    run = json.loads((out / "default" / "r" / "run.json").read_text())
    assert run["status"] == "completed" and len(run["resumes"]) == 1
    if kill_in_save:
        # The half-written checkpoint never became visible; the resume used the one before it.
        assert run["resumes"][0]["step"] == kill_at - 7
    # The final weights in the run directory are the same as well.
    saved = load_file(out / "default" / "r" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in ref_weights.items() if k in saved)
