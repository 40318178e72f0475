"""Pruning through the Trainer's own stop decision.

:class:`PruningCallback` reports the objective metric to the Optuna trial at every evaluation
(``on_eval_end``) and, when the study's pruner says so, asks the loop to stop with
``trainer.request_stop("pruned", early=True)`` — the same decision early stopping and the alert
rules use, so the loop has no ``if trial`` in it. The run then ends normally (final evaluation,
run directory, checkpoints); :func:`trainengine.tune.tune` sees ``stop_reason == "pruned"`` in the
results, marks the run pruned and raises :class:`optuna.TrialPruned` so Optuna records the trial as
``PRUNED``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from trainengine.engine import Callback

if TYPE_CHECKING:
    import optuna

__all__ = ["PruningCallback", "PRUNED"]

#: The stop reason a pruned run ends with (``results["stop_reason"]``, run.json's status).
PRUNED = "pruned"


class PruningCallback(Callback):
    """Report ``metric`` to an Optuna trial at each evaluation; stop the run when the pruner prunes it.

    Args:
        trial: the running Optuna trial.
        metric: the evaluation metric to report (``val/loss``); the study's objective.

    Attributes:
        pruned_at_step: the optimizer step at which the pruner stopped the run, else None.
        reports: how many values were reported.

    Example:
        >>> import optuna
        >>> from trainengine import Trainer, TrainingConfigBuilder
        >>> from trainengine.engine import build_from_config
        >>> cfg = (
        ...     TrainingConfigBuilder.quick_prototype()
        ...     .with_data(dataset="digits", max_train_samples=128, max_val_samples=32)
        ...     .with_training(max_steps=4, eval_interval_steps=2, eval_every_epoch=False)
        ...     .with_tracking(write_run_dir=False, progress="off")
        ...     .build()
        ... )
        >>> built = build_from_config(cfg)
        >>> study = optuna.create_study(pruner=optuna.pruners.NopPruner())
        >>> cb = PruningCallback(study.ask(), "val/loss")
        >>> _ = Trainer(built.model, built.model_config, cfg, built.task_spec, callbacks=[cb]).train(
        ...     built.splits.train, built.splits.val
        ... )
        >>> sorted(study.trials[0].intermediate_values)  # the optimizer steps of the two evaluations
        [2, 4]
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.pruned_at_step: int | None = None
        self.reports = 0
        self._last_step: int | None = None

    def on_eval_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        step = int(trainer.state.step)
        value = metrics.get(self.metric)
        # The evaluation after the loop repeats the last step's: Optuna keeps one value per step.
        if value is None or self.pruned_at_step is not None or step == self._last_step:
            return
        self._last_step = step
        if step >= int(getattr(trainer, "total_steps", 0) or 0) > 0:
            # The final evaluation: stopping now saves nothing and would throw the finished value away.
            self.trial.report(float(value) if math.isfinite(value) else float("nan"), step)
            self.reports += 1
            return
        # A NaN loss is reported as such: Optuna's pruners treat it as the worst value and prune.
        self.trial.report(float(value) if math.isfinite(value) else float("nan"), step)
        self.reports += 1
        if self.trial.should_prune():
            self.pruned_at_step = step
            trainer.request_stop(PRUNED, early=True)

    @property
    def pruned(self) -> bool:
        """Whether the pruner stopped the run."""
        return self.pruned_at_step is not None
