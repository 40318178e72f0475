"""``trainengine registry list|show|register|promote|rollback|archive|history``: the model registry."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from trainengine.errors import RegistryError

__all__ = ["registry_app"]

registry_app = typer.Typer(help="Register, promote, roll back and inspect model versions.", no_args_is_help=True)

_REGISTRY_HELP = "Registry: a SQLite file or a SQLAlchemy URL (env TRAINENGINE_REGISTRY; default models.db)."
_ARTIFACTS_HELP = (
    "Artifact store folder (env TRAINENGINE_REGISTRY_ARTIFACTS; default <stem>-artifacts/ next to a SQLite file)."
)
_GATE = re.compile(r"^\s*([^<>=\s]+)\s*(<=|>=|==|<|>)\s*([^<>=\s]+)\s*$")


def _open(
    registry: str | None,
    artifact_root: str | None,
    config: Path | None = None,
    gates: dict[str, dict[str, str]] | None = None,
    *,
    read_only: bool = False,
    existing: bool = False,
) -> Any:
    """The registry named by the flag (or its env var), else by the config's registry section, else models.db.

    ``read_only`` (list, show, history) creates nothing: a registry that does not exist is an error.
    ``existing`` (promote, rollback, archive: writes that need a registered version) refuses a
    SQLite file that does not exist the same way, instead of creating one only to fail in it.
    """
    from trainengine._sql import resolve_database
    from trainengine.registry import ModelRegistry

    section = None
    if config is not None:
        from trainengine.config import TrainingConfig

        section = TrainingConfig.load(config).registry
    url = registry or (section.url if section is not None else None) or "models.db"
    root = artifact_root or (section.artifact_root if section is not None else None)
    merged = {alias: dict(c) for alias, c in (section.gates if section is not None else {}).items()}
    for alias, conditions in (gates or {}).items():
        merged.setdefault(alias, {}).update(conditions)
    if existing:
        resolve_database(url, kind="model registry", example="models.db", error=RegistryError, create=False)
    return ModelRegistry(url, artifact_root=root, gates=merged or None, read_only=read_only)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def _metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "-"


def _parse_metrics(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise RegistryError(f"--metric {item!r}: write NAME=NUMBER, e.g. --metric val_loss=0.38") from None
    return out


def _parse_gates(alias: str, items: list[str] | None) -> dict[str, dict[str, str]] | None:
    if not items:
        return None
    conditions = {}
    for item in items:
        match = _GATE.match(item)
        if match is None:
            raise RegistryError(
                f"--gate {item!r}: write METRIC<=NUMBER (operators <=, <, >=, >, ==), e.g. --gate 'val_loss<=0.40'"
            )
        conditions[match.group(1)] = f"{match.group(2)} {match.group(3)}"
    return {alias: conditions}


@registry_app.command("list")
def list_command(
    name: str | None = typer.Option(None, "--name", "-n", help="Only this model."),
    include_archived: bool = typer.Option(False, "--all", "-a", help="Include archived versions."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON array (without the training configs) instead of a table."
    ),
    registry: str | None = typer.Option(None, "--registry", "-r", envvar="TRAINENGINE_REGISTRY", help=_REGISTRY_HELP),
    artifact_root: str | None = typer.Option(
        None, "--artifact-root", envvar="TRAINENGINE_REGISTRY_ARTIFACTS", help=_ARTIFACTS_HELP
    ),
) -> None:
    """Every registered version, newest first within each model: aliases, tags, metrics."""
    with _open(registry, artifact_root, read_only=True) as reg:
        records = reg.list_models(name, include_archived=include_archived)
        label = repr(reg)
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in r.to_dict().items() if k != "config"} for r in records], indent=2))
        return
    table = Table(title=f"models in {label}")
    # The model id is what the other commands take: never cut it; let the rest fold.
    table.add_column("model", no_wrap=True, min_width=max([len(r.model_id) for r in records] + [5]))
    for col in ("status", "aliases", "tags", "task", "artifact", "metrics", "registered"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            r.model_id,
            r.status,
            _fmt(r.aliases),
            _fmt(r.tags),
            _fmt(r.task_type),
            r.artifact_kind,
            _metrics_text(r.metrics),
            r.created_at[:16].replace("T", " "),
        )
    Console(soft_wrap=True).print(table)


@registry_app.command("show")
def show_command(
    ref: str = typer.Argument(..., help="NAME (newest active version), NAME:VERSION or NAME@ALIAS."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole record as JSON."),
    registry: str | None = typer.Option(None, "--registry", "-r", envvar="TRAINENGINE_REGISTRY", help=_REGISTRY_HELP),
    artifact_root: str | None = typer.Option(
        None, "--artifact-root", envvar="TRAINENGINE_REGISTRY_ARTIFACTS", help=_ARTIFACTS_HELP
    ),
) -> None:
    """One version: lineage, artifact, metrics, aliases."""
    with _open(registry, artifact_root, read_only=True) as reg:
        record = reg.resolve(ref)
    if as_json:
        typer.echo(json.dumps(record.to_dict(), indent=2))
        return
    table = Table(title=record.model_id, show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    spec = record.model_spec
    for key, value in (
        ("status", record.status),
        ("aliases", record.aliases),
        ("tags", record.tags),
        ("task_type", record.task_type),
        ("description", record.description or None),
        ("created_at", record.created_at),
        ("artifact", f"{record.artifact_kind}: {record.artifact_url or record.artifact_path}"),
        ("sha256", record.artifact_sha256),
        ("source", record.source_path),
        ("run_id", record.run_id),
        ("git_commit", record.git_commit),
        ("data_fingerprint", record.data_fingerprint),
        ("model", f"{spec['architecture']} {json.dumps(spec.get('kwargs', {}))}" if spec else None),
    ):
        table.add_row(key, _fmt(value))
    for key, value in record.metrics.items():
        table.add_row(f"metrics.{key}", _fmt(value))
    Console(soft_wrap=True).print(table)


@registry_app.command("register")
def register_command(
    name: str = typer.Argument(..., help="Model name (letters, digits, . _ -)."),
    version: str = typer.Argument(..., help="Semantic version, e.g. 1.0.0 or 2.1.0-rc.1."),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        "-c",
        help="Checkpoint folder (ckpt-*), run directory, .safetensors or .pt file, or a scikit-learn run's model/ "
        "folder (kind sklearn).",
    ),
    bundle: Path | None = typer.Option(None, "--bundle", "-b", help="Export bundle folder (instead of --checkpoint)."),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="NAME=NUMBER (repeatable); default: the metrics the checkpoint or run recorded."
    ),
    tag: list[str] | None = typer.Option(None, "--tag", "-t", help="Tag (repeatable)."),
    task_type: str | None = typer.Option(
        None, "--task-type", help="classification, regression, language_modeling or vision; default: from the artifact."
    ),
    run_id: str | None = typer.Option(None, "--run-id", help="Training run id; default: from the artifact."),
    description: str = typer.Option("", "--description", "-d", help="Free text."),
    no_copy: bool = typer.Option(
        False, "--no-copy", help="Record the artifact where it is instead of copying it into the store."
    ),
    registry: str | None = typer.Option(None, "--registry", "-r", envvar="TRAINENGINE_REGISTRY", help=_REGISTRY_HELP),
    artifact_root: str | None = typer.Option(
        None, "--artifact-root", envvar="TRAINENGINE_REGISTRY_ARTIFACTS", help=_ARTIFACTS_HELP
    ),
) -> None:
    """Register a new version (never overwrites one); prints its model id."""
    if (checkpoint is None) == (bundle is None):
        raise RegistryError("give exactly one of --checkpoint PATH or --bundle PATH")
    from trainengine.registry import check_name, check_version

    check_name(name), check_version(version)  # before opening: a refused registration creates nothing
    with _open(registry, artifact_root) as reg:
        model_id = reg.register_model(
            name,
            version,
            checkpoint,
            task_type=task_type,
            metrics=_parse_metrics(metric),
            run_id=run_id,
            tags=tag,
            bundle_path=bundle,
            description=description,
            copy_artifact=not no_copy,
        )
        record = reg.get_model(name, version)
    typer.echo(
        f"registered {model_id} ({record.artifact_kind}, sha256 {record.artifact_sha256[:12]}) "
        f"at {record.artifact_url or record.artifact_path}"
    )


@registry_app.command("promote")
def promote_command(
    model: str = typer.Argument(..., help="NAME:VERSION, or NAME@ALIAS to promote what another alias holds."),
    alias: str = typer.Argument(..., help="Alias to give it: production, staging, ..."),
    force: bool = typer.Option(False, "--force", help="Promote even if a gate fails (recorded as forced)."),
    reason: str | None = typer.Option(None, "--reason", help="Why; kept in the history."),
    gate: list[str] | None = typer.Option(
        None, "--gate", "-g", help="Extra gate for this alias, METRIC<=NUMBER (repeatable)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="Training config whose registry section gives the url, artifact root, gates and require_significant.",
    ),
    require_significant: bool = typer.Option(
        False,
        "--require-significant",
        help="Promote only if a paired bootstrap on the same data says the version beats the alias's current holder.",
    ),
    confidence: float | None = typer.Option(
        None,
        "--confidence",
        min=0.5,
        max=0.9999,
        help="One-sided confidence of --require-significant (default: the alias's rule, else 0.95).",
    ),
    metric: str | None = typer.Option(
        None,
        "--metric",
        help="Metric the significance test compares (default: the alias's rule, else accuracy / mse / loss by task).",
    ),
    n_bootstrap: int | None = typer.Option(
        None, "--n-bootstrap", min=100, help="Paired resamples (default: the alias's rule, else 1000)."
    ),
    data: list[Path] | None = typer.Option(
        None,
        "--data",
        help="Evaluation files (repeatable) for the significance test; default: the version's validation split.",
    ),
    device: str = typer.Option("cpu", "--device", help="Where the two models run for the significance test."),
    registry: str | None = typer.Option(None, "--registry", "-r", envvar="TRAINENGINE_REGISTRY", help=_REGISTRY_HELP),
    artifact_root: str | None = typer.Option(
        None, "--artifact-root", envvar="TRAINENGINE_REGISTRY_ARTIFACTS", help=_ARTIFACTS_HELP
    ),
) -> None:
    """Move ALIAS to a version after checking the alias's gates; exit 2 naming each failed gate.

    With --require-significant (or a registry.require_significant rule for ALIAS) the version and
    the alias's current holder are evaluated on the same data and the promotion is refused unless a
    paired bootstrap says the version is better; the refusal prints both intervals and the p-value.
    """
    with _open(registry, artifact_root, config, _parse_gates(alias, gate), existing=True) as reg:
        before = _holder(reg, model, alias)
        check = None
        if require_significant or reg.significance_rule(alias) is not None:
            from trainengine.evaluation import SignificanceCheck

            check = SignificanceCheck(
                data=list(data) if data else None,
                metric=metric,
                confidence=confidence,
                n_bootstrap=n_bootstrap,
                device=device,
            )
        elif data or metric or confidence is not None or n_bootstrap is not None:
            raise RegistryError(
                "--data, --metric, --confidence and --n-bootstrap set up the significance test: add "
                "--require-significant"
            )
        record = reg.promote_model(model, alias, force=force, reason=reason, significance=check)
    was = f" (was {before})" if before and before != record.model_id else (" (already)" if before else "")
    typer.echo(f"{alias} -> {record.model_id}{was}{' [forced]' if force else ''}")
    if check is not None and check.results:
        typer.echo(check.results[-1].explain())
    elif check is not None and before is None:
        typer.echo(f"no holder of {alias!r} before: promoted without a significance test (nothing to compare with)")


def _holder(reg: Any, model: str, alias: str) -> str | None:
    from trainengine.registry import ModelNotFoundError, parse_model_ref

    try:
        return reg.get_model(parse_model_ref(model)[0], alias=alias).model_id
    except ModelNotFoundError:
        return None


@registry_app.command("rollback")
def rollback_command(
    name: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Argument(..., help="Alias to give back to its previous holder."),
    reason: str | None = typer.Option(None, "--reason", help="Why; kept in the history."),
    registry: str | None = typer.Option(None, "--registry", "-r", envvar="TRAINENGINE_REGISTRY", help=_REGISTRY_HELP),
    artifact_root: str | None = typer.Option(
        None, "--artifact-root", envvar="TRAINENGINE_REGISTRY_ARTIFACTS", help=_ARTIFACTS_HELP
    ),
) -> None:
    """Give ALIAS back to the version that held it before (repeat to go further back)."""
    with _open(registry, artifact_root, existing=True) as reg:
        record = reg.rollback(name, alias, reason=reason)
    typer.echo(f"{alias} -> {record.model_id} (rolled back)")


@registry_app.command("archive")
def archive_command(
    model: str = typer.Argument(..., help="NAME:VERSION or NAME@ALIAS."),
    reason: str | None = typer.Option(None, "--reason", help="Why; kept in the history."),
    registry: str | None = typer.Option(None, "--registry", "-r", envvar="TRAINENGINE_REGISTRY", help=_REGISTRY_HELP),
    artifact_root: str | None = typer.Option(
        None, "--artifact-root", envvar="TRAINENGINE_REGISTRY_ARTIFACTS", help=_ARTIFACTS_HELP
    ),
) -> None:
    """Retire a version: it loses its aliases and can no longer be promoted (its files are kept)."""
    with _open(registry, artifact_root, existing=True) as reg:
        record = reg.archive(model, reason=reason)
    typer.echo(f"archived {record.model_id}")


@registry_app.command("history")
def history_command(
    name: str = typer.Argument(..., help="Model name."),
    alias: str | None = typer.Option(None, "--alias", help="Only this alias."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array instead of a table."),
    registry: str | None = typer.Option(None, "--registry", "-r", envvar="TRAINENGINE_REGISTRY", help=_REGISTRY_HELP),
    artifact_root: str | None = typer.Option(
        None, "--artifact-root", envvar="TRAINENGINE_REGISTRY_ARTIFACTS", help=_ARTIFACTS_HELP
    ),
) -> None:
    """Every alias move of a model, oldest first: promotions (forced ones flagged), rollbacks, archivals."""
    with _open(registry, artifact_root, read_only=True) as reg:
        events = reg.history(name, alias)
    if as_json:
        typer.echo(json.dumps(events, indent=2))
        return
    table = Table(title=f"alias history of {name}")
    for col in ("time", "alias", "action", "from", "to", "reason"):
        table.add_column(col, overflow="fold")
    for e in events:
        action = e["action"] + (" (forced)" if e["forced"] else "")
        table.add_row(
            e["time"][:19].replace("T", " "),
            _fmt(e["alias"]),
            action,
            _fmt(e["from_model"]),
            _fmt(e["to_model"]),
            _fmt(e["reason"]),
        )
    Console(soft_wrap=True).print(table)
