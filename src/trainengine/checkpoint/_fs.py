"""File-system primitives for crash-safe checkpoint writes: fsync, hashing, removal.

File hashes come from :mod:`trainengine._hashing`, the package's one home for them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# One home for file hashing (re-exported: checkpoint code imports it from here).
from trainengine._hashing import hash_file

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; cleanup then trusts that one process writes
    fcntl = None  # type: ignore[assignment]  # the module is absent there; callers check for None

__all__ = ["fsync_dir", "fsync_and_hash", "hash_file", "write_bytes_durably", "remove_tree", "writer_lock"]

LOCK_FILE = ".writer.lock"


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where the OS cannot fsync folders)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_and_hash(path: Path) -> tuple[int, str]:
    """Flush ``path`` to disk and return ``(size_bytes, sha256_hex)`` of what is there."""
    return hash_file(path, fsync=True)


def write_bytes_durably(path: Path, data: bytes) -> tuple[int, str]:
    """Create ``path`` (it must not exist), write ``data``, fsync; return ``(size, sha256)``."""
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return len(data), hashlib.sha256(data).hexdigest()


def remove_tree(path: Path) -> None:
    """Remove a folder (or a stray file), ignoring what is already gone (best effort: cleanup paths)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def writer_lock(directory: Path, *, blocking: bool) -> Iterator[bool]:
    """Advisory lock a checkpoint writer holds while it writes into ``directory``.

    A manager opened on the same folder (a CLI listing, a second process) only removes
    ``.tmp-*`` leftovers when it can take the lock, so it never deletes a write in progress.

    Yields:
        Whether the lock is held (``blocking=False`` yields False when another writer has it).
        Where no lock file can be made (read-only folder, no ``fcntl``), yields True for a writer
        (its write then reports the real error) and False for cleanup.
    """
    if fcntl is None:
        yield blocking
        return
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield blocking
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock
