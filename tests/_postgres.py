"""A throwaway PostgreSQL server for the test suite, started once per test session.

Fixtures (registered for every test by tests/conftest.py; later suites — tuning workers, the job
queue — use the same ones):

* ``postgres_server`` (session): the running :class:`PostgresServer`. Started on first use, so a
  run that needs no PostgreSQL test starts nothing.
* ``postgres_url`` (function): a SQLAlchemy URL (``postgresql+psycopg://postgres@127.0.0.1:PORT/
  te_<n>``) of a fresh, empty database for this test only, dropped afterwards (``WITH (FORCE)``:
  connections a test leaked do not block it). Tests are isolated from each other by database.
* ``postgres_raw`` (function): ``postgres_raw(url, sql, params=None) -> list[tuple]``: run one
  statement with psycopg directly (autocommit), bypassing the code under test — for counting rows
  or changing a database behind the code's back.
* ``sql_db`` (function, parametrised ``sqlite`` / ``postgresql``): a test asking for it runs once
  per back-end. ``sql_db(name="db.db")`` gives a database location to hand to the code under test —
  a SQLite file ``tmp_path / name`` or, for ``postgresql``, the URL of a fresh database (one per
  distinct ``name``, as separate files would be); ``sql_db.backend`` says which;
  ``sql_db.raw(location, sql)`` reads it independently (sqlite3 or psycopg). The ExperimentDB
  (tests/tracking) and registry (tests/registry) suites run on both through it. A test with nothing
  back-end specific to check narrows it: ``@pytest.mark.parametrize("sql_db", ["sqlite"], indirect=True)``.

How the server runs. The machine's own PostgreSQL binaries (``initdb``, ``pg_ctl``, ``postgres``:
PATH first, then Debian's ``/usr/lib/postgresql/<version>/bin``, newest first; scripts/system-deps.sh
installs them when missing). PostgreSQL refuses to run as root, so as root every command runs as the
``postgres`` system user (``runuser -u postgres --``) in a temporary folder under ``/tmp`` that user
owns; as any other user it runs as that user. ``initdb`` with trust authentication (the server
listens on 127.0.0.1 only, on a free port, with its unix socket in the temporary folder, so nothing
outside this machine can connect and it never clashes with a system server) and durability turned
off (``fsync``, ``synchronous_commit``, ``full_page_writes``: a test database needs no crash
safety, and it makes CREATE DATABASE and commits fast). ``pg_ctl start -w`` waits until it accepts
connections.

Cleanup. The session finalizer stops the server (``pg_ctl stop -m immediate``) and removes the
folder, also when tests failed. A pytest killed with SIGKILL runs no finalizer, so a small watchdog
process (started in its own session, holding a pidfd of the pytest process) does the same the
moment pytest dies; it exits quietly after a normal stop.

When the server cannot start (no binaries, no ``postgres`` user, ``psycopg`` not installed, initdb
or pg_ctl failing), every test that asks for it **errors** with a one-line reason — a missing
database is a missing test, not a skip — unless ``TRAINENGINE_SKIP_POSTGRES=1`` is set, which turns
those errors into skips (for a machine that knowingly has no PostgreSQL).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "PostgresServer",
    "PostgresUnavailable",
    "SqlLocations",
    "find_pg_bin",
    "postgres_server",
    "postgres_url",
    "postgres_raw",
    "sql_db",
]

SKIP_ENV = "TRAINENGINE_SKIP_POSTGRES"
_SYSTEM_USER = "postgres"
_START_ATTEMPTS = 3  # a free port can be taken by someone else between probing and binding


class PostgresUnavailable(RuntimeError):
    """The throwaway server cannot be started here (the message is one line: what and the fix)."""


def find_pg_bin() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (PATH, then /usr/lib/postgresql/*/bin)."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).parent] if on_path else []

    def version(folder: str) -> tuple[int, ...]:
        part = Path(folder).parent.name
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for folder in candidates:
        if all(os.access(folder / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin; "
        "run scripts/system-deps.sh as root (apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Run by the watchdog process: wait for pytest (argv[1]) to die, then stop the server and remove
# its folder. Exits at once if the folder is gone already (a normal stop).
_WATCHDOG = r"""
import os, select, shutil, subprocess, sys, time
pid, root, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
try:
    fd = os.pidfd_open(pid)
    while os.path.isdir(root) and not select.select([fd], [], [], 5.0)[0]:
        pass
except (AttributeError, OSError):  # no pidfd (old kernel): poll
    while os.path.isdir(root):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(1.0)
if os.path.isdir(root):
    subprocess.run(stop, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    shutil.rmtree(root, ignore_errors=True)
"""


class PostgresServer:
    """One throwaway PostgreSQL server on 127.0.0.1 (see the module docstring).

    Example:
        >>> server = PostgresServer.start()  # doctest: +SKIP
        >>> url = server.create_database()  # doctest: +SKIP
        >>> server.drop_database(url)
        ... server.stop()  # doctest: +SKIP
    """

    def __init__(self, bin_dir: Path, root: Path, port: int, as_user: list[str]) -> None:
        self.bin_dir = bin_dir
        self.root = root  # owned by the server's user: data/, server.log, the unix socket
        self.port = port
        self._as_user = as_user  # prefix running a command as the server's user ([] when not root)
        self._names = itertools.count()
        self._admin: Any = None  # psycopg connection to the "postgres" database, autocommit
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- lifetime -----------------------------------------------------------------------------------
    @classmethod
    def start(cls) -> PostgresServer:
        """initdb + pg_ctl start in a fresh temporary folder; raises PostgresUnavailable."""
        try:
            import psycopg  # noqa: F401  (fail here, in one line, rather than inside SQLAlchemy)
        except ImportError:
            raise PostgresUnavailable(
                "the PostgreSQL driver is not installed: pip install 'psycopg[binary]' (in the dev extra)"
            ) from None
        bin_dir = find_pg_bin()
        as_user: list[str] = []
        owner: tuple[int, int] | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            import pwd

            try:
                entry = pwd.getpwnam(_SYSTEM_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root but there is no {_SYSTEM_USER!r} system user to run PostgreSQL as; "
                    "install the postgresql package (it creates one) or run the tests as a normal user"
                ) from None
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            as_user = [runuser, "-u", _SYSTEM_USER, "--"]
            owner = (entry.pw_uid, entry.pw_gid)
        # Under /tmp, not pytest's tmp_path: pytest's base folder is private to the current user
        # (mode 0700), which the postgres user cannot enter.
        root = Path(tempfile.mkdtemp(prefix="trainengine-pg-"))
        try:
            if owner is not None:
                os.chown(root, *owner)
            last = ""
            for _ in range(_START_ATTEMPTS):
                server = cls(bin_dir, root, _free_port(), as_user)
                if not (root / "data").exists():
                    server._initdb()
                ok, last = server._pg_ctl_start()
                if ok:
                    server._start_watchdog()
                    server._connect_admin()
                    return server
            raise PostgresUnavailable(f"pg_ctl start failed {_START_ATTEMPTS} times; last server log line: {last}")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def _cmd(self, exe: str, *args: str) -> list[str]:
        return [*self._as_user, str(self.bin_dir / exe), *args]

    def _initdb(self) -> None:
        cmd = self._cmd(
            "initdb",
            "-D",
            str(self.root / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise PostgresUnavailable(f"initdb failed (exit {done.returncode}): {tail[0]}")

    def _pg_ctl_start(self) -> tuple[bool, str]:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",  # 8 processes x a pool each, plus the test process
                "-c shared_buffers=32MB",
            ]
        )
        log = self.root / "server.log"
        cmd = self._cmd(
            "pg_ctl", "-D", str(self.root / "data"), "-l", str(log), "-o", options, "-w", "-t", "60", "start"
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=self.root)
        if done.returncode == 0:
            return True, ""
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        last = (lines or (done.stderr or done.stdout or "(no output)").strip().splitlines() or ["(no output)"])[-1]
        self._pg_ctl_stop()  # a half-started server must not linger before the next attempt
        return False, last

    def _pg_ctl_stop(self) -> None:
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"),
            capture_output=True,
            timeout=60,
            cwd=self.root,
        )

    def _start_watchdog(self) -> None:
        stop = self._cmd("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.root), *stop],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl+C to pytest's process group must not kill it first
        )

    def _connect_admin(self) -> None:
        import psycopg

        self._admin = psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def stop(self) -> None:
        """Stop the server and remove its folder (idempotent)."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.root.exists():
            self._pg_ctl_stop()
            shutil.rmtree(self.root, ignore_errors=True)
        if self._watchdog is not None:
            self._watchdog.terminate()  # ours, by its pid; it would also exit on its own (root is gone)
            self._watchdog.wait(timeout=10)
            self._watchdog = None

    # -- databases ----------------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh empty database (from template0: nothing a test left in template1 leaks in); its URL."""
        name = f"te_{os.getpid()}_{next(self._names)}"
        self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 20) -> str:
        log = self.root / "server.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def raw_query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on ``url`` with psycopg directly (autocommit); the rows, if any."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


# ------------------------------------------------------------------------------------------- fixtures
_FAILED: list[str] = []  # the first start failure, so later tests do not retry a hopeless start


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: PostgreSQL tests skipped on request")
    if _FAILED:
        pytest.fail(_FAILED[0], pytrace=False)
    try:
        server = PostgresServer.start()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        _FAILED.append(f"cannot start the throwaway PostgreSQL server: {exc} (set {SKIP_ENV}=1 to skip these tests)")
    if _FAILED:  # failed outside the except block: one line, no chained traceback
        pytest.fail(_FAILED[0], pytrace=False)
    try:
        yield server
    finally:  # also after failing tests
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def postgres_raw() -> Callable[..., list[tuple[Any, ...]]]:
    return raw_query


class SqlLocations:
    """Database locations for one test on one back-end (the ``sql_db`` fixture)."""

    def __init__(self, backend: str, tmp_path: Path, server: PostgresServer | None) -> None:
        self.backend = backend
        self._tmp_path = tmp_path
        self._server = server
        self._urls: dict[str, str] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def integrity_error(self) -> type[Exception]:
        """The DB-API IntegrityError that :meth:`raw` raises on this back-end (a constraint refused a row)."""
        if self._server is None:
            import sqlite3

            return sqlite3.IntegrityError
        import psycopg

        return psycopg.IntegrityError

    def __call__(self, name: str = "db.db") -> str:
        """A SQLite file path under tmp_path, or the URL of this test's PostgreSQL database ``name``."""
        if self._server is None:
            return str(self._tmp_path / name)
        if name not in self._urls:
            self._urls[name] = self._server.create_database()
        return self._urls[name]

    def raw(self, location: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` on ``location`` bypassing the code under test.

        Placeholders: ``?`` on SQLite, ``%s`` on PostgreSQL.
        """
        if self._server is None:
            import sqlite3

            with sqlite3.connect(location) as conn:
                return conn.execute(sql, params or ()).fetchall()
        return raw_query(location, sql, params)

    def close(self) -> None:
        if self._server is not None:
            for url in self._urls.values():
                self._server.drop_database(url)
            self._urls.clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlLocations]:
    server = request.getfixturevalue("postgres_server") if request.param == "postgresql" else None
    locations = SqlLocations(request.param, tmp_path, server)
    yield locations
    locations.close()
