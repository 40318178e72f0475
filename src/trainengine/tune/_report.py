"""What a study leaves behind: :class:`TuneResult` and the files in the study's folder.

* ``best_config.yaml`` — the base config with the best trial's values, ready for
  ``trainengine train --config best_config.yaml`` (several objectives: the Pareto trial that is
  best on the first objective);
* ``study_summary.json`` — objectives, best value/params/trial, counts by state, optimizer steps,
  parameter importances, every trial (number, state, values, params, steps, run directory);
* ``pareto_front.json`` — several objectives: every trial of the Pareto front (``study.best_trials``);
* ``optimization_history.png`` and ``parallel_coordinates.png`` —
  :mod:`optuna.visualization.matplotlib` (one history per objective when there are several).

Importances come from :func:`optuna.importance.get_param_importances` (Optuna's default
evaluator: PED-ANOVA in Optuna 5), one dict per objective; they need two or more completed trials.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from trainengine.config import TrainingConfig
    from trainengine.tune._study import StudySetup

__all__ = ["TuneResult", "write_report", "print_summary"]

logger = logging.getLogger("trainengine")


@dataclass
class TuneResult:
    """The outcome of :func:`~trainengine.tune.tune`.

    Attributes:
        study_name: Optuna's study name.
        storage: the storage URL (continue the study with the same name and storage).
        study_dir: the study's folder.
        objectives: the objective names (``val/loss``, ``latency_ms``, ...).
        directions: ``minimize`` / ``maximize`` per objective.
        best_value: the best trial's value (one objective), else None.
        best_params: the best trial's values by dotted config key (several objectives: the
            Pareto trial best on the first objective); empty when no trial completed.
        best_trial: that trial's number, or None.
        best_config: the base config with ``best_params`` set, or None.
        best_config_path: ``best_config.yaml``, or None.
        importances: per objective, ``{param: importance}`` summing to 1 (empty when Optuna cannot
            compute them: fewer than two completed trials).
        pareto_front: several objectives: ``[{number, values, params, run_dir}]``.
        num_trials / num_complete / num_pruned / num_failed: trials by state.
        total_steps: optimizer steps over every trial (what pruning saves).
        trials: every trial as in ``study_summary.json``.
        files: the files written, by name.
        study: the live :class:`optuna.Study`.
    """

    study_name: str
    storage: str
    study_dir: Path
    objectives: list[str]
    directions: list[str]
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_trial: int | None = None
    best_config: TrainingConfig | None = None
    best_config_path: Path | None = None
    importances: dict[str, dict[str, float]] = field(default_factory=dict)
    pareto_front: list[dict[str, Any]] = field(default_factory=list)
    num_trials: int = 0
    num_complete: int = 0
    num_pruned: int = 0
    num_failed: int = 0
    total_steps: int = 0
    trials: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    study: Any = field(default=None, repr=False)

    @property
    def multi_objective(self) -> bool:
        """Whether the study has several objectives."""
        return len(self.objectives) > 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (what ``study_summary.json`` holds)."""
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "study_dir": str(self.study_dir),
            "objectives": [{"name": n, "direction": d} for n, d in zip(self.objectives, self.directions, strict=True)],
            "best_value": self.best_value,
            "best_params": self.best_params,
            "best_trial": self.best_trial,
            "best_config": str(self.best_config_path) if self.best_config_path else None,
            "importances": self.importances,
            "pareto_front": self.pareto_front,
            "num_trials": self.num_trials,
            "num_complete": self.num_complete,
            "num_pruned": self.num_pruned,
            "num_failed": self.num_failed,
            "total_steps": self.total_steps,
            "trials": self.trials,
            "files": {k: str(v) for k, v in self.files.items()},
        }


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _trial_row(trial: optuna.trial.FrozenTrial, setup: StudySetup) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "values": [_finite(v) for v in trial.values] if trial.values is not None else None,
        "params": setup.space.decode(trial.params),
        "steps": attrs.get("steps"),
        "pruned_at_step": attrs.get("pruned_at_step"),
        "run_dir": attrs.get("run_dir"),
        "db_run_id": attrs.get("db_run_id"),
        "duration_s": trial.duration.total_seconds() if trial.duration is not None else None,
    }


def _importances(study: optuna.Study, setup: StudySetup, num_complete: int) -> dict[str, dict[str, float]]:
    import optuna

    if num_complete < 2:
        return {}
    out: dict[str, dict[str, float]] = {}
    for i, objective in enumerate(setup.objectives):
        # One objective: Optuna knows its direction. Several: the evaluator ranks low target values
        # as good, so a maximised objective is handed over negated.
        sign = -1.0 if objective.direction == "maximize" else 1.0
        target = (lambda t, i=i, sign=sign: sign * t.values[i]) if setup.multi_objective else None
        try:
            with warnings.catch_warnings():
                # Optuna's notes on its own estimate (experimental API, tied quantiles) are not the user's to act on.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                values = optuna.importance.get_param_importances(study, target=target)
        except (ValueError, RuntimeError) as exc:  # e.g. every completed trial sampled the same values
            logger.info("no parameter importances for %s: %s", objective.name, exc)
            continue
        out[objective.name] = {k: float(v) for k, v in values.items()}
    return out


def _plots(study: optuna.Study, setup: StudySetup, num_complete: int) -> dict[str, Path]:
    """optimization_history.png and parallel_coordinates.png (matplotlib; headless machines use Agg)."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    if num_complete < 1:
        return {}
    files: dict[str, Path] = {}
    jobs: list[tuple[str, Any]] = []
    for i, objective in enumerate(setup.objectives):
        suffix = "" if i == 0 else f"_{i}"
        target = (lambda t, i=i: t.values[i]) if setup.multi_objective else None
        jobs.append(
            (
                f"optimization_history{suffix}.png",
                lambda target=target, name=objective.name: vis.plot_optimization_history(
                    study, target=target, target_name=name
                ),
            )
        )
    first = setup.objectives[0].name
    target0 = (lambda t: t.values[0]) if setup.multi_objective else None
    jobs.append(
        (
            "parallel_coordinates.png",
            lambda: vis.plot_parallel_coordinate(study, target=target0, target_name=first),
        )
    )
    for name, draw in jobs:
        try:
            with warnings.catch_warnings():
                # Experimental API notes, and matplotlib widening the axis of a parameter with one value.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                ax = draw()
            figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            figure.savefig(setup.study_dir / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            files[name] = setup.study_dir / name
        except (ValueError, RuntimeError) as exc:  # a plot is a convenience, never a reason to fail a study
            logger.warning("could not draw %s: %s", name, exc)
    return files


def _write_best_config(config: TrainingConfig, setup: StudySetup, number: int, value_text: str) -> Path:
    import yaml

    from trainengine._io import atomic_write_text

    resolved = config.to_dict()
    resolved["tracking"]["run_name"] = None
    path = setup.study_dir / "best_config.yaml"
    header = (
        f"# Best config of study {setup.study_name} (trial {number}, {value_text}). "
        f"Train it: trainengine train --config {path}\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(resolved, sort_keys=False))
    return path


def study_fields(study: optuna.Study, setup: StudySetup) -> dict[str, Any]:
    """The fields every study result has: names, storage, directions, trial counts and rows."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {
        "study_name": setup.study_name,
        "storage": setup.storage,
        "study_dir": setup.study_dir,
        "objectives": [o.name for o in setup.objectives],
        "directions": list(setup.directions),
        "num_trials": len(trials),
        "num_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "num_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "num_failed": sum(t.state == TrialState.FAIL for t in trials),
        "total_steps": sum(int(t.user_attrs.get("steps") or 0) for t in trials),
        "trials": [_trial_row(t, setup) for t in trials],
        "study": study,
    }


def write_report(study: optuna.Study, setup: StudySetup) -> TuneResult:
    """Summarise a study into a :class:`TuneResult` and write its files into ``setup.study_dir``."""
    from optuna.trial import TrialState

    from trainengine._io import atomic_write_json

    fields = study_fields(study, setup)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    result = TuneResult(**fields)
    best: optuna.trial.FrozenTrial | None = None
    if complete and not setup.multi_objective:
        best = study.best_trial
        result.best_value = _finite(best.value)
    elif complete:
        front = study.best_trials
        result.pareto_front = [
            {k: row[k] for k in ("number", "values", "params", "run_dir")}
            for row in (_trial_row(t, setup) for t in sorted(front, key=lambda t: t.number))
        ]
        sign = 1.0 if setup.objectives[0].direction == "minimize" else -1.0
        best = min(front, key=lambda t: (sign * t.values[0], t.number))
    if best is not None:
        result.best_trial = best.number
        result.best_params = setup.space.decode(best.params)
        result.best_config = setup.space.apply(setup.base_config, result.best_params)
        values = best.values or []
        value_text = ", ".join(f"{n} {v:.6g}" for n, v in zip(result.objectives, values, strict=False))
        result.best_config_path = _write_best_config(result.best_config, setup, best.number, value_text)
        result.files["best_config.yaml"] = result.best_config_path
    result.importances = _importances(study, setup, len(complete))
    result.files.update(_plots(study, setup, len(complete)))
    if setup.multi_objective:
        path = setup.study_dir / "pareto_front.json"
        atomic_write_json(path, {"objectives": result.to_dict()["objectives"], "trials": result.pareto_front})
        result.files["pareto_front.json"] = path
    summary = setup.study_dir / "study_summary.json"
    result.files["study_summary.json"] = summary
    atomic_write_json(summary, result.to_dict())
    return result


def print_summary(result: TuneResult, console: Console | None = None) -> None:
    """Print the study's outcome: best trial (or the Pareto front), importances, the files written."""
    from rich.console import Console
    from rich.table import Table

    out = console or Console(soft_wrap=True)
    if result.multi_objective:
        table = Table(title=f"study {result.study_name}: Pareto front ({len(result.pareto_front)} trials)")
        table.add_column("trial")
        for name, direction in zip(result.objectives, result.directions, strict=True):
            table.add_column(f"{name} ({direction[:3]})")
        table.add_column("params")
        for row in result.pareto_front:
            values = [("-" if v is None else f"{v:.4g}") for v in (row["values"] or [])]
            params = ", ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
            table.add_row(str(row["number"]), *values, params)
        out.print(table)
    elif result.best_trial is not None:
        out.print(f"best trial {result.best_trial}: {result.objectives[0]} = {result.best_value:.6g}")
        for key, value in result.best_params.items():
            out.print(f"  {key} = {_short(value)}")
    else:
        out.print(f"study {result.study_name}: no trial completed")
    out.print(
        f"{result.num_trials} trials: {result.num_complete} completed, {result.num_pruned} pruned, "
        f"{result.num_failed} failed; {result.total_steps} optimizer steps"
    )
    for objective, importance in result.importances.items():
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in importance.items())
        out.print(f"importance ({objective}): {ranked}")
    for name, path in result.files.items():
        with contextlib.suppress(ValueError):
            out.print(f"{name}: {path}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
