"""The training loop and its parts: Trainer, step logic, optimizers, schedules, callbacks, state.

``trainengine.engine.Trainer`` is the bare loop (no run directory, trackers, console or export);
``trainengine.Trainer`` attaches those from the config (see :mod:`trainengine.assembly`).
"""

from trainengine.engine._build import BuiltRun, build_from_config, build_model_for, build_task, load_data_for
from trainengine.engine._callbacks import EVENTS, Callback, CallbackList, EarlyStopping, TrainerCallback
from trainengine.engine._checkpointing import Checkpointer, Checkpointing, resolve_resume
from trainengine.engine._data_iter import DataIterator
from trainengine.engine._faults import SignalGuard, TrainingInterrupted
from trainengine.engine._logwindow import LogWindow
from trainengine.engine._optim import build_optimizer, param_groups
from trainengine.engine._runtime import Runtime, resolve_device, resolve_precision, seed_everything
from trainengine.engine._state import TrainState, capture_rng_state, restore_rng_state
from trainengine.engine._step import StepRunner, split_batch
from trainengine.engine._trainer import Trainer
from trainengine.engine.schedules import build_scheduler

__all__ = [
    "Trainer",
    "TrainState",
    "Callback",
    "CallbackList",
    "TrainerCallback",
    "EarlyStopping",
    "Checkpointer",
    "Checkpointing",
    "TrainingInterrupted",
    "SignalGuard",
    "DataIterator",
    "LogWindow",
    "resolve_resume",
    "EVENTS",
    "Runtime",
    "StepRunner",
    "split_batch",
    "build_optimizer",
    "param_groups",
    "build_scheduler",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
    "capture_rng_state",
    "restore_rng_state",
    "BuiltRun",
    "build_from_config",
    "build_task",
    "load_data_for",
    "build_model_for",
]
