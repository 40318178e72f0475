"""``trainengine export --checkpoint PATH | --model NAME@ALIAS``: write a verified export bundle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from trainengine.errors import ExportError

__all__ = ["export_command", "is_sklearn_run"]

_DEFAULT_FORMATS = "onnx,torchscript,pytorch"


def export_command(
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="A ckpt-* folder, a checkpoints folder or a run directory (a scikit-learn run too)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="A registry version: NAME@ALIAS, NAME:VERSION or NAME (latest)."
    ),
    formats: str | None = typer.Option(
        None,
        "--formats",
        help="Comma-separated: onnx, torchscript, torch_export, pytorch (default: onnx,torchscript,pytorch).",
    ),
    format_: str | None = typer.Option(
        None, "--format", help="One format, e.g. --format onnx (the seeds' spelling; same choices as --formats)."
    ),
    output_dir: Path = typer.Option(Path("exports"), "--output-dir", help="Parent folder of the bundle."),
    quantize: str | None = typer.Option(
        None, "--quantize", help="dynamic-int8: add an int8 ONNX model, with its size and metric change."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Bundle name (default: the experiment or registered model name)."
    ),
    registry: str = typer.Option(
        "models.db",
        "--registry",
        "-r",
        envvar="TRAINENGINE_REGISTRY",
        help="Registry file or SQLAlchemy URL (for --model).",
    ),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", min=0.0, help="Largest allowed difference from PyTorch, relative to the output scale."
    ),
) -> None:
    """Export a trained model as a bundle: formats verified against PyTorch, inference script, Dockerfile."""
    if (checkpoint is None) == (model is None):
        raise ExportError("give exactly one of --checkpoint PATH or --model NAME@ALIAS")
    if formats is not None and format_ is not None:
        raise ExportError(
            f"give --format or --formats, not both (got --format {format_} and --formats {formats}); "
            "--format onnx is the same as --formats onnx"
        )
    chosen = format_ if format_ is not None else formats if formats is not None else _DEFAULT_FORMATS
    fmts = [f.strip() for f in chosen.split(",") if f.strip()]
    options: dict[str, Any] = {"formats": fmts, "output_dir": output_dir, "quantize": quantize, "tolerance": tolerance}
    if name:
        options["name"] = name
    if checkpoint is not None and is_sklearn_run(checkpoint):
        _export_sklearn(checkpoint, output_dir, name, quantize)
        return
    if checkpoint is not None:
        from trainengine.export import export_checkpoint

        bundle = export_checkpoint(checkpoint, **options)
    else:
        from trainengine.export import export_registered
        from trainengine.registry import ModelRegistry

        if "://" not in registry and not Path(registry).is_file():
            raise ExportError(
                f"no model registry at {registry} (no such file); "
                "pass --registry PATH_OR_URL or set TRAINENGINE_REGISTRY"
            )
        # the artifact store trainengine registry / serve use (env TRAINENGINE_REGISTRY_ARTIFACTS)
        with ModelRegistry(registry, artifact_root=os.environ.get("TRAINENGINE_REGISTRY_ARTIFACTS") or None) as reg:
            record = reg.resolve(model)
        if record.artifact_kind == "sklearn":  # a registered scikit-learn model folder
            record.verify()  # the artifact is still what was registered
            _export_sklearn(Path(record.artifact_path), output_dir, name or record.name, quantize)
            return
        bundle = export_registered(record, **options)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for fmt, entry in manifest["formats"].items():
        diff = entry.get("max_abs_diff")
        detail = (
            f"max |diff| vs PyTorch {diff:.2e}"
            if diff is not None
            else entry.get("reason", "weights + model_config.json")
        )
        typer.echo(f"  {fmt:<13} {detail}")
    if manifest.get("quantization"):
        q = manifest["quantization"]
        ratio = q["size_bytes"] / q["fp32_size_bytes"]
        typer.echo(f"  int8          {ratio:.2f}x the fp32 size; metric change {json.dumps(q['metric_delta'])}")
    typer.echo(f"bundle: {bundle}")


def is_sklearn_run(path: Path) -> bool:
    """A SklearnTrainer run directory or its model/ folder (they hold sklearn_model.json)."""
    info = "sklearn_model.json"  # trainengine.sklearn.MODEL_INFO, without importing scikit-learn here
    return (path / "model" / info).is_file() or (path / info).is_file()


def _export_sklearn(path: Path, output_dir: Path, name: str | None, quantize: str | None) -> None:
    """``--checkpoint`` of a scikit-learn run: :func:`trainengine.sklearn.export_pipeline_bundle`."""
    from trainengine.sklearn import export_pipeline_bundle

    if quantize:
        raise ExportError("--quantize applies to torch models; a scikit-learn bundle is exported as trained")
    bundle = export_pipeline_bundle(path, output_dir, name=name)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for fmt, entry in manifest["formats"].items():
        parity = entry.get("parity") or {}
        detail = f"max |diff| vs scikit-learn {parity['max_abs_diff']:.2e}" if "max_abs_diff" in parity else ""
        typer.echo(f"  {fmt:<13} {entry['file']} {detail}".rstrip())
    typer.echo(f"  runtime       {manifest['runtime']}")
    typer.echo(f"bundle: {bundle}")
