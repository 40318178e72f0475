"""Names, semantic versions and model references (``name``, ``name:version``, ``name@alias``)."""

from __future__ import annotations

import re
from typing import Any

from trainengine._io import validate_name
from trainengine.registry._errors import RegistryValueError

__all__ = ["check_name", "check_version", "version_key", "parse_model_ref", "model_id_of"]

# Semantic Versioning 2.0.0 (semver.org), without build metadata: "1.0.0+a" and "1.0.0+b" have the
# same precedence, so "which is newer" would have no answer.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?$"
)
_MAX_VERSION = 128


def check_name(value: Any, what: str = "model name") -> str:
    """A name that is safe as a folder name and in ``name:version`` / ``name@alias`` references.

    Raises:
        RegistryValueError: not 1-128 letters, digits, ``.``, ``_`` or ``-`` starting with a letter
            or digit (so no ``/``, ``..``, ``:`` or ``@``).
    """
    try:
        return validate_name(value, what)
    except ValueError as exc:
        raise RegistryValueError(str(exc)) from None


def check_version(value: Any) -> str:
    """A semantic version ``MAJOR.MINOR.PATCH[-PRERELEASE]`` (``1.0.0``, ``2.1.0-rc.1``).

    Raises:
        RegistryValueError: anything else (``v1``, ``1.0``, ``01.0.0``, ``1.0.0+build``), with an example.

    Example:
        >>> check_version("2.1.0-rc.1")
        '2.1.0-rc.1'
    """
    if not isinstance(value, str) or len(value) > _MAX_VERSION or not _SEMVER.match(value):
        hint = ""
        if isinstance(value, str) and "+" in value:
            hint = " (build metadata after '+' is not accepted: versions that differ only there cannot be ordered)"
        elif isinstance(value, str) and value[:1] in ("v", "V") and _SEMVER.match(value[1:]):
            hint = f" (drop the 'v': {value[1:]!r})"
        raise RegistryValueError(
            f"invalid version {value!r}{hint}: use a semantic version MAJOR.MINOR.PATCH with an optional "
            "pre-release, e.g. '1.0.0', '0.9.5' or '2.1.0-rc.1'"
        )
    return value


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key giving semantic-version precedence: ``1.10.0 > 1.9.0`` and ``1.0.0 > 1.0.0-rc.1``.

    Example:
        >>> sorted(["1.10.0", "1.9.0", "1.10.0-rc.2", "1.10.0-rc.10", "1.10.0-beta"], key=version_key)
        ['1.9.0', '1.10.0-beta', '1.10.0-rc.2', '1.10.0-rc.10', '1.10.0']
    """
    core, _, pre = version.partition("-")
    major, minor, patch = (int(p) for p in core.split("."))
    if not pre:
        return (major, minor, patch, 1, ())
    # Numeric identifiers sort numerically and before alphanumeric ones; a longer pre-release
    # wins when all shared identifiers are equal (tuple comparison does exactly that).
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, ids)


def model_id_of(name: str, version: str) -> str:
    """``"<name>:<version>"``, the id :meth:`ModelRegistry.register_model` returns."""
    return f"{name}:{version}"


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """Split a model reference into ``(name, version, alias)``.

    Args:
        ref: ``"name:version"`` (one version), ``"name@alias"`` (the alias's holder) or ``"name"``
            (the newest active version).

    Raises:
        RegistryValueError: the reference is malformed or a part is invalid.

    Example:
        >>> parse_model_ref("gpt@production"), parse_model_ref("gpt:1.2.0"), parse_model_ref("gpt")
        (('gpt', None, 'production'), ('gpt', '1.2.0', None), ('gpt', None, None))
    """
    if not isinstance(ref, str) or not ref.strip():
        raise RegistryValueError(f"model reference must be 'name', 'name:version' or 'name@alias', got {ref!r}")
    if ":" in ref and "@" in ref:
        raise RegistryValueError(f"model reference {ref!r} has both ':' and '@'; use 'name:version' or 'name@alias'")
    if ":" in ref:
        name, version = ref.split(":", 1)
        return check_name(name), check_version(version), None
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return check_name(name), None, check_name(alias, "alias")
    return check_name(ref), None, None
