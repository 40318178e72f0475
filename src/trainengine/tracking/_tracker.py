"""``ExperimentTracker`` (seed 002): one interface over JSONL, console, TensorBoard, MLflow and W&B.

Back-ends live in a registry (``register_tracker``); an unknown name lists the available ones.
``backend="auto"`` picks what is installed *and* configured: ``jsonl`` always, ``tensorboard``
when it is installed, ``mlflow`` when ``MLFLOW_TRACKING_URI`` is set, ``wandb`` when
``WANDB_API_KEY`` or ``WANDB_MODE`` is set (``console`` prints metric lines and is chosen by
name). Several back-ends can run at once. Only rank 0
(``RANK`` of torchrun) writes; other ranks get a tracker that does nothing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from trainengine._io import validate_name
from trainengine.errors import ConfigError, MissingExtraError
from trainengine.registries import TRACKERS

__all__ = [
    "ExperimentTracker",
    "TrackerBackend",
    "register_tracker",
    "available_trackers",
    "JsonlTracker",
    "ConsoleTracker",
    "TensorBoardTracker",
    "MlflowTracker",
    "WandbTracker",
    "flatten_params",
]


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"d": 8}}`` -> ``{"model.d": 8}`` (what MLflow and TensorBoard hparams want)."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, name + "."))
        else:
            out[name] = value
    return out


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v.item() if hasattr(v, "item") else v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


class TrackerBackend(ABC):
    """One tracking back-end. Subclasses implement what their service supports."""

    name: str = ""

    def __init__(
        self, project: str, experiment_name: str, config: dict[str, Any], log_dir: Path, tags: list[str], notes: str
    ) -> None:
        self.project, self.experiment_name, self.config = project, experiment_name, config
        self.log_dir, self.tags, self.notes = log_dir, tags, notes

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        pass

    def save_artifact(self, path: Path, name: str) -> None:
        pass

    def watch_model(self, model: Any, log_freq: int = 100) -> None:
        pass

    def finish(self, status: str = "completed") -> None:
        pass


class JsonlTracker(TrackerBackend):
    """``<log_dir>/tracker.jsonl``: one JSON object per call; artifacts copied to ``artifacts/``."""

    name = "jsonl"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / "tracker.jsonl"
        self._fh = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open until finish()
        self._write({"type": "params", "params": self.config, "tags": self.tags, "notes": self.notes})

    def _write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, default=str) + "\n")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._write({"type": "metrics", "step": step, "metrics": metrics})

    def log_params(self, params: dict[str, Any]) -> None:
        self._write({"type": "params", "params": params})

    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        self._write({"type": "text", "name": name, "step": step, "text": text})

    def save_artifact(self, path: Path, name: str) -> None:
        target = self.log_dir / "artifacts" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, target)
        self._write({"type": "artifact", "name": name, "path": str(target)})

    def finish(self, status: str = "completed") -> None:
        self._write({"type": "finish", "status": status})
        self._fh.close()


class ConsoleTracker(TrackerBackend):
    """Lines on standard output (``Step 100 | train/loss=3.42``); writes no file (seed 002's console back-end)."""

    name = "console"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._print(f"tracking {self.project}/{self.experiment_name} (console)")

    def _print(self, line: str) -> None:
        # print, not logging: the seed's console back-end shows metrics without any logging setup.
        print(line, flush=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._print(f"Step {step} | " + " | ".join(f"{k}={v:.6g}" for k, v in metrics.items()))

    def log_params(self, params: dict[str, Any]) -> None:
        self._print("params: " + ", ".join(f"{k}={v}" for k, v in flatten_params(params).items()))

    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        self._print(f"[{name}]" + (f" step {step}" if step is not None else "") + f": {text}")

    def save_artifact(self, path: Path, name: str) -> None:
        self._print(f"Artifact '{name}' saved at: {path}")

    def finish(self, status: str = "completed") -> None:
        self._print(f"tracking {self.project}/{self.experiment_name} finished ({status})")


class TensorBoardTracker(TrackerBackend):
    """Event files under ``<log_dir>/tensorboard`` (``tensorboard --logdir`` shows them)."""

    name = "tensorboard"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        try:
            import tensorboard.compat.proto.event_pb2  # noqa: F401 - the event format's protos

            from trainengine.tracking._tb_events import EventFileWriter
        except ImportError:
            raise MissingExtraError("tensorboard", "track", "the tensorboard tracker") from None
        self.writer = EventFileWriter(self.log_dir / "tensorboard")
        if self.config:
            self.log_params(self.config)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.writer.add_scalars(metrics, step)

    def log_params(self, params: dict[str, Any]) -> None:
        flat = flatten_params(params)
        self.writer.add_text("params", "\n".join(f"    {k}: {v}" for k, v in flat.items()))

    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        self.writer.add_text(name, text, step)

    def finish(self, status: str = "completed") -> None:
        self.writer.close()


class MlflowTracker(TrackerBackend):
    """An MLflow run (``MLFLOW_TRACKING_URI``, default SQLite ``<log_dir>/mlflow.db``), via MlflowClient."""

    name = "mlflow"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise MissingExtraError("mlflow", "track", "the mlflow tracker") from None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.log_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(self.project)
        # A local artifact folder next to the database, not ./mlruns wherever the process runs.
        artifacts = None if os.environ.get("MLFLOW_TRACKING_URI") else (self.log_dir / "mlartifacts").resolve().as_uri()
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(self.project, artifact_location=artifacts)
        )
        tags = {f"tag.{t}": "true" for t in self.tags}
        if self.notes:
            tags["mlflow.note.content"] = self.notes
        self.run = self.client.create_run(experiment_id, run_name=self.experiment_name, tags=tags)
        self.run_id = self.run.info.run_id
        self.tracking_uri = uri
        if self.config:
            self.log_params(self.config)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])

    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        suffix = f"_step{step}" if step is not None else ""
        self.client.log_text(self.run_id, text, f"text/{name}{suffix}.txt")

    def save_artifact(self, path: Path, name: str) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=name)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=name)

    def finish(self, status: str = "completed") -> None:
        mapping = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
        self.client.set_terminated(self.run_id, mapping.get(status, "FINISHED"))


class WandbTracker(TrackerBackend):
    """A Weights & Biases run; offline (``WANDB_MODE=offline``) unless an API key is configured."""

    name = "wandb"
    _attached = False  # True for attach(): log into the active run, started lazily
    _started = False
    _init_kwargs: dict[str, Any]  # attach() only: the wandb.init arguments of a lazily started run
    run: Any  # the wandb Run; None for attach() until a record starts one

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        try:
            import wandb
        except ImportError:
            raise MissingExtraError("wandb", "track", "the wandb tracker") from None
        self._wandb = wandb
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project,
            name=self.experiment_name,
            config=self.config,
            tags=self.tags or None,
            notes=self.notes or None,
            dir=str(self.log_dir),
            mode=cast(Literal["online", "offline", "disabled"], mode),  # WANDB_MODE as given: wandb checks it
            reinit="create_new",
        )

    @classmethod
    def attach(
        cls, init_kwargs: Mapping[str, Any] | None = None, *, feature: str = "the wandb tracker"
    ) -> WandbTracker:
        """A tracker that logs into the active W&B run, starting one on the first record if none is.

        The run is started with ``wandb.init(**init_kwargs)``; :meth:`finish` ends it only if this
        tracker started it. ``MetricsEngine(use_wandb=True)`` sends its records through this.

        Raises:
            MissingExtraError: the ``wandb`` package is not installed (names ``feature``).
        """
        try:
            import wandb
        except ImportError:
            raise MissingExtraError("wandb", "track", feature) from None
        tracker = cls.__new__(cls)
        tracker._wandb = wandb
        tracker._init_kwargs = dict(init_kwargs or {})
        tracker._attached = True
        tracker._started = False
        tracker.run = None
        return tracker

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._attached:
            # wandb.log logs into whichever run is active (the user's own, or one started here).
            if self._wandb.run is None:
                self._wandb.init(**self._init_kwargs)
                self._started = True
            self._wandb.log(dict(metrics), step=step)
            return
        self.run.log(metrics, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        self.run.log({name: self._wandb.Html(f"<pre>{text}</pre>")}, step=step)

    def save_artifact(self, path: Path, name: str) -> None:
        artifact = self._wandb.Artifact(name, type="model")
        (artifact.add_dir if path.is_dir() else artifact.add_file)(str(path))
        self.run.log_artifact(artifact)

    def watch_model(self, model: Any, log_freq: int = 100) -> None:
        self.run.watch(model, log_freq=log_freq)

    def finish(self, status: str = "completed") -> None:
        if self._attached:
            if self._started:  # never end a run the user started
                self._wandb.finish()
                self._started = False
            return
        self.run.finish(exit_code=0 if status == "completed" else 1)


# jsonl, tensorboard, mlflow and wandb are registered lazily in trainengine.registries.TRACKERS.


def register_tracker(name: str, cls: type[TrackerBackend], *, overwrite: bool = False) -> None:
    """Add a back-end under ``name`` (e.g. a company-internal service).

    It becomes selectable as ``tracking.backends: [<name>]`` (the config checks the names against
    :data:`trainengine.registries.TRACKERS`) and as ``ExperimentTracker(backend=<name>)``.

    Args:
        name: Back-end name used in configs.
        cls: A :class:`TrackerBackend` subclass; it is built with ``(project, experiment_name,
            config, log_dir, tags, notes)``.
        overwrite: Replace a different back-end already registered under ``name``.

    Raises:
        ConfigError: ``cls`` is not a TrackerBackend subclass, or the name is taken.

    Example:
        >>> class PrintTracker(TrackerBackend):
        ...     def log_metrics(self, metrics, step):
        ...         print(step, metrics)
        >>> register_tracker("print", PrintTracker, overwrite=True)
        >>> "print" in available_trackers()
        True
    """
    if not (isinstance(cls, type) and issubclass(cls, TrackerBackend)):
        raise ConfigError(
            f"tracker '{name}' must be a TrackerBackend subclass, got {cls!r}", prefix="cannot register tracker"
        )
    TRACKERS.register(name, cls, overwrite=overwrite)


def available_trackers() -> list[str]:
    """Names of the registered tracker back-ends, sorted."""
    return TRACKERS.names()


def _auto_backends() -> list[str]:
    names = ["jsonl"]
    if importlib.util.find_spec("tensorboard") is not None:
        names.append("tensorboard")
    if os.environ.get("MLFLOW_TRACKING_URI") and importlib.util.find_spec("mlflow") is not None:
        names.append("mlflow")
    if (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")) and importlib.util.find_spec(
        "wandb"
    ) is not None:
        names.append("wandb")
    return names


def _config_dict(config: Any) -> dict[str, Any]:
    """The config as a dict: a dict, ``to_dict()`` (TrainingConfig), a dataclass, or None."""
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config or {})


class ExperimentTracker:
    """Track an experiment in one or several back-ends with one interface.

    Args:
        project: project (MLflow experiment, W&B project).
        experiment_name: this run's name; default ``<project>-<timestamp>-<random>``. The
            config may come second instead (seed 002's ``ExperimentTracker("project", config)``).
        config: hyper-parameters (a dict, a dataclass or anything with ``to_dict``), logged as params.
        backend: ``"auto"``, a name (``jsonl``, ``console``, ``tensorboard``, ``mlflow``, ``wandb``)
            or a list.
        log_dir: local folder: ``<log_dir>/<project>/<experiment_name>/``.
        tags, notes: recorded where the back-end supports them.
        rank: process rank; only rank 0 writes (default: ``RANK`` from torchrun, else 0).
        directory: write here instead of ``<log_dir>/<project>/<experiment_name>``.

    Example:
        >>> import tempfile
        >>> with ExperimentTracker("demo", "run1", {"lr": 1e-3}, backend="jsonl", log_dir=tempfile.mkdtemp()) as t:
        ...     t.log_metrics({"train/loss": 0.5}, step=1)
        >>> t.backend_names
        ['jsonl']
        >>> with ExperimentTracker("project", {"lr": 1e-3}, backend="console") as t:  # seed 002's form
        ...     t.log_metrics({"train/loss": 0.5}, step=1)  # doctest: +ELLIPSIS
        tracking project/project-... (console)
        Step 1 | train/loss=0.5
        tracking project/project-... finished (completed)
    """

    def __init__(
        self,
        project: str,
        experiment_name: str | Mapping[str, Any] | None = None,
        config: Any = None,
        backend: str | list[str] = "auto",
        log_dir: str | os.PathLike[str] = "runs",
        tags: list[str] | None = None,
        notes: str = "",
        rank: int | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        validate_name(project, "project")
        if experiment_name is not None and not isinstance(experiment_name, str):
            # ExperimentTracker("project", config): seed 002 passes the config second.
            if config is not None:
                raise ConfigError(
                    f"experiment_name must be a str, got {type(experiment_name).__name__} and config= as well; "
                    "pass ExperimentTracker(project, experiment_name, config) or ExperimentTracker(project, config)",
                    prefix="invalid ExperimentTracker arguments",
                )
            experiment_name, config = None, experiment_name
        if experiment_name is None:
            from trainengine.tracking._run_dir import new_run_id

            experiment_name = f"{project}-{new_run_id()}"
        validate_name(experiment_name, "experiment_name")
        cfg = _config_dict(config)
        names = _auto_backends() if backend == "auto" else ([backend] if isinstance(backend, str) else list(backend))
        problems = [p for p in (TRACKERS.problem(n) for n in names) if p is not None]
        if problems:
            raise ConfigError(problems)
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.backend_names = names
        # ``directory`` (the Trainer passes its run directory) overrides <log_dir>/<project>/<name>.
        self.directory = Path(directory) if directory is not None else Path(log_dir) / project / experiment_name
        self.backends: list[TrackerBackend] = []
        if self.rank == 0:
            for name in names:
                self.backends.append(
                    TRACKERS.get(name)(project, experiment_name, cfg, self.directory, list(tags or []), notes)
                )
        self._finished = False

    @property
    def backend(self) -> str:
        """The first back-end's name (the seed's single-back-end attribute)."""
        return self.backend_names[0] if self.backend_names else "none"

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        values = _finite(metrics)
        for b in self.backends:
            b.log_metrics(values, step)

    def log_params(self, params: dict[str, Any]) -> None:
        for b in self.backends:
            b.log_params(params)

    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        for b in self.backends:
            b.log_text(name, text, step)

    def save_artifact(self, artifact_path: str | os.PathLike[str], name: str) -> None:
        path = Path(artifact_path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {path} does not exist")
        validate_name(name, "artifact name")
        for b in self.backends:
            b.save_artifact(path, name)

    def log_model(self, model: Any, name: str) -> None:
        """Record the model's structure and size as text (weights go through save_artifact)."""
        size = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else None
        self.log_text(f"model_{name}", f"{model}\n\nparameters: {size}")

    def watch_model(self, model: Any, log_freq: int = 100) -> None:
        for b in self.backends:
            b.watch_model(model, log_freq)

    def finish(self, status: str = "completed") -> None:
        if self._finished:
            return
        self._finished = True
        for b in self.backends:
            b.finish(status)

    def __enter__(self) -> ExperimentTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish("completed" if exc is None else ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"))
