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

import torch

from trainengine.data import count_nonfinite
from trainengine.errors import DataError, TrainEngineError

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


def _pending_skips(window: Any) -> int:
    """Skipped steps in the logging window not yet read back (one transfer for device flags)."""
    flags = [flag for _, flag in getattr(window, "pending", [])]
    if not flags:
        return 0
    on_host = sum(f for f in flags if isinstance(f, float))
    on_device = [f.float() for f in flags if isinstance(f, torch.Tensor)]
    return int(on_host + (torch.stack(on_device).sum().item() if on_device else 0))


class RolledBack(Exception):
    """Internal: a rollback moved the data position; the epoch loop restarts from it."""


class FaultHandler:
    """What the loop does when a step goes wrong; called only on the (rare) faulty steps.

    Args:
        policy: ``training.nonfinite_policy`` (skip / halt / rollback).
        max_rollbacks: give up after this many rollbacks.
        rollback_lr_factor: the learning rate is multiplied by this after each rollback.
        save_on_interrupt: write an emergency checkpoint on SIGINT/SIGTERM.
        max_nonfinite_fraction: ``skip``: stop when this fraction of an epoch's optimizer steps
            (or more) were skipped as non-finite (1.0 = when none succeeded; None = never).

    Example:
        >>> FaultHandler("skip", max_rollbacks=3, rollback_lr_factor=0.5, save_on_interrupt=True).rollbacks
        0
    """

    def __init__(
        self,
        policy: str,
        *,
        max_rollbacks: int,
        rollback_lr_factor: float,
        save_on_interrupt: bool,
        max_nonfinite_fraction: float | None = 1.0,
    ) -> None:
        self.policy = policy
        self.max_rollbacks = max_rollbacks
        self.rollback_lr_factor = rollback_lr_factor
        self.save_on_interrupt = save_on_interrupt
        self.max_nonfinite_fraction = max_nonfinite_fraction
        self.rollbacks = 0
        # (optimizer step, skipped steps so far) where the current epoch started.
        self._epoch_mark = (0, 0)

    def start(self, trainer: Trainer) -> None:
        """The loop starts (or resumes): the epoch's skip count starts here."""
        self._epoch_mark = (trainer.state.step, trainer.state.num_nonfinite_steps)

    def check_epoch(self, trainer: Trainer) -> None:
        """At an epoch end (and the run's end): stop when too many of its steps were skipped.

        Under ``nonfinite_policy: skip`` a step with a non-finite loss or gradient is dropped and
        the run goes on; when every step of an epoch is dropped (or the configured fraction),
        the model learned nothing and whatever it reports is computed from NaN. The skip flags
        are read back here, once per epoch (the loop reads them nowhere else between logs).

        Raises:
            DataError: too many skipped steps and the training data holds NaN/Inf values.
            TrainEngineError: too many skipped steps, the data looks finite.
        """
        if self.policy != "skip" or self.max_nonfinite_fraction is None:
            return
        st = trainer.state
        skipped_total = st.num_nonfinite_steps + _pending_skips(trainer.log_window)
        start_step, start_skipped = self._epoch_mark
        self._epoch_mark = (st.step, skipped_total)
        steps, skipped = st.step - start_step, skipped_total - start_skipped
        if steps <= 0 or skipped < self.max_nonfinite_fraction * steps:
            return
        trainer.flush_log()  # the skipped steps' warning and log record, before the error
        what = (
            f"no optimizer step succeeded in epoch {st.epoch}: all {steps} were skipped"
            if skipped == steps
            else f"{skipped} of the {steps} optimizer steps of epoch {st.epoch} ({skipped / steps:.0%}) were skipped"
        )
        limit = f"training.max_nonfinite_fraction {self.max_nonfinite_fraction:g}"
        head = f"{what} because the loss or a gradient was not finite ({limit}); stopping"
        dataset = getattr(trainer.train_loader, "dataset", None)
        bad, first, checked = count_nonfinite(dataset)
        fingerprint = trainer.info.get("train_fingerprint")
        data = f"the training data (fingerprint {fingerprint[:12]})" if fingerprint else "the training data"
        if bad:
            raise DataError(
                f"{head}. Likely cause: {data} holds {bad} NaN/Inf value(s) in its first {checked} samples "
                f"(the first in sample {first}) — clean or impute them before training"
            )
        checked_note = f" ({checked} samples checked)" if checked else ""
        raise TrainEngineError(
            f"{head}. {data[0].upper()}{data[1:]} holds no NaN/Inf{checked_note}, so the model diverged: "
            "lower training.learning_rate, set training.max_grad_norm, or use precision bf16/fp32 instead of fp16"
        )

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
