"""Storage locations given as fsspec URLs (``s3://``, ``gs://``, ``az://``, ``memory://``, ``file://``).

The model registry's artifact store may live in an object store: :class:`RemoteStore` is the one
layer it reads and writes such a location through (`fsspec <https://filesystem-spec.readthedocs.io>`_,
which torch already depends on; ``s3://`` needs ``s3fs``, ``gs://`` ``gcsfs``, ``az://`` ``adlfs``).
Every file is hashed (SHA-256) while it is written or read, in one pass, so what was uploaded and
what comes back can be checked against the registry's hashes without a second read.

Object stores have no atomic rename and no fsync: writers never rely on either here. A plain path
is not a URL and stays with the local code that renames atomically; checkpoint folders, which are
written with renames and fsync, must be local or on a mounted file system (:func:`refuse_url`).

Example:
    >>> store = RemoteStore("memory://doc-example/artifacts")
    >>> import tempfile, pathlib
    >>> src = pathlib.Path(tempfile.mkdtemp()) / "w.bin"
    >>> _ = src.write_bytes(b"abc")
    >>> store.put_file(src, "m/1.0.0/w.bin")[:12]
    'ba7816bf8f01'
    >>> store.url("m/1.0.0/w.bin")
    'memory:///doc-example/artifacts/m/1.0.0/w.bin'
    >>> store.rm("m")
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from trainengine.errors import ConfigError

__all__ = ["is_url", "refuse_url", "RemoteStore"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CHUNK = 8 << 20  # as trainengine._hashing: few calls, and hashlib releases the GIL


def is_url(location: Any) -> bool:
    """True for ``scheme://...`` strings (an fsspec URL); False for paths, ``Path`` objects and None.

    Example:
        >>> is_url("s3://bucket/models"), is_url("models-artifacts"), is_url("C:\\\\models")
        (True, False, False)
    """
    return isinstance(location, str) and _SCHEME.match(location) is not None


def refuse_url(location: Any, what: str) -> str | None:
    """The message refusing a URL where a local folder is needed (checkpoints); None for a path.

    Example:
        >>> refuse_url("runs/ckpt", "checkpointing.checkpoint_dir") is None
        True
    """
    if not is_url(location):
        return None
    return (
        f"{what} must be a local or mounted folder, not the URL {location!r}: checkpoints are written to a temporary "
        "folder, flushed with fsync and renamed into place, and object stores have neither atomic renames nor "
        "fsync; write checkpoints locally (or on a mounted file system) and keep models in an object store "
        "through the model registry (registry.artifact_root: s3://bucket/models)"
    )


class RemoteStore:
    """A folder in an fsspec file system: files put, read, hashed and removed by relative path.

    Args:
        url: The folder's URL, e.g. ``s3://bucket/models``, ``memory://team/models`` or
            ``file:///mnt/share/models``. Credentials come from the file system's own
            configuration (environment variables, instance roles), never from the URL's settings here.

    Raises:
        ConfigError: not a URL, an unknown protocol, or the protocol's package is not installed
            (``s3://`` needs ``pip install s3fs``).
    """

    def __init__(self, url: str) -> None:
        if not is_url(url):
            raise ConfigError(f"expected a URL such as s3://bucket/models, got {url!r}", prefix="invalid storage URL")
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec comes with torch
            raise ConfigError(
                f"storage at {url!r} needs fsspec: pip install fsspec", prefix="invalid storage URL"
            ) from exc
        try:
            fs, root = fsspec.core.url_to_fs(url)
        except ImportError as exc:
            # fsspec says which package a protocol needs ("Install s3fs to access S3").
            raise ConfigError(f"cannot open {url!r}: {exc}", prefix="invalid storage URL") from exc
        except ValueError as exc:
            known = ", ".join(sorted(fsspec.available_protocols())[:20])
            raise ConfigError(
                f"cannot open {url!r}: {exc} (fsspec protocols: {known}, ...)", prefix="invalid storage URL"
            ) from exc
        self.fs: Any = fs
        self.root = str(root).rstrip("/")
        self.location = url.rstrip("/")

    def __repr__(self) -> str:
        return f"RemoteStore({self.location!r})"

    def path(self, rel: str) -> str:
        """The file system path of ``rel`` under the root (``/``-separated, no ``..``)."""
        parts = [p for p in str(rel).replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"relative path {rel!r} leaves the store")
        return "/".join([self.root, *parts]) if parts else self.root

    def url(self, rel: str = "") -> str:
        """The full URL of ``rel`` (what a person can pass to fsspec or the cloud's CLI)."""
        return str(self.fs.unstrip_protocol(self.path(rel)))

    def put_file(self, local: str | os.PathLike[str], rel: str) -> str:
        """Upload one local file to ``rel``; returns the SHA-256 of the bytes sent (read once)."""
        digest = hashlib.sha256()
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        with open(local, "rb") as src, self.fs.open(target, "wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        return digest.hexdigest()

    def get_file(self, rel: str, local: str | os.PathLike[str]) -> str:
        """Download ``rel`` to a local file; returns the SHA-256 of the bytes received (read once)."""
        digest = hashlib.sha256()
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open(self.path(rel), "rb") as src, open(local, "wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        return digest.hexdigest()

    def sha256(self, rel: str) -> str:
        """The SHA-256 of a stored file, streamed."""
        digest = hashlib.sha256()
        with self.fs.open(self.path(rel), "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` (a file or a folder prefix) exists."""
        return bool(self.fs.exists(self.path(rel)))

    def rm(self, rel: str) -> None:
        """Remove a file or everything under a folder prefix (nothing happens when it is absent)."""
        target = self.path(rel)
        try:
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
        except FileNotFoundError:
            pass
