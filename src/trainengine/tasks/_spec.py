"""TaskSpec: what a run learns (task type, classes, loss options, metrics to report and monitor)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard, get_args

import torch

from trainengine.errors import TaskError
from trainengine.tasks._losses import LossStrategy, get_loss_strategy
from trainengine.tasks._metrics import METRIC_MODES, SUPPORTED_METRICS, ComputeMetricsFn, TaskMetrics

__all__ = ["TaskSpec", "TaskType", "Modality", "Architecture", "MonitorMode"]

TaskType = Literal["language_modeling", "classification", "regression", "vision", "reward"]
Modality = Literal["tokens", "features", "image"]
Architecture = Literal["mlp", "cnn", "gpt", "reward_model"]
MonitorMode = Literal["min", "max"]

# Modality each task type's loss strategy implies (LM logits are [B, T, V] over tokens; vision
# means image classification). Classification and regression work on any input.
_REQUIRED_MODALITY: dict[str, str] = {"language_modeling": "tokens", "vision": "image", "reward": "tokens"}

# The natural task of each built-in data set (trainengine.data).
_DATASET_TASKS = ("diabetes", "digits", "pystdlib", "prm")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


_FUNCTION_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _function_ref(fn: Any) -> str | None:
    """``"module:qualname"`` of a function, the form a config and ``to_dict`` carry; None for a string."""
    if fn is None or isinstance(fn, str):
        return fn
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"


@dataclass(frozen=True)
class TaskSpec:
    """What a run learns: the task type, its loss options, and the metrics it reports.

    Build one with a factory (:meth:`language_modeling`, :meth:`classification`,
    :meth:`regression`, :meth:`vision_tiny`, :meth:`for_dataset`); construct directly only for
    custom combinations. Every field is validated on construction and all problems are reported
    in one :class:`TaskError`.

    Example:
        >>> spec = TaskSpec.classification(name="imdb", num_classes=2)
        >>> spec.monitor, spec.monitor_mode, spec.metrics
        ('val/accuracy', 'max', ('loss', 'accuracy'))
        >>> TaskSpec.from_dict(spec.to_dict()) == spec
        True
    """

    name: str
    """Short task name used in run names and logs, e.g. ``"digits"``."""
    task_type: TaskType
    """Selects the loss strategy and metrics."""
    num_classes: int | None
    """Number of classes (classification/vision, >= 2); vocab size or None for LM; None for regression."""
    modality: Modality
    """Input kind: token ids, feature vectors or images."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing in [0, 1); must be 0 for regression."""
    ignore_index: int = -100
    """Label value skipped by the loss and accuracy (padding)."""
    monitor: str = "val/loss"
    """Metric that picks the best checkpoint and drives early stopping, ``"<split>/<metric>"``."""
    monitor_mode: MonitorMode = "min"
    """Whether a lower (``"min"``) or higher (``"max"``) ``monitor`` value is better."""
    metrics: tuple[str, ...] = ("loss",)
    """Metric names reported at evaluation, without prefix; always includes ``"loss"``."""
    default_dataset: str | None = None
    """Built-in data set used when no data is given, or None."""
    default_architecture: Architecture = "mlp"
    """Built-in model family that fits this task."""
    class_weights: tuple[float, ...] | None = None
    """Classification / vision: one loss weight > 0 per class (``F.cross_entropy``'s ``weight``); None = all 1."""
    compute_metrics: str | ComputeMetricsFn | None = None
    """A user ``fn(predictions, labels) -> dict`` (or ``"module:function"``) called at every evaluation."""

    def __post_init__(self) -> None:
        # Normalise JSON-ish input (lists, ints) so from_dict(to_dict()) == self.
        if isinstance(self.metrics, (list, tuple)):
            object.__setattr__(self, "metrics", tuple(self.metrics))
        weights = self.class_weights
        if isinstance(weights, Sequence) and not isinstance(weights, str):
            ok = all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)
            object.__setattr__(self, "class_weights", tuple(float(w) for w in weights) if ok else tuple(weights))
        if _is_int(self.label_smoothing):
            object.__setattr__(self, "label_smoothing", float(self.label_smoothing))
        problems = self._problems()
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise TaskError(f"invalid TaskSpec '{self.name}':\n{lines}")

    def _problems(self) -> list[str]:
        p: list[str] = []
        if not isinstance(self.name, str) or not self.name.strip():
            p.append(f"name must be a non-empty string, got {self.name!r}")
        task_types = get_args(TaskType)
        if self.task_type not in task_types:
            p.append(f"task_type {self.task_type!r} is not one of: {', '.join(task_types)}")
            return p  # the remaining checks depend on the task type
        if self.modality not in get_args(Modality):
            p.append(f"modality {self.modality!r} is not one of: {', '.join(get_args(Modality))}")
        elif self.task_type in _REQUIRED_MODALITY and self.modality != _REQUIRED_MODALITY[self.task_type]:
            p.append(
                f"{self.task_type} tasks need modality '{_REQUIRED_MODALITY[self.task_type]}', got {self.modality!r}"
            )
        p.extend(self._num_classes_problems())
        ls = self.label_smoothing
        if isinstance(ls, bool) or not isinstance(ls, float) or not 0.0 <= ls < 1.0:
            p.append(f"label_smoothing must be a float in [0, 1), got {ls!r}")
        elif self.task_type in ("regression", "reward") and ls != 0.0:
            p.append(f"label_smoothing applies to class targets; {self.task_type} needs 0.0, got {ls!r}")
        if not _is_int(self.ignore_index):
            p.append(f"ignore_index must be an int, got {self.ignore_index!r} (usual value: -100)")
        p.extend(self._metric_problems())
        p.extend(self._class_weight_problems())
        fn = self.compute_metrics
        if fn is not None and not callable(fn) and not (isinstance(fn, str) and _FUNCTION_REF.match(fn)):
            p.append(f"compute_metrics must be a function or 'module:function', got {fn!r}")
        if self.default_dataset is not None and (
            not isinstance(self.default_dataset, str) or not self.default_dataset.strip()
        ):
            p.append(f"default_dataset must be a non-empty string or None, got {self.default_dataset!r}")
        if self.default_architecture not in get_args(Architecture):
            p.append(
                f"default_architecture {self.default_architecture!r} is not one of: {', '.join(get_args(Architecture))}"
            )
        return p

    def _num_classes_problems(self) -> list[str]:
        n = self.num_classes
        if self.task_type in ("classification", "vision"):
            if not _is_int(n) or n < 2:
                return [
                    f"num_classes must be an int >= 2 for a {self.task_type} task, got {n!r}; "
                    "for one continuous target use TaskSpec.regression"
                ]
        elif self.task_type in ("regression", "reward"):
            if n is not None:
                return [f"{self.task_type} has no classes: num_classes must be None, got {n!r}"]
        elif n is not None and (not _is_int(n) or n < 2):
            return [f"num_classes (vocabulary size) must be None or an int >= 2, got {n!r}"]
        return []

    def _class_weight_problems(self) -> list[str]:
        w = self.class_weights
        if w is None:
            return []
        if self.task_type not in ("classification", "vision"):
            return [f"class_weights apply to class targets; a {self.task_type} task takes none (got {w!r})"]
        if not isinstance(w, tuple) or not all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in w):
            return [f"class_weights must be a list of finite numbers > 0, one per class, got {w!r}"]
        if _is_int(self.num_classes) and len(w) != self.num_classes:
            return [f"class_weights has {len(w)} weights for {self.num_classes} classes — give one per class"]
        return []

    def _metric_problems(self) -> list[str]:
        p: list[str] = []
        supported = SUPPORTED_METRICS[self.task_type]
        if not isinstance(self.metrics, tuple) or not all(isinstance(m, str) for m in self.metrics):
            return [f"metrics must be a tuple of metric names, got {self.metrics!r}"]
        unknown = [m for m in self.metrics if m not in supported]
        if unknown:
            p.append(
                f"metrics {', '.join(map(repr, unknown))} are not reported by {self.task_type} "
                f"tasks — supported: {', '.join(supported)}"
            )
        if "loss" not in self.metrics:
            p.append(f"metrics must include 'loss' (every task reports it), got {self.metrics!r}")
        if len(set(self.metrics)) != len(self.metrics):
            p.append(f"metrics contain duplicates: {self.metrics!r}")
        if not isinstance(self.monitor, str) or self.monitor.count("/") != 1:
            p.append(f"monitor must look like '<split>/<metric>' (e.g. 'val/loss'), got {self.monitor!r}")
            return p
        if self.monitor_mode not in get_args(MonitorMode):
            p.append(f"monitor_mode must be 'min' or 'max', got {self.monitor_mode!r}")
            return p
        split, metric = self.monitor.split("/")
        if split and metric and metric not in self.metrics and self.compute_metrics is not None:
            return p  # a name compute_metrics returns: checked at the first evaluation
        if not split or metric not in self.metrics:
            p.append(
                f"monitor {self.monitor!r} names no reported metric — use '<split>/<metric>' with "
                f"<metric> one of: {', '.join(self.metrics)}"
            )
        elif METRIC_MODES.get(metric, self.monitor_mode) != self.monitor_mode:
            # Monitoring accuracy with "min" would keep the worst checkpoint.
            p.append(
                f"monitor {self.monitor!r} improves when it goes "
                f"{'up' if METRIC_MODES[metric] == 'max' else 'down'}: monitor_mode must be "
                f"'{METRIC_MODES[metric]}', got {self.monitor_mode!r}"
            )
        return p

    # ----------------------------------------------------------------------------- factories

    @classmethod
    def language_modeling(cls, name: str = "pystdlib", *, ignore_index: int = -100) -> TaskSpec:
        """Next-token prediction over token ids with a GPT-style model.

        Reports ``loss`` and ``perplexity``; monitors ``val/loss`` (min). The default data set
        is the built-in ``pystdlib`` byte-level corpus whatever the name.

        Args:
            name: Task name.
            ignore_index: Label value of padding positions, skipped by the loss.

        Example:
            >>> TaskSpec.language_modeling(name="wikitext").metrics
            ('loss', 'perplexity')
        """
        return cls(
            name=name,
            task_type="language_modeling",
            num_classes=None,
            modality="tokens",
            ignore_index=ignore_index,
            monitor="val/loss",
            monitor_mode="min",
            metrics=("loss", "perplexity"),
            default_dataset="pystdlib",
            default_architecture="gpt",
        )

    @classmethod
    def classification(
        cls,
        name: str = "digits",
        num_classes: int = 10,
        *,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
    ) -> TaskSpec:
        """Classification of feature vectors with an MLP.

        Reports ``loss`` and ``accuracy``; monitors ``val/accuracy`` (max). The default data set
        is ``digits`` when ``name == "digits"``, otherwise none. More metrics (F1, ROC-AUC, ...):
        :meth:`with_metrics`.

        Args:
            name: Task name.
            num_classes: Number of classes, >= 2.
            label_smoothing: Cross-entropy label smoothing in [0, 1).
            class_weights: One loss weight > 0 per class (imbalanced data), or None.

        Raises:
            TaskError: For an empty name, ``num_classes < 2`` or smoothing outside [0, 1).

        Example:
            >>> TaskSpec.classification(name="imdb", num_classes=2).default_dataset is None
            True
        """
        return cls(
            name=name,
            task_type="classification",
            num_classes=num_classes,
            modality="features",
            label_smoothing=label_smoothing,
            monitor="val/accuracy",
            monitor_mode="max",
            metrics=("loss", "accuracy"),
            default_dataset=name if name == "digits" else None,
            default_architecture="mlp",
            class_weights=tuple(class_weights) if class_weights is not None else None,
        )

    @classmethod
    def regression(cls, name: str = "diabetes") -> TaskSpec:
        """Regression of float targets with an MLP (mean squared error loss).

        Reports ``loss``, ``mse``, ``mae`` and ``r2``; monitors ``val/loss`` (min). The default
        data set is ``diabetes`` when ``name == "diabetes"``, otherwise none.

        Example:
            >>> TaskSpec.regression().metrics
            ('loss', 'mse', 'mae', 'r2')
        """
        return cls(
            name=name,
            task_type="regression",
            num_classes=None,
            modality="features",
            monitor="val/loss",
            monitor_mode="min",
            metrics=("loss", "mse", "mae", "r2"),
            default_dataset=name if name == "diabetes" else None,
            default_architecture="mlp",
        )

    @classmethod
    def reward(cls, name: str = "prm") -> TaskSpec:
        """Process reward modeling: a score in [0, 1] for every reasoning step of a solution.

        The model (``reward_model``: a language-model backbone, optionally with LoRA, and an MLP
        head) returns ``[B, S]`` scores; the loss is their squared error against the per-step
        targets, padding steps skipped. Reports ``loss``, ``mse``, ``mae``, ``r2`` and ``ece``
        (calibration of the scores, 15 bins); monitors ``val/loss`` (min).

        Example:
            >>> spec = TaskSpec.reward()
            >>> spec.metrics, spec.default_architecture
            (('loss', 'mse', 'mae', 'r2', 'ece'), 'reward_model')
        """
        return cls(
            name=name,
            task_type="reward",
            num_classes=None,
            modality="tokens",
            monitor="val/loss",
            monitor_mode="min",
            metrics=("loss", "mse", "mae", "r2", "ece"),
            default_dataset=None,
            default_architecture="reward_model",
        )

    @classmethod
    def vision_tiny(
        cls,
        name: str = "digits",
        num_classes: int = 10,
        *,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
    ) -> TaskSpec:
        """Tiny image classification with a small CNN on the built-in 8x8 ``digits`` images.

        Reports ``loss`` and ``accuracy``; monitors ``val/accuracy`` (max).

        Args:
            name: Task name.
            num_classes: Number of classes, >= 2.
            label_smoothing: Cross-entropy label smoothing in [0, 1).
            class_weights: One loss weight > 0 per class (imbalanced data), or None.

        Example:
            >>> spec = TaskSpec.vision_tiny()
            >>> spec.task_type, spec.modality, spec.default_architecture
            ('vision', 'image', 'cnn')
        """
        return cls(
            name=name,
            task_type="vision",
            num_classes=num_classes,
            modality="image",
            label_smoothing=label_smoothing,
            monitor="val/accuracy",
            monitor_mode="max",
            metrics=("loss", "accuracy"),
            default_dataset="digits",
            default_architecture="cnn",
            class_weights=tuple(class_weights) if class_weights is not None else None,
        )

    def with_metrics(
        self,
        *names: str,
        monitor: str | None = None,
        compute_metrics: str | ComputeMetricsFn | None = None,
    ) -> TaskSpec:
        """A copy reporting ``names`` (``loss`` is always first), optionally monitoring another metric.

        Args:
            *names: Metrics to report, e.g. ``"accuracy", "f1_macro", "roc_auc"``; none = keep
                the current list.
            monitor: ``"<split>/<metric>"`` (or just ``"<metric>"``) to monitor; its mode comes
                from the metric (``f1_macro`` goes up). A name only ``compute_metrics`` returns
                takes the mode ``"max"``; set ``training.monitor_mode`` to change it.
            compute_metrics: A user ``fn(predictions, labels) -> dict`` or ``"module:function"``.

        Raises:
            TaskError: An unsupported metric name (the message lists the supported ones).

        Example:
            >>> spec = TaskSpec.classification("imdb", 2).with_metrics("accuracy", "f1_macro", monitor="f1_macro")
            >>> spec.metrics, spec.monitor, spec.monitor_mode
            (('loss', 'accuracy', 'f1_macro'), 'val/f1_macro', 'max')
        """
        metrics = ("loss", *(n for n in dict.fromkeys(names) if n != "loss")) if names else self.metrics
        changes: dict[str, Any] = {"metrics": metrics}
        if compute_metrics is not None:
            changes["compute_metrics"] = compute_metrics
        if monitor is not None:
            monitor = monitor if "/" in monitor else f"val/{monitor}"
            changes["monitor"] = monitor
            changes["monitor_mode"] = METRIC_MODES.get(monitor.split("/", 1)[1], "max")
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_dataset(cls, dataset_name: str) -> TaskSpec:
        """The natural task of a built-in data set.

        ``"digits"`` -> 10-class classification, ``"diabetes"`` -> regression,
        ``"pystdlib"`` -> language modeling.

        Raises:
            TaskError: For any other name; the message lists the built-in data sets.

        Example:
            >>> TaskSpec.for_dataset("diabetes").task_type
            'regression'
        """
        if dataset_name == "digits":
            return cls.classification(name="digits", num_classes=10)
        if dataset_name == "diabetes":
            return cls.regression(name="diabetes")
        if dataset_name == "pystdlib":
            return cls.language_modeling(name="pystdlib")
        if dataset_name == "prm":
            return cls.reward(name="prm")
        raise TaskError(
            f"no built-in task for dataset {dataset_name!r} — available: {', '.join(_DATASET_TASKS)}; "
            "for other data build a TaskSpec with a factory, e.g. TaskSpec.classification(name, num_classes)"
        )

    # ------------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (``metrics`` as a list).

        Example:
            >>> TaskSpec.regression().to_dict()["metrics"]
            ['loss', 'mse', 'mae', 'r2']
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["metrics"] = list(self.metrics)
        d["class_weights"] = list(self.class_weights) if self.class_weights is not None else None
        # A function travels as its "module:qualname" reference (re-importable when module-level).
        d["compute_metrics"] = _function_ref(self.compute_metrics)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Rebuild a spec from :meth:`to_dict` output (or a hand-written dict / YAML section).

        Raises:
            TaskError: For a non-mapping, unknown or missing keys (listed), or invalid values.

        Example:
            >>> spec = TaskSpec.language_modeling()
            >>> TaskSpec.from_dict(spec.to_dict()) == spec
            True
        """
        if not isinstance(data, Mapping):
            raise TaskError(f"TaskSpec.from_dict needs a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise TaskError(f"unknown TaskSpec field(s) {', '.join(map(repr, unknown))} — valid: {', '.join(fields)}")
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in data]
        if required:
            raise TaskError(f"TaskSpec.from_dict is missing required field(s): {', '.join(required)}")
        return cls(**dict(data))

    # ------------------------------------------------------------------------ loss / metrics

    @property
    def loss_strategy(self) -> LossStrategy:
        """The loss strategy for this task, configured with its smoothing / ignore index.

        Example:
            >>> type(TaskSpec.vision_tiny().loss_strategy).__name__
            'ClassificationLoss'
        """
        if self.task_type in ("classification", "vision"):
            options: dict[str, Any] = {
                "label_smoothing": self.label_smoothing,
                "ignore_index": self.ignore_index,
                "num_classes": self.num_classes,
            }
            if self.class_weights is not None:  # only then: a registered loss need not know the option
                options["class_weights"] = self.class_weights
        elif self.task_type == "language_modeling":
            options = {"label_smoothing": self.label_smoothing, "ignore_index": self.ignore_index}
        else:  # regression takes no options
            options = {}
        return get_loss_strategy(self.task_type, **options)

    def create_metrics(self, device: torch.device | str = "cpu") -> TaskMetrics:
        """Fresh :class:`TaskMetrics` for one evaluation pass, reporting :attr:`metrics`.

        Example:
            >>> TaskSpec.regression().create_metrics().names
            ('loss', 'mse', 'mae', 'r2')
        """
        return TaskMetrics(
            self.task_type,
            metrics=self.metrics,
            device=device,
            ignore_index=self.ignore_index,
            loss_strategy=self.loss_strategy,
            compute_metrics=self.compute_metrics,
        )
