"""Seed 002's names ("engineering practice"), as its examples use them.

Change only the import and the seed's examples run::

    # from tiny_transformer.utils import CheckpointManager, TrainingLogger, ExperimentTracker
    from trainengine.compat.seed002 import CheckpointManager, TrainingLogger, ExperimentTracker

=========================================================  ==================================================
seed 002                                                   here (over the engine's class)
=========================================================  ==================================================
``CheckpointManager(checkpoint_dir, keep_best_n,            :class:`CheckpointManager` over
metric_mode)``, ``save(...)``, ``load_best()``,             :class:`trainengine.checkpoint.CheckpointManager`
``get_best_checkpoint_path()``                              (safetensors + JSON folders, never pickle)
``load_checkpoint(path, model, optimizer, scheduler,        :func:`load_checkpoint` (a ``.pt`` file is refused:
device)``                                                   ``trainengine checkpoints import FILE.pt`` first)
``TrainingLogger`` (``log_*``, ``info/warning/...``)         :class:`trainengine.tracking.TrainingLogger` itself
``JSONFormatter`` for :mod:`logging`                        :class:`trainengine.tracking.JSONFormatter` itself
``ExperimentTracker("project", config)``,                   :class:`trainengine.tracking.ExperimentTracker`
``backend="console"``                                       itself
``MetricsTracker(use_wandb=True)`` (seed 000's old name)    :class:`trainengine.monitoring.MetricsEngine`
=========================================================  ==================================================

Example:
    >>> import tempfile, torch
    >>> from trainengine.compat.seed002 import CheckpointManager
    >>> model = torch.nn.Linear(2, 1)
    >>> checkpoint_manager = CheckpointManager(tempfile.mkdtemp(), keep_best_n=3, metric_mode="min")
    >>> saved_path = checkpoint_manager.save(model, None, None, step=100, val_loss=2.5)
    >>> best_checkpoint = checkpoint_manager.load_best()
    >>> model.load_state_dict(best_checkpoint["model_state_dict"])
    <All keys matched successfully>
    >>> best_checkpoint["step"], best_checkpoint["val_loss"]
    (100, 2.5)
"""

from trainengine.compat._checkpoints import CheckpointManager, CheckpointRecord, load_checkpoint
from trainengine.monitoring import MetricsEngine
from trainengine.tracking import ExperimentTracker, JSONFormatter, TrainingLogger

# Seed 000's older name of the metrics engine (``tracker = MetricsTracker(use_wandb=True)``).
MetricsTracker = MetricsEngine

__all__ = [
    "CheckpointManager",
    "CheckpointRecord",
    "load_checkpoint",
    "TrainingLogger",
    "JSONFormatter",
    "ExperimentTracker",
    "MetricsTracker",
]
