"""Seed 002's tracking examples, run with only the import changed (the seed's helpers
train_step / evaluate / generate are defined here as tiny stand-ins)."""

from __future__ import annotations

import pytest
import torch

from trainengine.tracking import ExperimentTracker, read_jsonl


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_complete_tracking_example():
    pytest.importorskip("wandb")
    model = torch.nn.Linear(4, 2)
    batch, val_loader = torch.randn(8, 4), None
    max_steps, eval_interval = 6, 2

    def train_step(model, batch, optimizer=None):
        return {"train/loss": float(model(batch).pow(2).mean())}

    def evaluate(model, loader):
        return {"val/loss": 1.0}

    def generate(model, prompt):
        return prompt + " ..."

    optimizer = None
    with ExperimentTracker(
        project="tiny-transformer",
        experiment_name="shakespeare_gpt2_arch",
        config={
            "model": {"d_model": 512, "n_heads": 8, "n_layers": 6},
            "training": {"lr": 1e-4, "batch_size": 32, "grad_clip": 1.0},
            "data": {"dataset": "shakespeare", "seq_len": 256},
        },
        backend="wandb",
        tags=["gpt2", "shakespeare", "baseline"],
        notes="Testing GPT-2 architecture on Shakespeare dataset",
    ) as tracker:
        tracker.log_model(model, name="shakespeare_gpt2")
        tracker.watch_model(model, log_freq=100)
        best_val_loss = float("inf")
        for step in range(max_steps):
            train_metrics = train_step(model, batch, optimizer)
            tracker.log_metrics(train_metrics, step=step)
            if step % eval_interval == 0:
                val_metrics = evaluate(model, val_loader)
                tracker.log_metrics(val_metrics, step=step)
                if val_metrics["val/loss"] < best_val_loss:
                    best_val_loss = val_metrics["val/loss"]
                    torch.save(model.state_dict(), "best_model.pt")
                    tracker.save_artifact("best_model.pt", "best_checkpoint")
            if step % 1000 == 0:
                sample_text = generate(model, prompt="To be or not to be")
                tracker.log_text("generated_samples", sample_text, step)
        tracker.log_metrics(
            {
                "final/best_val_loss": best_val_loss,
                "final/total_steps": step,
            },
            step=step,
        )
    assert tracker.backend == "wandb"
    assert list((tracker.directory / "wandb").glob("offline-run-*/run-*.wandb"))


def test_unified_interface_with_auto_backend():
    tracker = ExperimentTracker(
        project="tiny-transformer",
        experiment_name="shakespeare_experiment",
        config={"learning_rate": 1e-4, "batch_size": 32, "d_model": 512},
        backend="auto",
    )
    for step in range(3):
        tracker.log_metrics({"train/loss": 3.0 - step}, step=step)
    torch.save({"w": torch.zeros(2)}, "checkpoint.pt")
    tracker.save_artifact("checkpoint.pt", "best_model")
    tracker.finish()
    records = read_jsonl(tracker.directory / "tracker.jsonl")
    assert [r["metrics"]["train/loss"] for r in records if r["type"] == "metrics"] == [3.0, 2.0, 1.0]
    assert (tracker.directory / "artifacts" / "best_model").is_file()
