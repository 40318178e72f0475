"""The handle of an asynchronous checkpoint save."""

from __future__ import annotations

import threading
from pathlib import Path

from trainengine.errors import CheckpointError

__all__ = ["AsyncSave"]


class AsyncSave:
    """Handle of an asynchronous save.

    Attributes:
        step: The step being saved.
        path: Where the checkpoint will be once written.
        stall_seconds: Time the calling (training) thread spent copying the state to CPU memory.
        blocked_seconds: Time it waited first for the previous save to finish.
    """

    def __init__(self, step: int, path: Path) -> None:
        self.step = step
        self.path = path
        self.stall_seconds = 0.0
        self.blocked_seconds = 0.0
        self.write_seconds: float | None = None
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._observed = False

    def done(self) -> bool:
        """Whether the background write has finished (successfully or not)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Path:
        """Block until the checkpoint is on disk and return its path.

        Raises:
            CheckpointError: The background write failed (disk full, ...), or ``timeout``
                passed first.
        """
        if not self._done.wait(timeout):
            raise CheckpointError(f"asynchronous save of step {self.step} still running after {timeout} s")
        self._observed = True
        if self._error is not None:
            raise self._error
        return self.path

    def exception(self) -> BaseException | None:
        """The write's error once done (None while running or on success)."""
        return self._error if self._done.is_set() else None
