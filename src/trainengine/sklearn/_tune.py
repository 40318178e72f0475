"""``tune_pipeline()``: an Optuna search over a Pipeline's own parameters (``classifier__learning_rate``).

The conventions are :func:`trainengine.tune.tune`'s: the study is a parent run (``group_kind``
``tune``) in ``<output_dir>/<experiment>/<study_name>/`` with ``space.yaml``, its Optuna storage
``study.db`` (or any RDB URL) so a killed study continues where it stopped, one ordinary run per
trial (``trial-0000/``, a child row in the ExperimentDB), ``study_summary.json``, importances and the
history / parallel-coordinate plots — and the same samplers, pruners and space syntax, with the
estimator's ``get_params()`` keys in place of config keys::

    classifier__learning_rate: {type: float, low: 0.01, high: 0.3, log: true}
    classifier__max_depth: {type: int, low: 2, high: 6}
    preprocessor__num__imputer__strategy: {type: categorical, choices: [mean, median]}

A trial is the sampled pipeline cross-validated on the same folds as every other trial (so trials
are compared on equal terms); its value is the monitored metric's mean over the folds. After each
fold the running mean is reported to the pruner (step = fold index), so a hopeless trial stops
early; a trial's ``steps`` are the folds it fitted. The best parameters are written to
``best_params.yaml``; :attr:`PipelineTuneResult.best_estimator` is the pipeline with them set,
ready for :class:`~trainengine.sklearn.SklearnTrainer`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trainengine.errors import ConfigError, MissingExtraError, TrainEngineError
from trainengine.tune._report import TuneResult

if TYPE_CHECKING:
    import optuna

    from trainengine.config import TrainingConfig
    from trainengine.sklearn._trainer import Problem
    from trainengine.tasks import TaskSpec
    from trainengine.tune import SearchSpace, StudySetup

__all__ = ["tune_pipeline", "load_pipeline_space", "PipelineTuneResult"]

# A trial failing with these is recorded FAILED with its run and the study goes on (tune()'s rule).
_TRIAL_ERRORS = (TrainEngineError, ArithmeticError, RuntimeError, ValueError)


@dataclasses.dataclass
class PipelineTuneResult(TuneResult):
    """:class:`~trainengine.tune.TuneResult` of a pipeline search, with the best pipeline.

    Attributes:
        best_estimator: an unfitted clone of the estimator with ``best_params`` set (None when no
            trial completed).
        best_params_path: ``best_params.yaml`` in the study's folder.
    """

    best_estimator: Any = None
    best_params_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["best_params_file"] = str(self.best_params_path) if self.best_params_path else None
        return out


def _flatten(raw: Mapping[str, Any], prefix: str, problems: list[str]) -> list[tuple[str, Any]]:
    """``{classifier: {learning_rate: {type: ...}}}`` -> ``[("classifier__learning_rate", {type: ...})]``."""
    out: list[tuple[str, Any]] = []
    for name, value in raw.items():
        if not isinstance(name, str):
            problems.append(f"{name!r}: a search-space key is an estimator parameter such as classifier__max_depth")
            continue
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and "type" not in value and value:
            out += _flatten(value, key + "__", problems)
        else:
            out.append((key, value))
    return out


def _check_value(estimator: Any, key: str, value: Any, label: str) -> str | None:
    """scikit-learn's own parameter check of ``value`` for ``key`` (None when it passes or cannot be checked)."""
    from sklearn.base import clone

    owner_key, _, leaf = key.rpartition("__")
    owner = estimator.get_params(deep=True)[owner_key] if owner_key else estimator
    if not hasattr(owner, "_validate_params"):
        return None
    try:
        probe = clone(owner).set_params(**{leaf: value})
        probe._validate_params()
    except (ValueError, TypeError) as exc:  # InvalidParameterError is both
        return f"{key}: {label} {value!r} is refused by {type(owner).__name__}: {exc}"
    return None


def load_pipeline_space(source: Mapping[str, Any] | str | Path, estimator: Any) -> SearchSpace:
    """Read a search space over ``estimator.get_params()`` keys and check it before any trial runs.

    Every problem is listed in one :class:`~trainengine.errors.ConfigError`: an unknown key (with
    "did you mean"), a malformed range (:func:`trainengine.tune.load_space`'s own checks: bounds,
    ``log`` reaching 0, ``low > high``, ...), and every end of a range and every choice that the
    estimator's own parameter constraints refuse (``learning_rate`` must be > 0, ``max_depth`` an
    integer).

    Example:
        >>> from sklearn.ensemble import GradientBoostingClassifier
        >>> from sklearn.pipeline import Pipeline
        >>> pipe = Pipeline([("classifier", GradientBoostingClassifier())])
        >>> load_pipeline_space({"classifier__learning_rat": {"type": "float", "low": 0.01, "high": 0.3}}, pipe)
        Traceback (most recent call last):
        ...
        trainengine.errors.ConfigError: invalid search space (1 problem):
          - classifier__learning_rat: not a parameter of Pipeline — did you mean classifier__learning_rate?
    """
    from trainengine.tune import SearchSpace
    from trainengine.tune._space import _parse_param, _read_space_file

    raw = _read_space_file(Path(source)) if isinstance(source, (str, Path)) else source
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"a search space is a mapping of estimator parameters, got {type(raw).__name__}",
            prefix="invalid search space",
        )
    problems: list[str] = []
    entries = _flatten(raw, "", problems)
    if not entries and not problems:
        problems.append("the space is empty — name at least one parameter, e.g. classifier__learning_rate")
    known = sorted(estimator.get_params(deep=True))
    params = []
    for key, spec in entries:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" — did you mean {close[0]}?" if close else " (estimator.get_params() lists them)"
            problems.append(f"{key}: not a parameter of {type(estimator).__name__}{hint}")
            continue
        param, param_problems = _parse_param(key, key, spec)
        problems += param_problems
        if param is None:
            continue
        probes = [("low", param.low), ("high", param.high)] if param.type != "categorical" else []
        probes += [("choice", c) for c in param.choices]
        for label, value in probes:
            problem = _check_value(estimator, key, value, label)
            if problem:
                problems.append(problem)
        params.append(param)
    if problems:
        raise ConfigError(problems, prefix="invalid search space")
    return SearchSpace(tuple(params))


class _PipelineTrial:
    """The objective Optuna calls: one trial = the sampled pipeline cross-validated, as one ordinary run."""

    def __init__(self, setup: StudySetup, problem: Problem, config: TrainingConfig) -> None:
        self.setup = setup
        self.problem = problem
        self.config = config

    def __call__(self, trial: optuna.Trial) -> float:
        import numpy as np
        import optuna
        from sklearn.base import clone

        from trainengine.sklearn._params import describe_estimator, estimator_params
        from trainengine.sklearn._records import RecordedConfig, RunRecord
        from trainengine.sklearn._trainer import fit_and_score
        from trainengine.tune._study import trial_run_name

        setup, problem = self.setup, self.problem
        values = setup.space.suggest(trial)
        estimator = clone(problem.template).set_params(**values)
        name = trial_run_name(trial.number)
        trial.set_user_attr("run_name", name)
        objective = setup.objectives[0].name
        params = estimator_params(estimator)
        record = None
        if self.config.tracking.write_run_dir:
            path = setup.study_dir / name
            path.mkdir(parents=True, exist_ok=False)
            config = setup.trial_config(trial.number, {})
            record = RunRecord(
                path,
                config,
                db_location=setup.db_location,
                parent_db_run_id=setup.parent_db_run_id,
                db_config=RecordedConfig(config, {**describe_estimator(estimator), "params": params}),
            )
            facts = {
                "task": problem.spec.to_dict(),
                "model": {**describe_estimator(estimator), "framework": "scikit-learn", "params": params},
                "data": {"train_fingerprint": problem.train.fingerprint, "num_train_samples": len(problem.train)},
                "trial": {"number": trial.number, "values": values},
                "cv": {k: problem.how[k] for k in ("k", "splitter", "shuffle", "seed")},
            }
            header = f"# Config of trial {trial.number} of the pipeline study {setup.study_name}.\n"
            record.start(facts, header)
            trial.set_user_attr("run_dir", str(path))
            trial.set_user_attr("db_run_id", record.db_run_id)
        scores: list[float] = []
        fold_metrics: list[dict[str, float]] = []
        try:
            for i, (tr_idx, va_idx) in enumerate(problem.folds):
                metrics, fit_time, _ = fit_and_score(
                    clone(estimator), problem.train, tr_idx, va_idx, problem.task_type, problem.classes
                )
                fold_metrics.append(metrics)
                scores.append(metrics[objective])
                if record is not None:
                    record.log({"type": "cv", "fold": i, "step": i, **metrics, "fit_time_s": fit_time})
                trial.set_user_attr("steps", i + 1)
                trial.report(float(np.mean(scores)), step=i)
                if trial.should_prune():
                    if record is not None:
                        record.finish(
                            "pruned",
                            results=self._results(objective, scores, fold_metrics),
                            metrics=self._means(fold_metrics),
                        )
                    raise optuna.TrialPruned(f"pruned after fold {i}")
        except optuna.TrialPruned:
            raise
        except BaseException as exc:
            if record is not None:
                status: Any = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                record.finish(status, error=f"{type(exc).__name__}: {exc}")
            raise
        value = float(np.mean(scores))
        if not math.isfinite(value):
            if record is not None:
                record.finish("failed", error=f"{objective} is not finite over the folds ({scores})")
            raise TrainEngineError(f"trial {trial.number}: {objective} is not finite over the folds ({scores})")
        if record is not None:
            record.finish(
                "completed", results=self._results(objective, scores, fold_metrics), metrics=self._means(fold_metrics)
            )
        trial.set_user_attr("values", {objective: value})
        return value

    @staticmethod
    def _means(fold_metrics: list[dict[str, float]]) -> dict[str, float]:
        import numpy as np

        names = fold_metrics[0] if fold_metrics else {}
        return {f"{n}/mean": float(np.mean([m[n] for m in fold_metrics])) for n in names}

    def _results(self, objective: str, scores: list[float], fold_metrics: list[dict[str, float]]) -> dict[str, Any]:
        import numpy as np

        return {
            "best_metric_name": objective,
            "best_metric": float(np.mean(scores)) if scores else None,
            "best_metric_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
            "fold_values": scores,
            "final_metrics": {k.removesuffix("/mean"): v for k, v in self._means(fold_metrics).items()},
            "steps": len(scores),
        }


def _write_report(study: optuna.Study, setup: StudySetup, template: Any) -> PipelineTuneResult:
    """study_summary.json, best_params.yaml, importances and plots (tune's own helpers where they fit)."""
    import yaml
    from optuna.trial import TrialState
    from sklearn.base import clone

    from trainengine._io import atomic_write_json, atomic_write_text
    from trainengine.tune._report import _finite, _importances, _plots, study_fields

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    result = PipelineTuneResult(**study_fields(study, setup))
    if complete:
        best = study.best_trial
        result.best_value = _finite(best.value)
        result.best_trial = best.number
        result.best_params = setup.space.decode(best.params)
        result.best_estimator = clone(template).set_params(**result.best_params)
        path = setup.study_dir / "best_params.yaml"
        header = (
            f"# Best parameters of the pipeline study {setup.study_name} (trial {best.number}, "
            f"{result.objectives[0]} {best.value:.6g}): estimator.set_params(**these)\n"
        )
        atomic_write_text(path, header + yaml.safe_dump(json.loads(json.dumps(result.best_params)), sort_keys=False))
        result.best_params_path = path
        result.files["best_params.yaml"] = path
    result.importances = _importances(study, setup, len(complete))
    result.files.update(_plots(study, setup, len(complete)))
    summary = setup.study_dir / "study_summary.json"
    result.files["study_summary.json"] = summary
    atomic_write_json(summary, result.to_dict())
    return result


def tune_pipeline(
    estimator: Any,
    space: Mapping[str, Any] | str | Path,
    n_trials: int,
    data: Any = None,
    y: Any = None,
    *,
    target: str | None = None,
    task: TaskSpec | str | None = None,
    config: TrainingConfig | None = None,
    cv: int = 5,
    objective_metric: str | None = None,
    direction: str | None = None,
    timeout: float | None = None,
    sampler: str | optuna.samplers.BaseSampler = "tpe",
    pruner: str | optuna.pruners.BasePruner | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    load_if_exists: bool = True,
    output_dir: str | Path | None = None,
    seed: int | None = 0,
) -> PipelineTuneResult:
    """Search a Pipeline's parameters with Optuna: every trial the sampled pipeline cross-validated.

    Args:
        estimator: the estimator or Pipeline (cloned; its ``random_state`` parameters left at None
            get ``training.seed``, as in a SklearnTrainer run).
        space: ``{parameter: {type, low, high, log, step} | {type: categorical, choices}}`` over
            ``estimator.get_params()`` keys (nested mappings join with ``__``), or a YAML / JSON file.
        n_trials: the study's total number of finished trials (a continued study counts its own).
        data, y, target: the training data, in any form :meth:`SklearnTrainer.train` takes.
        task: ``classification`` / ``regression`` / a TaskSpec (default: the estimator's kind).
        config: the TrainingConfig (tracking: where the study goes; ``training.seed``: folds and
            random states; ``training.monitor``: the objective).
        cv: folds per trial.
        objective_metric: optimise this metric (``val/f1_macro``, ``val/roc_auc``, ``val/loss``)
            instead of the monitored one (``val/accuracy`` / ``val/loss``).
        direction: ``minimize`` / ``maximize``; default the metric's own (a contradicting one is refused).
        timeout: stop starting trials after this many seconds.
        sampler: ``tpe``, ``random``, ``grid`` or ``cmaes`` (seeded with ``seed``), or an Optuna sampler.
        pruner: ``median`` (default), ``hyperband``, ``none``, or an Optuna pruner: a trial is
            pruned on the running mean of its folds.
        storage: an Optuna RDB URL; default ``study.db`` in the study's folder.
        study_name: the study's name and folder; default ``tracking.run_name`` or ``tune-<experiment>``.
        load_if_exists: continue a study of that name in the storage (else refuse).
        output_dir: where the study's folder goes; default ``tracking.output_dir``.
        seed: the sampler's seed.

    Returns:
        A :class:`PipelineTuneResult` (``best_value``, ``best_params``, ``best_estimator``, counts,
        importances, files).

    Raises:
        ConfigError: an invalid space (every problem listed), objective, sampler or pruner, before
            any trial runs.
        MissingExtraError: optuna is not installed.
    """
    try:
        import optuna  # noqa: F401 - the error names the extra before anything is read
    except ImportError:
        raise MissingExtraError("optuna", "tune", "tune_pipeline") from None
    import dataclasses as dc

    from trainengine._io import atomic_write_text, validate_name
    from trainengine.config import TrainingConfig
    from trainengine.sklearn._records import config_text
    from trainengine.sklearn._trainer import SklearnTrainer
    from trainengine.tracking._parent import experiment_db_location
    from trainengine.tune._study import (
        _SAMPLERS,
        Objective,
        StudySetup,
        _direction_word,
        _name_of,
        _recorded,
        _StudyRun,
        finished_trials,
        open_study,
    )

    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"n_trials must be a whole number >= 1, got {n_trials!r}")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if isinstance(sampler, str) and sampler not in _SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r} — available: {', '.join(_SAMPLERS)}")
    base = config if config is not None else TrainingConfig()
    if objective_metric is not None:
        from trainengine.engine._setup import canonical_metric

        data_dict = base.to_dict()
        data_dict["training"]["monitor"] = canonical_metric(objective_metric)
        base = TrainingConfig.from_dict(data_dict)
    if output_dir is not None:
        data_dict = base.to_dict()
        data_dict["tracking"]["output_dir"] = str(output_dir)
        base = TrainingConfig.from_dict(data_dict)
    trainer = SklearnTrainer(estimator, task, base, cv=cv)
    pipeline_space = load_pipeline_space(space, trainer.estimator)
    problem = trainer.prepare(data, y, target=target)
    monitor_direction: Literal["minimize", "maximize"] = "maximize" if problem.mode == "max" else "minimize"
    if direction is not None and _direction_word(direction, "direction") != monitor_direction:
        raise ConfigError(
            f"direction {direction!r} disagrees with {problem.monitor}, which is {monitor_direction}d — set "
            "training.monitor_mode to match, or leave direction out"
        )
    tr = base.tracking
    experiment = validate_name(tr.experiment_name, "tracking.experiment_name")
    name = validate_name(study_name or tr.run_name or f"tune-{experiment}", "study_name")
    study_dir = Path(tr.output_dir) / experiment / name
    setup = StudySetup(
        base_config=base,
        space=pipeline_space,
        study_name=name,
        storage=storage or f"sqlite:///{(study_dir / 'study.db').resolve()}",
        study_dir=study_dir,
        objectives=(Objective(problem.monitor, monitor_direction),),
        monitor=problem.monitor,
        db_location=experiment_db_location(base),
    )
    study = open_study(setup, sampler=sampler, pruner=pruner, seed=seed, load_if_exists=load_if_exists)
    run = _StudyRun(setup)
    start = time.perf_counter()
    with _recorded(run):
        details = {
            "n_trials": n_trials,
            "sampler": _name_of(sampler),
            "pruner": _name_of(pruner) if pruner else "auto",
            "framework": "scikit-learn",
            "estimator": type(problem.template).__name__,
            "cv": {k: problem.how[k] for k in ("k", "splitter", "shuffle", "seed")},
        }
        parent = run.open({**details, "workers": 1})
        header = (
            f"# Base config of the pipeline study {experiment}/{name}. Continue it: tune_pipeline(estimator, "
            f"space='{study_dir / 'space.yaml'}', n_trials=N, config=TrainingConfig.load(this file), "
            f"study_name='{name}')\n"
        )
        atomic_write_text(study_dir / "config.yaml", config_text(base, header))
        setup = dc.replace(setup, parent_db_run_id=parent)
        if (remaining := n_trials - finished_trials(study)) > 0:
            study.optimize(
                _PipelineTrial(setup, problem, base),
                n_trials=remaining,
                timeout=timeout,
                catch=_TRIAL_ERRORS,
                callbacks=[run.record_trials],
            )
        run.record_trials(study)
        result = _write_report(study, setup, problem.template)
    run.finish("completed", result)
    if tr.progress != "off":
        shown = "-" if result.best_value is None else f"{result.best_value:.4f}"
        print(
            f"study {name}: {result.num_trials} trials ({result.num_complete} completed, {result.num_pruned} pruned) "
            f"in {time.perf_counter() - start:.1f} s; best {problem.monitor} {shown}: {result.best_params}",
            flush=True,
        )
    return result
