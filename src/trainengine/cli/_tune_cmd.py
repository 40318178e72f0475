"""``trainengine tune``: a hyperparameter search over a config, resumable, with parallel workers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from trainengine.cli._common import resolve_config
from trainengine.errors import ConfigError

if TYPE_CHECKING:
    from trainengine.tune._study import PrunerName, SamplerName

__all__ = ["tune_command"]


def tune_command(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Base config (YAML or JSON) every trial starts from."
    ),
    space: Path = typer.Option(
        ...,
        "--space",
        help="Search space YAML/JSON over dotted config keys (training.learning_rate: {type: float, ...}).",
    ),
    trials: int = typer.Option(
        20, "--trials", "-n", help="The study's total number of trials (those of an earlier run count)."
    ),
    workers: int = typer.Option(1, "--workers", "-w", help="Processes running trials in parallel on the storage."),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna RDB URL (sqlite:///..., postgresql://...); default <study folder>/study.db."
    ),
    study_name: str | None = typer.Option(
        None, "--study-name", help="Study name and folder; default tracking.run_name or tune-<experiment>."
    ),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe, random, grid or cmaes."),
    pruner: str | None = typer.Option(
        None, "--pruner", help="median, hyperband or none; default median (none with several objectives)."
    ),
    direction: str | None = typer.Option(None, "--direction", help="minimize / maximize; default the metric's own."),
    objective: list[str] | None = typer.Option(
        None,
        "--objective",
        help="Objective metric (val/accuracy, latency_ms; name:min / name:max); repeat for a multi-objective study.",
    ),
    timeout: float | None = typer.Option(None, "--timeout", help="Start no new trial after this many seconds."),
    seed: int = typer.Option(0, "--seed", help="The sampler's seed."),
    output_dir: str | None = typer.Option(None, "--output-dir", help="tracking.output_dir: the study folder's root."),
    preset: str | None = typer.Option(
        None, "--preset", "-p", help="Preset under the file: quick_prototype, baseline, production, low_memory."
    ),
    set_: list[str] | None = typer.Option(None, "--set", "-s", help="Override a base field: section.key=value."),
    live: bool = typer.Option(True, "--live/--no-live", help="Show a live table of the trials."),
) -> None:
    """Search hyperparameters: every trial a training run of the base config with sampled values.

    Running the same command again continues the study (same experiment, study name and
    storage): the trial numbers go on and --trials is the total. With --workers N, N processes
    share the storage (SQLite here; PostgreSQL for several machines) and never run the same trial.
    """
    import contextlib

    from trainengine.tune import print_summary, tune, watch_trials
    from trainengine.tune._study import prepare_study

    cfg = resolve_config(config, preset, set_, {"tracking.output_dir": output_dir})
    objective_metric, directions = _objectives(objective)
    # The study's storage and name for the live table: the resolution tune() makes (nothing runs).
    setup = prepare_study(
        cfg, space, direction=direction, directions=directions, storage=storage, study_name=study_name,
        objective_metric=objective_metric,
    )  # fmt: skip
    table = watch_trials(setup.storage, setup.study_name, trials, wait_for=setup.study_dir / "run.json")
    with table if live else contextlib.nullcontext():
        result = tune(
            cfg, space, trials, workers=workers, timeout=timeout, direction=direction, directions=directions,
            sampler=cast("SamplerName", sampler), pruner=cast("PrunerName | None", pruner), storage=storage,
            study_name=study_name, seed=seed, objective_metric=objective_metric,
        )  # fmt: skip
    print_summary(result)
    if result.best_config_path is not None:
        typer.echo(f"train the best config: trainengine train --config {result.best_config_path}")
    typer.echo(f"study directory: {result.study_dir}")


def _objectives(values: list[str] | None) -> tuple[str | None, list[tuple[str, str]] | list[str] | None]:
    """``--objective`` values: one = the objective metric; several = a multi-objective study."""
    if not values:
        return None, None
    parsed: list[tuple[str, str] | str] = []
    for value in values:
        name, sep, direction = value.rpartition(":") if ":" in value else (value, "", "")
        if sep and direction not in ("min", "max", "minimize", "maximize"):
            raise ConfigError(f"--objective {value!r}: the direction after ':' must be min or max")
        parsed.append((name, direction) if sep else value)
    if len(parsed) == 1:
        only = parsed[0]
        if isinstance(only, tuple):
            return None, [only]
        return only, None
    return None, parsed  # type: ignore[return-value]  # a list of names and (name, direction) pairs
