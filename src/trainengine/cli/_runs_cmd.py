"""``trainengine runs list|show|compare|plot``: look at runs from their run directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from trainengine.errors import TrainEngineError

runs_app = typer.Typer(help="List, show, compare and plot runs.", no_args_is_help=True)


def _find_runs(output_dir: Path, experiment: str | None) -> list[Path]:
    if not output_dir.is_dir():
        return []
    experiments = [output_dir / experiment] if experiment else [p for p in output_dir.iterdir() if p.is_dir()]
    runs = [r for e in experiments if e.is_dir() for r in e.iterdir() if (r / "run.json").is_file()]
    return sorted(runs, key=lambda r: _facts(r).get("start_time") or "", reverse=True)


def _facts(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _resolve(run: str, output_dir: Path) -> Path:
    """A run directory path, or ``<experiment>/<run_id>``, or a bare run id under output_dir."""
    for candidate in (Path(run), output_dir / run):
        if (candidate / "run.json").is_file():
            return candidate
    matches = [r for r in _find_runs(output_dir, None) if r.name == run]
    if len(matches) == 1:
        return matches[0]
    raise TrainEngineError(
        f"no run '{run}' under {output_dir} — give a run directory or <experiment>/<run_id> (see trainengine runs list)"
    )


_STALE_HELP = (
    "Seconds without a heartbeat after which a running run is shown as stale "
    "(default: max(3 x the run's heartbeat interval, 60))."
)


def _status(facts: dict[str, Any], stale_after: float | None) -> str:
    """The recorded status, or ``stale`` for a "running" run whose process stopped its heartbeat."""
    from trainengine._liveness import liveness  # stdlib only: runs list stays light

    status = liveness(
        facts.get("status"), facts.get("heartbeat_time"), facts.get("heartbeat_interval_s"), stale_after=stale_after
    )
    return status or "?"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@runs_app.command("list")
def list_runs(
    experiment: str | None = typer.Option(None, "--experiment", "-e", help="Only this experiment."),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir", help="Root of run directories."),
    stale_after: float | None = typer.Option(None, "--stale-after", min=0.0, help=_STALE_HELP),
) -> None:
    """Every run, newest first: status, best metric, steps, start time.

    A run still marked running whose heartbeat stopped (its process was killed) shows as stale.
    A group (``train --seeds`` / ``--cv``) is one row: its kind and child count, and the mean ±
    std of its children's monitored metric; its children are ``<experiment>/<group>/<child>``.
    """
    runs = [(run_dir, _facts(run_dir)) for run_dir in _find_runs(output_dir, experiment)]
    # The group column only when there is a group: plain listings keep their width.
    grouped = any(isinstance(facts.get("group"), dict) for _, facts in runs)
    table = Table(title=f"runs in {output_dir}")
    for col in ("run", "status", *(["group"] if grouped else []), "best metric", "steps", "started"):
        table.add_column(col)
    for run_dir, facts in runs:
        res = facts.get("results") or {}
        best = f"{res.get('best_metric_name')} {_fmt(res.get('best_metric'))}" if res.get("best_metric_name") else "-"
        group = facts.get("group") if isinstance(facts.get("group"), dict) else None
        if group is not None and res.get("best_metric_std") is not None:
            best += f" ± {_fmt(res.get('best_metric_std'))}"  # a group's value is its children's mean
        kind = [f"{group.get('kind')} x{group.get('num_children', 0)}" if group is not None else "-"] if grouped else []
        table.add_row(
            f"{run_dir.parent.name}/{run_dir.name}",
            _status(facts, stale_after),
            *kind,
            best,
            _fmt(res.get("steps")),
            (facts.get("start_time") or "")[:19],
        )
    Console(soft_wrap=True).print(table)


@runs_app.command("show")
def show_run(
    run: str = typer.Argument(..., help="Run directory or <experiment>/<run_id>."),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir"),
    stale_after: float | None = typer.Option(None, "--stale-after", min=0.0, help=_STALE_HELP),
) -> None:
    """One run: facts, results and the last evaluation."""
    run_dir = _resolve(run, output_dir)
    facts = _facts(run_dir)
    table = Table(title=str(run_dir), show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key in ("run_id", "experiment", "status", "start_time", "end_time", "heartbeat_time", "seed"):
        table.add_row(key, _status(facts, stale_after) if key == "status" else _fmt(facts.get(key)))
    table.add_row("git", _fmt((facts.get("git") or {}).get("commit")))
    model = facts.get("model") or {}
    table.add_row("model", f"{model.get('class')} ({_fmt(model.get('num_parameters'))} parameters)")
    for key, value in (facts.get("results") or {}).items():
        if not isinstance(value, (dict, list)):
            table.add_row(f"results.{key}", _fmt(value))
    if facts.get("error"):
        table.add_row("error", facts["error"])
    Console(soft_wrap=True).print(table)


@runs_app.command("compare")
def compare_runs(
    runs: list[str] = typer.Argument(..., help="Two or more runs."),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="Metrics to compare (default: val/loss and the monitored metric)."
    ),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir"),
) -> None:
    """Runs side by side: best and last value of each metric, plus the settings that differ."""
    from trainengine.tracking import read_jsonl  # imports torch: only for the commands that read logs

    dirs = [_resolve(r, output_dir) for r in runs]
    names = metric or sorted(
        {"val/loss", *[(_facts(d).get("results") or {}).get("best_metric_name") or "val/loss" for d in dirs]}
    )
    table = Table(title="compare")
    table.add_column("run")
    for name in names:
        table.add_column(f"{name} best")
        table.add_column(f"{name} last")
    for d in dirs:
        evals = (
            [r for r in read_jsonl(d / "logs.jsonl") if r.get("type") in ("eval", "train")]
            if (d / "logs.jsonl").is_file()
            else []
        )
        row = [f"{d.parent.name}/{d.name}"]
        for name in names:
            values = [r[name] for r in evals if isinstance(r.get(name), (int, float))]
            lower = not any(k in name for k in ("accuracy", "r2"))
            row += [_fmt((min if lower else max)(values)) if values else "-", _fmt(values[-1]) if values else "-"]
        table.add_row(*row)
    Console(soft_wrap=True).print(table)
    configs = []
    for d in dirs:
        from trainengine.config import TrainingConfig
        from trainengine.tracking._tracker import flatten_params

        configs.append(
            flatten_params(TrainingConfig.load(d / "config.yaml").to_dict()) if (d / "config.yaml").is_file() else {}
        )
    differing = sorted(
        k for k in set().union(*configs) if len({json.dumps(c.get(k), default=str) for c in configs}) > 1
    )
    if differing:
        diff = Table(title="settings that differ")
        diff.add_column("field")
        for d in dirs:
            diff.add_column(d.name)
        for key in differing:
            if key == "tracking.run_name":
                continue
            diff.add_row(key, *(_fmt(c.get(key)) for c in configs))
        Console(soft_wrap=True).print(diff)


@runs_app.command("plot")
def plot_runs(
    runs: list[str] = typer.Argument(..., help="One or more runs."),
    metric: str = typer.Option("train/loss", "--metric", "-m", help="Metric to plot against the step."),
    output: Path = typer.Option(Path("curves.png"), "--output", "-o", help="PNG (or PDF/SVG) file to write."),
    smoothing: float = typer.Option(
        0.6,
        "--smoothing",
        min=0.0,
        max=0.99,
        help="Exponential smoothing of the bold curve (the raw one is drawn faint).",
    ),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir"),
) -> None:
    """One curve per run (smoothed, with the raw values faint) written to an image file."""
    import matplotlib

    from trainengine.tracking import read_jsonl  # imports torch: only for the commands that read logs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    plotted = 0
    for run in runs:
        d = _resolve(run, output_dir)
        points = [
            (r["step"], r[metric]) for r in read_jsonl(d / "logs.jsonl") if isinstance(r.get(metric), (int, float))
        ]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        smooth, acc = [], values[0]
        for v in values:
            acc = smoothing * acc + (1 - smoothing) * v
            smooth.append(acc)
        line = ax.plot(steps, smooth, label=f"{d.parent.name}/{d.name}")[0]
        ax.plot(steps, values, color=line.get_color(), alpha=0.25)
        plotted += 1
    if not plotted:
        raise TrainEngineError(
            f"none of the runs logged '{metric}' — see trainengine logs RUN_DIR for the metric names"
        )
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    typer.echo(f"wrote {output} ({plotted} run(s), {metric})")


@runs_app.command("report")
def report_run(
    run: str = typer.Argument(..., help="Run directory or <experiment>/<run_id>."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="HTML file to write (default: <run_dir>/report.html)."
    ),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir"),
) -> None:
    """A static HTML page: facts, results, curves, evaluations, alerts, checkpoints and config."""
    from trainengine.tracking._report import build_report

    path = build_report(_resolve(run, output_dir), output)
    typer.echo(f"wrote {path}")
