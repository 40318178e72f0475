"""Saving and loading fitted pipelines with skops — never with pickle.

A ``.skops`` file is a zip of JSON describing the objects plus numpy arrays; loading it rebuilds
only the types it is told to trust. :func:`load_pipeline` asks skops which types in the file are
not trusted by default (``skops.io.get_untrusted_types``: an extension type such as
``sklearn.tree._tree.Tree``, ``numpy.dtype``, a user's own class, a function) and trusts them only
when they are on the allow-list: **classes** defined in scikit-learn, numpy or scipy. Anything else
— a class from another package or from ``__main__``, any function skops does not already trust
(``posix.system``, ``numpy.load``) — is refused with :class:`UntrustedModelError` naming the types;
pass ``trusted=[...]`` to accept types you have checked yourself.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainengine.errors import MissingExtraError, TrainEngineError

__all__ = ["UntrustedModelError", "TRUSTED_MODULES", "save_pipeline", "load_pipeline", "check_trusted", "SKOPS_FILE"]

#: The packages whose classes a ``.skops`` file may contain without being named in ``trusted=``.
TRUSTED_MODULES = ("sklearn", "numpy", "scipy")
SKOPS_FILE = "model.skops"


class UntrustedModelError(TrainEngineError):
    """A ``.skops`` file holds types outside the allow-list (or is not a ``.skops`` file at all)."""


def _skops_io() -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise MissingExtraError("skops", "sklearn", "saving and loading scikit-learn pipelines") from None
    return sio


def _is_allowed_class(name: str) -> bool:
    """Whether ``name`` (``sklearn.tree._tree.Tree``) is a class of an allow-listed package.

    Only the allow-listed packages' own modules are imported to look the name up, and only a
    class counts: a function of numpy or scipy (``numpy.load``) is not a type to rebuild blindly.
    """
    if name.split(".", 1)[0] not in TRUSTED_MODULES:
        return False
    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    obj = getattr(module, attr, None)
    return isinstance(obj, type)


def check_trusted(path: str | os.PathLike[str], trusted: Iterable[str] = ()) -> list[str]:
    """The types of a ``.skops`` file that skops does not trust by default, all checked against the allow-list.

    Args:
        path: the ``.skops`` file.
        trusted: further type names to accept (``"mypackage.MyTransformer"``), each one checked by you.

    Returns:
        The names to hand to ``skops.io.load(trusted=...)``.

    Raises:
        UntrustedModelError: the file is not a ``.skops`` file (a pickle renamed, a damaged zip),
            or it holds types that are neither allow-listed nor in ``trusted`` (the message names
            every one).
    """
    sio = _skops_io()
    file = Path(path)
    if not zipfile.is_zipfile(file):
        raise UntrustedModelError(
            f"{file} is not a .skops file (not a zip archive; a pickle is never loaded) — save the pipeline with "
            "trainengine.sklearn.save_pipeline or skops.io.dump"
        )
    try:
        found = list(sio.get_untrusted_types(file=file))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UntrustedModelError(f"{file} cannot be read as a .skops file: {exc}") from None
    extra = set(trusted)
    refused = sorted(n for n in found if n not in extra and not _is_allowed_class(n))
    if refused:
        raise UntrustedModelError(
            f"{file} holds types that are not trusted: {', '.join(refused)}. Only classes of "
            f"{', '.join(TRUSTED_MODULES)} are loaded without being named; if you have checked these, pass "
            f"trusted={refused!r}"
        )
    return sorted(found)


def save_pipeline(estimator: Any, path: str | os.PathLike[str]) -> Path:
    """Write a fitted estimator or Pipeline to ``path`` with ``skops.io.dump`` (atomically).

    Raises:
        MissingExtraError: skops is not installed.
    """
    sio = _skops_io()
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
    ``model/`` folder. Types are checked by :func:`check_trusted` before anything is built.

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
    file = resolve_model_file(path)
    sio = _skops_io()
    names = check_trusted(file, trusted)
    return sio.load(file, trusted=names)


def resolve_model_file(path: str | os.PathLike[str]) -> Path:
    """The ``model.skops`` that ``path`` (a file, a model folder or a run directory) means, verified."""
    from trainengine._hashing import MANIFEST, verify_bundle

    src = Path(path)
    if src.is_dir() and (src / "model").is_dir() and not (src / SKOPS_FILE).is_file():
        src = src / "model"  # a run directory
    if src.is_dir():
        if (src / MANIFEST).is_file():
            problems = verify_bundle(src)
            if problems:
                raise UntrustedModelError(
                    f"{src} does not match its manifest, so it is not loaded: {'; '.join(problems)}"
                )
        src = src / SKOPS_FILE
    if not src.is_file():
        raise TrainEngineError(
            f"no fitted pipeline at {path}: give a .skops file, a model folder or the run directory of a "
            "SklearnTrainer run (it saves model/model.skops)"
        )
    return src
