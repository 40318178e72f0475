"""Saving and loading fitted pipelines with skops — never with pickle.

Saving is here (:func:`save_pipeline`, ``skops.io.dump``); the safe load and its trusted-types
check live in :mod:`trainengine._skops`, one layer below everything that loads a scikit-learn
model (this package, the model registry's ``sklearn`` artifacts, ``trainengine serve``), and are
re-exported here under their usual names. :func:`load_pipeline` asks skops which types in the file
are not trusted by default (``skops.io.get_untrusted_types``: an extension type such as
``sklearn.tree._tree.Tree``, ``numpy.dtype``, a user's own class, a function) and trusts them only
when they are on the allow-list: **classes** defined in scikit-learn, numpy or scipy. Anything else
— a class from another package or from ``__main__``, any function skops does not already trust
(``posix.system``, ``numpy.load``) — is refused with :class:`UntrustedModelError` naming the types;
pass ``trusted=[...]`` to accept types you have checked yourself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainengine._skops import (
    SKOPS_FILE,
    TRUSTED_MODULES,
    UntrustedModelError,
    check_trusted,
    load_skops,
    skops_io,
    verified_skops_file,
)
from trainengine.errors import TrainEngineError

__all__ = [
    "UntrustedModelError",
    "TRUSTED_MODULES",
    "save_pipeline",
    "load_pipeline",
    "check_trusted",
    "resolve_model_file",
    "SKOPS_FILE",
]


def save_pipeline(estimator: Any, path: str | os.PathLike[str]) -> Path:
    """Write a fitted estimator or Pipeline to ``path`` with ``skops.io.dump`` (atomically).

    Raises:
        MissingExtraError: skops is not installed.
    """
    sio = skops_io()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    sio.dump(estimator, tmp)
    os.replace(tmp, target)
    return target


def load_pipeline(path: str | os.PathLike[str], *, trusted: Iterable[str] = ()) -> Any:
    """Load a fitted pipeline from a ``.skops`` file, a saved model folder or a run directory.

    A folder (the run's ``model/``, a registered copy) is checked against its ``manifest.json``
    first (every file's SHA-256), then its ``model.skops`` is loaded; a run directory means its
    ``model/`` folder. Types are checked by :func:`check_trusted` before anything is built
    (:func:`trainengine._skops.load_skops`).

    Args:
        path: ``model.skops``, a model folder, or a run directory.
        trusted: further type names to accept.

    Raises:
        UntrustedModelError: untrusted types, a file that is not ``.skops``, or a folder whose files
            no longer match its manifest.
        TrainEngineError: nothing to load at ``path``.

    Example:
        >>> import tempfile, numpy as np
        >>> from sklearn.linear_model import LogisticRegression
        >>> model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
        >>> path = save_pipeline(model, f"{tempfile.mkdtemp()}/model.skops")
        >>> load_pipeline(path).predict(np.array([[2.5]])).tolist()
        [1]
    """
    return load_skops(resolve_model_file(path), trusted=trusted)


def resolve_model_file(path: str | os.PathLike[str]) -> Path:
    """The ``model.skops`` that ``path`` (a file, a model folder or a run directory) means, verified.

    Raises:
        UntrustedModelError: the folder no longer matches its manifest.
        TrainEngineError: nothing to load at ``path``.
    """
    src = Path(path)
    if src.is_dir() and (src / "model").is_dir() and not (src / SKOPS_FILE).is_file():
        src = src / "model"  # a run directory
    if not (src.is_file() or (src / SKOPS_FILE).is_file()):
        raise TrainEngineError(
            f"no fitted pipeline at {path}: give a .skops file, a model folder or the run directory of a "
            "SklearnTrainer run (it saves model/model.skops)"
        )
    return verified_skops_file(src)
