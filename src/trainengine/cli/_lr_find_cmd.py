"""``trainengine lr-find``: an exponential learning-rate range test with a suggested learning rate."""

from __future__ import annotations

from pathlib import Path

import typer

from trainengine.cli._common import resolve_config

__all__ = ["lr_find_command"]


def lr_find_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML or JSON config file."),
    preset: str | None = typer.Option(
        None, "--preset", "-p", help="Preset under the file: quick_prototype, baseline, production, low_memory."
    ),
    set_: list[str] | None = typer.Option(
        None, "--set", "-s", help="Override a field: section.key=value (repeatable)."
    ),
    min_lr: float = typer.Option(1e-7, "--min-lr", help="Learning rate of the first step."),
    max_lr: float = typer.Option(10.0, "--max-lr", help="Learning rate of the last step."),
    steps: int = typer.Option(100, "--steps", help="Optimizer steps at most (fewer when the loss diverges)."),
    smoothing: float = typer.Option(0.9, "--smoothing", help="Moving-average beta of the loss (0 = none)."),
    output_dir: Path | None = typer.Option(
        None,
        "--output-dir",
        help="Where lr_find.png, lr_find.yaml and lr_find.json go; default <tracking.output_dir>/<experiment>/lr_find.",
    ),
) -> None:
    """Find a learning rate: train a fresh model for a few steps with a growing learning rate.

    The learning rate goes from --min-lr to --max-lr exponentially, one value per optimizer step,
    and the test stops when the smoothed loss exceeds 4x its best. The suggestion is the learning
    rate where the smoothed loss falls fastest (steepest descent per decade), or the minimum-loss
    learning rate / 10 when the curve is too short; it is printed and written as an override file.
    """
    from trainengine.tune import lr_find

    cfg = resolve_config(config, preset, set_, {})
    out = output_dir or Path(cfg.tracking.output_dir) / cfg.tracking.experiment_name / "lr_find"
    result = lr_find(cfg, min_lr=min_lr, max_lr=max_lr, num_steps=steps, smoothing=smoothing, output_dir=out)
    how = "steepest descent of the smoothed loss" if result.method == "steepest" else "minimum-loss lr / 10"
    end = "the loss diverged" if result.diverged else "max lr reached"
    typer.echo(
        f"lr range test: {result.num_steps} steps from {result.lrs[0]:.3g} to {result.lrs[-1]:.3g} ({end}); "
        f"minimum loss at lr {result.min_loss_lr:.3g}"
    )
    typer.echo(f"suggested learning rate: {result.suggested_lr:g} ({how})")
    typer.echo(f"plot: {result.files['plot']}")
    typer.echo(f"override: {result.files['override']}")
    same = ([f"--config {config}"] if config is not None else []) + ([f"--preset {preset}"] if preset else [])
    same += [f"--set {s}" for s in set_ or []]
    typer.echo(f"train with it: trainengine train {' '.join([*same, result.set_line])}")
