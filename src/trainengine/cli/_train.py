"""``trainengine train``: train from a config file, a preset and overrides."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from trainengine.cli._common import STATE, resolve_config
from trainengine.errors import ConfigError

__all__ = ["train_command", "run_training"]


def run_training(
    config: Any,
    resume_from: str | Path | None = None,
    *,
    built: Any = None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Build task, data and model from the config and train; returns the Trainer's results.

    Args:
        config: the resolved TrainingConfig.
        resume_from: ``auto``, a checkpoint or a run directory.
        built: a ready :class:`~trainengine.engine.BuiltRun` (a cross-validation fold) instead of
            building one from the config.
        callbacks: extra callbacks, after the config's default ones.
    """
    import torch

    from trainengine.assembly import Trainer
    from trainengine.engine import TrainingInterrupted, build_from_config

    if built is None:
        # The model's initial weights follow training.seed (`--seed 3` twice gives the same start;
        # a seed group's children differ by their seed alone).
        torch.manual_seed(config.training.seed)
        built = build_from_config(config)
    trainer = Trainer(built.model, built.model_config, config, built.task_spec, callbacks=callbacks)
    try:
        return trainer.train(built.splits.train, built.splits.val, test_data=built.splits.test, resume_from=resume_from)
    except TrainingInterrupted as exc:
        # Exit 130 (SIGINT) / 143 (SIGTERM) with the emergency checkpoint's path.
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _one_or_list(values: list[str] | None) -> str | list[str] | None:
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


def _maybe_launch(cfg: Any, launch_flags: dict[str, Any]) -> None:
    """Re-run this command under torchrun when it asks for several processes; exits with its code.

    The config is resolved (and so checked) here first: a mistake is one error, not one per rank.
    """
    import os
    import shlex

    from trainengine.cli import _launch

    options = _launch.plan_launch(cfg.distributed, os.environ, **launch_flags)
    if options is None:
        return
    original = STATE["argv"] if STATE["argv"] is not None else sys.argv[1:]
    argv = _launch.launcher_argv(options, _launch.strip_launch_flags(original))
    typer.echo(f"launching {options.world_size} processes: {shlex.join(argv)}", err=True)
    raise typer.Exit(_launch.launch(argv, os.environ))


def _refuse_multi_process_group(cfg: Any, launch_flags: dict[str, Any]) -> None:
    """--seeds / --cv groups train their runs one after another in one process."""
    import os

    from trainengine.cli import _launch

    env_world = os.environ.get("WORLD_SIZE", "1")
    several = _launch.plan_launch(cfg.distributed, os.environ, **launch_flags) is not None
    if several or (env_world.isdigit() and int(env_world) > 1):
        raise ConfigError(
            "--seeds / --cv train their runs in one process; leave out --nproc-per-node / --nnodes "
            "(and distributed.nproc_per_node) or train the runs one by one"
        )


def train_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML or JSON config file."),
    preset: str | None = typer.Option(
        None, "--preset", "-p", help="Preset under the file: quick_prototype, baseline, production, low_memory."
    ),
    set_: list[str] | None = typer.Option(
        None, "--set", "-s", help="Override a field: section.key=value (repeatable)."
    ),
    learning_rate: float | None = typer.Option(None, "--learning-rate", "--lr", help="training.learning_rate"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="training.batch_size"),
    epochs: int | None = typer.Option(None, "--epochs", help="training.epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="training.max_steps"),
    experiment_name: str | None = typer.Option(None, "--experiment-name", help="tracking.experiment_name"),
    run_name: str | None = typer.Option(None, "--run-name", help="tracking.run_name"),
    seed: int | None = typer.Option(None, "--seed", help="training.seed"),
    dataset: str | None = typer.Option(None, "--dataset", help="data.dataset (digits, diabetes, pystdlib)"),
    train_file: list[str] | None = typer.Option(
        None,
        "--train-file",
        "--data-train",
        help="data.train_file: a file, glob or folder (repeatable); see docs/data.md.",
    ),
    val_file: list[str] | None = typer.Option(None, "--val-file", help="data.val_file (repeatable)."),
    test_file: list[str] | None = typer.Option(None, "--test-file", help="data.test_file (repeatable)."),
    data_format: str | None = typer.Option(
        None, "--data-format", help="data.format: csv, jsonl, parquet, text, imagefolder, hf_disk (default: auto)."
    ),
    device: str | None = typer.Option(None, "--device", help="training.device (auto, cpu, cuda, cuda:N)"),
    d_model: int | None = typer.Option(None, "--d-model", help="model.d_model: built-in GPT embedding width"),
    n_heads: int | None = typer.Option(None, "--n-heads", help="model.n_heads: built-in GPT attention heads"),
    n_layers: int | None = typer.Option(None, "--n-layers", help="model.n_layers: built-in GPT transformer blocks"),
    output_dir: str | None = typer.Option(None, "--output-dir", help="tracking.output_dir"),
    profile: int | None = typer.Option(
        None,
        "--profile",
        min=1,
        help="monitoring.profile_steps: profile N steps after warm-up; trace and top kernels in <run_dir>/profile.",
    ),
    resume: str | None = typer.Option(
        None, "--resume", help="auto (newest valid checkpoint of this run/experiment) or a checkpoint / run directory."
    ),
    seeds: str | None = typer.Option(
        None,
        "--seeds",
        help="Train one run per seed (0,1,2 or 0-4) as one group: mean ± std and a 95% CI of every final metric, "
        "seeds_summary.json in the group's folder.",
    ),
    cv: int | None = typer.Option(
        None,
        "--cv",
        help="K-fold cross-validation over the training split (stratified for classification): one run per fold, "
        "mean ± std of every metric, cv_summary.json.",
    ),
    nproc_per_node: int | None = typer.Option(
        None,
        "--nproc-per-node",
        min=1,
        help="Processes on this node (default: distributed.nproc_per_node); above 1 the run starts under torchrun. "
        "See docs/distributed.md.",
    ),
    nnodes: int | None = typer.Option(
        None, "--nnodes", min=1, help="Nodes in the job (default: distributed.nnodes); above 1 needs --rdzv-endpoint."
    ),
    node_rank: int | None = typer.Option(
        None, "--node-rank", min=0, help="This node's index, 0..nnodes-1 (torchrun's static rendezvous)."
    ),
    rdzv_endpoint: str | None = typer.Option(
        None, "--rdzv-endpoint", help="HOST:PORT where the nodes meet (usually the first node), the same on every node."
    ),
    max_restarts: int | None = typer.Option(
        None,
        "--max-restarts",
        min=0,
        help="Restart the whole group this many times after a worker fails; resume with --resume auto.",
    ),
) -> None:
    """Train a model. Precedence: flags > --set > file > preset > defaults.

    With --nproc-per-node N (or distributed.nproc_per_node: N) above 1, the same command runs in N
    processes under torchrun; inside a torchrun worker the launch flags are ignored.
    """
    launch_flags = {
        "nproc_per_node": nproc_per_node,
        "nnodes": nnodes,
        "node_rank": node_rank,
        "rdzv_endpoint": rdzv_endpoint,
        "max_restarts": max_restarts,
    }
    flags = {
        "training.learning_rate": learning_rate,
        "training.batch_size": batch_size,
        "training.epochs": epochs,
        "training.max_steps": max_steps,
        "training.seed": seed,
        "training.device": device,
        "model.d_model": d_model,
        "model.n_heads": n_heads,
        "model.n_layers": n_layers,
        "data.dataset": dataset,
        "data.train_file": _one_or_list(train_file),
        "data.val_file": _one_or_list(val_file),
        "data.test_file": _one_or_list(test_file),
        "data.format": data_format,
        "tracking.experiment_name": experiment_name,
        "tracking.run_name": run_name,
        "tracking.output_dir": output_dir,
        "monitoring.profile_steps": profile,
    }
    if seeds is not None or cv is not None:
        from trainengine.cli import _groups

        _groups.check_group_flags(seeds, cv, resume)
        seed_list = _groups.parse_seeds(seeds) if seeds is not None else []
        cfg = resolve_config(config, preset, set_, flags)
        _refuse_multi_process_group(cfg, launch_flags)
        summary = _groups.run_seed_group(cfg, seed_list) if seeds is not None else _groups.run_cv_group(cfg, cv or 0)
        _groups.print_group_summary(summary)
        typer.echo(f"group directory: {_groups.group_dir_of(summary, cfg)}")
        return
    cfg = resolve_config(config, preset, set_, flags)
    _maybe_launch(cfg, launch_flags)
    results = run_training(cfg, resume_from=resume)
    if results.get("run_dir"):
        # On its own line: the summary table may fold a long path at narrow widths.
        typer.echo(f"run directory: {results['run_dir']}")
