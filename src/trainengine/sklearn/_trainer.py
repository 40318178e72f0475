"""``SklearnTrainer``: a scikit-learn estimator or Pipeline trained like any trainengine model.

``train()`` runs k-fold cross-validation (``StratifiedKFold`` for classification, ``KFold`` for
regression, shuffled with ``training.seed``) as the child runs of a parent run, fits the pipeline
on the whole training data, evaluates it on the validation / test data with
``trainengine.evaluation`` (the same ``eval_metrics.json``), and saves it as ``model.skops``
(plus ``model.onnx`` when skl2onnx converts it and onnxruntime agrees). The run directory::

    <output_dir>/<experiment>/<run_id>/       the run (a parent run, group_kind "cv")
        config.yaml                          the run's config (TrainingConfig.load reads it)
        run.json                             status, git, versions, task, model (class, steps, params),
                                             data (rows, columns, fingerprint, files), group (k, splitter,
                                             folds), results
        logs.jsonl                           start, one "cv" record per fold, "fit", "eval", end
        cv_summary.json                      every metric over the folds: mean, std, t-interval, values
        fold-0/ ... fold-<k-1>/              one ordinary run per fold (run.json, config.yaml, logs.jsonl)
        eval/eval_metrics.json               the validation data's report (eval/test/ for test data)
        model/                               model.skops, model.onnx, sklearn_model.json, manifest.json

In the ExperimentDB the run is a row with ``group_kind`` ``cv`` whose config holds a ``sklearn``
section (estimator, steps, flattened parameters) and whose metrics are each fold metric's
``/mean`` and ``/std``, the validation / test metrics and the fit times; each fold is a child row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from trainengine.data._folds import make_folds
from trainengine.errors import ConfigError, DataError, TrainEngineError
from trainengine.sklearn._data import TabularData, resolve_data
from trainengine.sklearn._evaluate import evaluate_estimator, fold_metrics, predictions_of
from trainengine.sklearn._params import describe_estimator, estimator_params, seed_estimator, versions

if TYPE_CHECKING:
    from trainengine.config import TrainingConfig
    from trainengine.tasks import TaskSpec
    from trainengine.tracking._db import RunStatus

__all__ = ["SklearnTrainer", "Problem", "fit_and_score", "MODEL_DIR", "MODEL_FORMAT", "MODEL_INFO"]

logger = logging.getLogger("trainengine")

MODEL_DIR = "model"  # the run's saved model: what a registry version or an export bundle takes
MODEL_INFO = "sklearn_model.json"
MODEL_FORMAT = "trainengine-sklearn"
_MODEL_FORMAT_VERSION = 1


def _is_interrupt(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt)


def resolve_task_type(task: Any, estimator: Any, y: np.ndarray, config: TrainingConfig) -> str:
    """``classification`` or ``regression``: the given task, else the estimator's kind, else the targets'.

    Raises:
        ConfigError: an unknown task, or one the estimator contradicts (a regressor for classification).
    """
    from sklearn.base import is_classifier, is_regressor

    from trainengine.tasks import TaskSpec

    given = task.task_type if isinstance(task, TaskSpec) else task
    if given is None and config.data.task in ("classification", "regression"):
        given = config.data.task
    if given is not None and given not in ("classification", "regression"):
        raise ConfigError(f"task {given!r}: a scikit-learn run is classification or regression")
    natural = "classification" if is_classifier(estimator) else "regression" if is_regressor(estimator) else None
    if given is not None and natural is not None and given != natural:
        kind = "classifier" if natural == "classification" else "regressor"
        raise ConfigError(
            f"task {given!r} but {type(estimator).__name__} is a {kind}; give task={natural!r} or another estimator"
        )
    if given is not None:
        return str(given)
    if natural is not None:
        return natural
    return "regression" if np.asarray(y).dtype.kind == "f" else "classification"


def _classes_of(y: np.ndarray) -> list[Any]:
    values = np.unique(y.astype(str) if y.dtype == object else y)
    return [v.item() if hasattr(v, "item") else v for v in values]


def _monitor(config: TrainingConfig, spec: TaskSpec) -> tuple[str, str]:
    """The monitored metric (``val/accuracy``) and ``min`` / ``max``.

    Raises:
        ConfigError: a metric a fold does not report (checked before anything is fitted).
    """
    from trainengine.engine._setup import canonical_metric
    from trainengine.evaluation import higher_is_better
    from trainengine.evaluation._metrics import _BY_TASK
    from trainengine.tasks import METRIC_MODES

    t = config.training
    monitor = canonical_metric(t.monitor or spec.monitor)
    reported = ["val/loss", *(f"val/{m}" for m in _BY_TASK[spec.task_type])]
    if monitor not in reported:
        raise ConfigError(
            f"training.monitor {monitor!r} is not a metric of a scikit-learn {spec.task_type} run — use one of: "
            f"{', '.join(reported)}"
        )
    if t.monitor_mode != "auto":
        return monitor, t.monitor_mode
    metric = monitor.split("/", 1)[1]
    if metric in METRIC_MODES:
        return monitor, METRIC_MODES[metric]
    return monitor, "max" if higher_is_better(metric) else "min"


def _jsonable_classes(classes: Sequence[Any] | None) -> list[Any] | None:
    if classes is None:
        return None
    return [c if isinstance(c, (str, int, float, bool)) else str(c) for c in classes]


@dataclasses.dataclass
class Problem:
    """What a scikit-learn run works on, decided before anything is fitted (:meth:`SklearnTrainer.prepare`).

    Attributes:
        train: the training data.
        others: the validation / test data by split name.
        spec: the task (classification with the number of classes, or regression).
        classes: the class labels in order (classification), else None.
        monitor: the headline metric (``val/accuracy``) and ``mode`` its direction.
        template: the estimator, cloned and seeded: every fold and the final fit clone it.
        params: its flattened parameters.
        seeded: the ``random_state`` keys set to ``training.seed``.
        folds: ``(train_indices, val_indices)`` per fold; ``how`` their splitter and sizes.
    """

    train: TabularData
    others: dict[str, TabularData]
    spec: TaskSpec
    classes: list[Any] | None
    monitor: str
    mode: str
    template: Any
    params: dict[str, Any]
    seeded: list[str]
    folds: list[tuple[np.ndarray, np.ndarray]]
    how: dict[str, Any]

    @property
    def task_type(self) -> str:
        return self.spec.task_type


@dataclasses.dataclass
class _Fold:
    """One fold's outcome (what cv_summary.json lists per child)."""

    index: int
    metrics: dict[str, float]
    fit_time_s: float
    num_train: int
    num_val: int
    run_dir: str | None = None
    db_run_id: int | None = None

    def child(self) -> dict[str, Any]:
        return {
            "name": f"fold-{self.index}",
            "fold": self.index,
            "status": "completed",
            "run_dir": self.run_dir,
            "db_run_id": self.db_run_id,
            "num_train": self.num_train,
            "num_val": self.num_val,
            "metrics": {**self.metrics, "fit_time_s": self.fit_time_s},
        }


class SklearnTrainer:
    """Train a scikit-learn estimator or Pipeline with cross-validation, evaluation, tracking and a safe saved model.

    A sibling of :class:`trainengine.Trainer`: the same config (tracking, seed, data columns), the
    same results keys where they make sense, the same run directory and ExperimentDB rows.

    Args:
        estimator: an unfitted estimator or Pipeline (it is cloned; the fitted one is
            :attr:`estimator_`).
        task: a :class:`~trainengine.TaskSpec`, ``"classification"`` / ``"regression"``, or None
            (the estimator's kind: a classifier or a regressor).
        config: the TrainingConfig (``tracking`` for the run directory and database,
            ``training.seed`` for the folds and the estimator's ``random_state``,
            ``training.monitor`` for the headline metric, ``data`` for files and columns);
            default ``TrainingConfig()``.
        cv: the number of folds (>= 2).
        n_bootstrap: bootstrap resamples of the evaluation intervals.
        confidence: coverage of the intervals (evaluation and the CV t-interval).
        onnx: also save ``model.onnx`` when the pipeline converts (and matches scikit-learn).
        seed_random_state: set every ``random_state`` parameter left at None to ``training.seed``.
        fold_runs: record each fold as a child run (its own folder and ExperimentDB row); False
            records the folds in the parent's run.json and cv_summary.json only.

    Example:
        >>> import tempfile
        >>> from sklearn.datasets import load_breast_cancer
        >>> from sklearn.linear_model import LogisticRegression
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> from trainengine import TrainingConfigBuilder
        >>> config = TrainingConfigBuilder().with_tracking(output_dir=tempfile.mkdtemp(), progress="off").build()
        >>> X, y = load_breast_cancer(return_X_y=True, as_frame=True)
        >>> trainer = SklearnTrainer(make_pipeline(StandardScaler(), LogisticRegression()), config=config, cv=3)
        >>> results = trainer.train(X[:400], y[:400], val_data=(X[400:], y[400:]))
        >>> results["best_metric_name"], results["best_metric"] > 0.9, results["final_metrics"]["val/accuracy"] > 0.9
        ('val/accuracy', True, True)
        >>> sorted(p.name for p in Path(results["run_dir"]).iterdir() if not p.name.startswith("."))[:5]
        ['config.yaml', 'cv_summary.json', 'eval', 'fold-0', 'fold-1']
    """

    def __init__(
        self,
        estimator: Any,
        task: TaskSpec | str | None = None,
        config: TrainingConfig | None = None,
        *,
        cv: int = 5,
        n_bootstrap: int = 1000,
        confidence: float = 0.95,
        onnx: bool = True,
        seed_random_state: bool = True,
        fold_runs: bool = True,
    ) -> None:
        from trainengine.config import TrainingConfig

        if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
            raise ConfigError(
                f"SklearnTrainer needs a scikit-learn estimator or Pipeline (fit, get_params), got "
                f"{type(estimator).__name__}"
            )
        # What the run is given (fixed) ...
        self.estimator = estimator
        self.task = task
        self.config: TrainingConfig = config if config is not None else TrainingConfig()
        self.cv = cv
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.onnx = onnx
        self.seed_random_state = seed_random_state
        self.fold_runs = fold_runs
        # ... and what train() produces.
        self.estimator_: Any = None
        self.task_spec: TaskSpec | None = None
        self.classes_: list[Any] | None = None
        self.run_dir: Path | None = None
        self.history: dict[str, list[dict[str, Any]]] = {"cv": [], "val": [], "test": []}
        self.reports: dict[str, Any] = {}
        self.results: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------ set-up
    def _task_spec(self, task_type: str, name: str, classes: list[Any] | None) -> TaskSpec:
        from trainengine.tasks import TaskSpec

        if isinstance(self.task, TaskSpec):
            spec = self.task
            if task_type == "classification" and spec.num_classes != len(classes or []):
                spec = dataclasses.replace(spec, num_classes=len(classes or []))
            return spec
        if task_type == "classification":
            if classes is None or len(classes) < 2:
                raise DataError(
                    f"classification needs at least 2 classes in the training data, got {len(classes or [])}"
                )
            return TaskSpec.classification(name, num_classes=len(classes))
        return TaskSpec.regression(name)

    def _child_config(self, parent: Path, name: str, db_location: str | None) -> TrainingConfig:
        from trainengine.config import TrainingConfig

        data = self.config.to_dict()
        data["tracking"].update(
            output_dir=str(parent.parent),
            experiment_name=parent.name,
            run_name=name,
            db_url=db_location,
            experiment_db=db_location is not None,
        )
        return TrainingConfig.from_dict(data)

    def _echo(self, text: str) -> None:
        logger.info(text)
        if self.config.tracking.progress != "off":
            print(text, flush=True)

    # ------------------------------------------------------------------------------------------ train
    def train(
        self,
        data: Any = None,
        y: Any = None,
        *,
        target: str | None = None,
        val_data: Any = None,
        test_data: Any = None,
        segment_key: str | None = None,
    ) -> dict[str, Any]:
        """Cross-validate, fit on all the training data, evaluate, save; returns the results dict.

        Args:
            data: the training data: a DataFrame (with the target column), features with ``y``,
                ``(X, y)``, a scikit-learn ``Bunch``, files (a path, glob or list), or None for the
                config's ``data.train_file``.
            y: the targets when ``data`` holds features only.
            target: the target column of a table (default ``data.label_column``, else ``label`` /
                ``target`` / ``y`` / ...).
            val_data: validation data in any of those forms (default ``data.val_file``): the
                fitted pipeline is evaluated on it (``eval/eval_metrics.json``, ``final_metrics``).
            test_data: test data (default ``data.test_file``): evaluated too
                (``eval/test/eval_metrics.json``, ``test_metrics``).
            segment_key: a column of the evaluated data to break the metrics down by.

        Returns:
            ``best_metric`` / ``best_metric_name`` / ``best_metric_std`` / ``best_metric_ci`` (the
            monitored metric's mean over the folds), ``final_metrics`` (the validation data's
            metrics, else the folds' means; ``final_metrics_source`` says which),
            ``test_metrics``, ``cv`` (folds, splitter, each metric's mean and std), ``params``,
            ``fit_time_s`` (the final fit), ``cv_fit_time_s``, ``train_time_s``, ``wall_time_s``,
            ``run_dir``, ``model_path`` / ``onnx_path`` (None when not saved) and ``onnx_error``,
            ``eval_metrics_path``, ``history`` (``cv`` / ``val`` / ``test`` records); the loop keys
            of a torch run (``steps``, ``epochs``, checkpoints, ...) are present and None.

        Raises:
            DataError: unusable data (no target, too few rows per class for the folds, ...).
            ConfigError: a task or monitored metric that does not fit the estimator.
        """
        wall_start = time.perf_counter()
        problem = self.prepare(data, y, target=target, val_data=val_data, test_data=test_data)
        return _Session(self, problem).run(wall_start, segment_key)

    def prepare(
        self, data: Any = None, y: Any = None, *, target: str | None = None, val_data: Any = None, test_data: Any = None
    ) -> Problem:
        """Everything ``train()`` decides before fitting: the data, the task, the classes, the monitored
        metric, the seeded estimator and the folds (:func:`~trainengine.sklearn.tune_pipeline` shares it).

        Raises:
            DataError, ConfigError: as :meth:`train`.
        """
        from sklearn.base import clone

        cfg = self.config
        train = resolve_data(
            data,
            y,
            split="train",
            target=target,
            data_section=cfg.data,
            max_rows=cfg.data.max_train_samples,
        )
        if train is None:
            raise DataError(
                "no training data: pass data (a DataFrame, (X, y), files) to train() or set data.train_file"
            )
        others = {}
        for split, given in (("val", val_data), ("test", test_data)):
            resolved = resolve_data(
                given,
                split=split,  # type: ignore[arg-type]  # "val" / "test": the literal of the loop
                target=target or train.target,
                data_section=cfg.data,
                feature_columns=train.columns,
                max_rows=cfg.data.max_val_samples if split == "val" else None,
            )
            if resolved is not None:
                others[split] = resolved
        task_type = resolve_task_type(self.task, self.estimator, train.y, cfg)
        classes = _classes_of(train.y) if task_type == "classification" else None
        spec = self._task_spec(task_type, train.name, classes)
        monitor, mode = _monitor(cfg, spec)
        self.task_spec, self.classes_ = spec, classes
        template = clone(self.estimator)
        seeded = seed_estimator(template, cfg.training.seed) if self.seed_random_state else []
        folds, how = make_folds(len(train.y), self.cv, task_type, cfg.training.seed, train.y)
        params = estimator_params(template)
        return Problem(train, others, spec, classes, monitor, mode, template, params, seeded, folds, how)

    # ------------------------------------------------------------------------------------------ evaluate
    def evaluate(
        self,
        data: Any,
        y: Any = None,
        *,
        target: str | None = None,
        segment_key: str | None = None,
        output_dir: str | Path | None = None,
    ) -> Any:
        """Evaluate the fitted pipeline on other data: a :class:`trainengine.evaluation.EvaluationReport`.

        Raises:
            TrainEngineError: called before :meth:`train`.
        """
        if self.estimator_ is None or self.task_spec is None:
            raise TrainEngineError("SklearnTrainer.evaluate() needs a trained pipeline: call train() first")
        columns = list(self.estimator_.feature_names_in_) if hasattr(self.estimator_, "feature_names_in_") else None
        resolved = resolve_data(
            data, y, split="test", target=target, data_section=self.config.data, feature_columns=columns
        )
        assert resolved is not None  # data was given
        return evaluate_estimator(
            self.estimator_,
            resolved.X,
            resolved.y,
            self.task_spec.task_type,
            classes=self.classes_,
            segment_key=segment_key,
            n_bootstrap=self.n_bootstrap,
            seed=self.config.training.seed,
            confidence=self.confidence,
            output_dir=output_dir,
            data_fingerprint=resolved.fingerprint,
        )


class _Session:
    """One ``train()`` call: the records it writes and the order it writes them in."""

    def __init__(self, trainer: SklearnTrainer, problem: Problem) -> None:
        self.t = trainer
        self.config = trainer.config
        self.train = problem.train
        self.others = problem.others
        self.spec = problem.spec
        self.task_type = problem.task_type
        self.classes = problem.classes
        self.monitor, self.mode = problem.monitor, problem.mode
        self.template = problem.template
        self.params = problem.params
        self.seeded = problem.seeded
        self.folds, self.how = problem.folds, problem.how
        self.sklearn_section = {**describe_estimator(self.template), "params": self.params}
        self.parent: Any = None  # ParentRun, when the run has a directory
        self.path: Path | None = None
        self.tracker: Any = None
        self.db_location: str | None = None
        self.fold_results: list[_Fold] = []
        self.children: list[dict[str, Any]] = []
        self.onnx_export: Any = None  # the ONNX conversion's outcome (None: not tried)
        self.model_info: dict[str, Any] = {}  # sklearn_model.json

    # -- records ---------------------------------------------------------------------------------------
    def _facts(self) -> dict[str, Any]:
        data = {split: d.record for split, d in {"train": self.train, **self.others}.items()}
        return {
            "task": self.spec.to_dict(),
            "classes": _jsonable_classes(self.classes),
            "model": {
                **describe_estimator(self.template),
                "framework": "scikit-learn",
                "params": self.params,
                "seeded_random_state": self.seeded,
                "num_parameters": None,
            },
            "data": {
                "train_fingerprint": self.train.fingerprint,
                "val_fingerprint": self.others["val"].fingerprint if "val" in self.others else None,
                "num_train_samples": len(self.train),
                "num_val_samples": len(self.others["val"]) if "val" in self.others else None,
                "splits": data,
            },
            "sklearn_versions": versions(),
        }

    def _open(self) -> None:
        from trainengine._io import atomic_write_text, validate_name
        from trainengine.provenance import host_info
        from trainengine.sklearn._records import RecordedConfig, config_text, make_run_dir
        from trainengine.tracking import new_run_id
        from trainengine.tracking._parent import ParentRun, experiment_db_location

        tr = self.config.tracking
        if not tr.write_run_dir:
            return
        experiment = validate_name(tr.experiment_name, "tracking.experiment_name")
        name = validate_name(tr.run_name, "tracking.run_name") if tr.run_name else new_run_id()
        self.path = make_run_dir(Path(tr.output_dir) / experiment, name)
        self.db_location = experiment_db_location(self.config)
        recorded = RecordedConfig(self.config, self.sklearn_section)
        self.parent = ParentRun(self.path, "cv", cast("TrainingConfig", recorded))
        header = (
            f"# Config of the scikit-learn run {experiment}/{name} ({type(self.template).__name__}, {self.t.cv}-fold "
            "CV). Re-run: SklearnTrainer(estimator, config=TrainingConfig.load(this file)).train(...)\n"
        )
        group = {
            "k": self.t.cv,
            "planned": self.t.cv if self.t.fold_runs else 0,
            "num_children": 0,
            "children": [],
            "summary": None,
            "splitter": self.how["splitter"],
            "shuffle": self.how["shuffle"],
            "fold_sizes": self.how["fold_sizes"],
        }
        self.parent.start(group, header)
        # ParentRun wrote the recorded config (with its sklearn section, for the database); the file
        # is the plain config, so TrainingConfig.load (runs compare, a re-run) reads it.
        atomic_write_text(self.path / "config.yaml", config_text(self.config, header))
        self.parent.write(host=host_info(), **self._facts())
        self.t.run_dir = self.path
        if tr.backends:
            from trainengine.tracking import ExperimentTracker

            self.tracker = ExperimentTracker(
                tr.project,
                name,
                recorded.to_dict(),
                backend=list(tr.backends),
                log_dir=tr.output_dir,
                tags=list(tr.tags),
                notes=tr.notes,
                directory=self.path,
            )
        self._log({"type": "start", "run_id": name, "framework": "scikit-learn", "cv": self.t.cv})

    def _log(self, record: dict[str, Any]) -> None:
        from trainengine.sklearn._records import append_log

        if self.path is not None:
            append_log(self.path, record)

    def _track(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)

    def _record_children(self) -> None:
        if self.parent is not None and self.t.fold_runs:
            rows = [{k: c[k] for k in ("name", "status", "run_dir")} for c in self.children]
            self.parent.update_group(children=rows, num_children=len(rows))

    # -- the run ---------------------------------------------------------------------------------------
    def run(self, wall_start: float, segment_key: str | None) -> dict[str, Any]:
        try:
            self._open()
            results = self._run(wall_start, segment_key)
        except BaseException as exc:
            status: RunStatus = "interrupted" if _is_interrupt(exc) else "failed"
            failing = next((c["name"] for c in reversed(self.children) if c["status"] != "completed"), None)
            reason = f"{type(exc).__name__}: {exc}"
            self._log({"type": "end", "status": status, "error": reason})
            if self.tracker is not None:
                with contextlib.suppress(Exception):  # the run's own error is the one to report
                    self.tracker.finish(status)
            if self.parent is not None:
                self.parent.finish(status, error=f"{failing}: {reason}" if failing else reason)
            raise
        return results

    def _run(self, wall_start: float, segment_key: str | None) -> dict[str, Any]:
        from trainengine.evaluation import GroupSummary

        name = self.path.name if self.path is not None else "sklearn"
        experiment = self.path.parent.name if self.path is not None else self.config.tracking.experiment_name
        k = len(self.folds)
        oof: np.ndarray | None = None
        for i, (tr_idx, va_idx) in enumerate(self.folds):
            fold, p = self._fold(i, tr_idx, va_idx)
            if oof is None:
                oof = np.zeros((len(self.train), *p.outputs.shape[1:]), dtype=np.float64)
            oof[va_idx] = p.outputs
            self._echo_fold(fold, k)
        assert oof is not None  # k >= 2 folds ran
        summary = GroupSummary.from_children(
            "cv",
            name,
            [f.child() for f in self.fold_results],
            confidence=self.t.confidence,
            experiment=experiment,
            details=self.how,
        )
        if self.monitor not in summary.metrics:
            available = ", ".join(n for n in summary.metrics if n.startswith("val/"))
            raise ConfigError(
                f"training.monitor {self.monitor!r} is not a cross-validation metric — available: {available}"
            )
        if self.path is not None:
            summary.save(self.path)
            self.parent.update_group(summary=summary.filename)
        out_of_fold = predictions_of_oof(oof, self.train, self.task_type, self.classes)
        # The final model: the whole training data.
        from sklearn.base import clone

        final = clone(self.template)
        start = time.perf_counter()
        final.fit(self.train.X, self.train.y)
        fit_time = time.perf_counter() - start
        self.t.estimator_ = final
        self._log({"type": "fit", "num_train_samples": len(self.train), "fit_time_s": fit_time})
        saved = self._save(final, summary) if self.path is not None else {}
        evals: dict[str, dict[str, float]] = {}
        for split, d in self.others.items():
            out_dir = None
            if self.path is not None:
                out_dir = self.path / "eval" if split == "val" else self.path / "eval" / split
            report = evaluate_estimator(
                final,
                d.X,
                d.y,
                self.task_type,
                classes=self.classes,
                segment_key=segment_key if d.is_frame else None,
                threshold_predictions=out_of_fold,  # the folds' honest predictions, never the evaluated rows
                n_bootstrap=self.t.n_bootstrap,
                seed=self.config.training.seed,
                confidence=self.t.confidence,
                output_dir=out_dir,
                source=saved.get("model_path"),
                data_fingerprint=d.fingerprint,
            )
            self.t.reports[split] = report
            metrics = fold_metrics(report.predictions, split)
            evals[split] = metrics
            self.t.history[split].append({"split": split, **metrics})
            self._log({"type": "eval", "split": split, "step": k, **metrics})
            self._track(metrics, k)
            if out_dir is not None:
                saved[f"{split}_eval_metrics_path"] = str(out_dir / "eval_metrics.json")
        if self.path is not None and evals:
            self._write_model_metrics(summary, evals)
        results = self._results(summary, evals, saved, fit_time, wall_start)
        self.t.results = results
        self._finish(results, summary, evals, fit_time)
        return results

    def _fold(self, i: int, tr_idx: np.ndarray, va_idx: np.ndarray) -> tuple[_Fold, Any]:
        from sklearn.base import clone

        from trainengine.sklearn._records import RunRecord

        child: RunRecord | None = None
        name = f"fold-{i}"
        row = {"name": name, "status": "running", "run_dir": None}
        self.children.append(row)
        if self.path is not None and self.t.fold_runs:
            path = self.path / name
            path.mkdir()
            config = self.t._child_config(self.path, name, self.db_location)
            from trainengine.sklearn._records import RecordedConfig

            child = RunRecord(
                path,
                config,
                db_location=self.db_location,
                parent_db_run_id=self.parent.db_run_id,
                db_config=RecordedConfig(config, self.sklearn_section),
            )
            header = f"# Config of fold {i} of the scikit-learn run {self.path.parent.name}/{self.path.name}.\n"
            facts = self._facts()
            facts["data"] = {**facts["data"], "num_train_samples": len(tr_idx), "num_val_samples": len(va_idx)}
            cv = {k: self.how[k] for k in ("k", "splitter", "shuffle", "seed")}
            child.start({**facts, "fold": i, "cv": cv}, header)
            row["run_dir"] = str(path)
        self._record_children()
        try:
            model = clone(self.template)
            metrics, fit_time, p = fit_and_score(model, self.train, tr_idx, va_idx, self.task_type, self.classes)
        except BaseException as exc:
            row["status"] = "interrupted" if _is_interrupt(exc) else "failed"
            if child is not None:
                child.finish(cast("RunStatus", row["status"]), error=f"{type(exc).__name__}: {exc}")
            self._record_children()
            raise
        fold = _Fold(i, metrics, fit_time, len(tr_idx), len(va_idx), row["run_dir"])
        record = {"type": "cv", "fold": i, "step": i, **metrics, "fit_time_s": fit_time}
        if child is not None:
            child.log({"type": "eval", "step": 0, **metrics, "fit_time_s": fit_time})
            child.finish(
                "completed",
                results={
                    "best_metric_name": self.monitor,
                    "best_metric": metrics.get(self.monitor),
                    "final_metrics": metrics,
                    "fit_time_s": fit_time,
                    "steps": None,
                    "run_dir": str(child.path),
                },
                metrics={**metrics, "fit_time_s": fit_time},
            )
            fold.db_run_id = child.db_run_id
        row["status"] = "completed"
        self._record_children()
        self.fold_results.append(fold)
        self.t.history["cv"].append(record)
        self._log(record)
        self._track({f"cv/{k}": v for k, v in metrics.items()}, i)
        return fold, p

    def _echo_fold(self, fold: _Fold, k: int) -> None:
        value = fold.metrics.get(self.monitor)
        shown = f"{value:.4f}" if isinstance(value, float) else "-"
        self.t._echo(f"cv fold {fold.index + 1}/{k}: {self.monitor} {shown} (fit {fold.fit_time_s:.2f} s)")

    # -- the saved model ---------------------------------------------------------------------------------
    def _lineage(self) -> dict[str, Any]:
        facts = self.parent.facts if self.parent is not None else {}
        return {
            "run_id": facts.get("run_id"),
            "git_commit": (facts.get("git") or {}).get("commit"),
            "data_fingerprint": self.train.fingerprint,
            "checkpoint": None,
        }

    def _save(self, final: Any, summary: Any) -> dict[str, Any]:
        """model/: model.skops, model.onnx (when it converts and matches), sklearn_model.json, manifest.json."""
        from trainengine.sklearn._onnx import ONNX_FILE, convert_to_onnx
        from trainengine.sklearn._persist import SKOPS_FILE, UntrustedModelError, check_trusted, save_pipeline

        assert self.path is not None
        folder = self.path / MODEL_DIR
        folder.mkdir()
        model_path = save_pipeline(final, folder / SKOPS_FILE)
        self._save_reference_profile(folder)
        try:
            trusted, needs = check_trusted(model_path), None
        except UntrustedModelError as exc:
            # A pipeline with the user's own classes: saved all the same, loaded only with trusted=[...].
            trusted, needs = [], str(exc)
            logger.warning("%s", exc)
        onnx_path: Path | None = None
        export = None
        if self.t.onnx:
            sample = self.others["val"].X if "val" in self.others else self.train.X
            export = convert_to_onnx(final, sample, self.task_type)
            if export.model is not None:
                onnx_path = folder / ONNX_FILE
                onnx_path.write_bytes(export.model)
            saved = onnx_path is not None
            self._log({"type": "onnx", "saved": saved, "reason": export.reason, "parity": export.parity})
        self.onnx_export = export
        self.model_info = {
            "format": MODEL_FORMAT,
            "format_version": _MODEL_FORMAT_VERSION,
            "task_type": self.task_type,
            "task": self.spec.to_dict(),
            "classes": _jsonable_classes(self.classes),
            "target": self.train.target,
            "input": self.train.input_schema(),
            "estimator": self.sklearn_section,
            "skops": {"file": SKOPS_FILE, "trusted_types": trusted, "refused": needs},
            "onnx": export.record(ONNX_FILE if onnx_path is not None else None)
            if export is not None
            else {"file": None, "reason": "not requested (onnx=False)"},
            "metrics": self._registry_metrics(summary, {}),
            "lineage": self._lineage(),
            "versions": versions(),
        }
        self._write_model_files()
        return {
            "model_dir": str(folder),
            "model_path": str(model_path),
            "onnx_path": str(onnx_path) if onnx_path is not None else None,
            "onnx_error": export.reason if export is not None else None,
        }

    def _save_reference_profile(self, folder: Path) -> None:
        """model/reference_profile.json: the training data's profile, the drift reference of served bundles.

        Recorded now because the training data is not kept with the run: export copies this file.
        """
        from trainengine._io import atomic_write_json
        from trainengine.sklearn._bundle import REFERENCE_PROFILE, reference_profile

        try:
            profile = reference_profile(self.train, self.spec, self.classes)
        except (DataError, ValueError, TypeError) as exc:  # drift is then unmeasured, the model still saved
            logger.warning("no drift reference for the served model: the training data cannot be profiled (%s)", exc)
            return
        if profile is not None:
            atomic_write_json(folder / REFERENCE_PROFILE, profile)

    def _registry_metrics(self, summary: Any, evals: dict[str, dict[str, float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, stat in summary.metrics.items():
            if stat.mean is not None and name.startswith("val/"):
                out[f"cv/{name.split('/', 1)[1]}"] = float(stat.mean)
        for metrics in evals.values():
            out.update({k: v for k, v in metrics.items() if np.isfinite(v)})
        return out

    def _write_model_files(self) -> None:
        """sklearn_model.json, then manifest.json (last: a folder without it is incomplete)."""
        from datetime import UTC, datetime

        from trainengine._hashing import MANIFEST, bundle_files
        from trainengine._io import atomic_write_json
        from trainengine.sklearn._onnx import ONNX_FILE
        from trainengine.sklearn._persist import SKOPS_FILE

        assert self.path is not None
        folder = self.path / MODEL_DIR
        atomic_write_json(folder / MODEL_INFO, self.model_info)
        manifest = {
            "format": "sklearn",
            "format_version": _MODEL_FORMAT_VERSION,
            "name": self.path.name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "task_type": self.task_type,
            "model_info": MODEL_INFO,
            "formats": {"skops": SKOPS_FILE, **({"onnx": ONNX_FILE} if (folder / ONNX_FILE).is_file() else {})},
            "lineage": self._lineage(),
        }
        (folder / MANIFEST).unlink(missing_ok=True)
        manifest["files"] = bundle_files(folder)
        atomic_write_json(folder / MANIFEST, manifest)

    def _write_model_metrics(self, summary: Any, evals: dict[str, dict[str, float]]) -> None:
        self.model_info["metrics"] = self._registry_metrics(summary, evals)
        self._write_model_files()

    # -- results ---------------------------------------------------------------------------------------
    def _results(
        self,
        summary: Any,
        evals: dict[str, dict[str, float]],
        saved: dict[str, Any],
        fit_time: float,
        wall_start: float,
    ) -> dict[str, Any]:
        stat = summary.metrics[self.monitor]
        cv_fit = float(sum(f.fit_time_s for f in self.fold_results))
        means = {n: float(m.mean) for n, m in summary.metrics.items() if n.startswith("val/") and m.mean is not None}
        loss = summary.metrics.get("val/loss")
        return {
            "best_val_loss": None if loss is None else loss.mean,
            "best_metric": stat.mean,
            "best_metric_name": self.monitor,
            "best_metric_mode": self.mode,
            "best_metric_std": stat.std,
            "best_metric_ci": None if stat.ci is None else list(stat.ci),
            "best_step": None,
            "final_metrics": evals.get("val", means),
            "final_metrics_source": "validation" if "val" in evals else "cross_validation",
            **({"test_metrics": evals["test"]} if "test" in evals else {}),
            "cv": {
                "k": len(self.folds),
                "splitter": self.how["splitter"],
                "fold_sizes": self.how["fold_sizes"],
                "metrics": {
                    n: {"mean": m.mean, "std": m.std, "ci": None if m.ci is None else list(m.ci)}
                    for n, m in summary.metrics.items()
                },
            },
            "params": self.params,
            "estimator": type(self.template).__name__,
            "task_type": self.task_type,
            "classes": _jsonable_classes(self.classes),
            "history": self.t.history,
            "steps": None,
            "epochs": None,
            "stopped_early": False,
            "stop_reason": None,
            "run_dir": str(self.path) if self.path is not None else None,
            "model_dir": saved.get("model_dir"),
            "model_path": saved.get("model_path"),
            "onnx_path": saved.get("onnx_path"),
            "onnx_error": saved.get("onnx_error"),
            "eval_metrics_path": saved.get("val_eval_metrics_path"),
            "test_eval_metrics_path": saved.get("test_eval_metrics_path"),
            "num_train_samples": len(self.train),
            "num_features": int(self.train.X.shape[1]),
            "samples_per_second": len(self.train) / max(fit_time, 1e-9),
            "tokens_per_second": None,
            "mfu": None,
            "fit_time_s": fit_time,
            "cv_fit_time_s": cv_fit,
            "train_time_s": cv_fit + fit_time,
            "wall_time_s": time.perf_counter() - wall_start,
            "nonfinite_steps": 0,
            "num_parameters": None,
            "device": "cpu",
            "precision": None,
            "last_checkpoint": None,
            "best_checkpoint": None,
        }

    def _finish(
        self, results: dict[str, Any], summary: Any, evals: dict[str, dict[str, float]], fit_time: float
    ) -> None:
        from trainengine.tracking._run_dir import _jsonable

        metrics: dict[str, float] = {f"{n}/mean": m.mean for n, m in summary.metrics.items() if m.mean is not None}
        metrics.update({f"{n}/std": m.std for n, m in summary.metrics.items() if m.std is not None})
        for split_metrics in evals.values():
            metrics.update(split_metrics)
        metrics.update(fit_time_s=fit_time, train_time_s=results["train_time_s"])
        cv_means = {f"cv/{n}/mean": m.mean for n, m in summary.metrics.items() if m.mean is not None}
        self._track({"fit_time_s": fit_time, **cv_means}, len(self.folds))
        metric = self.monitor.split("/", 1)[1]
        spread = results["best_metric_std"] or 0.0
        parts = [f"{self.monitor} {results['best_metric']:.4f} ± {spread:.4f} over {len(self.folds)} folds"]
        parts += [f"{split} {values[f'{split}/{metric}']:.4f}" for split, values in evals.items()]
        if self.path is not None:
            parts.append(f"run {self.path}")
        self.t._echo("; ".join(parts))
        shown = {k: v for k, v in results.items() if k not in ("history", "params")}
        self._log({"type": "end", "status": "completed", **shown})
        if self.tracker is not None:
            self.tracker.finish("completed")
        if self.parent is not None:
            # run.json keeps the parameters once (model.params) and the per-fold records in logs.jsonl.
            summary_results = _jsonable({k: v for k, v in results.items() if k not in ("history", "params")})
            self.parent.finish("completed", results=summary_results, metrics=metrics)


def fit_and_score(
    estimator: Any,
    train: TabularData,
    tr_idx: np.ndarray,
    va_idx: np.ndarray,
    task_type: str,
    classes: list[Any] | None,
) -> tuple[dict[str, float], float, Any]:
    """Fit ``estimator`` on the rows ``tr_idx`` and score it on ``va_idx``.

    Returns:
        The ``val/...`` metrics, the fit's seconds, and the ``Predictions`` on ``va_idx``.
    """
    X_tr, y_tr = train.take(tr_idx)
    X_va, y_va = train.take(va_idx)
    start = time.perf_counter()
    estimator.fit(X_tr, y_tr)
    fit_time = time.perf_counter() - start
    p = predictions_of(estimator, X_va, y_va, task_type, classes)
    return fold_metrics(p), fit_time, p


def predictions_of_oof(oof: np.ndarray, train: TabularData, task_type: str, classes: list[Any] | None) -> Any:
    """The out-of-fold predictions of the cross-validation as ``Predictions`` (every training row
    predicted by the fold model that did not see it): an honest set to tune a threshold on."""
    from trainengine.evaluation import Predictions
    from trainengine.sklearn._evaluate import class_indices

    if task_type == "classification":
        assert classes is not None
        return Predictions("classification", oof, class_indices(train.y, classes))
    return Predictions("regression", oof, np.asarray(train.y, dtype=np.float64))
