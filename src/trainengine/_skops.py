"""Loading scikit-learn models from ``.skops`` files safely: the trusted-types check — never pickle.

A ``.skops`` file is a zip of JSON describing the objects plus numpy arrays; loading it rebuilds
only the types it is told to trust. :func:`load_skops` asks skops which types in the file are not
trusted by default (``skops.io.get_untrusted_types``: an extension type such as
``sklearn.tree._tree.Tree``, ``numpy.dtype``, a user's own class, a function) and trusts them only
when they are on the allow-list: **classes** defined in scikit-learn, numpy or scipy. Anything else
— a class from another package or from ``__main__``, any function skops does not already trust
(``posix.system``, ``numpy.load``) — is refused with :class:`UntrustedModelError` naming the types;
pass ``trusted=[...]`` to accept types you have checked yourself.

A model *folder* (a SklearnTrainer run's ``model/``, a registered copy of it, an export bundle) is
first checked against its ``manifest.json`` (:func:`trainengine._hashing.verify_bundle`: every
file's SHA-256, nothing missing or added), so a ``model.skops`` swapped behind the manifest's back
is refused before skops reads it.

This module sits in layer 0 so that the model registry (layer 5), ``trainengine.sklearn`` and the
server all load scikit-learn models through one check. It imports the standard library, the
package's errors and hashing only; skops (and through it scikit-learn) is imported inside the
functions that need it. A scikit-learn export bundle carries a verbatim copy (``_skops.py``, beside
``_hashing.py``), so its standalone server applies the same check without trainengine installed.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

if __package__:  # trainengine._skops
    from trainengine._hashing import MANIFEST, verify_bundle
    from trainengine.errors import MissingExtraError, TrainEngineError
else:  # a scikit-learn bundle's _skops.py: export copied it beside _hashing.py; no trainengine there
    from _hashing import MANIFEST, verify_bundle  # type: ignore[no-redef]  # the bundle's copy of trainengine._hashing

    class TrainEngineError(Exception):  # type: ignore[no-redef]  # the bundle's stand-in for trainengine.errors'
        """A model file cannot be loaded as given."""

    class MissingExtraError(TrainEngineError, ImportError):  # type: ignore[no-redef]  # the same stand-in
        """An optional dependency is not installed."""

        def __init__(self, package: str, extra: str, feature: str) -> None:
            super().__init__(
                f"{feature} needs the '{package}' package, which is not installed; run: pip install {package}"
            )


__all__ = [
    "TrainEngineError",  # the base of every error here (a stand-in inside a bundle)
    "UntrustedModelError",
    "TRUSTED_MODULES",
    "SKOPS_FILE",
    "skops_io",
    "is_allowed_class",
    "skops_types",
    "check_trusted",
    "verified_skops_file",
    "load_skops",
]

#: The packages whose classes a ``.skops`` file may contain without being named in ``trusted=``.
TRUSTED_MODULES = ("sklearn", "numpy", "scipy")
#: The file name of the fitted pipeline in a model folder or a bundle.
SKOPS_FILE = "model.skops"


class UntrustedModelError(TrainEngineError):
    """A ``.skops`` file holds types outside the allow-list, is not a ``.skops`` file at all, or its
    folder no longer matches its manifest."""


def skops_io() -> Any:
    """The ``skops.io`` module.

    Raises:
        MissingExtraError: skops is not installed (``pip install 'trainengine[sklearn]'``).
    """
    try:
        import skops.io as sio
    except ImportError:
        raise MissingExtraError("skops", "sklearn", "saving and loading scikit-learn pipelines") from None
    return sio


def is_allowed_class(name: str) -> bool:
    """Whether ``name`` (``sklearn.tree._tree.Tree``) is a class of an allow-listed package.

    Only the allow-listed packages' own modules are imported to look the name up, and only a
    class counts: a function of numpy or scipy (``numpy.load``) is not a type to rebuild blindly.

    Example:
        >>> is_allowed_class("numpy.dtype"), is_allowed_class("numpy.load"), is_allowed_class("posix.system")
        (True, False, False)
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


def _check_trusted_names(trusted: Iterable[str]) -> set[str]:
    if isinstance(trusted, (str, bytes)):
        raise TypeError(
            f"trusted= must be a list of type names, e.g. trusted=[{trusted!r}]; got the string {trusted!r}"
        )
    names = set()
    for name in trusted:
        if not isinstance(name, str) or not name.strip():
            raise TypeError(
                f"trusted= must hold fully qualified type names such as 'mypackage.MyTransformer'; got {name!r}"
            )
        names.add(name)
    return names


def skops_types(path: str | os.PathLike[str], trusted: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """``(found, refused)``: the types of a ``.skops`` file that skops does not trust by default, and
    those of them that are neither allow-listed nor in ``trusted`` (both sorted).

    Unlike :func:`check_trusted` this does not refuse a file for its types: the model registry uses
    it to accept a pipeline with the user's own classes (loaded later with ``trusted=[...]``).

    Raises:
        UntrustedModelError: the file is not a ``.skops`` file (a pickle renamed, a damaged zip).
        MissingExtraError: skops is not installed (checked after the file is known to be a zip).
        TypeError: ``trusted`` is a single string or holds something that is not a type name.
    """
    extra = _check_trusted_names(trusted)
    file = Path(path)
    if not zipfile.is_zipfile(file):
        raise UntrustedModelError(
            f"{file} is not a .skops file (not a zip archive; a pickle is never loaded) — save the pipeline with "
            "trainengine.sklearn.save_pipeline or skops.io.dump"
        )
    sio = skops_io()
    try:
        found = sorted(sio.get_untrusted_types(file=file))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UntrustedModelError(f"{file} cannot be read as a .skops file: {exc}") from None
    return found, [n for n in found if n not in extra and not is_allowed_class(n)]


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
        TypeError: ``trusted`` is a single string or holds something that is not a type name.
    """
    found, refused = skops_types(path, trusted)
    if refused:
        raise UntrustedModelError(
            f"{Path(path)} holds types that are not trusted: {', '.join(refused)}. Only classes of "
            f"{', '.join(TRUSTED_MODULES)} are loaded without being named; if you have checked these, pass "
            f"trusted={refused!r}"
        )
    return found


def verified_skops_file(path: str | os.PathLike[str]) -> Path:
    """The ``.skops`` file that ``path`` means: the file itself, or a folder's ``model.skops``.

    A folder with a ``manifest.json`` is checked against it first (every file's SHA-256, no file
    missing or added); a folder without one is taken as it is.

    Raises:
        UntrustedModelError: the folder no longer matches its manifest (the message lists each
            difference).
        TrainEngineError: there is no ``.skops`` file at ``path``.
    """
    src = Path(path)
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
            f"no fitted pipeline at {path}: give a .skops file or a model folder holding {SKOPS_FILE} "
            "(a SklearnTrainer run saves model/model.skops)"
        )
    return src


def load_skops(path: str | os.PathLike[str], *, trusted: Iterable[str] = ()) -> Any:
    """Load a fitted estimator from a ``.skops`` file or a model folder, after every check.

    The folder is verified against its manifest (:func:`verified_skops_file`), then the file's
    types against the allow-list (:func:`check_trusted`); only then does skops build anything.

    Args:
        path: a ``.skops`` file, or a folder holding ``model.skops`` (and usually ``manifest.json``).
        trusted: further type names to accept, each one checked by you.

    Raises:
        UntrustedModelError: untrusted types, a file that is not ``.skops``, or a folder whose files
            no longer match its manifest.
        TrainEngineError: nothing to load at ``path``.
        MissingExtraError: skops is not installed.
    """
    file = verified_skops_file(path)
    names = check_trusted(file, trusted)
    return skops_io().load(file, trusted=names)
