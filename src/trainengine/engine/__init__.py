"""The training loop and its parts: Trainer, step logic, optimizers, schedules, callbacks, state."""

from trainengine.engine._build import BuiltRun, build_from_config, build_model_for, build_task, load_data_for
from trainengine.engine._callbacks import EVENTS, Callback, CallbackList, EarlyStopping
from trainengine.engine._checkpointing import Checkpointing, TrainingInterrupted, resolve_resume
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
    "EarlyStopping",
    "Checkpointing",
    "TrainingInterrupted",
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
