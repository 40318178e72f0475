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

import os
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from trainengine.errors import TrainEngineError

__all__ = [
    "Database",
    "SqlStore",
    "resolve_database",
    "open_engine",
    "install_sqlite_hooks",
    "is_lock_error",
    "run_transaction",
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
) -> Database:
    """Turn a file path or a URL into a :class:`Database`, creating a SQLite file's folder.

    Args:
        path_or_url: A file path (SQLite), ``":memory:"``, or a URL with ``://``.
        kind: What the database is, for messages (``"experiment database"``).
        example: A file name to suggest (``"runs/experiments.db"``).
        error: Raised when the database cannot be used (bad URL, a folder given, no permission).
        value_error: Raised when the argument itself is of the wrong type or empty.
    """
    if not isinstance(path_or_url, (str, os.PathLike)):
        raise value_error(f"path_or_url must be a file path or a SQLAlchemy URL, got {type(path_or_url).__name__} {path_or_url!r}")
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
        raise error(f"{kind} path {str(path)!r} is a folder; give a file path such as {str(path / Path(example).name)!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create the folder of {kind} {str(path)!r}: {exc}") from exc
    return Database(URL.create("sqlite", database=str(path.resolve())), path, False, text)


def open_engine(db: Database, *, busy_timeout_s: float, kind: str = "database", error: type[Exception] = TrainEngineError) -> Engine:
    """A SQLAlchemy engine for ``db``; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE writes.

    Raises:
        error: The URL names a dialect or driver that is not installed.
    """
    try:
        if db.is_sqlite:
            kwargs: dict[str, Any] = {"connect_args": {"timeout": busy_timeout_s, "check_same_thread": False}}
            if db.memory:
                kwargs["poolclass"] = StaticPool  # one shared connection, or each would see an empty DB
            engine = create_engine(db.url, **kwargs)
            install_sqlite_hooks(engine, busy_timeout_s, wal=not db.memory)
            return engine
        return create_engine(db.url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise error(
            f"cannot open {kind} {db.label!r}: {exc}; give a file path for SQLite, or a SQLAlchemy "
            "URL such as postgresql://user@host/db with its driver installed"
        ) from exc


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
    return any(s in text for s in ("database is locked", "database table is locked", "busy", "deadlock detected", "could not serialize"))


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


class SqlStore:
    """Lifetime shared by the SQL-backed stores: ``close()``, context manager, ``repr``.

    Subclasses set ``self._engine`` (an :class:`~sqlalchemy.engine.Engine`, ``None`` once
    closed) and ``self._label`` (where the data lives, for messages).
    """

    _engine: Engine | None
    _label: str

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
