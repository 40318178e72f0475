"""The public Trainer: the engine's loop with the default callbacks the config asks for.

:class:`trainengine.engine.Trainer` knows nothing about files, consoles, trackers or exports;
this module, above the engine, turns a config into those callbacks (:func:`build_callbacks`)
and attaches them (:class:`Trainer`, exported as ``trainengine.Trainer``). The CLI, the seeds and
the docs use this Trainer.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainengine.config import TrainingConfig
from trainengine.engine import Trainer as EngineTrainer
from trainengine.engine import TrainerCallback
from trainengine.tasks import TaskSpec
from trainengine.tracking._parent import experiment_db_location

__all__ = ["Trainer", "build_callbacks", "build_gradient_monitor"]


def build_gradient_monitor(config: TrainingConfig) -> Any:
    """The ``GradientMonitor`` that ``monitoring.gradient_monitor: true`` asks for, else None.

    Example:
        >>> from trainengine import TrainingConfigBuilder
        >>> build_gradient_monitor(TrainingConfigBuilder().build()) is None
        True
    """
    m = config.monitoring
    if not m.gradient_monitor:
        return None
    from trainengine.monitoring import GradientMonitor

    return GradientMonitor(
        check_interval=m.gradient_check_interval,
        norm_threshold_warning=m.grad_norm_warning,
        norm_threshold_critical=m.grad_norm_critical,
    )


def build_callbacks(config: TrainingConfig, *, gradient_monitor: Any = None) -> list[TrainerCallback]:
    """The default callbacks of a run, in the order they receive events.

    1. export at train end (``export.enabled``) — before the run directory, so ``run.json``
       records the bundle's folder (``results["export_dir"]``);
    2. the run directory (``tracking.write_run_dir``);
    3. tracker back-ends (``tracking.backends``);
    4. the ExperimentDB record (``tracking.experiment_db`` with a run directory);
    5. console progress (``tracking.progress``);
    6. the gradient monitor: ``gradient_monitor`` if given, else one built from ``monitoring``;
    7. the step profiler (``monitoring.profile_steps``) and sample prompts.

    Checkpoints, early stopping and fault handling are not callbacks: the engine's Trainer owns
    them (``trainer.checkpointer``), and callbacks read checkpoint paths from it.

    Args:
        config: a validated training config.
        gradient_monitor: a monitor you built; None = from ``monitoring.gradient_monitor``.

    Example:
        >>> from trainengine import TrainingConfigBuilder
        >>> cfg = TrainingConfigBuilder().with_tracking(write_run_dir=True, progress="off").build()
        >>> [type(cb).__name__ for cb in build_callbacks(cfg)]
        ['RunDirectory', 'ExperimentDBCallback']
    """
    callbacks: list[TrainerCallback] = []
    tr = config.tracking
    if config.export.enabled:
        from trainengine.export._callback import ExportOnTrainEnd

        callbacks.append(ExportOnTrainEnd())
    if tr.write_run_dir:
        from trainengine.tracking import RunDirectory

        callbacks.append(RunDirectory())
    if tr.backends:
        from trainengine.tracking._callbacks import TrackerCallback

        callbacks.append(TrackerCallback(tr.backends))
    db_location = experiment_db_location(config)
    if db_location is not None:
        from trainengine.tracking._callbacks import ExperimentDBCallback

        callbacks.append(ExperimentDBCallback(db_location))
    if tr.progress != "off":
        from trainengine.tracking import ConsoleProgress

        callbacks.append(ConsoleProgress(mode=tr.progress))
    monitor = gradient_monitor if gradient_monitor is not None else build_gradient_monitor(config)
    if monitor is not None:
        callbacks.append(monitor)
    if config.monitoring.profile_steps:
        from trainengine.monitoring._profiler import StepProfiler

        callbacks.append(StepProfiler(config.monitoring.profile_steps, config.monitoring.profile_warmup_steps))
    if config.monitoring.sample_prompts:
        from trainengine.monitoring._samples import build_sample_prompts

        samples = build_sample_prompts(config)
        if samples is not None:
            callbacks.append(samples)
    return callbacks


class Trainer(EngineTrainer):
    """Train a model on a task — the engine's Trainer plus the config's default callbacks.

    Same arguments as :class:`trainengine.engine.Trainer`; the defaults from
    :func:`build_callbacks` (run directory, trackers, ExperimentDB, console, gradient monitor,
    export) come first, your ``callbacks`` after them.

    Example:
        >>> from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
        >>> from trainengine.data import load_builtin
        >>> from trainengine.models import MLP
        >>> splits = load_builtin("digits")
        >>> cfg = TrainingConfigBuilder.quick_prototype().with_tracking(write_run_dir=False, progress="off").build()
        >>> results = Trainer(MLP(64, 10), None, cfg, TaskSpec.classification("digits", 10)).train(
        ...     splits.train, splits.val
        ... )
        >>> results["best_metric"] > 0.9
        True
    """

    def __init__(
        self,
        model: nn.Module,
        config: Any = None,
        training_config: TrainingConfig | None = None,
        task_spec: TaskSpec | None = None,
        gradient_monitor: Any = None,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        super().__init__(model, config, training_config, task_spec, callbacks=callbacks)
        # One process, or DDP under torchrun (distributed.strategy): docs/distributed.md.
        from trainengine.distributed import make_runtime

        self.runtime_factory = make_runtime

        # Visible to callbacks (MetricsEngineCallback turns the monitor's findings into alerts).
        self.gradient_monitor = (
            gradient_monitor if gradient_monitor is not None else build_gradient_monitor(self.config)
        )
        self.add_callbacks(build_callbacks(self.config, gradient_monitor=self.gradient_monitor), first=True)

    def train(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """:meth:`trainengine.engine.Trainer.train`; under several processes a peer's failure is named as such."""
        try:
            return super().train(*args, **kwargs)
        except RuntimeError as exc:
            from trainengine.distributed import peer_failure

            error = peer_failure(self.runtime, exc)
            if error is None:
                raise
            raise error from exc
