"""``export.enabled: true``: write an export bundle when training ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trainengine.errors import ExportError, MissingExtraError

__all__ = ["ExportOnTrainEnd"]

logger = logging.getLogger(__name__)


class ExportOnTrainEnd:
    """Callback: export the trained model as configured in the ``export`` config section.

    The bundle is named after the experiment, profiles the training data as the drift
    reference (or reuses the run's ``data_profile.json``), takes its examples from the
    validation data and records the run id and git commit as lineage. Its folder goes into the
    results (``results["export_dir"]``, also in ``run.json``). An export that fails does not
    fail the finished run: the error is logged and kept as ``results["export_error"]``.

    Example:
        >>> from trainengine import TrainingConfigBuilder
        >>> TrainingConfigBuilder.quick_prototype().with_export(enabled=True, formats=["onnx"]).build().export.enabled
        True
    """

    rank_zero_only = True  # one bundle per run, written by the process that owns the run directory

    def on_train_end(self, trainer: Any, results: dict[str, Any]) -> None:
        from trainengine.export import create_export_bundle
        from trainengine.provenance import git_info

        cfg = trainer.config
        train_ds = getattr(getattr(trainer, "train_loader", None), "dataset", None)
        val_ds = getattr(getattr(trainer, "val_loader", None), "dataset", None)
        run_dir = Path(trainer.run_dir) if trainer.run_dir is not None else None
        profile = (
            run_dir / "data_profile.json" if run_dir is not None and (run_dir / "data_profile.json").is_file() else None
        )
        lineage = {
            "run_id": run_dir.name if run_dir is not None else None,
            "git_commit": git_info().get("commit"),
            "data_fingerprint": trainer.info.get("train_fingerprint"),
            "checkpoint": _checkpoint_of(trainer),
        }
        from trainengine.export._data import scratch_dir, serving_kwargs_from_data

        try:
            with scratch_dir() as scratch:
                bundle = create_export_bundle(
                    trainer.model,
                    trainer.model_config,
                    trainer.task_spec,
                    cfg,
                    formats=list(cfg.export.formats),
                    output_dir=cfg.export.output_dir,
                    name=cfg.tracking.experiment_name,
                    reference_data=None if profile else _indexable(train_ds),
                    reference_profile=profile,
                    # A reward model's example is a problem with its steps, encoded by the export itself.
                    example_input=None
                    if trainer.task_spec.task_type == "reward"
                    else _examples(_indexable(val_ds) or _indexable(train_ds)),
                    eval_data=_indexable(val_ds),
                    lineage=lineage,
                    tolerance=1e-4 if cfg.export.verify else 1e30,  # verify off: record, never fail
                    # File data: preprocessing, tokenizer, raw examples and class names for serving.
                    **serving_kwargs_from_data(train_ds, val_ds, Path(scratch)),
                )
        except (ExportError, MissingExtraError) as exc:
            logger.error("export after training failed (the run itself completed): %s", exc)
            results["export_error"] = str(exc)
            return
        results["export_dir"] = str(bundle)
        logger.info("exported %s", bundle)


def _checkpoint_of(trainer: Any) -> str | None:
    """The run's best checkpoint, else its last, from the trainer's checkpointer (None without one)."""
    ckpt = getattr(trainer, "checkpointer", None)
    path = (ckpt.best_path or ckpt.last_path) if ckpt is not None else None
    return str(path) if path else None


def _indexable(dataset: Any) -> Any:
    """The data set when it supports len() and [i] (iterable-only data sets cannot be sampled)."""
    try:
        len(dataset)
        dataset[0]
    except Exception:  # noqa: BLE001 - any failure (IterableDataset, None, a custom error) means "cannot sample"
        return None
    return dataset


def _examples(dataset: Any) -> Any:
    from trainengine.export._bundle import _first_inputs

    return None if dataset is None else _first_inputs(dataset, 4)
