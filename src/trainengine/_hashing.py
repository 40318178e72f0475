"""File hashing and bundle verification: the one home of both (standard library only).

Checkpoints, export bundles, the model registry and the standalone inference runtime all hash
files with SHA-256 and compare against a manifest; they do it through this module. It imports
nothing but the standard library because export copies it verbatim into every bundle, beside
``inference.py`` (a bundle runs without trainengine installed).

The bundle contract (:func:`verify_bundle`): ``manifest.json["files"]`` maps every file of the
bundle except ``manifest.json`` itself (and ``__pycache__``) to its SHA-256 (a hex string, or
``{"sha256": hex, ...}``). A bundle is intact when every listed file exists inside the folder
with that hash and no other file is there; the bundle's content hash (:func:`content_sha256`) is
the SHA-256 of the sorted lines ``"<relpath>\\t<sha256>\\n"``.

Example:
    >>> import json, pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    ... _ = (d / "a.txt").write_text("x")
    >>> _ = (d / "manifest.json").write_text(json.dumps({"files": bundle_files(d)}))
    >>> verify_bundle(d)
    []
    >>> _ = (d / "a.txt").write_text("y")
    >>> verify_bundle(d)[0].startswith("a.txt: content changed")
    True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST",
    "hash_file",
    "file_sha256",
    "copy_and_hash",
    "content_sha256",
    "manifest_digest",
    "bundle_files",
    "verify_bundle",
]

MANIFEST = "manifest.json"
_CHUNK = 8 << 20  # 8 MiB: large enough that hashlib releases the GIL and syscalls are few


def hash_file(path: str | os.PathLike[str], *, fsync: bool = False) -> tuple[int, str]:
    """``(size_bytes, sha256_hex)`` of a file, read once; with ``fsync`` also flush it to disk.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(delete=False) as fh:
        ...     _ = fh.write(b"abc")
        >>> hash_file(fh.name)[0], hash_file(fh.name)[1][:12]
        (3, 'ba7816bf8f01')
    """
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
            size += n
        if fsync:
            os.fsync(fh.fileno())
    return size, digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes."""
    return hash_file(path)[1]


def copy_and_hash(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> str:
    """Copy ``src`` to a new file ``dest`` (fsynced) and return the SHA-256 of the bytes written.

    One read of the source serves both the copy and the hash, so the hash is of exactly what
    landed at ``dest``. ``dest`` must not exist (``FileExistsError``).
    """
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def content_sha256(hashes: Mapping[str, Any]) -> str:
    """The content hash of a set of files: SHA-256 of the sorted ``"<relpath>\\t<sha256>\\n"`` lines.

    Args:
        hashes: ``{relpath: sha256}`` (manifest entries of the form ``{"sha256": ...}`` too).

    Example:
        >>> content_sha256({"b": "2", "a": "1"}) == content_sha256({"a": "1", "b": "2"})
        True
    """
    lines = sorted(f"{rel}\t{manifest_digest(entry)}\n" for rel, entry in hashes.items())
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def manifest_digest(entry: Any) -> str | None:
    """The SHA-256 a manifest entry promises: ``"<hex>"`` or ``{"sha256": "<hex>", ...}``; else None."""
    if isinstance(entry, str):
        return entry.lower()
    if isinstance(entry, Mapping) and isinstance(entry.get("sha256"), str):
        return str(entry["sha256"]).lower()
    return None


def bundle_files(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``{relpath: sha256}`` of every file in ``folder`` except ``manifest.json`` and ``__pycache__``, sorted."""
    root = Path(folder)
    return {rel: file_sha256(root / rel) for rel in _listing(root)}


def _listing(root: Path) -> list[str]:
    """Relative paths of the files a bundle's manifest must list, sorted."""
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != MANIFEST and "__pycache__" not in path.relative_to(root).parts:
            out.append(rel)
    return out


def verify_bundle(folder: str | os.PathLike[str], manifest: Mapping[str, Any] | None = None) -> list[str]:
    """Check a bundle against its manifest; returns every problem found (empty = intact).

    Args:
        folder: The bundle's folder.
        manifest: Its parsed ``manifest.json``; default: read from ``folder``.

    Returns:
        One line per problem, each starting with the offending file: ``"<file>: missing"``,
        ``"<file>: content changed (...)"``, ``"<file>: not listed in the manifest"``,
        ``"<file>: not a path inside the bundle"``, ``"<file>: the manifest has no sha256 for
        it"``; or one line about ``manifest.json`` itself.

    Example:
        >>> verify_bundle("/nonexistent")
        ['/nonexistent has no manifest.json: not an export bundle, or an export that did not finish']
    """
    root = Path(folder)
    if manifest is None:
        try:
            manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return [f"{root} has no {MANIFEST}: not an export bundle, or an export that did not finish"]
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return [f"{root / MANIFEST} cannot be read as JSON: {exc}"]
    files = manifest.get("files") if isinstance(manifest, Mapping) else None
    if not isinstance(files, Mapping) or not files:
        return [
            f'{MANIFEST} of {root} lists no files ("files": {{name: sha256}}): '
            "the bundle is incomplete or not an export bundle"
        ]
    present = set(_listing(root))
    resolved_root = root.resolve()
    problems: list[str] = []
    for rel, entry in sorted(files.items(), key=lambda item: str(item[0])):
        expected = manifest_digest(entry)
        path = (root / str(rel)).resolve()
        if Path(str(rel)).is_absolute() or resolved_root not in path.parents or str(rel) == MANIFEST:
            problems.append(f"{rel!r}: not a path inside the bundle")
        elif expected is None:
            problems.append(f"{rel}: the manifest has no sha256 for it")
        elif rel not in present:
            problems.append(f"{rel}: missing")
        elif (actual := file_sha256(path)) != expected:
            problems.append(f"{rel}: content changed (sha256 {actual[:12]}…, the manifest says {expected[:12]}…)")
    problems += [f"{rel}: not listed in the manifest" for rel in sorted(present) if rel not in files]
    return problems
