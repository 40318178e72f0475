"""``trainengine config show|validate|presets``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from trainengine.cli._common import resolve_config
from trainengine.errors import ConfigError

config_app = typer.Typer(help="Show, validate and list configurations.", no_args_is_help=True)


@config_app.command("show")
def show(
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file to resolve."),
    preset: str | None = typer.Option(None, "--preset", "-p", help="Preset to start from."),
    set_: list[str] | None = typer.Option(None, "--set", "-s", help="Override section.key=value (repeatable)."),
    explain: bool = typer.Option(
        False, "--explain", help="List every field with type, default, bounds and description."
    ),
    fmt: str = typer.Option("yaml", "--format", help="yaml or json."),
) -> None:
    """Print the resolved config (defaults < preset < file < --set), or explain every field."""
    from trainengine.config import TrainingConfig  # here, not at the top: keeps `--help` light

    if fmt not in ("yaml", "json"):
        raise ConfigError(f"unknown --format '{fmt}' — use yaml or json")
    if explain:
        console = Console()
        if not console.is_terminal:
            # Piped or redirected: one plain line per field, so grep finds whole dotted paths
            # (an 80-column table would fold "training.learning_rate" across lines).
            for row in TrainingConfig.explain():
                allowed = f"; allowed {row['bounds']}" if row["bounds"] else ""
                typer.echo(f"{row['path']} ({row['type']}, default {row['default']}{allowed}): {row['description']}")
            return
        table = Table(title="trainengine config fields")
        table.add_column("field", no_wrap=True)
        for col in ("type", "default", "allowed", "description"):
            table.add_column(col, overflow="fold")
        for row in TrainingConfig.explain():
            table.add_row(row["path"], row["type"], row["default"], row["bounds"], row["description"])
        console.print(table)
        return
    cfg = resolve_config(config, preset, set_)
    if fmt == "json":
        typer.echo(json.dumps(cfg.to_dict(), indent=2))
    else:
        import yaml

        typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)


@config_app.command("validate")
def validate(
    config: Path = typer.Argument(..., help="Config file to check."),
    preset: str | None = typer.Option(None, "--preset", "-p"),
    set_: list[str] | None = typer.Option(None, "--set", "-s"),
) -> None:
    """Check a config file; exit 2 listing every problem, 0 when valid."""
    resolve_config(config, preset, set_)
    typer.echo(f"{config}: valid")


@config_app.command("presets")
def presets() -> None:
    """List the presets and what each one is for."""
    from trainengine.config import PRESETS

    table = Table(title="presets")
    table.add_column("name", style="bold")
    table.add_column("what it is for")
    for name, fn in PRESETS.items():
        table.add_row(name, (fn.__doc__ or "").strip().splitlines()[0])
    Console().print(table)
