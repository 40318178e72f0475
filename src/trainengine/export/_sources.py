"""Exporting what training left behind: a checkpoint, a run directory, or a registry version."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainengine.errors import CheckpointError, ConfigError, ExportError
from trainengine.export._bundle import create_export_bundle

__all__ = ["export_checkpoint", "export_registered"]

logger = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _resolve_source(path: Path) -> tuple[Path | None, Path | None]:
    """(checkpoint folder or None, run directory or None) for a checkpoint / checkpoints dir / run dir."""
    from trainengine.engine._checkpointing import resolve_resume

    if not path.exists():
        raise ExportError(f"cannot export {path}: it does not exist")
    if (path / "run.json").is_file() and not (path / "checkpoints").is_dir():
        return None, path  # a run without checkpoints: its final weights
    try:
        ckpt, run_dir = resolve_resume(None, path)
    except CheckpointError as exc:
        if (path / "run.json").is_file() and (path / "model.safetensors").is_file():
            return None, path
        raise ExportError(str(exc).replace("cannot resume", "cannot export")) from None
    return ckpt, run_dir


def export_checkpoint(
    path: str | os.PathLike[str],
    *,
    formats: Sequence[str] = ("onnx", "torchscript", "pytorch"),
    output_dir: str | os.PathLike[str] = "./exports",
    quantize: str | None = None,
    name: str | None = None,
    version: str | None = None,
    tolerance: float = 1e-4,
    monitoring_config: dict[str, Any] | None = None,
) -> Path:
    """Rebuild the model of a checkpoint (or run directory) and export it as a bundle.

    The model is rebuilt from the model spec stored with the checkpoint, the task and training
    config come from its metadata, and for built-in data sets the training split becomes the
    drift reference, the validation split the examples and the quantization evaluation set.

    Args:
        path: A ``ckpt-*`` folder, a checkpoints folder (its newest valid checkpoint), or a run
            directory (its newest checkpoint, else its final ``model.safetensors``).
        formats, output_dir, quantize, tolerance, monitoring_config: As in
            :func:`create_export_bundle`.
        name: Bundle name (default: the run's experiment name, else ``"model"``).
        version: Registry version recorded in the manifest.

    Raises:
        ExportError: Nothing to export there, or no model spec to rebuild the model from.
    """
    from trainengine.checkpoint import CheckpointManager, load_model_state, load_weights_file
    from trainengine.config import TrainingConfig
    from trainengine.models import rebuild_model
    from trainengine.tasks import TaskSpec

    ckpt, run_dir = _resolve_source(Path(path))
    run = _read_json(run_dir / "run.json") if run_dir else {}
    # Without a checkpoint the source is a run directory's final weights.
    final_weights = run_dir / "model.safetensors" if ckpt is None and run_dir is not None else None
    if ckpt is not None:
        loaded = CheckpointManager(ckpt.parent, read_only=True).read(ckpt)
        meta = loaded.meta.extra
        spec, config_dict, task_dict = meta.get("model_spec"), meta.get("config"), meta.get("task")
        git_commit = (meta.get("git") or {}).get("commit")
    else:
        loaded = None
        spec, task_dict = (run.get("model") or {}).get("spec"), run.get("task")
        config_dict = _read_yaml(run_dir / "config.yaml") if run_dir else None
        git_commit = (run.get("git") or {}).get("commit")
    if not spec:
        raise ExportError(
            f"{path} stores no model spec, so the model cannot be rebuilt; "
            "load it yourself and call create_export_bundle(model, ...)"
        )
    if not task_dict:
        raise ExportError(f"{path} stores no task; call create_export_bundle(model, task_spec=...) yourself")
    # The config first: its plugins: list registers what the spec may name (a user model).
    training_config = TrainingConfig.from_dict(config_dict) if config_dict else None
    model = rebuild_model(spec)
    if loaded is not None:
        load_model_state(model, loaded.model_state)
    elif final_weights is not None:
        load_weights_file(model, final_weights)
    task = TaskSpec.from_dict(task_dict)

    reference_data = eval_data = example = scaling = splits = None
    if training_config is not None and (training_config.data.dataset or training_config.data.train_file):
        from trainengine.engine._build import load_data_for

        try:
            splits = load_data_for(training_config, task)
        except (ConfigError, OSError) as exc:
            logger.warning("could not load the training data for the drift reference: %s", exc)
        else:
            reference_data, eval_data = splits.train, splits.val
            from trainengine.export._bundle import _first_inputs

            # Reward examples (problem + steps, of many lengths) are encoded by the export itself.
            example = None if task.task_type == "reward" else _first_inputs(splits.val, 4)
            if splits.info.target_mean is not None and splits.info.target_std is not None:
                scaling = {"mean": splits.info.target_mean, "std": splits.info.target_std}
    profile = run_dir / "data_profile.json" if run_dir and (run_dir / "data_profile.json").is_file() else None
    lineage = {
        "run_id": run.get("run_id"),
        "git_commit": git_commit,
        "data_fingerprint": (run.get("data") or {}).get("train_fingerprint"),
        "checkpoint": str(ckpt or final_weights),
    }
    bundle_name = (
        name
        or run.get("experiment")
        or (training_config.tracking.experiment_name if training_config else None)
        or "model"
    )
    from trainengine.export._data import scratch_dir, serving_kwargs_from_saved

    meta_data = loaded.meta.extra.get("data") if loaded is not None else None
    with scratch_dir() as scratch:
        serving = serving_kwargs_from_saved(meta_data, run_dir, Path(scratch), splits)
        return create_export_bundle(
            model,
            spec,
            task,
            training_config,
            formats=formats,
            output_dir=output_dir,
            example_input=example,
            quantize=quantize,
            monitoring_config=monitoring_config,
            name=bundle_name,
            reference_data=None if profile else reference_data,
            reference_profile=profile,
            eval_data=eval_data,
            tolerance=tolerance,
            lineage=lineage,
            version=version,
            target_scaling=scaling,
            **serving,
        )


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    from trainengine.config import load_yaml

    try:
        return load_yaml(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def export_registered(record: Any, **kwargs: Any) -> Path:
    """Export a registry version (``ModelRegistry.get_model(...)``) as a bundle named after it.

    Checkpoints and run directories are re-exported with :func:`export_checkpoint`; a version
    registered as a bundle is rebuilt from the bundle's ``model.safetensors`` and task spec.
    The artifact's hash is checked first (``record.load`` / the bundle manifest).
    """
    from trainengine.export._files import verify_bundle

    kwargs.setdefault("name", record.name)
    kwargs.setdefault("version", record.version)
    kind, artifact = record.artifact_kind, Path(record.artifact_path)
    if kind in ("checkpoint", "run"):
        record.verify()  # the artifact is still what was registered
        return export_checkpoint(artifact, **kwargs)
    if kind == "bundle":
        problems = verify_bundle(artifact)
        if problems:
            raise ExportError(f"registered bundle {artifact} does not match its manifest: " + "; ".join(problems[:3]))
        task = _read_json(artifact / "task_spec.json")
        model = record.load()
        return create_export_bundle(model, record.model_spec, task, record.config, **kwargs)
    if kind == "sklearn":  # trainengine.sklearn sits above export
        raise ExportError(
            f"{record.model_id} is a scikit-learn model: export it with trainengine.sklearn.export_pipeline_bundle("
            f"record.artifact_path, output_dir) or trainengine export --model {record.name}:{record.version}"
        )
    raise ExportError(
        f"{record.model_id} was registered from a bare weights file ({kind}); it has no task spec to export with — "
        "load it with record.load() and call create_export_bundle(model, task_spec=...) yourself"
    )
