"""Run records and console output: the run directory writer and the progress display."""

from trainengine._liveness import RunDirLock, RunDirLockedError, liveness, stale_after_s
from trainengine.provenance import git_info, library_versions  # re-exported: moved to trainengine.provenance
from trainengine.tracking._console import ConsoleProgress, format_duration
from trainengine.tracking._db import ExperimentDB, ExperimentDBError, ExperimentDBValueError, UnknownRunError
from trainengine.tracking._logger import JSONFormatter, TrainingLogger, read_jsonl, system_info
from trainengine.tracking._run_dir import RunDirectory, new_run_id, save_weights
from trainengine.tracking._tracker import (
    ConsoleTracker,
    ExperimentTracker,
    TrackerBackend,
    available_trackers,
    flatten_params,
    register_tracker,
)

__all__ = [
    "JSONFormatter",
    "ConsoleTracker",
    "ExperimentDB",
    "ExperimentDBError",
    "ExperimentDBValueError",
    "UnknownRunError",
    "TrainingLogger",
    "read_jsonl",
    "system_info",
    "ExperimentTracker",
    "TrackerBackend",
    "available_trackers",
    "flatten_params",
    "register_tracker",
    "RunDirectory",
    "RunDirLock",
    "RunDirLockedError",
    "liveness",
    "stale_after_s",
    "ConsoleProgress",
    "format_duration",
    "git_info",
    "library_versions",
    "new_run_id",
    "save_weights",
]
