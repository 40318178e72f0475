"""Registering a fitted pipeline in the model registry, and loading it back — skops only.

The registry (``trainengine.registry``) has an artifact kind for scikit-learn, ``sklearn``: a run's
``model/`` folder, whose ``manifest.json`` (``format: "sklearn"``) lists the SHA-256 of every file
(``model.skops``, ``model.onnx`` when there is one, ``sklearn_model.json``) with the task type and
the lineage (run id, git commit, data fingerprint). :func:`register_pipeline` registers it with
``checkpoint_path=`` (a run directory means its ``model/``): the registry copies the listed files
and the manifest into its store, hashes them, checks them against the manifest and checks that
``model.skops`` is a ``.skops`` file. The record's ``artifact_kind`` reads ``sklearn``, and
``ModelRecord.load(trusted=())`` returns the fitted pipeline: the registered hash is checked
again, then the manifest, then the types in ``model.skops`` against the allow-list
(:mod:`trainengine._skops`, the same check as :func:`~trainengine.sklearn.load_pipeline`).

:func:`load_registered_pipeline` resolves a reference and loads it that way; it also loads the
pipeline of a scikit-learn *export bundle* registered with ``bundle_path=`` (kind ``bundle``, what
``trainengine serve NAME@ALIAS`` serves), which ``ModelRecord.load()`` leaves alone.
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
    copy_artifact: bool = True,
) -> str:
    """Register the fitted pipeline of a SklearnTrainer run (its ``model/`` folder) as ``name:version``.

    The version's artifact kind is ``sklearn``; ``registry.resolve(ref).load()`` (or
    :func:`load_registered_pipeline`) gives the pipeline back.

    Args:
        registry: a :class:`~trainengine.registry.ModelRegistry`.
        name: the model name.
        version: a semantic version (``1.0.0``).
        run_dir: the run directory, or its ``model/`` folder.
        metrics: the metrics promotion gates read; default the model's own: the folds' means
            (``cv/accuracy``) and the validation / test metrics (``val/accuracy``, ``test/...``).
        tags: labels.
        description: free text; default ``scikit-learn <estimator class>``.
        copy_artifact: copy the folder into the registry's store (default) or record it in place.

    Returns:
        The model id ``name:version``.

    Raises:
        RegistryError: not a saved scikit-learn model, a version that exists, or files that do not
            match their manifest.
    """
    folder = model_folder(run_dir)
    model_id: str = registry.register_model(
        name,
        version,
        folder,
        metrics=metrics,
        tags=tags,
        description=description or f"scikit-learn {_estimator_class(folder)}",
        copy_artifact=copy_artifact,
    )
    return model_id


def _estimator_class(folder: Path) -> str:
    """The estimator's class as ``sklearn_model.json`` records it (``Pipeline``), else ``estimator``."""
    from trainengine.sklearn._trainer import MODEL_INFO

    try:
        info = json.loads((folder / MODEL_INFO).read_text(encoding="utf-8"))
        return str(info["estimator"]["class"])
    except (OSError, ValueError, KeyError, TypeError):
        return "estimator"


def load_registered_pipeline(registry: Any, ref: str, *, trusted: Iterable[str] = ()) -> Any:
    """Load a registered scikit-learn model (``name``, ``name:version`` or ``name@alias``).

    A ``sklearn`` version is ``registry.resolve(ref).load(trusted=trusted)``. A scikit-learn export
    bundle (kind ``bundle``, ``format: "sklearn"``) is loaded the same way: the registered hash is
    checked (a download first for a store at a URL), then the manifest, then the types in
    ``model.skops`` against the allow-list.

    Raises:
        RegistryError: no such model, or it is not a scikit-learn model.
        UntrustedModelError: ``model.skops`` holds types outside the allow-list.
    """
    from trainengine.registry._artifacts import load_sklearn

    record = registry.resolve(ref)
    if record.artifact_kind == "sklearn":
        return record.load(trusted=trusted)
    if record.artifact_kind == "bundle":
        path = record.fetch()
        record.verify()
        if is_sklearn_model(path):
            return load_sklearn(path, trusted=trusted, model_id=record.model_id)
    raise RegistryError(
        f"{record.model_id} is a {record.artifact_kind} artifact, not a scikit-learn model; load it with record.load()"
    )
