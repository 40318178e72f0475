"""``trainengine train-lora``: seed 001's ``train_lora.py``, as a command of the engine.

It takes seed 001's flags as written (``--max_steps 1000 --experiment_name exp_001
--learning_rate 5e-4 --lora_r 16 --lora_alpha 32``; the dashed spellings work too) over the
``prm_lora`` preset, a ``--config`` file (YAML or JSON, e.g. one written by
``get_lora_config().save(...)``) and ``--set`` overrides, and trains a LoRA process reward model.
Checkpoints land in ``<output_dir>/<experiment>/checkpoint_step_<N>`` (``outputs/`` by default),
which ``trainengine evaluate --checkpoint`` reads.
"""

from __future__ import annotations

from pathlib import Path

import typer

from trainengine.cli._common import resolve_config

__all__ = ["train_lora_command"]


def train_lora_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML or JSON config (seed 001's config.save)."),
    set_: list[str] | None = typer.Option(
        None, "--set", help="Override a field: --set lora.lora_dropout=0.05 (repeatable)."
    ),
    max_steps: int | None = typer.Option(None, "--max_steps", "--max-steps", help="training.max_steps"),
    experiment_name: str | None = typer.Option(
        None, "--experiment_name", "--experiment-name", help="tracking.experiment_name (the checkpoint folder)"
    ),
    learning_rate: float | None = typer.Option(
        None, "--learning_rate", "--learning-rate", "--lr", help="training.learning_rate"
    ),
    lora_r: int | None = typer.Option(None, "--lora_r", "--lora-r", help="lora.lora_r"),
    lora_alpha: int | None = typer.Option(None, "--lora_alpha", "--lora-alpha", help="lora.lora_alpha"),
    output_dir: str | None = typer.Option(
        None, "--output_dir", "--output-dir", help="tracking.output_dir (default outputs)"
    ),
    seed: int | None = typer.Option(None, "--seed", help="training.seed"),
    device: str | None = typer.Option(None, "--device", help="training.device (auto, cpu, cuda, cuda:N)"),
    resume: str | None = typer.Option(None, "--resume", help="auto, a checkpoint_step_<N> folder or a run directory."),
) -> None:
    """Train a LoRA process reward model (seed 001's train_lora.py). Precedence: flags > --set > file > preset."""
    from trainengine.cli._train import run_training

    flags = {
        "training.max_steps": max_steps,
        "training.learning_rate": learning_rate,
        "training.seed": seed,
        "training.device": device,
        "tracking.experiment_name": experiment_name,
        "tracking.output_dir": output_dir,
        "lora.lora_r": lora_r,
        "lora.lora_alpha": lora_alpha,
    }
    cfg = resolve_config(config, "prm_lora", set_, flags)
    if cfg.checkpointing.checkpoint_dir is None:
        # Seed 001's layout: outputs/<experiment>/checkpoint_step_<N>.
        cfg.checkpointing.checkpoint_dir = str(Path(cfg.tracking.output_dir) / cfg.tracking.experiment_name)
        cfg.checkpointing.folder_name = "checkpoint_step"
    results = run_training(cfg, resume_from=resume)
    typer.echo(f"checkpoints: {cfg.checkpointing.checkpoint_dir}")
    if results.get("run_dir"):
        typer.echo(f"run directory: {results['run_dir']}")
