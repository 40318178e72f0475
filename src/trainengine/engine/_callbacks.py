"""Callbacks: every feature beside the loop itself reacts to the Trainer's events.

Events (in order): ``on_train_start(trainer)``, ``on_epoch_start(trainer, epoch)``,
``on_before_optimizer_step(trainer, step)`` (gradients ready, before clipping),
``on_step_end(trainer, output)``, ``on_log(trainer, record)`` (a logging step or an
evaluation: a dict of floats read back from the device), ``on_eval_end(trainer, metrics)``,
``on_epoch_end(trainer, epoch)``, ``on_checkpoint(trainer, info)``,
``on_train_end(trainer, results)``, ``on_exception(trainer, exc)``.

A callback implements only the events it needs. Callbacks with ``rank_zero_only = True``
(everything that writes files or prints) run on rank 0 only.
"""

from __future__ import annotations

import logging
from typing import Any

from trainengine.errors import ConfigError

__all__ = ["Callback", "CallbackList", "EarlyStopping", "EVENTS"]

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


class Callback:
    """Base class (optional: any object with some ``on_*`` methods works).

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


class CallbackList:
    """Dispatches events; the per-event handler lists are built once, not per step."""

    def __init__(self, callbacks: list[Any], *, is_rank_zero: bool = True) -> None:
        self.callbacks = [cb for cb in callbacks if is_rank_zero or not getattr(cb, "rank_zero_only", False)]
        for cb in self.callbacks:
            unknown = [n for n in dir(cb) if n.startswith("on_") and n not in EVENTS and callable(getattr(cb, n))]
            if unknown:
                raise ConfigError(f"callback {type(cb).__name__} defines unknown event(s) {unknown} — known events: {', '.join(EVENTS)}")
        self._handlers = {event: [getattr(cb, event) for cb in self.callbacks if callable(getattr(cb, event, None))] for event in EVENTS}

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
            except Exception:  # noqa: BLE001 - reported, then the next handler runs
                logger.exception("callback %s failed while handling %s", getattr(handler, "__qualname__", handler), event)


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` evaluations.

    Improvement (by more than ``min_delta``) is tracked by the Trainer in its train state, so a
    resumed run continues counting where it stopped.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_eval_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        state = trainer.state
        if state.evals_since_improvement >= self.patience:
            trainer.request_stop(
                f"early stopping: {trainer.monitor} did not improve for {self.patience} evaluation(s); best {state.best_metric:.6g} at step {state.best_step}",
                early=True,
            )
