"""SQL plumbing shared by :class:`~trainengine.tracking.ExperimentDB` and the model registry.

Both keep their records in SQLite by default (a file path) or in any SQLAlchemy URL
(``postgresql://user@host/db``), and both let several processes write to one SQLite file at once
without losing anything. How:

* **WAL mode**: readers never block the writer, and the writer never blocks readers.
* **BEGIN IMMEDIATE**: every write transaction takes the write lock up front. A deferred
  transaction that upgrades from read to write can fail with "database is locked" at once, without
  waiting for the busy timeout; an immediate one waits its turn.
* **Busy timeout** then **retries**: a write still finding the database locked after the busy
  timeout is retried with exponential backoff and jitter.
* **Fork safety**: a forked child drops (without closing) the pooled connections inherited from
  its parent and opens its own; writing through an inherited SQLite connection can corrupt the file.

Example:
    >>> from sqlalchemy import text
    >>> db = resolve_database(":memory:", kind="example database", example="example.db")
    >>> engine = open_engine(db, busy_timeout_s=5.0)
    >>> run_transaction(engine, lambda conn: conn.execute(text("SELECT 1")).scalar_one(), read_only=True)
    1
"""

from __future__ import annotations

import abc
import os
import random
import sqlite3
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import MetaData, Table, create_engine, event, inspect, select, update
from sqlalchemy.engine import URL, Connection, CursorResult, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from trainengine.errors import TrainEngineError

__all__ = [
    "Database",
    "SqlStore",
    "CREATE_SCHEMA",
    "init_versioned_schema",
    "check_versioned_schema",
    "resolve_database",
    "open_engine",
    "install_sqlite_hooks",
    "is_lock_error",
    "run_transaction",
    "inserted_id",
    "dispose_after_fork",
    "forget_after_fork",
]

T = TypeVar("T")

# Set on a connection to open a plain (deferred) transaction instead of BEGIN IMMEDIATE.
READ_ONLY_OPTION = "te_read_only"


@dataclass(frozen=True)
class Database:
    """Where a database lives.

    Attributes:
        url: The SQLAlchemy URL (SQLite files as absolute paths).
        sqlite_file: The SQLite file, or None for an in-memory or server database.
        memory: A private in-memory SQLite database.
        label: The name to show in messages (the path as given; a URL without its password).
    """

    url: URL
    sqlite_file: Path | None
    memory: bool
    label: str

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"


def resolve_database(
    path_or_url: str | os.PathLike[str],
    *,
    kind: str,
    example: str,
    error: type[Exception] = TrainEngineError,
    value_error: type[Exception] = TrainEngineError,
    create: bool = True,
) -> Database:
    """Turn a file path or a URL into a :class:`Database`, creating a SQLite file's folder.

    Args:
        path_or_url: A file path (SQLite), ``":memory:"``, or a URL with ``://``.
        kind: What the database is, for messages (``"experiment database"``).
        example: A file name to suggest (``"runs/experiments.db"``).
        error: Raised when the database cannot be used (bad URL, a folder given, no permission),
            and with ``create=False`` when a SQLite file does not exist.
        value_error: Raised when the argument itself is of the wrong type or empty.
        create: Create the folder of a SQLite file; False (reading) creates nothing.
    """
    if not isinstance(path_or_url, (str, os.PathLike)):
        raise value_error(
            f"path_or_url must be a file path or a SQLAlchemy URL, got {type(path_or_url).__name__} {path_or_url!r}"
        )
    text = os.fspath(path_or_url)
    if text in (":memory:", "sqlite://", "sqlite:///:memory:"):
        return Database(make_url("sqlite://"), None, True, text)
    if "://" in text:
        try:
            url = make_url(text)
        except ArgumentError as exc:
            raise error(f"cannot parse database URL {text!r}: {exc}") from exc
        if url.get_backend_name() != "sqlite" or not url.database:
            return Database(url, None, False, url.render_as_string(hide_password=True))
        path = Path(url.database)
    else:
        if not text.strip():
            raise value_error(f"path_or_url is empty; give a file path such as {example!r}")
        path = Path(text).expanduser()
    if path.is_dir():
        raise error(
            f"{kind} path {str(path)!r} is a folder; give a file path such as {str(path / Path(example).name)!r}"
        )
    if not create:
        if not path.is_file():
            raise error(f"{kind} {text!r} does not exist (nothing has been written there yet); check the path")
        return Database(URL.create("sqlite", database=str(path.resolve())), path, False, text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create the folder of {kind} {str(path)!r}: {exc}") from exc
    return Database(URL.create("sqlite", database=str(path.resolve())), path, False, text)


def open_engine(
    db: Database,
    *,
    busy_timeout_s: float,
    kind: str = "database",
    error: type[Exception] = TrainEngineError,
    read_only: bool = False,
) -> Engine:
    """A SQLAlchemy engine for ``db``; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE writes.

    Args:
        db: From :func:`resolve_database`.
        busy_timeout_s: How long a SQLite statement waits for another process's lock.
        kind: What the database is, for messages.
        error: The error to raise.
        read_only: Open an existing SQLite file without creating it and with ``PRAGMA
            query_only``: SQLite itself refuses every write; the journal mode is left as it is.

    Raises:
        error: The URL names a dialect or driver that is not installed.
    """
    try:
        if db.is_sqlite:
            kwargs: dict[str, Any] = {"connect_args": {"timeout": busy_timeout_s, "check_same_thread": False}}
            if db.memory:
                kwargs["poolclass"] = StaticPool  # one shared connection, or each would see an empty DB
            elif read_only and db.sqlite_file is not None:
                kwargs["creator"] = _read_only_sqlite(db.sqlite_file, busy_timeout_s)
            engine = create_engine(db.url, **kwargs)
            install_sqlite_hooks(engine, busy_timeout_s, wal=not db.memory and not read_only)
            return engine
        return create_engine(db.url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise error(
            f"cannot open {kind} {db.label!r}: {exc}; give a file path for SQLite, or a SQLAlchemy "
            "URL such as postgresql://user@host/db with its driver installed"
        ) from exc


def _read_only_sqlite(file: Path, busy_timeout_s: float) -> Callable[[], sqlite3.Connection]:
    """Connections to an existing SQLite file that create nothing and write nothing.

    ``mode=rw`` never creates a missing file, and ``query_only`` refuses writes; unlike
    ``mode=ro`` it lets the last reader remove the ``-wal`` / ``-shm`` files a WAL database
    grows while open, so reading leaves the folder as it was. ``mode=ro`` is the fallback for
    a file or folder the user may not write to.
    """
    path = urllib.parse.quote(str(file.resolve()))

    def connect() -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=busy_timeout_s, check_same_thread=False)
        except sqlite3.OperationalError:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_timeout_s, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        return conn

    return connect


def install_sqlite_hooks(engine: Engine, busy_timeout_s: float, wal: bool) -> None:
    """Busy timeout, WAL and foreign keys on every new connection; BEGIN IMMEDIATE for writes."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so that we can say BEGIN IMMEDIATE:
        # a deferred transaction that upgrades from read to write can fail with "locked" at once,
        # without waiting for the busy timeout.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if wal:
                cur.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
                cur.execute("PRAGMA synchronous = NORMAL")  # safe in WAL: an app crash loses nothing
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY_OPTION) else "BEGIN IMMEDIATE")


def is_lock_error(exc: BaseException) -> bool:
    """Whether a database error means "another writer holds the lock; try again later"."""
    text = str(getattr(exc, "orig", exc)).lower()
    return any(
        s in text
        for s in ("database is locked", "database table is locked", "busy", "deadlock detected", "could not serialize")
    )


def run_transaction(
    engine: Engine,
    fn: Callable[[Connection], T],
    *,
    read_only: bool,
    max_retries: int = 10,
    retry_if: Callable[[DBAPIError], bool] | None = None,
    on_error: Callable[[DBAPIError, bool], Exception] | None = None,
) -> T:
    """Run ``fn(conn)`` in one transaction, retrying while the database is locked.

    Args:
        engine: From :func:`open_engine`.
        fn: Does the work; it runs again on a retry, so it must not depend on an earlier
            attempt having done anything.
        read_only: Open a plain transaction (SQLite: no write lock taken up front).
        max_retries: Retries after the first attempt (backoff from 20 ms to 1 s with jitter).
        retry_if: Also retry these errors (beyond lock errors).
        on_error: ``(error, still_locked) -> exception`` to raise instead of the database's own
            error once an error is not retried or retries are exhausted.
    """
    delay = 0.02
    for attempt in range(max_retries + 1):
        try:
            with engine.connect() as conn:
                if read_only:
                    conn.execution_options(**{READ_ONLY_OPTION: True})
                with conn.begin():
                    return fn(conn)
        except DBAPIError as exc:
            retry = is_lock_error(exc) or (retry_if is not None and retry_if(exc))
            if not retry or attempt == max_retries:
                if on_error is None:
                    raise
                raise on_error(exc, retry) from exc
            time.sleep(delay * (0.5 + random.random()))  # jitter so waiting writers do not collide again
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")  # pragma: no cover


def inserted_id(result: CursorResult[Any]) -> Any:
    """The primary key of the row an ``INSERT`` just added (single-row inserts only)."""
    key = result.inserted_primary_key
    if key is None:  # only for executemany / inserts without a primary key: a bug, not user input
        raise TrainEngineError("the database returned no primary key for a single-row insert")
    return key[0]


# Engines must not be shared across fork: a child that inherits an open SQLite connection and
# writes through it can corrupt the file. After a fork the child drops (without closing) the
# parent's pooled connections and opens its own on first use.
_OWNERS: weakref.WeakSet[Any] = weakref.WeakSet()


def dispose_after_fork(owner: Any) -> None:
    """Have a forked child drop ``owner._engine``'s inherited connections (call once per owner)."""
    _OWNERS.add(owner)


def forget_after_fork(owner: Any) -> None:
    _OWNERS.discard(owner)


def _after_fork_in_child() -> None:
    for owner in list(_OWNERS):
        engine = getattr(owner, "_engine", None)
        if engine is not None:
            engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


CREATE_SCHEMA = "create the schema of"  # the ``what`` of the schema transaction (retried on a race)


def init_versioned_schema(
    conn: Connection,
    metadata: MetaData,
    version_table: Table,
    schema_version: int,
    *,
    kind: str,
    error: type[Exception] = TrainEngineError,
    migrations: Mapping[int, Callable[[Connection], None]] | None = None,
) -> None:
    """Create missing tables, record the schema version, and migrate an older database forward.

    Args:
        conn: A write transaction (:meth:`SqlStore._write`).
        metadata: The store's tables (created with ``checkfirst``: only missing ones).
        version_table: A table with an integer ``version`` column.
        schema_version: The version this code writes.
        kind: What the database is, for messages (``"model registry"``).
        error: Raised for a database newer than this code.
        migrations: ``{version: fn(conn)}`` upgrading from ``version - 1``; every version between
            the database's and ``schema_version`` must have one.
    """
    metadata.create_all(conn)  # checkfirst: only missing tables
    versions = conn.execute(select(version_table.c.version)).scalars().all()
    if not versions:
        conn.execute(version_table.insert().values(version=schema_version))
        return
    current = max(versions)
    if current > schema_version:
        raise error(
            f"the {kind} has schema version {current}, newer than this trainengine supports "
            f"({schema_version}); upgrade trainengine"
        )
    if current < schema_version:
        for target in range(current + 1, schema_version + 1):
            (migrations or {})[target](conn)
        conn.execute(update(version_table).values(version=schema_version))


def check_versioned_schema(
    conn: Connection,
    metadata: MetaData,
    version_table: Table,
    schema_version: int,
    *,
    kind: str,
    label: str,
    error: type[Exception] = TrainEngineError,
) -> None:
    """The read-only counterpart of :func:`init_versioned_schema`: check, create nothing.

    Raises:
        error: A table is missing (nothing has been written to the database yet, or it is another
            kind of database), or the schema version is not the one this code reads.
    """
    existing = set(inspect(conn).get_table_names())
    missing = sorted(t.name for t in metadata.sorted_tables if t.name not in existing)
    if missing:
        what = "none of the tables" if len(missing) == len(metadata.tables) else f"no table {', '.join(missing)}"
        raise error(
            f"{kind} {label!r} has {what} of a {kind}: nothing has been written to it yet, or it is another "
            "kind of database; check the path or URL"
        )
    versions = conn.execute(select(version_table.c.version)).scalars().all()
    current = max(versions) if versions else None
    if current != schema_version:
        hint = "upgrade trainengine" if current is not None and current > schema_version else "open it for writing once"
        raise error(
            f"{kind} {label!r} has schema version {current}, this trainengine reads {schema_version}; {hint} "
            "(reading never migrates a database)"
        )


class SqlStore(abc.ABC):
    """The SQL plumbing shared by :class:`~trainengine.tracking.ExperimentDB` and the model registry.

    A subclass sets :attr:`_kind` and :attr:`_error`, implements :meth:`_init_schema`, and calls
    :meth:`_connect` from its ``__init__``; it then reads and writes with :meth:`_read` /
    :meth:`_write` (one transaction each, retried while another process holds the lock) and gets
    ``close()``, the context manager and ``repr`` from here.

    Attributes:
        url: The SQLAlchemy URL of the database.
    """

    _kind: str = "database"  # what the store is, in messages ("experiment database")
    _error: type[Exception] = TrainEngineError  # the store's error type
    _engine: Engine | None = None
    _label: str = ""
    _max_retries: int = 10
    _read_only: bool = False
    url: URL

    def _connect(self, database: Database, *, busy_timeout_s: float, max_retries: int, read_only: bool = False) -> None:
        """Open the engine for ``database`` and create or check its schema (closed again on failure).

        With ``read_only`` nothing is created: the schema is only checked (:meth:`_check_schema`)
        and :meth:`_write` refuses.
        """
        self.url = database.url
        self._label = database.label
        self._max_retries = max(0, int(max_retries))
        self._read_only = read_only
        self._engine = open_engine(
            database, busy_timeout_s=busy_timeout_s, kind=self._kind, error=self._error, read_only=read_only
        )
        try:
            if read_only:
                self._read(self._check_schema)
            else:
                self._write(self._init_schema, what=CREATE_SCHEMA)
        except BaseException:
            self.close()
            raise
        dispose_after_fork(self)

    @abc.abstractmethod
    def _init_schema(self, conn: Connection) -> None:
        """Create the tables and check the schema version (see :func:`init_versioned_schema`)."""

    def _check_schema(self, conn: Connection) -> None:
        """Check, without creating anything, that the schema is there and readable (read-only opens).

        Default: nothing is checked; a subclass calls :func:`check_versioned_schema`.
        """

    def _retry_if(self, exc: DBAPIError, what: str) -> bool:
        """Errors other than a lock worth retrying; default: processes creating one fresh schema together."""
        return what == CREATE_SCHEMA and "already exists" in str(exc).lower()

    def _failure(self, exc: DBAPIError, still_locked: bool, what: str, conflict: str | None) -> Exception:
        """The store's error for a database error that was not retried (or ran out of retries)."""
        if conflict is not None and isinstance(exc, IntegrityError):
            return self._error(conflict)
        hint = " (still locked after retries: is another process holding a long transaction?)" if still_locked else ""
        return self._error(f"cannot {what} {self._kind} {self._label!r}{hint}: {exc.orig}")

    def _run(self, fn: Callable[[Connection], T], *, read_only: bool, what: str, conflict: str | None = None) -> T:
        """Run ``fn(conn)`` in one transaction with the store's retries and errors.

        Args:
            fn: Does the work; it may run again on a retry.
            read_only: A plain transaction (SQLite: no write lock up front).
            what: The verb phrase of error messages (``"write to"``).
            conflict: The message to raise when a unique constraint fails (two writers raced
                for one row); default: the generic error.
        """
        if self._engine is None:
            raise self._error(f"{type(self).__name__}({self._label!r}) is closed; open a new one")
        return run_transaction(
            self._engine,
            fn,
            read_only=read_only,
            max_retries=self._max_retries,
            retry_if=lambda exc: self._retry_if(exc, what),
            on_error=lambda exc, still_locked: self._failure(exc, still_locked, what, conflict),
        )

    def _write(self, fn: Callable[[Connection], T], what: str = "write to", conflict: str | None = None) -> T:
        if self._read_only:
            raise self._error(
                f"cannot {what} {self._kind} {self._label!r}: it was opened read-only; open it without read_only=True"
            )
        return self._run(fn, read_only=False, what=what, conflict=conflict)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, read_only=True, what="read from")

    def close(self) -> None:
        """Close all connections (idempotent); later calls raise the store's error."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()
        forget_after_fork(self)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._label!r}{'' if self._engine is not None else ', closed'})"
