"""The Arrow cache under file-backed data: each source is parsed once into an uncompressed Arrow
IPC file keyed by the files' content hashes and the read options, then memory-mapped.

Why a cache file rather than reading the CSV each run: parsing is the slow part (a 2 GB CSV takes
tens of seconds), while a memory-mapped Arrow file opens in milliseconds, is shared by every
DataLoader worker through the page cache, and is never held in memory as a whole, so files bigger
than RAM train with bounded memory. Index-based samplers sit on top; the sampler position is the
resume state, so exact resume is the same as for in-memory data.

Layout (``<root>/<key>/``): ``table.arrow`` (the Arrow IPC *file* format, random access) and
``meta.json`` (written last: row count, byte size, what the builder reports: dropped rows, bad
rows, ...). A key folder without a ``meta.json`` whose size and row count match is not a cache
entry: it is rebuilt. Builders run under an exclusive lock per key, so two processes starting on
the same files parse them once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainengine._hashing import hash_file
from trainengine._io import atomic_write_json
from trainengine.errors import DataError

__all__ = ["ArrowSink", "CachedTable", "cache_root", "source_hashes", "cache_key", "build_or_load"]

logger = logging.getLogger(__name__)

_TABLE = "table.arrow"
_META = "meta.json"
_FORMAT_VERSION = 1  # bump when the layout of table.arrow / meta.json changes: old entries are rebuilt
_ENV = "TRAINENGINE_DATA_CACHE"

# In-process memo of file hashes by stat data (path, inode, size, mtime, ctime), as git's index
# trusts it: a run that reads the same 2 GB file for training and again for the export's drift
# reference hashes it once.
_HASH_MEMO: dict[tuple[str, int, int, int, int], str] = {}


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$TRAINENGINE_DATA_CACHE``, else ``~/.cache/trainengine/data``.

    Example:
        >>> str(cache_root("/tmp/x"))
        '/tmp/x'
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trainengine" / "data"


def source_hashes(files: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """``[{"path", "size", "sha256"}]`` of each file, in order (memoised in-process by the file's stat data).

    Raises:
        DataError: a file does not exist or cannot be read.
    """
    out = []
    for f in files:
        path = Path(f)
        try:
            st = path.stat()
            memo = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            digest = _HASH_MEMO.get(memo)
            if digest is None:
                digest = hash_file(path)[1]
                _HASH_MEMO[memo] = digest
        except OSError as exc:
            raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from None
        out.append({"path": str(path), "size": st.st_size, "sha256": digest})
    return out


def cache_key(kind: str, sources: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> str:
    """A hex key from the reader's name, the files' content hashes (in order) and the read options.

    The file *contents* count, not their names: renaming a file keeps its cache entry, editing
    one byte makes a new one.

    Example:
        >>> a = cache_key("csv", [{"sha256": "ab"}], {"delimiter": ","})
        >>> a == cache_key("csv", [{"sha256": "ab", "path": "/elsewhere"}], {"delimiter": ","})
        True
        >>> a == cache_key("csv", [{"sha256": "ab"}], {"delimiter": ";"})
        False
    """
    payload = {
        "v": _FORMAT_VERSION,
        "kind": kind,
        "files": [s["sha256"] for s in sources],
        "options": dict(options),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


class ArrowSink:
    """Where a builder writes its record batches (one schema for all; the first batch sets it)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer: Any = None
        self.schema: Any = None
        self.closed = False
        self.num_rows = 0

    def write(self, batch: Any) -> None:
        """Append a ``pyarrow.RecordBatch`` or ``Table`` (an empty one only fixes the schema)."""
        import pyarrow as pa

        if isinstance(batch, pa.Table):
            for b in batch.to_batches():
                self.write(b)
            if self._writer is None:
                self._open(batch.schema)
            return
        if self._writer is None:
            self._open(batch.schema)
        elif batch.schema != self.schema:
            batch = batch.cast(self.schema)  # raises when the columns differ
        if batch.num_rows:
            self._writer.write_batch(batch)
            self.num_rows += batch.num_rows

    def _open(self, schema: Any) -> None:
        import pyarrow as pa

        self.schema = schema
        self._writer = pa.ipc.new_file(str(self._path), schema)

    def close(self, schema_if_empty: Any = None) -> None:
        """Finish the file; ``schema_if_empty`` gives a source without rows its columns."""
        if self.closed:
            return
        self.closed = True
        if self._writer is None:
            if schema_if_empty is None:
                raise DataError("the data source produced no rows and no columns")
            self._open(schema_if_empty)
        self._writer.close()


@dataclass
class CachedTable:
    """A memory-mapped cache entry: the Arrow table and the builder's facts about it."""

    table: Any
    """``pyarrow.Table`` whose buffers point into the memory-mapped file (not copied to RAM)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """What the builder reported (``rows``, ``dropped_rows``, ``bad_rows``, ...) plus ``key``."""
    path: Path | None = None
    """The ``table.arrow`` file."""


def _open_entry(folder: Path) -> CachedTable | None:
    """The entry in ``folder`` when it is complete and intact, else None."""
    import pyarrow as pa

    meta_path, table_path = folder / _META, folder / _TABLE
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != _FORMAT_VERSION or table_path.stat().st_size != meta.get("table_bytes"):
            return None
        table = pa.ipc.open_file(pa.memory_map(str(table_path), "r")).read_all()
    except (OSError, ValueError, pa.ArrowException):
        return None
    if table.num_rows != meta.get("rows"):
        return None
    return CachedTable(table=table, meta=meta, path=table_path)


def build_or_load(
    root: Path,
    key: str,
    build: Callable[[ArrowSink], Mapping[str, Any] | None],
    *,
    describe: str = "data",
) -> CachedTable:
    """The cache entry ``key`` under ``root``, built by ``build(sink)`` when missing or damaged.

    ``build`` writes record batches to the sink (calling ``sink.close(schema)`` itself only to
    give an empty result a schema) and returns facts to keep in ``meta.json``. The table is written
    to a temporary folder, fsynced and renamed into place, so a build that is killed halfway
    leaves no entry that looks complete.

    Raises:
        DataError: the cache folder cannot be written (name ``data.cache_dir`` elsewhere).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the data cache folder {root}: {exc.strerror or exc}; set data.cache_dir "
            f"(or ${_ENV}) to a writable folder"
        ) from None
    folder = root / key
    entry = _open_entry(folder)
    if entry is not None:
        return entry
    with open(root / f".{key}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another process may be building this key
        entry = _open_entry(folder)
        if entry is not None:
            return entry
        if folder.exists():
            logger.warning("data cache entry %s is incomplete or damaged; rebuilding it", folder)
            shutil.rmtree(folder, ignore_errors=True)
        for stale in root.glob(f".{key}.*"):
            if stale.is_dir():  # a builder of this key that was killed: we hold its lock now
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            sink = ArrowSink(tmp / _TABLE)
            facts = dict(build(sink) or {})
            sink.close(facts.pop("schema", None))
            with open(tmp / _TABLE, "rb") as fh:
                os.fsync(fh.fileno())
            meta = {
                **facts,
                "format_version": _FORMAT_VERSION,
                "key": key,
                "describe": describe,
                "rows": sink.num_rows,
                "table_bytes": (tmp / _TABLE).stat().st_size,
            }
            atomic_write_json(tmp / _META, meta)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    entry = _open_entry(folder)
    if entry is None:  # pragma: no cover - only when the disk lies about what was just written
        raise DataError(f"the data cache entry {folder} could not be read back after writing it")
    return entry
