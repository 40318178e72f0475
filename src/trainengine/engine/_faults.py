"""Fault handling in the loop: signals, non-finite steps (halt / rollback) and out-of-memory skips.

Each fault ends in one of three ways: the step is skipped and counted (``nonfinite_policy: skip``,
``oom_policy: skip``), the run stops with an emergency checkpoint (a signal, ``halt``), or the
run reloads its newest checkpoint and continues with a lower learning rate (``rollback``).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainengine.errors import TrainEngineError

if TYPE_CHECKING:
    from trainengine.engine._trainer import Trainer

__all__ = ["TrainingInterrupted", "SignalGuard", "FaultHandler", "RolledBack"]

logger = logging.getLogger("trainengine")

_EXIT_CODES: dict[int, int] = {int(signal.SIGINT): 130, int(signal.SIGTERM): 143}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after finishing its optimizer step.

    Attributes:
        signum: the signal received.
        exit_code: 130 for SIGINT, 143 for SIGTERM (what a shell expects).
        checkpoint_path: the emergency checkpoint written, or None.

    Example:
        >>> import signal
        >>> TrainingInterrupted(signal.SIGTERM, 12, None).exit_code
        143
    """

    def __init__(self, signum: int, step: int, checkpoint_path: Path | None) -> None:
        self.signum = signum
        self.exit_code = _EXIT_CODES.get(signum, 130)
        self.step = step
        self.checkpoint_path = checkpoint_path
        where = f"; emergency checkpoint: {checkpoint_path}" if checkpoint_path else ""
        super().__init__(f"training interrupted by {signal.Signals(signum).name} after step {step}{where}")


class SignalGuard:
    """Turns the first SIGINT/SIGTERM into a stop request; a second SIGINT aborts at once.

    The handler only sets ``trainer.pending_signal``: the loop finishes the optimizer step it is
    in (also when the signal lands during evaluation or mid-accumulation), then stops. Under
    several processes the flag is what ranks agree on at a step boundary (``Runtime.any_rank``),
    so all stop at the same step. Handlers are installed only from the main thread and restored
    on exit.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.trainer.pending_signal is not None:
            # Second signal: the user means it. Restore the default and abort now.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt("second interrupt: aborting without a checkpoint")
        self.trainer.pending_signal = signum
        logger.warning(
            "%s received: finishing the current step, then saving and stopping (press Ctrl+C again to abort now)",
            signal.Signals(signum).name,
        )

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class RolledBack(Exception):
    """Internal: a rollback moved the data position; the epoch loop restarts from it."""


class FaultHandler:
    """What the loop does when a step goes wrong; called only on the (rare) faulty steps.

    Args:
        policy: ``training.nonfinite_policy`` (skip / halt / rollback).
        max_rollbacks: give up after this many rollbacks.
        rollback_lr_factor: the learning rate is multiplied by this after each rollback.
        save_on_interrupt: write an emergency checkpoint on SIGINT/SIGTERM.

    Example:
        >>> FaultHandler("skip", max_rollbacks=3, rollback_lr_factor=0.5, save_on_interrupt=True).rollbacks
        0
    """

    def __init__(self, policy: str, *, max_rollbacks: int, rollback_lr_factor: float, save_on_interrupt: bool) -> None:
        self.policy = policy
        self.max_rollbacks = max_rollbacks
        self.rollback_lr_factor = rollback_lr_factor
        self.save_on_interrupt = save_on_interrupt
        self.rollbacks = 0

    def oom_skipped(self, trainer: Trainer, num_batches: int) -> None:
        """``oom_policy: skip`` dropped a window: count it and move the data position past it."""
        st = trainer.state
        st.batch_in_epoch += num_batches
        st.extra["oom_skipped_batches"] = st.extra.get("oom_skipped_batches", 0) + 1
        logger.warning(
            "out of memory at step %d: batch skipped (oom_policy skip; %d so far)",
            st.step,
            st.extra["oom_skipped_batches"],
        )

    def nonfinite(self, trainer: Trainer, loss: float) -> None:
        """A non-finite step under ``halt`` / ``rollback``: always raises.

        Raises:
            TrainEngineError: ``halt`` (after an emergency checkpoint of the last good state), or
                ``rollback`` with no checkpoint to go back to / after ``max_rollbacks``.
            RolledBack: the trainer now holds the newest checkpoint; the loop restarts its epoch.
        """
        st, ckpt = trainer.state, trainer.checkpointer
        trainer.flush_log()
        nonfinite = st.num_nonfinite_steps + 1  # this step counts, whatever happens next
        st.num_nonfinite_steps = nonfinite
        trainer.callbacks.fire(
            "on_log",
            trainer,
            {
                "type": "nonfinite",
                "step": st.step + 1,
                "loss": loss,
                "train/nonfinite_steps": nonfinite,
                "policy": self.policy,
            },
        )
        if self.policy == "halt":
            path = (
                ckpt.save(trainer, tags=("emergency", "nonfinite"), force_sync=True)
                if ckpt is not None and ckpt.available
                else None
            )
            where = f"; emergency checkpoint of the last good state: {path}" if path else ""
            raise TrainEngineError(
                f"non-finite loss or gradient at step {st.step + 1} (loss {loss}): "
                f"halted (training.nonfinite_policy halt){where}. "
                "Lower the learning rate, set training.max_grad_norm, or check the data"
            )
        self.rollbacks += 1
        if self.rollbacks > self.max_rollbacks:
            raise TrainEngineError(
                f"non-finite loss or gradient at step {st.step + 1} after {self.max_rollbacks} rollbacks: "
                "giving up (training.max_rollbacks)"
            )
        if ckpt is None or not ckpt.available:
            raise TrainEngineError(
                "training.nonfinite_policy rollback needs checkpoints: "
                "enable checkpointing or keep tracking.write_run_dir on"
            )
        path = ckpt.rollback(trainer)
        factor = self.rollback_lr_factor**self.rollbacks
        trainer.scheduler.scale(factor)
        st = trainer.state  # reloaded from the checkpoint
        st.extra["rollbacks"] = self.rollbacks
        st.num_nonfinite_steps = nonfinite  # the reload must not hide the bad step
        logger.warning(
            "non-finite step: rolled back to %s (step %d), learning rate x%g (rollback %d of %d)",
            path,
            st.step,
            factor,
            self.rollbacks,
            self.max_rollbacks,
        )
        trainer.callbacks.fire(
            "on_log",
            trainer,
            {
                "type": "rollback",
                "step": st.step,
                "checkpoint": str(path),
                "lr_factor": factor,
                "rollbacks": self.rollbacks,
            },
        )
        raise RolledBack()

    def interrupted(self, trainer: Trainer) -> None:
        """After SIGINT/SIGTERM: emergency checkpoint, an ``interrupt`` log record, then raise.

        Raises:
            TrainingInterrupted: always (exit code 130 / 143, the checkpoint's path).
        """
        signum, path = trainer.pending_signal, None
        if signum is None:
            raise TrainEngineError("FaultHandler.interrupted called without a pending signal")
        ckpt = trainer.checkpointer
        if ckpt is not None and ckpt.available and self.save_on_interrupt:
            path = ckpt.save(trainer, tags=("emergency",), force_sync=True)
        trainer.flush_log()
        trainer.callbacks.fire(
            "on_log",
            trainer,
            {
                "type": "interrupt",
                "step": trainer.state.step,
                "signal": signum,
                "checkpoint": str(path) if path else None,
            },
        )
        exc = TrainingInterrupted(signum, trainer.state.step, path)
        logger.warning("%s", exc)
        raise exc
