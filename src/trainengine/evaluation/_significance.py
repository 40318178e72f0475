"""Is a promotion candidate really better than the model it replaces? A paired bootstrap on the same data.

Both models predict the same examples once; :func:`~trainengine.evaluation.paired_bootstrap`
then scores both on the same resamples, so what the two models share (easy and hard examples)
cancels out of their difference. The one-sided p-value is the share of resamples in which the
candidate is not better; the candidate wins at confidence ``c`` when ``p < 1 - c``.

:class:`SignificanceCheck` is what :meth:`trainengine.registry.ModelRegistry.promote_model` takes
as ``significance=``: given two registered versions it loads both, evaluates them on the
candidate's validation data (or the data you give) and returns a :class:`SignificanceResult`.
The registry never imports this package (same layer); it only calls the object.

Example:
    >>> import torch
    >>> from trainengine.evaluation import compare_models
    >>> from trainengine.tasks import TaskSpec
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(400, 2, generator=g)
    >>> data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    >>> def linear(w0: float, w1: float) -> torch.nn.Module:
    ...     net = torch.nn.Linear(2, 2)
    ...     with torch.no_grad():
    ...         net.weight.copy_(torch.tensor([[-w0, -w1], [w0, w1]]))
    ...         net.bias.zero_()
    ...     return net
    >>> task = TaskSpec.classification("synthetic", 2)
    >>> result = compare_models(linear(5.0, 0.0), linear(5.0, 5.0), data, task)  # x0 decides the label
    >>> result.metric, result.significant
    ('accuracy', True)
    >>> compare_models(linear(5.0, 5.0), linear(5.0, 0.0), data, task).significant
    False
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from trainengine.config import TrainingConfig
from trainengine.errors import TrainEngineError
from trainengine.evaluation._bootstrap import PairedBootstrapResult, paired_bootstrap
from trainengine.evaluation._metrics import get_weighted_metric, higher_is_better, metrics_for
from trainengine.evaluation._predict import predict, task_kind
from trainengine.tasks import TaskSpec

__all__ = ["HEADLINE_METRICS", "SignificanceResult", "SignificanceCheck", "compare_models", "headline_metric"]

# What "better" means when no metric is named: the metric people quote for the task.
HEADLINE_METRICS: dict[str, str] = {
    "classification": "accuracy",
    "vision": "accuracy",
    "regression": "mse",
    "language_modeling": "loss",
}


def headline_metric(task_type: str) -> str:
    """The metric a significance test compares when none is named.

    Example:
        >>> headline_metric("regression")
        'mse'
    """
    try:
        return HEADLINE_METRICS[task_type]
    except KeyError:
        raise TrainEngineError(
            f"no headline metric for task type {task_type!r} — known: {', '.join(HEADLINE_METRICS)}; name one with "
            "metric="
        ) from None


@dataclass(frozen=True)
class SignificanceResult:
    """The paired comparison of a candidate with the model it would replace.

    Attributes:
        metric: The metric compared (``accuracy``, ``mse``, ...).
        candidate: The candidate's label (a model id such as ``"digits:1.1.0"``).
        holder: The compared model's label (the alias's current holder).
        n: Examples both models were evaluated on.
        test: The :class:`~trainengine.evaluation.PairedBootstrapResult`: both values with their
            intervals (same resamples), the difference ``candidate - holder``, its interval and the
            one-sided p-value.
    """

    metric: str
    candidate: str
    holder: str
    n: int
    test: PairedBootstrapResult

    @property
    def significant(self) -> bool:
        """True when the candidate is better at the test's confidence (``p < 1 - confidence``)."""
        return self.test.is_significant()

    @property
    def p_value(self) -> float:
        """Share of paired resamples in which the candidate is not better (one-sided)."""
        return self.test.p_value

    def explain(self) -> str:
        """One line: the verdict, both values with their intervals, the difference and the p-value.

        Example:
            ``digits:1.1.0 is not significantly better than digits:1.0.0 at 95% confidence on accuracy
            (higher is better, n = 100, 1000 paired resamples): candidate 0.41 [0.32, 0.51], holder
            0.41 [0.32, 0.51], difference +0 [+0, +0], p = 1``
        """
        t = self.test
        verdict = "is significantly better than" if self.significant else "is not significantly better than"
        direction = "higher" if t.higher_is_better else "lower"
        return (
            f"{self.candidate} {verdict} {self.holder} at {_percent(t.confidence)} confidence on {self.metric} "
            f"({direction} is better, n = {self.n}, {t.candidate.n_bootstrap} paired resamples): "
            f"candidate {t.candidate}, holder {t.baseline}, "
            f"difference {t.delta:+.4g} [{t.ci[0]:+.4g}, {t.ci[1]:+.4g}], p = {t.p_value:.4g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what the alias history keeps (``details["significance"]``).

        Keys: ``metric, higher_is_better, candidate, holder, n, n_bootstrap, confidence,
        candidate_value, candidate_ci, holder_value, holder_ci, delta, delta_ci, p_value, significant``.
        """
        t = self.test
        return {
            "metric": self.metric,
            "higher_is_better": t.higher_is_better,
            "candidate": self.candidate,
            "holder": self.holder,
            "n": self.n,
            "n_bootstrap": t.candidate.n_bootstrap,
            "confidence": t.confidence,
            "candidate_value": _finite(t.candidate.estimate),
            "candidate_ci": [_finite(t.candidate.low), _finite(t.candidate.high)],
            "holder_value": _finite(t.baseline.estimate),
            "holder_ci": [_finite(t.baseline.low), _finite(t.baseline.high)],
            "delta": _finite(t.delta),
            "delta_ci": [_finite(t.ci[0]), _finite(t.ci[1])],
            "p_value": t.p_value,
            "significant": self.significant,
        }


def _percent(confidence: float) -> str:
    return f"{confidence * 100:.4g}%"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None  # JSON has no NaN / inf


def _resolve_metric(metric: str | None, task_spec: TaskSpec, arrays: tuple[np.ndarray, ...]) -> str:
    kind = task_kind(task_spec)
    name = metric or headline_metric(kind)
    get_weighted_metric(name)  # an unknown name lists the available ones
    usable = metrics_for(kind, *arrays)
    if name not in usable:
        raise TrainEngineError(
            f"metric {name!r} cannot compare {task_spec.task_type} models on this data — usable: {', '.join(usable)}"
        )
    return name


def compare_models(
    candidate: nn.Module,
    holder: nn.Module,
    data: Any,
    task_spec: TaskSpec,
    *,
    metric: str | None = None,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    names: tuple[str, str] = ("candidate", "holder"),
    target_mean: float | None = None,
    target_std: float | None = None,
) -> SignificanceResult:
    """Evaluate two models on the same data and test whether the candidate is better (paired bootstrap).

    Args:
        candidate: The model that would be promoted.
        holder: The model it would replace.
        data: The evaluation examples (a dataset :func:`~trainengine.evaluation.predict` accepts);
            both models see the same examples in the same order.
        task_spec: The task both models solve.
        metric: A built-in metric name (``list_metrics()``); default: the task's headline metric
            (:data:`HEADLINE_METRICS`). Its direction (higher / lower is better) is the metric's own.
        confidence: One-sided confidence: significant when ``p < 1 - confidence``; also the
            coverage of the reported intervals.
        n_bootstrap: Paired resamples.
        seed: Resampling seed (same seed, same verdict).
        batch_size: Examples per forward pass.
        device: Where the models run.
        names: Labels of the two models in :meth:`SignificanceResult.explain`.
        target_mean: Regression on standardised targets: the train target mean, so values are
            reported in the data's own units (as :func:`~trainengine.evaluation.predict`).
        target_std: Regression: the train target standard deviation.

    Returns:
        A :class:`SignificanceResult`.

    Raises:
        TrainEngineError: an unknown or unusable metric, or bad bootstrap options.
    """
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "device": device,
        "target_mean": target_mean,
        "target_std": target_std,
    }
    ours = predict(candidate, data, task_spec, **options).arrays
    theirs = predict(holder, data, task_spec, **options).arrays
    name = _resolve_metric(metric, task_spec, ours)
    test = paired_bootstrap(
        name,
        ours,
        theirs,
        higher_is_better=higher_is_better(name),
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
    )
    return SignificanceResult(metric=name, candidate=names[0], holder=names[1], n=len(ours[0]), test=test)


@dataclass
class SignificanceCheck:
    """The significance test of a promotion: ``ModelRegistry.promote_model(..., significance=SignificanceCheck())``.

    Called with the candidate's and the holder's :class:`~trainengine.registry.ModelRecord` and the
    alias's rule (:class:`~trainengine.registry.SignificanceRule`), it loads both models (hashes
    checked), evaluates them on the same data and returns a :class:`SignificanceResult`. Settings
    given here win over the rule's; those left None come from it.

    Args:
        data: The evaluation data: None = the validation split of the candidate's training config
            (its built-in data set or files, split as in training); a list of files (or one path)
            = those files read with the candidate's data settings and fitted preprocessing (the
            model must have been trained on files); or a dataset :func:`predict` accepts.
        task_spec: The task; default: the one the candidate's checkpoint, run or bundle recorded.
        metric: Metric compared; None = the rule's, else the task's headline metric.
        confidence: One-sided confidence; None = the rule's (0.95 by default).
        n_bootstrap: Paired resamples; None = the rule's (1000 by default).
        seed: Resampling seed.
        batch_size: Examples per forward pass.
        device: Where the models run.

    Attributes:
        results: Every :class:`SignificanceResult` this check produced, newest last (the CLI
            prints the last one after a promotion).

    Example:
        ``registry.promote_model("digits:1.1.0", "production", significance=SignificanceCheck(confidence=0.99))``
    """

    data: Any = None
    task_spec: TaskSpec | None = None
    metric: str | None = None
    confidence: float | None = None
    n_bootstrap: int | None = None
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.results: list[SignificanceResult] = []

    def __call__(self, candidate: Any, holder: Any, rule: Any = None) -> SignificanceResult:
        """Compare two registered versions (``ModelRecord``) under ``rule`` (a ``SignificanceRule`` or None)."""
        task = self.task_spec or task_of(candidate)
        holder_task = None if self.task_spec is not None else _recorded_task(holder)
        if holder_task is not None and (
            task_kind(holder_task) != task_kind(task) or holder_task.num_classes != task.num_classes
        ):
            raise TrainEngineError(
                f"cannot compare {candidate.model_id} with {holder.model_id}: they solve different tasks "
                f"({task.task_type}, {task.num_classes} classes vs {holder_task.task_type}, "
                f"{holder_task.num_classes} classes)"
            )
        data, scaling = self._data(candidate, task)
        result = compare_models(
            candidate.load(map_location=self.device),
            holder.load(map_location=self.device),
            data,
            task,
            metric=self.metric or getattr(rule, "metric", None),
            confidence=_pick(self.confidence, getattr(rule, "confidence", None), 0.95),
            n_bootstrap=int(_pick(self.n_bootstrap, getattr(rule, "n_bootstrap", None), 1000)),
            seed=self.seed,
            batch_size=self.batch_size,
            device=self.device,
            names=(candidate.model_id, holder.model_id),
            **scaling,
        )
        self.results.append(result)
        return result

    def _data(self, candidate: Any, task: TaskSpec) -> tuple[Any, dict[str, float | None]]:
        """The evaluation data and, for standardised regression targets, the scaling back to data units."""
        files = _as_files(self.data)
        if self.data is not None and files is None:
            return self.data, {}  # a dataset
        if not candidate.config:
            raise TrainEngineError(
                f"{candidate.model_id} records no training config, so its validation data is unknown; pass the "
                "evaluation data (SignificanceCheck(data=...) or --data FILE)"
            )
        config = TrainingConfig.from_dict(candidate.config)
        if files is not None:
            if config.data.train_file is None:
                raise TrainEngineError(
                    f"--data files need a model trained on files (data.train_file), whose preprocessing they are "
                    f"read with; {candidate.model_id} was trained on the built-in data set {config.data.dataset!r} "
                    "— leave --data out to compare on its validation split"
                )
            config.data.val_file = [str(f) for f in files]
        from trainengine.engine._build import load_data_for

        splits = load_data_for(config, task)
        if splits.val is None or (isinstance(splits.val, Sized) and len(splits.val) == 0):
            raise TrainEngineError(
                f"the training config of {candidate.model_id} gives no validation data; pass data= / --data FILE"
            )
        return splits.val, {"target_mean": splits.info.target_mean, "target_std": splits.info.target_std}


def _pick(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _as_files(data: Any) -> list[Path] | None:
    if isinstance(data, (str, os.PathLike)):
        return [Path(data)]
    if isinstance(data, Sequence) and data and all(isinstance(d, (str, os.PathLike)) for d in data):
        return [Path(d) for d in data]
    return None


def _recorded_task(record: Any) -> TaskSpec | None:
    """The task a registered artifact recorded: checkpoint metadata, run.json or a bundle's task_spec.json."""
    fetch = getattr(record, "fetch", None)
    if callable(fetch):
        fetch()  # an artifact of a URL store is read from its (verified) local copy
    path, kind = Path(record.artifact_path), record.artifact_kind
    task: Any = None
    if kind == "checkpoint":
        from trainengine.checkpoint import read_metadata

        task = read_metadata(path).extra.get("task")
    elif kind == "run" and (path / "run.json").is_file():
        task = json.loads((path / "run.json").read_text(encoding="utf-8")).get("task")
    elif kind == "bundle" and (path / "task_spec.json").is_file():
        task = json.loads((path / "task_spec.json").read_text(encoding="utf-8"))
    return TaskSpec.from_dict(task) if isinstance(task, dict) and task else None


def task_of(record: Any) -> TaskSpec:
    """The task of a registered version: what its artifact recorded, else what its training config says.

    Raises:
        TrainEngineError: neither says (a bare weights file registered without a config).
    """
    task = _recorded_task(record)
    if task is not None:
        return task
    if record.config:
        config = TrainingConfig.from_dict(record.config)
        if config.data.dataset is not None:
            from trainengine.engine._build import build_task

            return build_task(config)
    raise TrainEngineError(
        f"{record.model_id} records no task (a {record.artifact_kind} artifact without one); pass "
        "SignificanceCheck(task_spec=...) with the evaluation data"
    )
