"""Callbacks: every feature beside the loop itself reacts to the Trainer's events.

Events, in the order they fire (``EVENTS``):

- ``on_train_start(trainer)``: after setup; then the checkpointer picks its folder.
- ``on_epoch_start(trainer, epoch)``.
- ``on_before_optimizer_step(trainer, step)``: gradients ready, before clipping.
- ``on_step_end(trainer, output)``: the optimizer step is done; the step's logging,
  evaluation and checkpoint follow.
- ``on_log(trainer, record)``: a logging step or an evaluation (a dict of floats read back from
  the device); an evaluation's record comes just before its ``on_eval_end``.
- ``on_eval_end(trainer, metrics)``.
- ``on_epoch_end(trainer, epoch)``: after the epoch's evaluation.
- ``on_checkpoint(trainer, info)``: a checkpoint was written (after the step's evaluation, after
  ``on_epoch_end``, or an emergency save).
- ``on_train_end(trainer, results)``: after the final evaluation; every checkpoint is on disk and
  ``results`` holds ``last_checkpoint`` / ``best_checkpoint``.
- ``on_exception(trainer, exc)``: training raised (Ctrl-C included), before it propagates.

One optimizer step: ``on_before_optimizer_step`` -> ``on_step_end`` -> [``on_log``] ->
[``on_log`` + ``on_eval_end``] -> [``on_checkpoint``]; then the loop decides, once, whether to
stop. A callback implements only the events it needs. Callbacks with ``rank_zero_only = True``
(everything that writes files or prints) run on rank 0 only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from trainengine.errors import ConfigError

if TYPE_CHECKING:
    from trainengine.engine._step import StepOutput
    from trainengine.engine._trainer import Trainer

__all__ = ["Callback", "CallbackList", "EarlyStopping", "EVENTS", "TrainerCallback", "early_stop_reason"]

logger = logging.getLogger("trainengine")

EVENTS = (
    "on_train_start",
    "on_epoch_start",
    "on_before_optimizer_step",
    "on_step_end",
    "on_log",
    "on_eval_end",
    "on_epoch_end",
    "on_checkpoint",
    "on_train_end",
    "on_exception",
)


@runtime_checkable
class TrainerCallback(Protocol):
    """The type of a callback: any object; the Trainer calls the ``on_<event>`` methods it has.

    Every event method is optional, and a Protocol cannot mark a member optional, so this one
    requires nothing; the signatures are those of :class:`Callback` (subclass it to have them
    type-checked). Besides the events only ``rank_zero_only`` (default False) and
    ``state_dict`` / ``load_state_dict`` (saved in checkpoints) are read.
    """


class Callback:
    """Base class with every event as a no-op (optional: any object with some ``on_*`` methods works).

    Only the events a subclass overrides are called, so an unused event costs nothing per step.

    Example:
        >>> class PrintEvals(Callback):
        ...     def on_eval_end(self, trainer, metrics):
        ...         print(trainer.state.step, metrics)
    """

    rank_zero_only: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_before_optimizer_step(self, trainer: Trainer, step: int) -> None: ...

    def on_step_end(self, trainer: Trainer, output: StepOutput) -> None: ...

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None: ...

    def on_checkpoint(self, trainer: Trainer, info: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer, results: dict[str, Any]) -> None: ...

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None: ...


def _handler(cb: TrainerCallback, event: str) -> Any:
    """``cb``'s method for ``event``, or None when it has none (or only :class:`Callback`'s no-op)."""
    method = getattr(cb, event, None)
    if not callable(method):
        return None
    if getattr(method, "__func__", None) is getattr(Callback, event):
        return None  # the base class's no-op: not worth a call per step
    return method


class CallbackList:
    """Dispatches events; the per-event handler lists are built once, not per step."""

    def __init__(self, callbacks: list[TrainerCallback], *, is_rank_zero: bool = True) -> None:
        self.callbacks = [cb for cb in callbacks if is_rank_zero or not getattr(cb, "rank_zero_only", False)]
        for cb in self.callbacks:
            unknown = [n for n in dir(cb) if n.startswith("on_") and n not in EVENTS and callable(getattr(cb, n))]
            if unknown:
                raise ConfigError(
                    f"callback {type(cb).__name__} defines unknown event(s) {unknown} — "
                    f"known events: {', '.join(EVENTS)}"
                )
        handlers = {event: [_handler(cb, event) for cb in self.callbacks] for event in EVENTS}
        self._handlers = {event: [h for h in hs if h is not None] for event, hs in handlers.items()}

    def has(self, event: str) -> bool:
        return bool(self._handlers[event])

    def fire(self, event: str, *args: Any) -> None:
        for handler in self._handlers[event]:
            handler(*args)

    def fire_safely(self, event: str, *args: Any) -> None:
        """Fire during error handling: one failing callback must not hide the original error."""
        for handler in self._handlers[event]:
            try:
                handler(*args)
            except Exception:
                logger.exception(
                    "callback %s failed while handling %s", getattr(handler, "__qualname__", handler), event
                )


def early_stop_reason(trainer: Trainer, patience: int) -> str | None:
    """Why the run should stop early, or None: ``patience`` evaluations without improvement.

    Improvement (by more than ``training.early_stopping_min_delta``) is tracked by the Trainer
    in its train state, so a resumed run continues counting where it stopped.
    """
    state = trainer.state
    if state.evals_since_improvement < patience:
        return None
    best = f"{state.best_metric:.6g}" if state.best_metric is not None else "none"
    return (
        f"early stopping: {trainer.monitor} did not improve for {patience} evaluation(s); "
        f"best {best} at step {state.best_step}"
    )


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` evaluations.

    ``training.early_stopping_patience`` does the same inside the Trainer; this callback is for
    a second, independent patience. Either only *requests* the stop: the loop decides once per
    step (:meth:`Trainer.request_stop`).

    Example:
        >>> EarlyStopping(patience=3).patience
        3
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        reason = early_stop_reason(trainer, self.patience)
        if reason is not None:
            trainer.request_stop(reason, early=True)
