"""``tune()``: an Optuna study whose trials are ordinary training runs.

Each trial is the base config with the sampled values set (:class:`~trainengine.tune.SearchSpace`),
built and trained with the public Trainer and its default callbacks — so a trial is a normal run
with its run directory, logs and ExperimentDB row — plus a :class:`~trainengine.tune.PruningCallback`.
The study itself is a parent run, like a seed or fold group (``group_kind`` ``tune``):

    <output_dir>/<experiment>/<study_name>/          the study: run.json, config.yaml, space.yaml,
        study.db                                     the Optuna storage (unless ``storage`` is given),
        trial-0000/ trial-0001/ ...                  one run directory per trial (status completed,
                                                     pruned or failed),
        best_config.yaml, study_summary.json,        written at the end (see ``_report.py``)
        optimization_history.png, parallel_coordinates.png, [pareto_front.json]

In the ExperimentDB each trial's row is a child of the study's row (``db.get_children(parent)``).

Running the same ``tune()`` again (same experiment, study name and storage) continues the study:
Optuna's trial numbers go on, and ``n_trials`` is the study's total budget, so a killed study
finishes the trials it has left. Parallel workers (``trainengine tune --workers N``) share the
storage and run :class:`TrialObjective` on a :class:`StudySetup` each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import statistics
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from trainengine.errors import ConfigError, MissingExtraError, TrainEngineError
from trainengine.tracking._parent import AdoptChild, experiment_db_location
from trainengine.tune._pruning import PRUNED, PruningCallback
from trainengine.tune._space import SearchSpace, load_space

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from trainengine.config import TrainingConfig
    from trainengine.tracking._db import RunStatus
    from trainengine.tune._report import TuneResult

__all__ = [
    "tune",
    "StudySetup",
    "Objective",
    "TrialObjective",
    "prepare_study",
    "open_study",
    "build_sampler",
    "build_pruner",
    "open_storage",
    "finished_trials",
    "measure_latency_ms",
    "SamplerName",
    "PrunerName",
    "LATENCY_MS",
    "FINISHED_STATES",
]

logger = logging.getLogger("trainengine")

SamplerName = Literal["tpe", "random", "grid", "cmaes"]
PrunerName = Literal["median", "hyperband", "none"]
Direction = Literal["minimize", "maximize"]
#: The objective name of a trained model's inference latency (milliseconds per batch, lower is better).
LATENCY_MS = "latency_ms"
_SAMPLERS: tuple[str, ...] = ("tpe", "random", "grid", "cmaes")
_PRUNERS: tuple[str, ...] = ("median", "hyperband", "none")
_DIRECTION_WORDS: dict[str, Direction] = {
    "minimize": "minimize",
    "min": "minimize",
    "maximize": "maximize",
    "max": "maximize",
}
# Trials run when the study's own sampler is not given one: enough to see a spread before TPE models it.
_STARTUP_TRIALS = 5
_MEDIAN_STARTUP_TRIALS = 3  # finished trials before the median pruner acts (benchmarks/tune_pruning.py)


def _finished_states() -> tuple[Any, ...]:
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


#: The trial states that use up the study's budget (``n_trials``): complete, pruned and failed.
FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")


@dataclasses.dataclass(frozen=True)
class Objective:
    """One value a trial returns.

    Attributes:
        name: ``val/<metric>`` (the monitored metric: its best value over the run's evaluations;
            any other: its value at the last evaluation) or ``latency_ms`` (the trained model's
            forward pass on one validation batch, median of a few, in milliseconds).
        direction: ``minimize`` or ``maximize``.
    """

    name: str
    direction: Direction


@dataclasses.dataclass(frozen=True)
class StudySetup:
    """Everything needed to run trials of one study, in this process or in a worker process.

    Attributes:
        base_config: the config every trial starts from (tracking points at the study's folder).
        space: the validated search space.
        study_name: Optuna's study name and the study folder's name.
        storage: the Optuna RDB URL (``sqlite:///<study_dir>/study.db`` by default).
        study_dir: ``<output_dir>/<experiment>/<study_name>``.
        objectives: what each trial returns, in order.
        monitor: the monitored metric of the base config (``val/loss``).
        db_location: the ExperimentDB every trial's row goes to (None: no database).
        parent_db_run_id: the study's row in it (set by :func:`tune` once the study run is open).
    """

    base_config: TrainingConfig
    space: SearchSpace
    study_name: str
    storage: str
    study_dir: Path
    objectives: tuple[Objective, ...]
    monitor: str
    db_location: str | None = None
    parent_db_run_id: int | None = None

    @property
    def directions(self) -> list[Direction]:
        """Optuna's ``directions`` of the study."""
        return [o.direction for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        """Whether the study has more than one objective (no pruning; a Pareto front)."""
        return len(self.objectives) > 1

    def trial_config(self, number: int, values: Mapping[str, Any]) -> TrainingConfig:
        """The config of trial ``number``: the base config, the sampled ``values``, and the run
        directory ``<study_dir>/trial-NNNN`` in the study's folder and database.

        Raises:
            ConfigError: the sampled combination breaks a cross-field rule.
        """
        from trainengine.config import TrainingConfig

        config = self.space.apply(self.base_config, values)
        data = config.to_dict()
        data["tracking"].update(
            output_dir=str(self.study_dir.parent),
            experiment_name=self.study_dir.name,
            run_name=trial_run_name(number),
            db_url=self.db_location,
            experiment_db=self.db_location is not None,
        )
        return TrainingConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form (for worker processes): :meth:`from_dict` rebuilds an equal setup."""
        return {
            "base_config": self.base_config.to_dict(),
            "space": self.space.to_dict(),
            "study_name": self.study_name,
            "storage": self.storage,
            "study_dir": str(self.study_dir),
            "objectives": [[o.name, o.direction] for o in self.objectives],
            "monitor": self.monitor,
            "db_location": self.db_location,
            "parent_db_run_id": self.parent_db_run_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySetup:
        """The setup :meth:`to_dict` wrote."""
        from trainengine.config import TrainingConfig

        base = TrainingConfig.from_dict(dict(data["base_config"]))
        return cls(
            base_config=base,
            space=load_space(data["space"], base),
            study_name=data["study_name"],
            storage=data["storage"],
            study_dir=Path(data["study_dir"]),
            objectives=tuple(Objective(name, direction) for name, direction in data["objectives"]),
            monitor=data["monitor"],
            db_location=data.get("db_location"),
            parent_db_run_id=data.get("parent_db_run_id"),
        )


def trial_run_name(number: int) -> str:
    """``trial-0007``: the run directory of Optuna trial 7 (sorted like the trial numbers)."""
    return f"trial-{number:04d}"


# ------------------------------------------------------------------------------------------- set-up
def _monitor_of(config: TrainingConfig) -> tuple[str, Any, Direction]:
    """The monitored metric, the task spec (with the config's task section) and its direction."""
    from trainengine.engine import build_from_config, build_task
    from trainengine.engine._setup import canonical_metric, monitor_mode_for, with_task_section

    spec = build_task(config) if config.data.dataset is not None else build_from_config(config).task_spec
    t = config.training
    spec = with_task_section(spec, config.task, t.monitor)
    monitor = canonical_metric(t.monitor or spec.monitor)
    mode = monitor_mode_for(monitor, t.monitor_mode, spec)
    return monitor, spec, "maximize" if mode == "max" else "minimize"


def _direction_word(value: Any, where: str) -> Direction:
    word = _DIRECTION_WORDS.get(str(value).lower()) if isinstance(value, str) else None
    if word is None:
        raise ConfigError(f"{where}: direction {value!r} — use minimize or maximize (min / max)")
    return word


def _resolve_objectives(
    config: TrainingConfig,
    direction: str | None,
    directions: Sequence[str | tuple[str, str]] | None,
    objective_metric: str | None,
) -> tuple[TrainingConfig, str, tuple[Objective, ...]]:
    """The study's objectives; the config with ``training.monitor`` set to ``objective_metric``."""
    from trainengine.engine._setup import canonical_metric, monitor_mode_for

    if direction is not None and directions is not None:
        raise ConfigError(
            "direction and directions are both set — give direction for one objective, directions for several"
        )
    if objective_metric is not None:
        # The objective *is* the monitored metric: best-value tracking, checkpoints and early
        # stopping follow the metric the study optimises.
        config = config.model_copy(deep=True)
        data = config.to_dict()
        data["training"]["monitor"] = canonical_metric(objective_metric)
        from trainengine.config import TrainingConfig

        config = TrainingConfig.from_dict(data)
    monitor, spec, monitor_direction = _monitor_of(config)
    available = [f"val/{m}" for m in spec.metrics]
    if directions is None:
        if direction is not None and _direction_word(direction, "direction") != monitor_direction:
            raise ConfigError(
                f"direction {direction!r} disagrees with the monitored metric {monitor}, which the run treats as "
                f"{monitor_direction} — set training.monitor_mode to match, or leave direction out"
            )
        return config, monitor, (Objective(monitor, monitor_direction),)
    if isinstance(directions, str) or not directions:
        raise ConfigError(
            f"directions must be a list of metric names or (name, direction) pairs, e.g. ['val/loss', 'latency_ms'], "
            f"got {directions!r}"
        )
    objectives: list[Objective] = []
    problems: list[str] = []
    for item in directions:
        name, word = (item, None) if isinstance(item, str) else (item[0], item[1]) if len(item) == 2 else (None, None)
        if not isinstance(name, str):
            problems.append(f"directions: {item!r} is not a metric name or a (name, direction) pair")
            continue
        name = LATENCY_MS if name == LATENCY_MS else canonical_metric(name)
        if name != LATENCY_MS and name not in available and spec.compute_metrics is None:
            problems.append(
                f"directions: {name} is not reported by a {spec.task_type} task — available: "
                f"{', '.join([*available, LATENCY_MS])}"
            )
            continue
        if word is not None:
            try:
                chosen = _direction_word(word, f"directions: {name}")
            except ConfigError as exc:
                problems += exc.problems
                continue
        elif name == LATENCY_MS:
            chosen = "minimize"
        elif name == monitor:
            chosen = monitor_direction
        else:
            chosen = "maximize" if monitor_mode_for(name, "auto", spec) == "max" else "minimize"
        if any(o.name == name for o in objectives):
            problems.append(f"directions: {name} is listed twice")
            continue
        objectives.append(Objective(name, chosen))
    if problems:
        raise ConfigError(problems, prefix="invalid objectives")
    return config, monitor, tuple(objectives)


def prepare_study(
    base_config: TrainingConfig,
    space: SearchSpace | Mapping[str, Any] | str | Path,
    *,
    direction: str | None = None,
    directions: Sequence[str | tuple[str, str]] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    output_dir: str | Path | None = None,
    objective_metric: str | None = None,
) -> StudySetup:
    """Validate the space and the objectives and name the study's folder and storage (nothing runs).

    Raises:
        ConfigError: the space or an objective is invalid (every problem listed).
    """
    from trainengine._io import validate_name

    space = load_space(space, base_config)
    config, monitor, objectives = _resolve_objectives(base_config, direction, directions, objective_metric)
    tr = config.tracking
    experiment = validate_name(tr.experiment_name, "tracking.experiment_name")
    name = validate_name(study_name or tr.run_name or f"tune-{experiment}", "study_name")
    root = Path(output_dir) if output_dir is not None else Path(tr.output_dir)
    study_dir = root / experiment / name
    if output_dir is not None:
        data = config.to_dict()
        data["tracking"]["output_dir"] = str(root)
        from trainengine.config import TrainingConfig

        config = TrainingConfig.from_dict(data)
    return StudySetup(
        base_config=config,
        space=space,
        study_name=name,
        storage=storage or f"sqlite:///{(study_dir / 'study.db').resolve()}",
        study_dir=study_dir,
        objectives=objectives,
        monitor=monitor,
        db_location=experiment_db_location(config),
    )


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url``, shared safely by several processes.

    Trials carry a heartbeat: a trial whose process died (kill -9, a lost machine) is marked
    FAILED by the next ``optimize`` once it has been silent for two minutes, so its budget is
    given back. SQLite waits up to a minute for another worker's write lock.
    """
    import optuna
    from optuna.storages import RDBStorage

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: experimental in Optuna 5
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120)


def build_sampler(name: str, seed: int | None, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The named Optuna sampler, seeded.

    Raises:
        ConfigError: an unknown name, or ``grid`` over a space with a continuous range.
        MissingExtraError: ``cmaes`` without the ``cmaes`` package.
    """
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=_STARTUP_TRIALS)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401 - CmaEsSampler imports it only when it first samples
        except ImportError:
            raise MissingExtraError("cmaes", "tune", "sampler 'cmaes'") from None
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=_STARTUP_TRIALS)
    raise ConfigError(f"unknown sampler {name!r} — available: {', '.join(_SAMPLERS)}")


def build_pruner(name: str, *, multi_objective: bool = False) -> optuna.pruners.BasePruner:
    """The named Optuna pruner; ``none`` is Optuna's ``NopPruner``.

    ``median`` is Optuna's ``MedianPruner`` once 3 trials have finished (``n_startup_trials=3``,
    ``n_warmup_steps=1``: measured in ``benchmarks/tune_pruning.py``, 67% fewer optimizer steps
    than no pruning on a 12-trial digits sweep for the same best value within noise; Optuna's own
    default of 5 startup trials saved 21%): a trial whose best value so far is worse than the median
    of the earlier trials at the same step is pruned, at any evaluation but the last (the steps
    reported are the optimizer steps of the evaluations, so with the batch size in the search space
    trials are compared at equal steps, not equal samples).
    ``hyperband`` is Optuna's ``HyperbandPruner`` with its defaults. For other settings pass an
    Optuna pruner object to :func:`tune` (``optuna.pruners.MedianPruner(n_startup_trials=2)``).

    Raises:
        ConfigError: an unknown name, or a pruner for a multi-objective study (Optuna cannot
            prune those: a trial's intermediate values have no single order).
    """
    import optuna

    if name not in _PRUNERS:
        raise ConfigError(f"unknown pruner {name!r} — available: {', '.join(_PRUNERS)}")
    if multi_objective and name != "none":
        raise ConfigError(
            f"pruner {name!r} with several objectives: Optuna cannot prune multi-objective trials — use pruner='none'"
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=_MEDIAN_STARTUP_TRIALS, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(
    setup: StudySetup,
    *,
    sampler: str | optuna.samplers.BaseSampler = "tpe",
    pruner: str | optuna.pruners.BasePruner | None = None,
    seed: int | None = 0,
    load_if_exists: bool = True,
) -> optuna.Study:
    """Create the study in ``setup.storage``, or load it (``load_if_exists``).

    ``sampler`` / ``pruner`` are names (:func:`build_sampler`, :func:`build_pruner`) or Optuna
    objects used as they are (``optuna.pruners.MedianPruner(n_startup_trials=2)``).

    Raises:
        ConfigError: the study exists and ``load_if_exists`` is False, or it exists with other
            directions.
    """
    import optuna

    if isinstance(pruner, optuna.pruners.BasePruner):
        if setup.multi_objective and not isinstance(pruner, optuna.pruners.NopPruner):
            raise ConfigError("a pruner with several objectives: Optuna cannot prune multi-objective trials")
        the_pruner = pruner
    else:
        name = pruner if pruner is not None else ("none" if setup.multi_objective else "median")
        the_pruner = build_pruner(name, multi_objective=setup.multi_objective)
    the_sampler = (
        sampler if isinstance(sampler, optuna.samplers.BaseSampler) else build_sampler(sampler, seed, setup.space)
    )
    setup.study_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
    try:
        study = optuna.create_study(
            storage=open_storage(setup.storage),
            sampler=the_sampler,
            pruner=the_pruner,
            study_name=setup.study_name,
            directions=setup.directions,
            load_if_exists=load_if_exists,
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(
            f"study {setup.study_name!r} already exists in {setup.storage} — continue it (load_if_exists=True) or "
            "choose another study_name"
        ) from None
    stored = [d.name.lower() for d in study.directions]
    if stored != setup.directions:
        raise ConfigError(
            f"study {setup.study_name!r} in {setup.storage} optimises {stored}, not {setup.directions} — "
            "choose another study_name for different objectives"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.name for o in setup.objectives])
    return study


def finished_trials(study: optuna.Study) -> int:
    """Trials that used up budget: complete, pruned or failed (running ones are not finished)."""
    return len(study.get_trials(deepcopy=False, states=_finished_states()))


# ------------------------------------------------------------------------------------------- a trial
def measure_latency_ms(model: nn.Module, inputs: Any, *, repeats: int = 5, warmup: int = 2) -> float:
    """The median wall time of ``repeats`` no-grad forward passes of ``model`` on ``inputs``, in ms.

    Example:
        >>> import torch
        >>> measure_latency_ms(torch.nn.Linear(8, 2), torch.zeros(4, 8)) > 0
        True
    """
    import torch

    from trainengine.engine._step import call_model

    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                call_model(model, inputs)
                if torch.cuda.is_available() and any(p.is_cuda for p in model.parameters()):
                    torch.cuda.synchronize()  # the kernels, not their launch
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return statistics.median(times)


def _latency_of(model: nn.Module, val_data: Any, config: TrainingConfig) -> float:
    """``latency_ms`` of a trained model: one validation batch of ``eval_batch_size`` samples."""
    from trainengine.data import build_dataloader
    from trainengine.engine import split_batch

    if val_data is None:
        raise TrainEngineError("objective latency_ms needs validation data to time the model on")
    t = config.training
    loader = build_dataloader(val_data, batch_size=t.eval_batch_size or 2 * t.batch_size, shuffle=False, seed=0)
    inputs, _ = split_batch(next(iter(loader)))
    device = next((p.device for p in model.parameters()), None)
    if device is not None:
        import torch

        inputs = (
            inputs.to(device)
            if isinstance(inputs, torch.Tensor)
            else {k: v.to(device) for k, v in inputs.items()}
            if isinstance(inputs, Mapping)
            else inputs
        )
    return measure_latency_ms(model, inputs)


def _mark_pruned(results: Mapping[str, Any], child_id: int | None, location: str | None, step: int | None) -> None:
    """A pruned trial's run ends like a completed one; record it as ``pruned`` (run.json and the database)."""
    import json

    from trainengine._io import atomic_write_json

    run_dir = results.get("run_dir")
    if run_dir:
        path = Path(run_dir) / "run.json"
        with contextlib.suppress(OSError, ValueError):  # the run itself succeeded; its label is secondary
            facts = json.loads(path.read_text(encoding="utf-8"))
            facts.update(status=PRUNED, pruned_at_step=step)
            atomic_write_json(path, facts)
    if child_id is not None and location is not None:
        from trainengine.tracking import ExperimentDB

        db = ExperimentDB(location)
        try:
            status: Any = PRUNED  # a RunStatus (tracking's Literal names it)
            db.update_run_status(child_id, status)
        finally:
            db.close()


class TrialObjective:
    """The objective Optuna calls: one trial = one training run of the sampled config.

    ``TrialObjective(setup)(trial)`` samples the space, trains the trial's config with the public
    Trainer (run directory ``<study_dir>/trial-NNNN``, its ExperimentDB row a child of the study's)
    and a :class:`PruningCallback`, and returns the objective value(s). A pruned run is recorded as
    ``pruned`` and raises :class:`optuna.TrialPruned`. The trial's user attributes record
    ``run_dir``, ``steps`` (optimizer steps taken), ``stop_reason`` and ``db_run_id``.

    Args:
        setup: the study's :class:`StudySetup`.
        callbacks: extra Trainer callbacks for every trial.
    """

    def __init__(self, setup: StudySetup, callbacks: Sequence[Any] = ()) -> None:
        self.setup = setup
        self.callbacks = list(callbacks)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        import optuna
        import torch

        from trainengine.assembly import Trainer
        from trainengine.engine import build_from_config

        setup = self.setup
        values = setup.space.suggest(trial)
        config = setup.trial_config(trial.number, values)
        trial.set_user_attr("run_name", trial_run_name(trial.number))
        torch.manual_seed(config.training.seed)  # every trial starts from the same weights (run_training does too)
        built = build_from_config(config)
        pruning = None if setup.multi_objective else PruningCallback(trial, setup.objectives[0].name)
        adopt = (
            AdoptChild(setup.db_location, setup.parent_db_run_id)
            if setup.db_location is not None and setup.parent_db_run_id is not None
            else None
        )
        extra = [cb for cb in (pruning, adopt) if cb is not None]
        trainer = Trainer(built.model, built.model_config, config, built.task_spec, callbacks=[*extra, *self.callbacks])
        results = trainer.train(built.splits.train, built.splits.val, test_data=built.splits.test)
        trial.set_user_attr("steps", int(results.get("steps") or 0))
        trial.set_user_attr("stop_reason", results.get("stop_reason"))
        trial.set_user_attr("run_dir", results.get("run_dir"))
        trial.set_user_attr("db_run_id", adopt.child_id if adopt is not None else None)
        if pruning is not None and pruning.pruned:
            trial.set_user_attr("pruned_at_step", pruning.pruned_at_step)
            try:
                _mark_pruned(results, adopt.child_id if adopt else None, setup.db_location, pruning.pruned_at_step)
            except TrainEngineError as exc:  # the label is secondary: the trial is pruned all the same
                logger.warning("could not mark %s pruned: %s", results.get("run_dir"), exc)
            raise optuna.TrialPruned(f"pruned at step {pruning.pruned_at_step}")
        out = tuple(self._value(o.name, results, trainer.model, built.splits.val, config) for o in setup.objectives)
        trial.set_user_attr("values", dict(zip([o.name for o in setup.objectives], out, strict=True)))
        return out[0] if len(out) == 1 else out

    def _value(self, name: str, results: Mapping[str, Any], model: nn.Module, val_data: Any, config: Any) -> float:
        if name == LATENCY_MS:
            return _latency_of(model, val_data, config)
        value = results.get("best_metric") if name == results.get("best_metric_name") else None
        if value is None:
            value = (results.get("final_metrics") or {}).get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise TrainEngineError(
                f"the trial produced no finite {name} (got {value!r}) — it needs validation data and at least one "
                "evaluation (training.eval_interval_steps or eval_every_epoch)"
            )
        return float(value)


# ------------------------------------------------------------------------------------------- the study run
class _StudyRun:
    """The study as a parent run (:class:`~trainengine.tracking.ParentRun`, ``group_kind``
    ``tune``) with its search space beside its base config; reopened when the study is continued."""

    def __init__(self, setup: StudySetup) -> None:
        from trainengine.tracking._parent import ParentRun

        self.setup = setup
        self.record = ParentRun(setup.study_dir, "tune", setup.base_config)

    def open(self, details: Mapping[str, Any]) -> int | None:
        """Take the folder, write (or reopen) the record; returns the study's ExperimentDB row id."""
        import yaml

        from trainengine._io import atomic_write_text

        setup, path = self.setup, self.setup.study_dir
        header = (
            f"# Base config of the study {path.parent.name}/{path.name}. Continue it: "
            f"trainengine tune --config {path / 'config.yaml'} --space {path / 'space.yaml'} "
            f"--study-name {setup.study_name}\n"
        )
        group = {
            "study_name": setup.study_name,
            "storage": setup.storage,
            "objectives": [dataclasses.asdict(o) for o in setup.objectives],
            **details,
        }
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "space.yaml", yaml.safe_dump(setup.space.to_dict(), sort_keys=False))
        return self.record.start(group, header)

    def record_trials(self, study: optuna.Study, _trial: Any = None) -> None:
        """An Optuna callback: the trials so far (every worker's) into run.json's ``group.children``."""
        children = [
            {"name": trial_run_name(t.number), "number": t.number, "status": _run_status(t.state.name)}
            for t in study.get_trials(deepcopy=False)
        ]
        self.record.update_group(children=children, num_children=len(children))

    def finish(self, status: RunStatus, result: TuneResult | None = None, error: str | None = None) -> None:
        results = metrics = None
        if result is not None:
            results = {
                # runs list reads these: the study's headline is its best trial's value.
                "best_metric_name": result.objectives[0] if not result.multi_objective else None,
                "best_metric": result.best_value,
                "best_trial": result.best_trial,
                "steps": result.total_steps,
                "summary": "study_summary.json",
            }
            if result.best_value is not None:
                metrics = {f"best/{result.objectives[0]}": result.best_value}
        self.record.finish(status, results=results, metrics=metrics, error=error)


def _run_status(state_name: str) -> str:
    """An Optuna trial state as a run status (COMPLETE -> completed, PRUNED -> pruned, ...)."""
    return {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}.get(
        state_name, state_name.lower()
    )


@contextlib.contextmanager
def _recorded(run: _StudyRun) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        status: RunStatus = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        run.finish(status, error=f"{type(exc).__name__}: {exc}")
        raise


# ------------------------------------------------------------------------------------------- tune()
# A trial failing with these is recorded FAILED with its run and the study goes on.
_TRIAL_ERRORS = (TrainEngineError, ArithmeticError, RuntimeError, ValueError)


def _name_of(component: Any) -> str:
    return component if isinstance(component, str) else type(component).__name__


def tune(
    base_config: TrainingConfig,
    space: SearchSpace | Mapping[str, Any] | str | Path,
    n_trials: int,
    *,
    timeout: float | None = None,
    direction: str | None = None,
    directions: Sequence[str | tuple[str, str]] | None = None,
    sampler: SamplerName | optuna.samplers.BaseSampler = "tpe",
    pruner: PrunerName | optuna.pruners.BasePruner | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    load_if_exists: bool = True,
    output_dir: str | Path | None = None,
    seed: int | None = 0,
    objective_metric: str | None = None,
    callbacks: Sequence[Any] = (),
    workers: int = 1,
) -> TuneResult:
    """Search hyperparameters with Optuna: every trial a training run of the sampled config.

    Args:
        base_config: the config every trial starts from.
        space: the search space (a mapping, a YAML/JSON file, or a :class:`SearchSpace`), checked
            against the config schema before any trial runs.
        n_trials: the study's total number of finished trials (complete, pruned or failed);
            trials of an earlier run of the same study count, so a killed study finishes what
            it has left and a larger number extends it.
        timeout: stop starting new trials after this many seconds.
        direction: ``minimize`` / ``maximize``; None = the monitored metric's own direction
            (a different one is refused: set ``training.monitor_mode`` instead).
        directions: several objectives (multi-objective study): metric names (``val/loss``,
            ``val/accuracy``, ``latency_ms``) or ``(name, direction)`` pairs.
        sampler: ``tpe``, ``random``, ``grid`` (the space's values; needs steps or categoricals)
            or ``cmaes``, seeded with ``seed``; or any Optuna sampler object.
        pruner: ``median`` (after 5 finished trials, at every evaluation), ``hyperband``
            or ``none``, or any Optuna pruner object; None = ``median`` for one objective, ``none``
            for several (Optuna cannot prune multi-objective trials).
        storage: an Optuna RDB URL (``sqlite:///...``, ``postgresql://...``); None = ``study.db``
            in the study's folder.
        study_name: the study's name and folder; None = ``tracking.run_name`` or ``tune-<experiment>``.
        load_if_exists: continue a study of the same name in the storage (else refuse).
        output_dir: where the study's folder goes (``<output_dir>/<experiment>/<study_name>``);
            None = ``tracking.output_dir``.
        seed: the sampler's seed (each trial's training seed is the config's ``training.seed``).
        objective_metric: optimise this evaluation metric (``val/accuracy``) instead of the
            config's monitored one; it becomes the trials' ``training.monitor``.
        callbacks: extra Trainer callbacks for every trial.
        workers: run the trials in this many processes sharing the storage
            (:func:`~trainengine.tune.run_workers`); with more than one, ``sampler`` and ``pruner``
            are given by name and ``callbacks`` is empty (they do not cross processes).

    Returns:
        A :class:`~trainengine.tune.TuneResult`: best value and parameters, the best config,
        importances, the Pareto front (several objectives) and the files written.

    Raises:
        ConfigError: an invalid space, objective, sampler or pruner (before any trial runs).

    Example:
        >>> import tempfile
        >>> from trainengine import TrainingConfigBuilder
        >>> cfg = (
        ...     TrainingConfigBuilder.quick_prototype()
        ...     .with_data(dataset="digits", max_train_samples=128, max_val_samples=32)
        ...     .with_training(max_steps=4, eval_interval_steps=2, eval_every_epoch=False)
        ...     .with_tracking(progress="off", output_dir=tempfile.mkdtemp())
        ...     .build()
        ... )
        >>> space = {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}
        >>> result = tune(cfg, space, n_trials=2)
        >>> result.num_trials, sorted(result.best_params)
        (2, ['training.learning_rate'])
    """
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"n_trials must be a whole number >= 1, got {n_trials!r}")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if isinstance(sampler, str) and sampler not in _SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r} — available: {', '.join(_SAMPLERS)}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
    if workers > 1 and not (isinstance(sampler, str) and (pruner is None or isinstance(pruner, str)) and not callbacks):
        raise ConfigError(
            "workers > 1 runs the trials in other processes: give sampler and pruner by name "
            f"(sampler: {', '.join(_SAMPLERS)}; pruner: median, hyperband, none) and no callbacks"
        )
    setup = prepare_study(
        base_config,
        space,
        direction=direction,
        directions=directions,
        storage=storage,
        study_name=study_name,
        output_dir=output_dir,
        objective_metric=objective_metric,
    )
    # Created here, before any worker starts: workers only load it.
    study = open_study(setup, sampler=sampler, pruner=pruner, seed=seed, load_if_exists=load_if_exists)
    run = _StudyRun(setup)
    with _recorded(run):
        details = {"n_trials": n_trials, "sampler": _name_of(sampler), "pruner": _name_of(pruner) if pruner else "auto"}
        parent = run.open({**details, "workers": workers})
        setup = dataclasses.replace(setup, parent_db_run_id=parent)
        if workers > 1:
            from trainengine.tune._workers import run_workers

            run_workers(
                setup,
                n_trials,
                num_workers=workers,
                sampler=cast("SamplerName", sampler),  # a name: checked above
                pruner=cast("PrunerName | None", pruner),
                seed=seed,
                timeout=timeout,
                on_poll=lambda: run.record_trials(study),
            )
        elif (remaining := n_trials - finished_trials(study)) > 0:
            study.optimize(
                TrialObjective(setup, callbacks),
                n_trials=remaining,
                timeout=timeout,
                # A trial that fails (a diverging learning rate, an invalid combination, out of memory)
                # is recorded FAILED with its run; the study goes on. Ctrl-C still stops it.
                catch=_TRIAL_ERRORS,
                callbacks=[run.record_trials],
            )
        run.record_trials(study)
        from trainengine.tune._report import write_report

        result = write_report(study, setup)
    run.finish("completed", result)
    return result
