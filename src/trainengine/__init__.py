"""trainengine: a production training engine for PyTorch.

Validated configs with presets, a fast Trainer, built-in tasks, data and models, run
directories, and the ``trainengine`` command line.

The public names below are resolved on first use (PEP 562): ``import trainengine`` imports
neither torch nor any other heavy dependency, so the command line answers ``--help``,
``config show`` or ``runs list`` without paying for them. ``from trainengine import Trainer``
imports what ``Trainer`` needs, once.

Example:
    >>> from trainengine import TrainingConfigBuilder
    >>> TrainingConfigBuilder.quick_prototype().build().epochs
    3
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines (or re-exports) it. One line per name, so adding a
# public name is one edit here plus one in ``__all__`` (a test checks that the two agree).
_LAZY: dict[str, str] = {
    # config
    "TrainingConfig": "trainengine.config",
    "TrainingConfigBuilder": "trainengine.config",
    # engine (the user-facing Trainer is the engine's Trainer with the default callbacks attached)
    "Trainer": "trainengine.assembly",
    "TrainState": "trainengine.engine",
    "TrainingInterrupted": "trainengine.engine",
    "Callback": "trainengine.engine",
    "EarlyStopping": "trainengine.engine",
    "CheckpointManager": "trainengine.checkpoint",
    # tasks
    "TaskSpec": "trainengine.tasks",
    "get_loss_strategy": "trainengine.tasks",
    # monitoring
    "GradientMonitor": "trainengine.monitoring",
    "GradientHealth": "trainengine.monitoring",
    "MetricsEngine": "trainengine.monitoring",
    "MetricsTracker": "trainengine.monitoring",
    "AlertConfig": "trainengine.monitoring",
    "profile_dataset": "trainengine.monitoring",
    # tracking, registry, export
    "ExperimentDB": "trainengine.tracking",
    "ExperimentTracker": "trainengine.tracking",
    "TrainingLogger": "trainengine.tracking",
    "ModelRegistry": "trainengine.registry",
    "ModelRecord": "trainengine.registry",
    "create_export_bundle": "trainengine.export",
    # models
    "GPT": "trainengine.models",
    "GPTConfig": "trainengine.models",
    "MLP": "trainengine.models",
    "SmallCNN": "trainengine.models",
    # errors (stdlib only, but kept lazy too so there is one mechanism)
    "TrainEngineError": "trainengine.errors",
    "ConfigError": "trainengine.errors",
    "DataError": "trainengine.errors",
    "TaskError": "trainengine.errors",
    "CheckpointError": "trainengine.errors",
    "RegistryError": "trainengine.errors",
    "ExportError": "trainengine.errors",
    "MissingExtraError": "trainengine.errors",
}

__all__ = [
    "__version__",
    "TrainingConfig",
    "TrainingConfigBuilder",
    "Trainer",
    "TrainState",
    "TrainingInterrupted",
    "CheckpointManager",
    "Callback",
    "EarlyStopping",
    "TaskSpec",
    "get_loss_strategy",
    "GradientMonitor",
    "GradientHealth",
    "MetricsEngine",
    "MetricsTracker",
    "AlertConfig",
    "profile_dataset",
    "ExperimentDB",
    "ExperimentTracker",
    "TrainingLogger",
    "ModelRegistry",
    "ModelRecord",
    "create_export_bundle",
    "GPT",
    "GPTConfig",
    "MLP",
    "SmallCNN",
    "TrainEngineError",
    "ConfigError",
    "DataError",
    "TaskError",
    "CheckpointError",
    "RegistryError",
    "ExportError",
    "MissingExtraError",
]


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first access and cache the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trainengine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static type checkers and IDEs see the eager imports
    from trainengine.assembly import Trainer
    from trainengine.checkpoint import CheckpointManager
    from trainengine.config import TrainingConfig, TrainingConfigBuilder
    from trainengine.engine import Callback, EarlyStopping, TrainingInterrupted, TrainState
    from trainengine.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        ExportError,
        MissingExtraError,
        RegistryError,
        TaskError,
        TrainEngineError,
    )
    from trainengine.export import create_export_bundle
    from trainengine.models import GPT, MLP, GPTConfig, SmallCNN
    from trainengine.monitoring import (
        AlertConfig,
        GradientHealth,
        GradientMonitor,
        MetricsEngine,
        MetricsTracker,
        profile_dataset,
    )
    from trainengine.registry import ModelRecord, ModelRegistry
    from trainengine.tasks import TaskSpec, get_loss_strategy
    from trainengine.tracking import ExperimentDB, ExperimentTracker, TrainingLogger
