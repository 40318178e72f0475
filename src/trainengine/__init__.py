"""trainengine: a production training engine for PyTorch.

Validated configs with presets, a fast Trainer, built-in tasks, data and models, run
directories, and the ``trainengine`` command line.

Example:
    >>> from trainengine import TrainingConfigBuilder
    >>> TrainingConfigBuilder.quick_prototype().build().epochs
    3
"""

__version__ = "0.1.0"

from trainengine.checkpoint import CheckpointManager
from trainengine.config import TrainingConfig, TrainingConfigBuilder
from trainengine.engine import Callback, EarlyStopping, Trainer, TrainingInterrupted, TrainState
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
from trainengine.models import GPT, MLP, GPTConfig, SmallCNN
from trainengine.monitoring import AlertConfig, GradientHealth, GradientMonitor, MetricsEngine, profile_dataset
from trainengine.tasks import TaskSpec, get_loss_strategy
from trainengine.tracking import ExperimentDB, ExperimentTracker, TrainingLogger
from trainengine.registry import ModelRecord, ModelRegistry
from trainengine.export import create_export_bundle

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
