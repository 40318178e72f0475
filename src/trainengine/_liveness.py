"""Is a run still alive? The run-directory lock (this machine) and the heartbeat (anywhere).

Two mechanisms, for two questions:

* **Ownership** (:class:`RunDirLock`): a run directory is written by one live process at a time.
  The process holds an exclusive ``flock`` on ``<run_dir>/.lock`` for the whole run; the kernel
  releases it when the process exits or dies (even by SIGKILL), so a dead process never leaves
  a stale lock behind. A second ``train``/``resume`` of the same run is refused with the holder's
  PID and host (written into the lock file).
* **Liveness** (:func:`liveness`): a lock cannot be seen from another host or through a shared
  database, so a live run also writes a heartbeat (``heartbeat_time`` in ``run.json`` and in the
  ExperimentDB) every ``heartbeat_interval_s`` seconds from a background thread. A run whose
  status says "running" but whose heartbeat is older than
  ``max(STALE_INTERVALS * heartbeat_interval_s, STALE_MIN_S)`` is shown as ``stale``: its
  process most likely died without saying so (SIGKILL, power loss, OOM killer).

Stdlib only: read by the CLI's ``runs`` commands and by the ExperimentDB.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainengine.errors import TrainEngineError

try:  # POSIX only; elsewhere runs are not locked (documented in docs/observability.md)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # reason: the lock is a no-op without fcntl

__all__ = [
    "HEARTBEAT_INTERVAL_S",
    "STALE_INTERVALS",
    "STALE_MIN_S",
    "RunDirLock",
    "RunDirLockedError",
    "liveness",
    "stale_after_s",
]

HEARTBEAT_INTERVAL_S = 15.0  # seconds between two heartbeats of a live run
STALE_INTERVALS = 3  # a run is stale after this many missed heartbeats...
STALE_MIN_S = 60.0  # ...and never sooner than this (clock skew between hosts, a slow shared disk)
LOCK_FILE = ".lock"


class RunDirLockedError(TrainEngineError):
    """Another live process owns the run directory."""


class RunDirLock:
    """An exclusive OS-level lock on a run directory, held by one live process.

    Args:
        run_dir: The run directory (the lock file is ``run_dir / ".lock"``; it is never deleted,
            so that two processes always lock the same file).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp())
        >>> first = RunDirLock(d)
        >>> first.acquire()
        >>> try:
        ...     RunDirLock(d).acquire()
        ... except RunDirLockedError as exc:
        ...     "in use by process" in str(exc)
        True
        >>> first.release()
        >>> RunDirLock(d).acquire()  # free again
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise at once (never waits).

        Raises:
            RunDirLockedError: another process holds it (the message names its PID and host).
            TrainEngineError: the lock file cannot be created (a read-only run directory).
        """
        if fcntl is None or self._fd is not None:
            return
        try:
            # No O_TRUNC: the holder's PID/host must survive a failed attempt to read them.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise TrainEngineError(
                f"cannot lock run directory {self.run_dir}: {exc.strerror} — the run directory must be writable"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = (
                f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"
                if holder.get("pid")
                else "another process"
            )
            raise RunDirLockedError(
                f"run directory {self.run_dir} is in use by {who} — one process trains a run at a time; "
                "wait for it to end or stop it (a dead process releases the lock by itself)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        holder_text = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat(timespec="seconds")}
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_text + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent). Process exit or death releases it too."""
        fd, self._fd = self._fd, None
        if fd is not None and fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)  # for every copy of the descriptor (forked workers)
            finally:
                os.close(fd)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stale_after_s(heartbeat_interval_s: float | None) -> float:
    """Seconds without a heartbeat after which a running run counts as stale.

    Example:
        >>> stale_after_s(15.0), stale_after_s(120.0)
        (60.0, 360.0)
    """
    interval = heartbeat_interval_s if heartbeat_interval_s and heartbeat_interval_s > 0 else HEARTBEAT_INTERVAL_S
    return max(STALE_INTERVALS * interval, STALE_MIN_S)


def _epoch_seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    return None


def liveness(
    status: str | None,
    heartbeat_time: Any,
    heartbeat_interval_s: float | None = None,
    *,
    stale_after: float | None = None,
    now: float | None = None,
) -> str | None:
    """The status to show: ``stale`` for a "running" run whose heartbeat stopped, else ``status``.

    Args:
        status: The recorded status (``running``, ``completed``, ...).
        heartbeat_time: The last heartbeat: Unix seconds or an ISO 8601 string. A running run
            without one (written by an older trainengine) is left as it is.
        heartbeat_interval_s: The interval the run recorded; sets the default threshold
            (:func:`stale_after_s`).
        stale_after: Override the threshold, in seconds.
        now: The current time in Unix seconds (default: ``time.time()``).

    Example:
        >>> liveness("running", 1000.0, 15.0, now=1030.0), liveness("running", 1000.0, 15.0, now=1061.0)
        ('running', 'stale')
        >>> liveness("completed", 0.0, 15.0, now=1e9)
        'completed'
    """
    beat = _epoch_seconds(heartbeat_time)
    if status != "running" or beat is None:
        return status
    limit = stale_after if stale_after is not None else stale_after_s(heartbeat_interval_s)
    return "stale" if (time.time() if now is None else now) - beat > limit else status
