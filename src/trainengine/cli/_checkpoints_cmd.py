"""``trainengine resume RUN_DIR``, ``checkpoints list|verify RUN_DIR``, ``consolidate CKPT``, ``import FILE.pt``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

import typer
from rich.console import Console
from rich.table import Table

from trainengine.errors import CheckpointError

checkpoints_app = typer.Typer(
    help="List and verify the checkpoints of a run; consolidate a sharded one; import a torch.save checkpoint.",
    no_args_is_help=True,
)


def _checkpoint_dir(run_dir: Path) -> Path:
    """The checkpoints of a run directory (or the folder itself when it holds checkpoints)."""
    if (run_dir / "checkpoints").is_dir():
        return run_dir / "checkpoints"
    from trainengine.checkpoint import is_checkpoint_name

    if run_dir.is_dir() and any(is_checkpoint_name(p.name) for p in run_dir.iterdir()):
        return run_dir
    config = run_dir / "config.yaml"
    if config.is_file():
        from trainengine.config import TrainingConfig

        custom = TrainingConfig.load(config).checkpointing.checkpoint_dir
        if custom and Path(custom).is_dir():
            return Path(custom)
    raise CheckpointError(
        f"no checkpoints in {run_dir} — pass a run directory (runs/<experiment>/<run_id>) or a checkpoints folder"
    )


def _manager(run_dir: Path):
    """A manager ranking checkpoints by the metric the run itself monitored."""
    import json

    from trainengine.checkpoint import CheckpointManager

    monitor, mode = "val/loss", "min"
    try:
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        task = run.get("task") or {}
        monitor, mode = task.get("monitor", monitor), task.get("monitor_mode", mode)
        config = run_dir / "config.yaml"
        if config.is_file():
            from trainengine.config import TrainingConfig

            t = TrainingConfig.load(config).training
            if t.monitor:
                from trainengine.tasks import METRIC_MODES

                monitor = t.monitor if "/" in t.monitor else "val/" + t.monitor.removeprefix("val_")
                mode = METRIC_MODES.get(monitor.split("/", 1)[1], mode) if t.monitor_mode == "auto" else t.monitor_mode
    except (OSError, ValueError):
        pass  # not a run directory: rank by validation loss
    # Listing and verifying only read: no index.json, lock file or clean-up of leftovers.
    # mode comes from run.json / the config: CheckpointManager checks it and names a bad value.
    return CheckpointManager(
        _checkpoint_dir(run_dir), monitor=monitor, mode=cast(Literal["min", "max"], mode), read_only=True
    )


def _size(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num < 1024 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return str(num)


@checkpoints_app.command("list")
def list_command(run_dir: Path = typer.Argument(..., help="Run directory or checkpoints folder.")) -> None:
    """Show every checkpoint: step, epoch, monitored metric, size, best/latest flags."""
    manager = _manager(run_dir)
    table = Table(title=f"checkpoints in {manager.checkpoint_dir}")
    for col in ("name", "step", "epoch", manager.monitor, "size", "flags"):
        table.add_column(col)
    for info in manager.list_checkpoints():
        flags = ", ".join(
            f for f, on in (("best", info.is_best), ("latest", info.is_latest), *((t, True) for t in info.tags)) if on
        )
        metric = f"{info.metric:.6g}" if info.metric is not None else "-"
        table.add_row(info.name, str(info.step), str(info.epoch), metric, _size(info.size_bytes), flags)
    Console(soft_wrap=True).print(table)


@checkpoints_app.command("verify")
def verify_command(run_dir: Path = typer.Argument(..., help="Run directory or checkpoints folder.")) -> None:
    """Check every checkpoint against its manifest; exit 1 when any is corrupt."""
    manager = _manager(run_dir)
    bad = 0
    for info in manager.list_checkpoints(include_invalid=True):
        problems = manager.verify(info.path)
        if problems:
            bad += 1
            typer.echo(f"{info.name}: corrupt — {'; '.join(problems)}")
        else:
            typer.echo(f"{info.name}: ok")
    if bad:
        raise typer.Exit(1)


@checkpoints_app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="A .pt / .pth file from torch.save (a checkpoint dict or a state_dict)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Checkpoint folder to write into (default: FILE without its suffix)."
    ),
    step: int | None = typer.Option(None, "--step", min=0, help="Step to file it under when the file has none."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a checkpoint of the same step in --output."),
) -> None:
    """Convert a torch.save checkpoint (seed 002's checkpoint_<step>.pt) into a pickle-free checkpoint folder.

    The file is read with torch.load(weights_only=True): tensors and plain containers only. Anything
    else (pickled classes, whole models, numpy arrays) is refused with the reason, never unpickled.
    """
    from trainengine.checkpoint import import_pt_checkpoint

    path = import_pt_checkpoint(file, output, step=step, overwrite=overwrite)
    typer.echo(f"imported {file} -> {path}")


@checkpoints_app.command("consolidate")
def consolidate_command(
    checkpoint: Path = typer.Argument(..., help="A sharded ckpt-* folder (written under distributed.strategy fsdp2)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder to write ckpt-<step> into (default: <run>/consolidated)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a consolidated checkpoint of the same step."),
) -> None:
    """Turn a sharded (FSDP2) checkpoint into an ordinary one: the whole weights in one model.safetensors.

    Every rank's shards are verified and assembled in this one process; the result exports,
    registers and resumes in one process like any checkpoint.
    """
    from trainengine.checkpoint import consolidate_checkpoint

    path = consolidate_checkpoint(checkpoint, output, overwrite=overwrite)
    typer.echo(f"consolidated {checkpoint} -> {path}")


def resume_command(
    run_dir: Path = typer.Argument(..., help="The run directory to continue (runs/<experiment>/<run_id>)."),
    checkpoint: str = typer.Option("latest", "--checkpoint", help="latest (newest valid) or a checkpoint folder."),
) -> None:
    """Continue a run from its newest valid checkpoint with the run's own config.yaml."""
    from trainengine.cli._train import run_training
    from trainengine.config import TrainingConfig

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
    config = TrainingConfig.load(config_path)
    source = run_dir if checkpoint == "latest" else Path(checkpoint)
    results = run_training(config, resume_from=source)
    typer.echo(f"run directory: {results['run_dir']}")
