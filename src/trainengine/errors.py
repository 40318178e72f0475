"""Exception hierarchy shared by every trainengine module.

Every error a user can trigger derives from :class:`TrainEngineError`, so callers can catch
the whole family at once; the CLI turns these into one clear line and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "TrainEngineError",
    "ConfigError",
    "DataError",
    "TaskError",
    "CheckpointError",
    "RegistryError",
    "ExportError",
    "MissingExtraError",
]


class TrainEngineError(Exception):
    """Base class of every error trainengine raises on purpose."""


class ConfigError(TrainEngineError, ValueError):
    """A configuration is invalid. The message lists every problem with its dotted path."""

    def __init__(self, problems: list[str] | str, *, prefix: str = "invalid configuration") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{prefix} ({n} problem{'s' if n != 1 else ''}):\n{lines}")


class DataError(TrainEngineError, ValueError):
    """Training or validation data cannot be used as given."""


class TaskError(TrainEngineError, ValueError):
    """A task specification or the tensors handed to its loss do not fit together."""


class CheckpointError(TrainEngineError):
    """A checkpoint cannot be written, read or verified."""


class RegistryError(TrainEngineError):
    """A model registry operation failed."""


class ExportError(TrainEngineError):
    """An export bundle cannot be created or verified."""


class MissingExtraError(TrainEngineError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed; "
            f'run: pip install "trainengine[{extra}]"'
        )
