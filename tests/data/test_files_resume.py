"""Exact resume on file data: a CSV-backed run killed with SIGKILL and resumed ends bit-identical to
one that never stopped (the sampler position over the memory-mapped rows is the data state)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

WORKER = textwrap.dedent(
    """
    import os, signal, sys, json
    import torch
    from trainengine import Trainer, TrainingConfig
    from trainengine.engine import build_from_config

    data, out, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    config = TrainingConfig.from_dict({
        "training": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-3, "deterministic": True, "device": "cpu",
                     "eval_interval_steps": 10, "log_interval_steps": 5},
        "model": {"dropout": 0.2, "hidden_dims": [16]},
        "data": {"train_file": data, "cache_dir": os.path.join(out, "cache"), "categorical_encoding": "embedding"},
        "checkpointing": {"enabled": True, "save_every_n_steps": 7, "save_every_n_epochs": None,
                          "keep_last_n": 2, "keep_best_k": 1},
        "tracking": {"output_dir": out, "run_name": "r", "progress": "off"},
    })
    torch.manual_seed(1)
    built = build_from_config(config)

    class Killer:
        def on_step_end(self, trainer, output):
            if trainer.state.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    trainer = Trainer(built.model, built.model_config, config, built.task_spec, callbacks=[Killer()])
    results = trainer.train(built.splits.train, built.splits.val, resume_from="auto" if resume else None)
    torch.save(dict(built.model.state_dict()), os.path.join(out, "final.pt"))
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(results["history"], f)
    """
)


def _csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["a,b,colour,label"]
    for _ in range(160):
        a, b = rng.normal(0, 1, 2).round(4)
        colour = rng.choice(["red", "green", "blue", ""])
        rows.append(f"{a},{b},{colour},{int(a + (colour == 'red') > 0)}")
    path.write_text("\n".join(rows) + "\n")


def _run(tmp_path: Path, out: Path, kill_at: int = -1, resume: bool = False) -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data.csv"), str(out), str(kill_at), "1" if resume else "0"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.slow
def test_killed_file_backed_run_resumes_bit_identically(tmp_path):
    _csv(tmp_path / "data.csv")
    reference = _run(tmp_path, tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "out"
    killed = _run(tmp_path, out, kill_at=15)
    assert killed.returncode == -9, killed.stderr  # really SIGKILLed, mid-epoch 2; the last checkpoint is step 14
    resumed = _run(tmp_path, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    ref_w = torch.load(tmp_path / "ref" / "final.pt", weights_only=True)
    got_w = torch.load(out / "final.pt", weights_only=True)
    assert ref_w.keys() == got_w.keys()
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)
    ref_h = json.loads((tmp_path / "ref" / "history.json").read_text())
    got_h = json.loads((out / "history.json").read_text())
    assert got_h["train"] == ref_h["train"] and got_h["val"] == ref_h["val"]
    run = json.loads((out / "default" / "r" / "run.json").read_text())
    assert run["status"] == "completed" and run["resumes"][0]["step"] == 14
