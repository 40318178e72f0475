"""Seed 002's checkpoint examples (/work/shared/seeds/002_df445be1a0a37746.txt), run with only the
imports changed. The seed's helpers (train_step, evaluate, the model) are tiny real stand-ins
defined here; the checkpoints are the engine's pickle-free folders."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainengine.checkpoint import CheckpointManager as CoreManager
from trainengine.compat.seed002 import CheckpointManager, ExperimentTracker, TrainingLogger, load_checkpoint
from trainengine.errors import CheckpointError
from trainengine.tracking import read_jsonl


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _tiny_lm() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(16, 8), nn.Linear(8, 16))  # (B, T) -> (B, T, 16)


def test_complete_checkpointing_example_keeps_best_three_and_load_best_restores_them(capsys):
    model = _tiny_lm()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    model_config = {"d_model": 8, "vocab_size": 16}
    max_steps, eval_interval = 8, 1
    # Validation losses chosen so the best three (steps 2, 5, 6) are neither first nor last.
    planned = [3.9, 3.7, 2.0, 3.6, 3.8, 2.5, 2.2, 3.0]
    weights_at = {}

    def train_step(model, batch, optimizer, scheduler):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)  # each step changes the weights, so each checkpoint differs
        return {"train/loss": 1.0}

    batch = None

    def evaluate(model, val_loader):
        weights_at[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"val/loss": planned[step]}

    val_loader = None

    # --- seed 002 lines 1259-1303, only the import changed ---
    checkpoint_manager = CheckpointManager(
        checkpoint_dir="checkpoints/shakespeare",
        keep_best_n=3,  # Keep top 3 checkpoints by val loss
        metric_mode="min",
    )

    # Training loop
    best_val_loss = float("inf")

    for step in range(max_steps):
        # Training
        train_metrics = train_step(model, batch, optimizer, scheduler)  # noqa: F841 - the seed's line, verbatim

        # Evaluation and checkpointing
        if step % eval_interval == 0:
            val_metrics = evaluate(model, val_loader)
            val_loss = val_metrics["val/loss"]

            # Save checkpoint (automatically manages best N)
            saved_path = checkpoint_manager.save(
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                step=step,
                val_loss=val_loss,
                config=model_config,
            )

            print(f"Saved checkpoint: {saved_path}")
            print(f"Val loss: {val_loss:.4f}")

            # Track best
            if val_loss < best_val_loss:
                best_val_loss = val_loss
                print(f"  New best val loss: {best_val_loss:.4f}")

    # After training, load best checkpoint
    best_checkpoint = checkpoint_manager.load_best()
    model.load_state_dict(best_checkpoint["model_state_dict"])

    print(f"Loaded best checkpoint from step {best_checkpoint['step']}")
    print(f"Best val loss: {best_checkpoint['val_loss']:.4f}")
    # --- end of the seed's snippet ---

    assert best_checkpoint["step"] == 2 and best_checkpoint.val_loss == 2.0
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights_at[2][key])
    kept = sorted(i.step for i in checkpoint_manager.core.list_checkpoints())
    assert kept == [2, 5, 6, 7]  # the best three by val loss, and the newest (a resume point)
    assert [s for _, _, s in checkpoint_manager.checkpoints] == [2, 6, 5, 7]
    assert checkpoint_manager.get_best_checkpoint_path().name == "ckpt-000000002"
    assert best_checkpoint["config"] == model_config
    assert "Loaded best checkpoint from step 2" in capsys.readouterr().out
    # The optimizer state saved with it loads back the seed's way.
    optimizer.load_state_dict(best_checkpoint["optimizer_state_dict"])
    # The folder is the engine's format: no pickle anywhere, every file verified.
    files = {p.suffix for p in checkpoint_manager.checkpoint_dir.rglob("*") if p.is_file()}
    assert files <= {".json", ".safetensors", ".lock", ""}
    assert CoreManager(checkpoint_manager.checkpoint_dir, read_only=True).verify(saved_path) == []


def test_resume_example_reads_metadata_as_a_mapping_and_restores_state():
    torch.manual_seed(0)
    source = nn.Linear(4, 3)
    src_opt = torch.optim.AdamW(source.parameters(), lr=1e-4)
    src_sched = torch.optim.lr_scheduler.LambdaLR(src_opt, lambda s: min(1.0, (s + 1) / 10))
    for _ in range(3):
        source(torch.randn(2, 4)).sum().backward()
        src_opt.step()
        src_sched.step()
    saved = CheckpointManager("checkpoints").save(
        source, src_opt, src_sched, step=7000, val_loss=2.25, config={"lr": 1e-4}, epoch=3
    )

    def TinyTransformerLM(*args):  # the seed's model class: the same architecture as the saved one
        return nn.Linear(4, 3)

    def get_cosine_schedule_with_warmup(optimizer, *args):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10))

    AdamW = torch.optim.AdamW
    max_steps, ran = 7003, []

    def train_step(*args):
        ran.append(step)

    # --- seed 002 lines 1321-1351, only the import changed; the .pt path is the folder that
    # CheckpointManager.save returned (seed .pt files are converted once: test_import_pt.py) ---
    # Build model and optimizer
    model = TinyTransformerLM(...)
    optimizer = AdamW(model.parameters(), lr=1e-4)
    scheduler = get_cosine_schedule_with_warmup(optimizer, ...)

    # Load checkpoint
    checkpoint_path = saved
    metadata = load_checkpoint(
        path=checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler, device="cpu"
    )

    # Extract metadata
    start_step = metadata["step"]
    start_epoch = metadata["epoch"]
    best_val_loss = metadata.get("val_loss", float("inf"))

    print(f"Resuming from step {start_step}, epoch {start_epoch}")
    print(f"Previous val loss: {best_val_loss:.4f}")

    # Continue training from start_step
    for step in range(start_step, max_steps):  # noqa: B007 - the seed's line, verbatim
        train_step(...)
    # --- end of the seed's snippet ---

    assert (start_step, start_epoch, best_val_loss) == (7000, 3, 2.25)
    assert metadata.step == 7000 and metadata.config == {"lr": 1e-4} and ran == [7000, 7001, 7002]
    assert torch.equal(model.weight, source.weight)
    assert scheduler.state_dict()["last_epoch"] == src_sched.state_dict()["last_epoch"] == 3
    moments = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(moments, src_opt.state_dict()["state"][0]["exp_avg"])


def test_load_checkpoint_refuses_a_pt_file_and_names_the_import_command(tmp_path):
    model = nn.Linear(2, 1)
    torch.save({"model_state_dict": model.state_dict(), "step": 1}, tmp_path / "checkpoint_1.pt")
    with pytest.raises(CheckpointError, match=r"never unpickles.*trainengine checkpoints import"):
        load_checkpoint(tmp_path / "checkpoint_1.pt", model)


@dataclass
class _Config:  # the seed's config object (attributes, not a dict)
    max_epochs: int = 3
    device: str = "cpu"
    grad_clip: float = 1.0
    log_interval: int = 2
    eval_interval: int = 2
    max_steps: int = 10


def test_production_training_loop_and_the_interrupt_save(capsys):
    """Seed 002 lines 1943-2055 (the production loop), verbatim; a second run is interrupted."""
    val_losses: list[float] = []  # the k-th evaluation runs at step k * eval_interval

    def evaluate(model, val_loader, config):
        with torch.no_grad():
            x, y = val_loader
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).item()
        val_losses.append(loss)
        return {"val/loss": loss, "val/perplexity": math.exp(loss)}

    # --- seed 002 lines 1943-2055, verbatim ---
    def train(
        model,
        train_loader,
        val_loader,
        optimizer,
        scheduler,
        config,
        logger,
        tracker,
        checkpoint_manager,
    ):
        """Production-grade training loop."""

        # Setup
        model.train()
        global_step = 0
        best_val_loss = float("inf")

        # Wrap in try-finally for cleanup
        try:
            for epoch in range(config.max_epochs):  # noqa: B007 - the seed's line, verbatim
                for batch_idx, batch in enumerate(train_loader):  # noqa: B007 - the seed's line, verbatim
                    # Move to device
                    input_ids, target_ids = batch
                    input_ids = input_ids.to(config.device)
                    target_ids = target_ids.to(config.device)

                    # Forward pass
                    try:
                        logits = model(input_ids)
                        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), target_ids.view(-1))
                    except RuntimeError as e:
                        if "out of memory" in str(e):
                            logger.log_error(e, step=global_step)
                            torch.cuda.empty_cache()
                            continue
                        raise

                    # Backward pass
                    optimizer.zero_grad()
                    loss.backward()

                    # Gradient clipping
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)

                    # Check for gradient anomalies
                    if not torch.isfinite(grad_norm):
                        logger.warning(f"Gradient norm is {grad_norm}, skipping step")
                        optimizer.zero_grad()
                        continue

                    # Optimizer step
                    optimizer.step()
                    scheduler.step()
                    global_step += 1

                    # Logging
                    if global_step % config.log_interval == 0:
                        metrics = {
                            "train/loss": loss.item(),
                            "train/perplexity": math.exp(loss.item()),
                            "learning_rate": optimizer.param_groups[0]["lr"],
                            "grad_norm": grad_norm.item(),
                        }
                        logger.log_metrics(metrics, step=global_step, prefix="train/")
                        tracker.log_metrics(metrics, step=global_step)

                    # Evaluation
                    if global_step % config.eval_interval == 0:
                        val_metrics = evaluate(model, val_loader, config)
                        logger.log_metrics(val_metrics, step=global_step, prefix="val/")
                        tracker.log_metrics(val_metrics, step=global_step)

                        # Checkpointing
                        val_loss = val_metrics["val/loss"]
                        checkpoint_manager.save(
                            model,
                            optimizer,
                            scheduler,
                            step=global_step,
                            val_loss=val_loss,
                            config=config,
                        )

                        if val_loss < best_val_loss:
                            best_val_loss = val_loss
                            logger.info(f"New best val loss: {best_val_loss:.4f}")

                    # Early stopping
                    if global_step >= config.max_steps:
                        logger.info("Reached max steps, stopping training")
                        return

        except KeyboardInterrupt:
            logger.info("Training interrupted by user")
            # Save emergency checkpoint
            checkpoint_manager.save(
                model,
                optimizer,
                scheduler,
                step=global_step,
                val_loss=float("inf"),  # Unknown val loss
                config=config,
            )
            logger.info("Saved emergency checkpoint")
            raise

        except Exception as e:
            logger.log_error(e, step=global_step)
            raise

        finally:
            # Cleanup
            logger.log_end(final_metrics={"best_val_loss": best_val_loss})
            tracker.finish()

    # --- end of the seed's snippet ---

    torch.manual_seed(0)
    data = [(torch.randint(0, 16, (4, 6)), torch.randint(0, 16, (4, 6))) for _ in range(4)]
    val = (torch.randint(0, 16, (4, 6)), torch.randint(0, 16, (4, 6)))
    config = _Config()
    model = _tiny_lm()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=100)
    logger = TrainingLogger("prod", log_dir="logs", log_to_console=False)
    tracker = ExperimentTracker("project", {"lr": 3e-2}, backend="jsonl")
    manager = CheckpointManager("checkpoints", keep_best_n=2)
    train(model, data, val, optimizer, scheduler, config, logger, tracker, manager)
    logger.close()

    assert len(val_losses) == 5  # steps 2, 4, 6, 8, 10
    best_step = 2 * (val_losses.index(min(val_losses)) + 1)
    assert manager.load_best()["step"] == best_step
    records = read_jsonl(logger.log_file)
    infos = [r["message"] for r in records if r["event"] == "log"]
    assert infos[-1] == "Reached max steps, stopping training"
    assert any(m.startswith("New best val loss: ") for m in infos)
    assert records[-1]["event"] == "end"
    stored = json.loads((manager.get_best_checkpoint_path() / "meta.json").read_text())["meta"]["config"]
    assert stored == {
        "max_epochs": 3,
        "device": "cpu",
        "grad_clip": 1.0,
        "log_interval": 2,
        "eval_interval": 2,
        "max_steps": 10,
    }

    # Interrupted (Ctrl+C while fetching the 4th batch): the emergency checkpoint has val_loss=inf,
    # never ranks best, and stays as the newest checkpoint.
    def interrupted():
        yield from data[:3]
        raise KeyboardInterrupt

    model2 = _tiny_lm()
    optimizer2 = torch.optim.AdamW(model2.parameters(), lr=3e-2)
    scheduler2 = torch.optim.lr_scheduler.StepLR(optimizer2, step_size=100)
    manager2 = CheckpointManager("checkpoints2", keep_best_n=2)
    logger2 = TrainingLogger("prod2", log_dir="logs", log_to_console=False)
    tracker2 = ExperimentTracker("project", {"lr": 3e-2}, backend="jsonl")
    with pytest.raises(KeyboardInterrupt):
        train(model2, interrupted(), val, optimizer2, scheduler2, config, logger2, tracker2, manager2)
    logger2.close()
    latest = manager2.core.get_latest_checkpoint()
    restored = _tiny_lm()
    record = load_checkpoint(latest, restored)
    assert record.step == 3 and math.isinf(record["val_loss"])
    assert all(
        torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model2.state_dict().values(), strict=True)
    )
    assert manager2.get_best_checkpoint_path().name == "ckpt-000000002"  # the evaluated one
    messages = [r["message"] for r in read_jsonl(logger2.log_file) if r["event"] == "log"]
    assert messages[-2:] == ["Training interrupted by user", "Saved emergency checkpoint"]


def test_intro_save_model_optimizer_step_metrics_form():
    """Seed 002 lines 33-49 (the introduction's production loop), only the imports changed."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = {"lr": 0.1}
    batch = torch.randn(8, 3)
    val_loader = torch.randn(8, 3)
    checkpoint_manager = CheckpointManager("checkpoints", keep_best_n=3)
    logger = TrainingLogger("intro", log_dir="logs", log_to_console=False)

    def train_loop():
        yield from range(1, 7)

    def train_step(batch):
        if step == 5:
            raise KeyboardInterrupt  # Ctrl+C during step 5
        optimizer.zero_grad()
        loss = model(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}  # a tensor, as a real train_step returns

    def should_checkpoint(step):
        return step % 2 == 0

    def should_evaluate(step):
        return step % 2 == 0

    def evaluate(model, val_loader):
        return {"loss": float(model(val_loader).pow(2).mean().detach())}

    with pytest.raises(KeyboardInterrupt):  # noqa: SIM117 - the seed's own `with` stays as written
        # --- seed 002 lines 33-49 ---
        with ExperimentTracker("project", config) as tracker:
            for step in train_loop():
                try:
                    metrics = train_step(batch)
                    tracker.log_metrics(metrics, step)

                    if should_checkpoint(step):
                        checkpoint_manager.save(model, optimizer, step, metrics)

                    if should_evaluate(step):
                        val_metrics = evaluate(model, val_loader)
                        logger.log_metrics(val_metrics, step, prefix="val/")

                except KeyboardInterrupt:
                    logger.info("Training interrupted, saving checkpoint...")
                    checkpoint_manager.save(model, optimizer, step, metrics)
                    raise
        # --- end of the seed's snippet ---
    logger.close()
    # The interrupt save is filed under step 5 with the metrics of step 4, the last finished step.
    latest = checkpoint_manager.core.get_latest_checkpoint()
    record = load_checkpoint(latest, nn.Linear(3, 1))
    assert record.step == 5 and record["loss"] == pytest.approx(float(metrics["loss"]))
    tracked = [json.loads(line) for line in (tracker.directory / "tracker.jsonl").read_text().splitlines()]
    assert [r["step"] for r in tracked if r["type"] == "metrics"] == [1, 2, 3, 4]
    assert tracked[-1] == {"type": "finish", "status": "interrupted"}
    assert tracker.directory.parent.name == "project" and tracker.directory.name.startswith("project-")


def test_save_argument_mistakes_are_explained():
    manager = CheckpointManager("checkpoints")
    model = nn.Linear(2, 1)
    with pytest.raises(CheckpointError, match="needs the step"):
        manager.save(model, None, None)
    with pytest.raises(CheckpointError, match="got the step twice"):
        manager.save(model, None, 5, step=6)
    with pytest.raises(CheckpointError, match="metric 'acc' must be a number, got str"):
        manager.save(model, None, 5, {"acc": "high"})
    assert manager.load_best() is None and manager.get_best_checkpoint_path() is None
