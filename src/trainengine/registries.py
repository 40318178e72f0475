"""One registry mechanism for everything a config selects by name.

Models, data sets, task types, loss strategies, learning-rate schedules, optimizers, tracker
back-ends, export formats and alert actions are each a :class:`Registry`: ``name -> object``. The config
validates its name fields against them (an unknown name lists the registered ones and suggests the
closest), and the builders look the name up, so adding a schedule, a tracker, a model or an export
format is one ``register`` call and a name in YAML.

Built-in entries are registered here as lazy ``"module:attr"`` strings, resolved on the first
:meth:`Registry.get`: validating a config imports nothing heavy (no torch). This module imports
only :mod:`trainengine.errors`.

User registrations reach a fresh process (``trainengine resume``, ``export``, ``serve``, a job
worker) in two ways, both loading plugin modules whose import registers things:

* the config's ``plugins:`` list of module names (imported by :func:`load_plugins` before the
  config's names are checked);
* the ``trainengine.plugins`` entry-point group of installed distributions, loaded once per
  process, the first time any registry is asked about a name (:func:`load_entry_point_plugins`).

Example:
    >>> from trainengine.registries import SCHEDULES, Registry
    >>> "cosine" in SCHEDULES
    True
    >>> colours = Registry("colour")
    >>> colours.register("red", "#f00")
    >>> colours.check("rde")
    Traceback (most recent call last):
    ...
    trainengine.errors.ConfigError: invalid configuration (1 problem):
      - unknown colour 'rde' — available: red; did you mean 'red'?
"""

from __future__ import annotations

import difflib
import importlib
import threading
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from trainengine.errors import ConfigError, DataError, ExportError, TaskError

__all__ = [
    "Registry",
    "MODELS",
    "DATASETS",
    "DATA_FORMATS",
    "TASKS",
    "LOSSES",
    "SCHEDULES",
    "OPTIMIZERS",
    "TRACKERS",
    "EXPORT_FORMATS",
    "JOB_TYPES",
    "ENTRY_POINT_GROUP",
    "load_plugins",
    "load_entry_point_plugins",
    "register_model",
    "register_dataset",
    "register_data_format",
    "register_task",
    "register_loss",
    "register_schedule",
    "register_optimizer",
    "register_tracker",
    "register_export_format",
    "register_job_type",
]

ENTRY_POINT_GROUP = "trainengine.plugins"


def _resolve(path: str) -> Any:
    """Import ``"package.module:attr"`` (``attr`` may be dotted) and return the attribute."""
    module_name, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _is_lazy(target: Any) -> bool:
    return isinstance(target, str) and ":" in target and " " not in target


class Registry:
    """Names mapped to objects (or lazy ``"module:attr"`` strings resolved on first use).

    Args:
        kind: What one entry is, for messages (``"schedule"`` -> ``unknown schedule 'x'``).
        normalize: Maps a name to its key (data sets are case-insensitive: ``str.lower``).
        error: Exception class raised by :meth:`register` and :meth:`get` (the config path,
            :meth:`check`, always raises :class:`~trainengine.errors.ConfigError`).

    Example:
        >>> reg = Registry("greeting")
        >>> reg.register("hello", "builtins:str")  # lazy: nothing imported yet
        >>> reg.get("hello") is str
        True
        >>> reg.names(), "hello" in reg
        (['hello'], True)
    """

    def __init__(
        self,
        kind: str,
        *,
        normalize: Callable[[str], str] | None = None,
        error: type[Exception] = ConfigError,
    ) -> None:
        self.kind = kind
        self._normalize = normalize
        self._error = error
        self._entries: dict[str, Any] = {}
        self._builtin: tuple[str, ...] = ()  # the names trainengine itself registers
        self._lock = threading.RLock()

    # -- registration ------------------------------------------------------------------
    def key(self, name: str) -> str:
        """The stored form of ``name`` (stripped, and normalised when the registry says so)."""
        key = name.strip() if isinstance(name, str) else ""
        return self._normalize(key) if self._normalize and key else key

    def register(self, name: str, target: Any, *, overwrite: bool = False) -> None:
        """Add ``target`` under ``name``.

        Args:
            name: The name configs use.
            target: The object, or a lazy ``"package.module:attr"`` string imported on first
                :meth:`get`.
            overwrite: Replace a different existing entry instead of raising. Registering the
                same target again is always allowed (a plugin imported twice is harmless).

        Raises:
            The registry's error class: an empty name, or the name already holds another
            target and ``overwrite`` is False.
        """
        key = self.key(name)
        if not key:
            raise self._error(f"a {self.kind} name must be a non-empty string; got {name!r}")
        with self._lock:
            current = self._entries.get(key)
            if current is not None and not overwrite and not self._same(current, target):
                raise self._error(
                    f"{self.kind} '{key}' is already registered ({_describe(current)}); "
                    "pick another name or pass overwrite=True to replace it"
                )
            self._entries[key] = target

    def unregister(self, name: str) -> None:
        """Remove ``name`` (no error when it is absent); meant for tests and plugin reloads."""
        with self._lock:
            self._entries.pop(self.key(name), None)

    @staticmethod
    def _same(current: Any, target: Any) -> bool:
        if current is target or (isinstance(current, str) and current == target):
            return True
        # A lazy built-in and the object it names are the same entry.
        if _is_lazy(current) and not isinstance(target, str):
            try:
                return _resolve(current) is target
            except Exception:  # noqa: BLE001 - an unimportable lazy entry differs from anything
                return False
        return False

    # -- lookup ------------------------------------------------------------------------
    def _known(self, key: str) -> bool:
        if key in self._entries:
            return True
        load_entry_point_plugins()  # a miss may be a name an installed plugin adds
        return key in self._entries

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._known(self.key(name))

    def names(self) -> list[str]:
        """Every registered name, sorted (installed plugins included)."""
        load_entry_point_plugins()
        return sorted(self._entries)

    def builtin_names(self) -> list[str]:
        """The names trainengine registers itself, sorted (what the generated docs list)."""
        return sorted(self._builtin)

    def unknown_message(self, name: Any) -> str:
        """``unknown schedule 'cosin' — available: ...; did you mean 'cosine'?``"""
        names = self.names()
        text = f"unknown {self.kind} {str(name)!r} — available: {', '.join(names) or '(none registered)'}"
        close = difflib.get_close_matches(
            self.key(name) if isinstance(name, str) else str(name), names, n=1, cutoff=0.6
        )
        if close:
            text += f"; did you mean '{close[0]}'?"
        failed = _failed_plugins()
        if failed:
            text += f" (plugins that failed to load: {failed})"
        return text

    def problem(self, name: Any) -> str | None:
        """None when ``name`` is registered, else the message of :meth:`unknown_message`."""
        if isinstance(name, str) and self._known(self.key(name)):
            return None
        return self.unknown_message(name)

    def check(self, name: Any) -> None:
        """Raise a :class:`~trainengine.errors.ConfigError` unless ``name`` is registered.

        The message lists the registered names and suggests the closest one.
        """
        problem = self.problem(name)
        if problem is not None:
            raise ConfigError(problem)

    def get(self, name: str) -> Any:
        """The object registered as ``name``, importing a lazy entry on first use.

        Raises:
            The registry's error class: the name is unknown (listing the available ones).
        """
        key = self.key(name) if isinstance(name, str) else ""
        if not self._known(key):
            raise self._error(self.unknown_message(name))
        with self._lock:
            target = self._entries[key]
            if _is_lazy(target):
                target = _resolve(target)
                self._entries[key] = target
        return target

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={sorted(self._entries)})"


def _describe(target: Any) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"


# -- the registries ------------------------------------------------------------------------
#: Model architectures: ``name -> builder(**kwargs) -> nn.Module`` (``model.architecture``).
MODELS = Registry("model architecture")
#: Data sets: ``name -> factory(**options) -> DatasetSplits`` (``data.dataset``), case-insensitive.
DATASETS = Registry("dataset", normalize=str.lower, error=DataError)
#: File formats: ``name -> reader(files: list[Path], options: ReadOptions) -> CachedTable`` (``data.format``).
DATA_FORMATS = Registry("data format", normalize=str.lower, error=DataError)
#: Task types: ``name -> builder(dataset: str) -> TaskSpec`` (``data.task``).
TASKS = Registry("task")
#: Loss strategies: ``task type -> LossStrategy subclass``.
LOSSES = Registry("loss strategy", error=TaskError)
#: LR schedules: ``name -> builder(optimizer, section, *, total_steps, warmup_steps, base_lrs,
#: monitor_mode) -> torch LRScheduler`` (``scheduler.name``).
SCHEDULES = Registry("schedule")
#: Optimizers: ``name -> builder(param_groups, section, *, lr, fused) -> Optimizer`` (``optimizer.name``).
OPTIMIZERS = Registry("optimizer")
#: Tracker back-ends: ``name -> TrackerBackend subclass`` (``tracking.backends``).
TRACKERS = Registry("tracker")
#: Export formats: ``name -> exporter(ctx: ExportContext) -> manifest entry`` (``export.formats``).
EXPORT_FORMATS = Registry("export format", error=ExportError)
#: Alert actions: ``name -> action(alert) -> None``, called with every alert and resolved notice of
#: the serving rules a server is told to use them for (``trainengine serve --alert-action NAME``).
ALERT_ACTIONS = Registry("alert action")
#: Job types of the job queue: ``name -> runner(config: dict, context: JobContext) -> result dict``.
JOB_TYPES = Registry("job type")

_BUILTINS: dict[Registry, dict[str, str]] = {
    ALERT_ACTIONS: {"retrain": "trainengine.jobs._trigger:retrain_on_drift"},
    JOB_TYPES: {
        "training": "trainengine.jobs._types:run_training_job",
        "retraining": "trainengine.jobs._types:run_training_job",
        "evaluation": "trainengine.jobs._types:run_evaluation_job",
        "export": "trainengine.jobs._types:run_export_job",
        "tune": "trainengine.jobs._types:run_tune_job",
    },
    MODELS: {
        "mlp": "trainengine.models._mlp:MLP",
        "tabular_mlp": "trainengine.models._tabular:TabularMLP",
        "cnn": "trainengine.models._cnn:SmallCNN",
        "gpt": "trainengine.models._registry:_build_gpt",
        "reward_model": "trainengine.models._reward:build_reward_model",
    },
    DATASETS: {
        "digits": "trainengine.data._builtin:_digits",
        "diabetes": "trainengine.data._builtin:_diabetes",
        "pystdlib": "trainengine.data._builtin:_pystdlib",
        "prm": "trainengine.data._reward:load_prm",
    },
    DATA_FORMATS: {
        "csv": "trainengine.data._readers:read_csv",
        "jsonl": "trainengine.data._readers:read_jsonl",
        "parquet": "trainengine.data._readers:read_parquet",
        "hf_disk": "trainengine.data._readers:read_hf_disk",
        "text": "trainengine.data._text:read_text",
        "imagefolder": "trainengine.data._images:read_imagefolder",
    },
    TASKS: {
        "classification": "trainengine.tasks._registry:classification_task",
        "regression": "trainengine.tasks._registry:regression_task",
        "language_modeling": "trainengine.tasks._registry:language_modeling_task",
        "vision": "trainengine.tasks._registry:vision_task",
        "reward": "trainengine.tasks._registry:reward_task",
    },
    LOSSES: {
        "classification": "trainengine.tasks._losses:ClassificationLoss",
        "language_modeling": "trainengine.tasks._losses:LanguageModelingLoss",
        "regression": "trainengine.tasks._losses:RegressionLoss",
        # Vision tasks in trainengine classify images, so they share the classification loss.
        "vision": "trainengine.tasks._losses:ClassificationLoss",
        "reward": "trainengine.tasks._losses:StepRewardLoss",
    },
    SCHEDULES: {
        "cosine": "trainengine.engine.schedules:cosine_schedule",
        "linear": "trainengine.engine.schedules:linear_schedule",
        "constant": "trainengine.engine.schedules:constant_schedule",
        "one_cycle": "trainengine.engine.schedules:one_cycle_schedule",
        "cyclic": "trainengine.engine.schedules:cyclic_schedule",
        "reduce_on_plateau": "trainengine.engine.schedules:reduce_on_plateau_schedule",
    },
    OPTIMIZERS: {
        "adamw": "trainengine.engine._optim:build_adamw",
        "adam": "trainengine.engine._optim:build_adam",
        "sgd": "trainengine.engine._optim:build_sgd",
    },
    TRACKERS: {
        "console": "trainengine.tracking._tracker:ConsoleTracker",
        "jsonl": "trainengine.tracking._tracker:JsonlTracker",
        "tensorboard": "trainengine.tracking._tracker:TensorBoardTracker",
        "mlflow": "trainengine.tracking._tracker:MlflowTracker",
        "wandb": "trainengine.tracking._tracker:WandbTracker",
    },
    EXPORT_FORMATS: {
        "onnx": "trainengine.export._formats:onnx_format",
        "torchscript": "trainengine.export._formats:torchscript_format",
        "torch_export": "trainengine.export._formats:torch_export_format",
        "pytorch": "trainengine.export._formats:pytorch_format",
    },
}
for _registry, _entries in _BUILTINS.items():
    for _name, _path in _entries.items():
        _registry.register(_name, _path)
    _registry._builtin = tuple(_entries)
del _registry, _entries, _name, _path


# -- plugins -------------------------------------------------------------------------------
_entry_points_loaded = False
_entry_points_lock = threading.RLock()
_failures: dict[str, str] = {}


def _failed_plugins() -> str:
    return "; ".join(f"{name}: {error}" for name, error in _failures.items())


def load_plugins(modules: Iterable[str]) -> None:
    """Import plugin modules (their import registers models, schedules, trackers, ...).

    A module already imported is not imported again. This is what a config's ``plugins:`` list
    does before its names are checked, so a fresh process (``resume``, ``export``, a job worker)
    finds the same registrations as the process that wrote the config.

    Args:
        modules: Importable module names, e.g. ``["my_project.trainengine_plugins"]``.

    Raises:
        ConfigError: listing every module that is not a non-empty string or fails to import
            (with the import error), and how to make it importable.

    Example:
        >>> load_plugins(["json"])  # any importable module
    """
    problems = []
    for i, module in enumerate(modules):
        if not isinstance(module, str) or not module.strip():
            problems.append(f"plugins[{i}]: must be a module name such as 'my_project.plugins', got {module!r}")
            continue
        try:
            importlib.import_module(module.strip())
        except Exception as exc:  # noqa: BLE001 - a plugin may fail in any way; each is reported
            problems.append(
                f"plugins[{i}]: cannot import plugin module '{module}' ({type(exc).__name__}: {exc}) — "
                "install it or add its folder to PYTHONPATH"
            )
    if problems:
        raise ConfigError(problems)


def load_entry_point_plugins(*, reload: bool = False) -> None:
    """Load every ``trainengine.plugins`` entry point of the installed distributions, once.

    Each entry point names a module (or a callable, which is called with no arguments) whose
    import registers things. A plugin that fails to load is reported with a warning and named in
    later unknown-name errors; the others still load.

    Args:
        reload: Scan the entry points again (after installing a distribution at run time).
    """
    global _entry_points_loaded
    if _entry_points_loaded and not reload:
        return
    with _entry_points_lock:
        if _entry_points_loaded and not reload:
            return
        # Set first: a plugin that looks a name up while loading must not recurse into here.
        _entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = ep.load()
                if callable(loaded) and not isinstance(loaded, types.ModuleType):
                    loaded()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the others
                _failures[ep.name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"trainengine plugin entry point '{ep.name}' ({ep.value}) failed to load: "
                    f"{type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )


# -- public registration helpers -----------------------------------------------------------
def register_model(name: str, builder: Any, *, overwrite: bool = False) -> None:
    """Make a model builder (a class or a function returning an ``nn.Module``) selectable as
    ``model.architecture: <name>``. Same as :func:`trainengine.models.register_model`.

    Raises:
        ConfigError: ``builder`` is not callable, or the name is taken by another builder.
    """
    if not callable(builder) and not _is_lazy(builder):
        raise ConfigError(
            f"builder for model {name!r} must be callable, got {type(builder).__name__}", prefix="cannot register model"
        )
    try:
        MODELS.register(name, builder, overwrite=overwrite)
    except ConfigError as exc:
        raise ConfigError(exc.problems, prefix="cannot register model") from None


def register_dataset(name: str, factory: Any, *, overwrite: bool = False) -> None:
    """Make a data set factory selectable as ``data.dataset: <name>`` (case-insensitive).
    Same as :func:`trainengine.data.register_dataset`.

    Raises:
        DataError: an empty name, or the name is taken by another factory.
    """
    if not callable(factory) and not _is_lazy(factory):
        raise DataError(f"dataset factory for {name!r} must be callable, got {type(factory).__name__}")
    DATASETS.register(name, factory, overwrite=overwrite)


def register_data_format(name: str, reader: Any, *, overwrite: bool = False) -> None:
    """Add a file format ``data.format: <name>`` can select.

    ``reader(files: list[Path], options: ReadOptions) -> CachedTable`` parses the files into the
    Arrow cache (see ``trainengine.data._cache.build_or_load``).
    """
    DATA_FORMATS.register(name, reader, overwrite=overwrite)


def register_task(name: str, builder: Any, *, overwrite: bool = False) -> None:
    """Make ``builder(dataset_name) -> TaskSpec`` selectable as ``data.task: <name>``."""
    if not callable(builder) and not _is_lazy(builder):
        raise ConfigError(
            f"task builder for '{name}' must be callable, got {type(builder).__name__}", prefix="cannot register task"
        )
    TASKS.register(name, builder, overwrite=overwrite)


def register_loss(name: str, cls: Any, *, overwrite: bool = False) -> None:
    """Register a :class:`~trainengine.tasks.LossStrategy` subclass for a task type.
    :func:`trainengine.tasks.register_loss_strategy` does the same and also checks the class.

    Raises:
        TaskError: ``cls`` is not a class, or the name is taken by another class.
    """
    if not isinstance(cls, type) and not _is_lazy(cls):
        raise TaskError(f"loss strategy for '{name}' must be a LossStrategy subclass, got {cls!r}")
    LOSSES.register(name, cls, overwrite=overwrite)


def register_schedule(name: str, builder: Any, *, overwrite: bool = False) -> None:
    """Make a learning-rate schedule selectable as ``scheduler.name: <name>``.

    ``builder(optimizer, section, *, total_steps, warmup_steps, base_lrs, monitor_mode)`` returns
    a torch ``LRScheduler``; see :mod:`trainengine.engine.schedules`.
    """
    if not callable(builder) and not _is_lazy(builder):
        raise ConfigError(
            f"schedule builder for '{name}' must be callable, got {type(builder).__name__}",
            prefix="cannot register schedule",
        )
    SCHEDULES.register(name, builder, overwrite=overwrite)


def register_optimizer(name: str, builder: Any, *, overwrite: bool = False) -> None:
    """Make an optimizer selectable as ``optimizer.name: <name>``.

    ``builder(param_groups, section, *, lr, fused)`` returns a ``torch.optim.Optimizer``; see
    :mod:`trainengine.engine._optim`.
    """
    if not callable(builder) and not _is_lazy(builder):
        raise ConfigError(
            f"optimizer builder for '{name}' must be callable, got {type(builder).__name__}",
            prefix="cannot register optimizer",
        )
    OPTIMIZERS.register(name, builder, overwrite=overwrite)


def register_tracker(name: str, cls: Any, *, overwrite: bool = False) -> None:
    """Make a :class:`~trainengine.tracking.TrackerBackend` subclass selectable in
    ``tracking.backends``. Same as :func:`trainengine.tracking.register_tracker`."""
    if not isinstance(cls, type) and not _is_lazy(cls):
        raise ConfigError(
            f"tracker '{name}' must be a TrackerBackend subclass, got {cls!r}", prefix="cannot register tracker"
        )
    TRACKERS.register(name, cls, overwrite=overwrite)


def register_export_format(name: str, exporter: Any, *, overwrite: bool = False) -> None:
    """Make an exporter selectable in ``export.formats`` and ``create_export_bundle(formats=...)``.

    ``exporter(ctx)`` receives an :class:`~trainengine.export.ExportContext` (the float32 CPU
    model in eval mode, the example batches with their PyTorch outputs, the bundle folder, the
    tolerance) and returns the format's manifest entry (a JSON-able dict naming its files).
    """
    if not callable(exporter) and not _is_lazy(exporter):
        raise ConfigError(
            f"exporter for '{name}' must be callable, got {type(exporter).__name__}",
            prefix="cannot register export format",
        )
    EXPORT_FORMATS.register(name, exporter, overwrite=overwrite)


def register_job_type(name: str, runner: Any, *, overwrite: bool = False) -> None:
    """Make ``trainengine.jobs`` run jobs of type ``name``.

    ``runner(config, context)`` runs in the job's own subprocess and returns a JSON-able result
    dict (``run_id`` / ``run_dir`` in it are kept on the job). A worker finds it when the module
    that registers it is imported: list the module in the job's ``config["plugins"]`` or install
    it under the ``trainengine.plugins`` entry point.
    """
    if not callable(runner) and not _is_lazy(runner):
        raise ConfigError(
            f"runner for job type '{name}' must be callable, got {type(runner).__name__}",
            prefix="cannot register job type",
        )
    JOB_TYPES.register(name, runner, overwrite=overwrite)


def register_alert_action(name: str, action: Any, *, overwrite: bool = False) -> None:
    """Make ``action(alert)`` selectable by name as an alert action of a model server.

    ``trainengine serve BUNDLE --alert-action NAME`` (or ``create_app(..., alert_actions=["NAME"])``)
    hands every alert of the serving rules (``latency``, ``error_rate``, ``drift``) and every
    resolved notice to it, beside the log, webhook and email actions; this is how a drift alert
    reaches your code (e.g. to submit a retraining job). The action runs on the server's alert
    thread, never on a request; what it raises is logged and the other actions still run.
    Register it in a plugin module (a ``trainengine.plugins`` entry point, or ``--plugin MODULE``)
    so a fresh ``trainengine serve`` process finds it.

    Args:
        name: The name ``--alert-action`` takes.
        action: A callable taking one :class:`~trainengine.monitoring.Alert` (or a lazy
            ``"module:attr"`` string naming one).
        overwrite: Replace a different action already registered under ``name``.

    Raises:
        ConfigError: ``action`` is not callable, or the name is taken by another action.

    Example:
        >>> seen = []
        >>> register_alert_action("doc_example", seen.append)
        >>> ALERT_ACTIONS.get("doc_example") == seen.append
        True
        >>> ALERT_ACTIONS.unregister("doc_example")
    """
    if not callable(action) and not _is_lazy(action):
        raise ConfigError(
            f"alert action '{name}' must be callable with the Alert, got {type(action).__name__}",
            prefix="cannot register alert action",
        )
    ALERT_ACTIONS.register(name, action, overwrite=overwrite)
