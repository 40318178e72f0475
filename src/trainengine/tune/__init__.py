"""Hyperparameter search with Optuna: search spaces over dotted config keys, pruning through the
Trainer's own stop decision, resumable studies shared by parallel workers, and a learning-rate finder.

Example:
    See docs/tuning.md.
"""

from trainengine.tune._lr_find import LRFindResult, lr_find, smooth_losses, suggest_lr
from trainengine.tune._pruning import PRUNED, PruningCallback
from trainengine.tune._report import TuneResult, print_summary, write_report
from trainengine.tune._space import ParamSpec, SearchSpace, load_space
from trainengine.tune._study import (
    LATENCY_MS,
    Objective,
    StudySetup,
    TrialObjective,
    build_pruner,
    build_sampler,
    finished_trials,
    measure_latency_ms,
    open_storage,
    open_study,
    prepare_study,
    tune,
)
from trainengine.tune._workers import run_workers, tune_parallel, used_budget, watch_trials, worker_seed

__all__: list[str] = [
    "tune",
    "TuneResult",
    "print_summary",
    "write_report",
    "SearchSpace",
    "ParamSpec",
    "load_space",
    "PruningCallback",
    "PRUNED",
    "StudySetup",
    "Objective",
    "TrialObjective",
    "prepare_study",
    "open_study",
    "open_storage",
    "build_sampler",
    "build_pruner",
    "finished_trials",
    "measure_latency_ms",
    "LATENCY_MS",
]
__all__ += ["lr_find", "LRFindResult", "suggest_lr", "smooth_losses"]
__all__ += ["tune_parallel", "run_workers", "watch_trials", "used_budget", "worker_seed"]
