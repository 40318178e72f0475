"""Registering a fitted pipeline in the model registry, and loading it back — skops only.

The registry (``trainengine.registry``) has no artifact kind of its own for scikit-learn yet; a run's
``model/`` folder is written so that it registers through ``bundle_path=`` as it is: a
``manifest.json`` with the SHA-256 of every file (``model.skops``, ``model.onnx`` when there is
one, ``sklearn_model.json``), ``format: "sklearn"``, the task type and the lineage (run id, git
commit, data fingerprint). The registry copies the listed files into its store, hashes them and
verifies them against the manifest, exactly as for an export bundle. The record's
``artifact_kind`` reads ``bundle``; :func:`load_registered_pipeline` checks the hash again, checks
the folder is a scikit-learn model (``format: "sklearn"``), and loads ``model.skops`` through
:func:`~trainengine.sklearn.load_pipeline` and its allow-list. ``ModelRecord.load()`` (torch
weights) does not apply to such a version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainengine.errors import RegistryError

__all__ = ["register_pipeline", "load_registered_pipeline", "model_folder", "is_sklearn_model"]


def model_folder(path: str | os.PathLike[str]) -> Path:
    """The saved model folder of ``path``: a SklearnTrainer run directory (its ``model/``) or the folder itself.

    Raises:
        RegistryError: no scikit-learn model folder there.
    """
    from trainengine.sklearn._trainer import MODEL_DIR

    src = Path(path)
    if (src / MODEL_DIR).is_dir():
        src = src / MODEL_DIR
    if not is_sklearn_model(src):
        raise RegistryError(
            f"{src} is not a saved scikit-learn model (a folder with manifest.json of format 'sklearn' and "
            "model.skops); give the run directory of a SklearnTrainer run or its model/ folder"
        )
    return src


def is_sklearn_model(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a saved scikit-learn model (its manifest says ``format: "sklearn"``)."""
    manifest = Path(folder) / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("format") == "sklearn"
    except (OSError, ValueError, AttributeError):
        return False


def register_pipeline(
    registry: Any,
    name: str,
    version: str,
    run_dir: str | os.PathLike[str],
    *,
    metrics: Mapping[str, float] | None = None,
    tags: list[str] | None = None,
    description: str = "",
) -> str:
    """Register the fitted pipeline of a SklearnTrainer run (its ``model/`` folder) as ``name:version``.

    Args:
        registry: a :class:`~trainengine.registry.ModelRegistry`.
        name: the model name.
        version: a semantic version (``1.0.0``).
        run_dir: the run directory, or its ``model/`` folder.
        metrics: the metrics promotion gates read; default the model's own: the folds' means
            (``cv/accuracy``) and the validation / test metrics (``val/accuracy``, ``test/...``).
        tags: labels.
        description: free text.

    Returns:
        The model id ``name:version``.

    Raises:
        RegistryError: not a saved scikit-learn model, a version that exists, or files that do not
            match their manifest.
    """
    folder = model_folder(run_dir)
    info_path = folder / "sklearn_model.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    lineage = info.get("lineage") or {}
    chosen = dict(metrics) if metrics is not None else dict(info.get("metrics") or {})
    model_id: str = registry.register_model(
        name,
        version,
        bundle_path=folder,
        task_type=info.get("task_type"),
        metrics=chosen,
        run_id=lineage.get("run_id"),
        tags=tags,
        description=description or f"scikit-learn {info.get('estimator', {}).get('class', 'estimator')}",
    )
    return model_id


def load_registered_pipeline(registry: Any, ref: str, *, trusted: Iterable[str] = ()) -> Any:
    """Load a registered scikit-learn model (``name``, ``name:version`` or ``name@alias``).

    The artifact's registered hash is checked (``record.verify()``, a download first for a store at
    a URL), then its manifest, then the types in ``model.skops`` against the allow-list.

    Raises:
        RegistryError: no such model, or it is not a scikit-learn model.
        UntrustedModelError: ``model.skops`` holds types outside the allow-list.
    """
    from trainengine.sklearn._persist import load_pipeline

    record = registry.resolve(ref)
    path = record.fetch()
    record.verify()
    if not is_sklearn_model(path):
        raise RegistryError(
            f"{record.model_id} is a {record.artifact_kind} artifact, not a scikit-learn model; load it with "
            "record.load()"
        )
    return load_pipeline(path, trusted=trusted)
