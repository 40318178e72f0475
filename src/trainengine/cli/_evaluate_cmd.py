"""``trainengine evaluate``: metrics with bootstrap intervals for checkpoints, runs or registry versions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from trainengine.cli._export_cmd import is_sklearn_run
from trainengine.errors import TrainEngineError

__all__ = ["evaluate_command"]


def _registry_source(ref: str, registry: str) -> Any:
    """A LoadedModel (or a scikit-learn model folder) for a registry reference (NAME@ALIAS, NAME:VERSION, NAME)."""
    from trainengine.evaluation import LoadedModel, load_model_source
    from trainengine.registry import ModelRegistry
    from trainengine.tasks import TaskSpec

    if "://" not in registry and not Path(registry).is_file():
        raise TrainEngineError(
            f"no model registry at {registry} (no such file); pass --registry PATH_OR_URL or set TRAINENGINE_REGISTRY"
        )
    # the artifact store trainengine registry / serve use (env TRAINENGINE_REGISTRY_ARTIFACTS)
    with ModelRegistry(registry, artifact_root=os.environ.get("TRAINENGINE_REGISTRY_ARTIFACTS") or None) as reg:
        record = reg.resolve(ref)
    kind, artifact = record.artifact_kind, Path(record.artifact_path)
    if kind in ("checkpoint", "run"):
        record.verify()  # the artifact is still what was registered
        return load_model_source(artifact)
    if kind == "bundle":
        from trainengine.config import TrainingConfig

        task = TaskSpec.from_dict(json.loads((artifact / "task_spec.json").read_text()))
        config = TrainingConfig.from_dict(record.config) if record.config else None
        return LoadedModel(record.load(), task, config, str(artifact))
    if kind == "sklearn":  # evaluated by evaluate_command through trainengine.sklearn
        record.verify()  # the artifact is still what was registered
        return _SklearnModel(artifact, record.config)
    raise TrainEngineError(
        f"{record.model_id} was registered from a bare weights file; it stores no task to evaluate with — "
        "load it with record.load() and call trainengine.evaluation.evaluate(model, data, task_spec)"
    )


class _SklearnModel:
    """A saved scikit-learn model folder (a run's, or a registered copy): evaluated by trainengine.sklearn."""

    def __init__(self, path: Path, config: Any = None) -> None:
        self.path = path
        self.config = config  # a registered model's run config (its column mapping); None: the run's config.yaml

    def __str__(self) -> str:
        return str(self.path)


def _sklearn_or_path(path: Path) -> Any:
    return _SklearnModel(path) if is_sklearn_run(path) else path


def _run_path(run: str) -> Path:
    path = Path(run)
    if path.exists():
        return path
    matches = sorted(Path("runs").glob(f"*/{run}")) if "/" not in run else []
    if len(matches) == 1:
        return matches[0]
    raise TrainEngineError(
        f"no run {run!r}: give a run directory (runs/EXPERIMENT/RUN)"
        + (f"; {len(matches)} runs are named so: {', '.join(map(str, matches))}" if matches else "")
    )


def _label(source: Any, used: set[str]) -> str:
    name = Path(str(source)).name or str(source)
    label, i = name, 2
    while label in used:
        label, i = f"{name}-{i}", i + 1
    used.add(label)
    return label


def evaluate_command(
    checkpoint: list[Path] = typer.Option(
        [], "--checkpoint", help="A ckpt-* folder, a checkpoints folder or a run directory (repeat to compare)."
    ),
    run: str | None = typer.Option(None, "--run", help="A run directory (or a run name under ./runs)."),
    model: str | None = typer.Option(None, "--model", help="A registry version: NAME@ALIAS, NAME:VERSION or NAME."),
    registry: str = typer.Option(
        "models.db", "--registry", "-r", envvar="TRAINENGINE_REGISTRY", help="Registry file or SQLAlchemy URL."
    ),
    data: list[Path] = typer.Option(
        [], "--data", help="Data files to evaluate on (default: the run's own validation split)."
    ),
    segment_key: str | None = typer.Option(
        None, "--segment-key", help="A column of the --data files: metrics per value of it."
    ),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", min=1, help="Bootstrap resamples per interval."),
    confidence: float = typer.Option(0.95, "--confidence", min=0.5, max=0.999, help="Interval coverage."),
    seed: int = typer.Option(0, "--seed", help="Resampling seed."),
    worst_k: int = typer.Option(20, "--worst-k", min=0, help="Highest-loss examples written to worst.jsonl."),
    device: str = typer.Option("cpu", "--device", help="Where the model runs (cpu, cuda, cuda:1)."),
    output_dir: Path = typer.Option(
        ..., "--output-dir", "--output_dir", help="Folder for eval_metrics.json, worst.jsonl, plots."
    ),
) -> None:
    """Evaluate a model: metrics with bootstrap CIs, segments, calibration, threshold, worst examples."""
    from trainengine.evaluation import evaluate
    from trainengine.evaluation._significance import headline_metric

    given = sum([bool(checkpoint), run is not None, model is not None])
    if given != 1:
        raise TrainEngineError("give exactly one of --checkpoint PATH (repeatable), --run RUN or --model NAME@ALIAS")
    sources: list[Any]
    if model is not None:
        sources = [_registry_source(model, registry)]
        labels = [model.replace("@", "_at_").replace(":", "_v")]
    else:
        paths = list(checkpoint) if checkpoint else [_run_path(run or "")]
        used: set[str] = set()
        sources, labels = [_sklearn_or_path(p) for p in paths], [_label(p, used) for p in paths]
    files: list[str] | None = [str(f) for f in data] or None
    options: dict[str, Any] = {
        "segment_key": segment_key,
        "n_bootstrap": n_bootstrap,
        "confidence": confidence,
        "seed": seed,
        "worst_k": worst_k,
        "device": device,
    }
    reports = []
    for source, label in zip(sources, labels, strict=True):
        out = output_dir if len(sources) == 1 else output_dir / label
        if isinstance(source, _SklearnModel):  # a scikit-learn pipeline: its own loader, the same report
            from trainengine.sklearn import evaluate_saved_pipeline

            sk_options = {k: v for k, v in options.items() if k != "device"}  # scikit-learn runs on the CPU
            report = evaluate_saved_pipeline(source.path, files, output_dir=out, config=source.config, **sk_options)
        else:
            report = evaluate(source, files, output_dir=out, **options)
        reports.append(report)
        typer.echo(report.summary())
        typer.echo(f"wrote {out / 'eval_metrics.json'}")
    if len(reports) > 1:
        _compare(reports, labels, headline_metric(reports[0].task), output_dir)


def _compare(reports: list[Any], labels: list[str], headline: str, output_dir: Path) -> None:
    from trainengine.evaluation import higher_is_better

    names = list(reports[0].overall)
    width = max(len(label) for label in labels) + 2
    typer.echo("")
    typer.echo("checkpoint".ljust(width) + "  ".join(f"{n:>24}" for n in names))
    for report, label in zip(reports, labels, strict=True):
        cells = []
        for n in names:
            value, (lo, hi) = report.overall.get(n, float("nan")), report.ci.get(n, [float("nan")] * 2)
            cells.append(f"{value:.4f} [{lo:.4f},{hi:.4f}]".rjust(24))
        typer.echo(label.ljust(width) + "  ".join(cells))
    values = [r.overall.get(headline, float("nan")) for r in reports]
    sign = 1.0 if higher_is_better(headline) else -1.0
    best = max(range(len(reports)), key=lambda i: sign * values[i] if values[i] == values[i] else float("-inf"))
    typer.echo(f"best by {headline}: {labels[best]} ({values[best]:.4f})")
    summary = {
        "headline": headline,
        "best": labels[best],
        "checkpoints": {
            label: {"checkpoint": r.checkpoint, "overall": r.overall, "ci": r.ci}
            for label, r in zip(labels, reports, strict=True)
        },
    }
    from trainengine._io import atomic_write_json

    atomic_write_json(output_dir / "comparison.json", summary)
