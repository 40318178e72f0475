"""``trainengine logs RUN_DIR [--filter train/loss]``: read a run's logs.jsonl back."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from trainengine.errors import TrainEngineError


def logs_command(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/<experiment>/<run_id>)."),
    filter_: list[str] | None = typer.Option(
        None,
        "--filter",
        "-f",
        help="Metric(s) to show, e.g. train/loss (repeatable); a trailing / matches a namespace (val/).",
    ),
    event: str | None = typer.Option(
        None,
        "--type",
        help="Only records of this type: train, eval, start, end, resume, interrupt, rollback, nonfinite.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the matching records as JSON lines."),
) -> None:
    """Show a run's logged records, or one column per filtered metric."""
    path = run_dir / "logs.jsonl" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise TrainEngineError(f"no logs.jsonl in {run_dir} — pass a run directory (runs/<experiment>/<run_id>)")
    from trainengine.tracking import read_jsonl  # imports torch: kept out of `trainengine --help`

    records = read_jsonl(path)
    if event:
        records = [r for r in records if r.get("type") == event]
    if filter_:

        def wanted(key: str) -> bool:
            return any(key == f or (f.endswith("/") and key.startswith(f)) for f in filter_)

        records = [r for r in records if any(wanted(k) for k in r)]
        columns = sorted({k for r in records for k in r if wanted(k)})
    else:
        columns = []
    if as_json:
        for r in records:
            typer.echo(
                json.dumps(
                    {k: v for k, v in r.items() if not columns or k in ("step", "epoch", "type") or k in columns}
                )
            )
        return
    table = Table(title=str(path))
    base = ["step", "epoch", "type"]
    shown = columns or sorted({k for r in records for k in r} - {"time", *base})
    for col in base + shown:
        table.add_column(col)
    for r in records:
        table.add_row(*(_fmt(r.get(c)) for c in base + shown))
    Console(soft_wrap=True).print(table)


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
