"""Checkpoints in the loop: periodic saves, the full training state, resume, and interrupts.

The storage format lives in :mod:`trainengine.checkpoint`; this module decides *what* a
checkpoint of a training run holds and *when* it is written, and puts a run back exactly where a
checkpoint left it (model, optimizer, schedule, scaler, train state, every RNG, the data order
and position, callback state and the loss history).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from trainengine.engine._state import capture_rng_state, restore_rng_state
from trainengine.errors import CheckpointError, ConfigError

__all__ = [
    "Checkpointing",
    "TrainingInterrupted",
    "SignalGuard",
    "capture_training_state",
    "restore_training_state",
    "resolve_resume",
    "checkpoint_dir_for",
]

logger = logging.getLogger("trainengine")

_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after finishing its optimizer step.

    Attributes:
        signum: the signal received.
        exit_code: 130 for SIGINT, 143 for SIGTERM (what a shell expects).
        checkpoint_path: the emergency checkpoint written, or None.
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

    The handler only sets a flag: the loop finishes the optimizer step it is in (also when the
    signal lands during evaluation or mid-accumulation), then stops. Under several processes
    the flag is what ranks agree on at a step boundary (``Runtime.any_rank``), so all stop at
    the same step. Handlers are installed only from the main thread and restored on exit.
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
        logger.warning("%s received: finishing the current step, then saving and stopping (press Ctrl+C again to abort now)", signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def checkpoint_dir_for(config: Any, run_dir: Path | None) -> Path | None:
    """``checkpointing.checkpoint_dir`` if set, else ``<run_dir>/checkpoints`` (None without either)."""
    if config.checkpointing.checkpoint_dir:
        return Path(config.checkpointing.checkpoint_dir)
    return Path(run_dir) / "checkpoints" if run_dir is not None else None


def _manager(config: Any, directory: Path, monitor: str, mode: str) -> Any:
    from trainengine.checkpoint import CheckpointManager

    c = config.checkpointing
    return CheckpointManager(
        directory, keep_best_k=c.keep_best_k, keep_last_n=c.keep_last_n, save_interval_epochs=c.save_every_n_epochs,
        save_interval_steps=c.save_every_n_steps, monitor=monitor, mode=mode,
    )


def capture_training_state(trainer: Any) -> dict[str, Any]:
    """Everything but the weights that a resume needs, as a nested dict of tensors and scalars."""
    scaler = trainer.step_runner.scaler
    return {
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "train_state": trainer.state.state_dict(),
        "rng": capture_rng_state(),
        "data": trainer.data_position(),
        "callbacks": {
            type(cb).__name__: cb.state_dict() for cb in trainer.callbacks.callbacks if callable(getattr(cb, "state_dict", None))
        },
        "history": trainer.history,
    }


def restore_training_state(trainer: Any, loaded: Any) -> None:
    """Put a set-up Trainer back at the checkpoint (weights are loaded by the caller)."""
    state = loaded.state
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    scaler = trainer.step_runner.scaler
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    trainer.state.load_state_dict(state["train_state"])
    trainer.history = {k: list(v) for k, v in state["history"].items()}
    by_name = {type(cb).__name__: cb for cb in trainer.callbacks.callbacks}
    for name, cb_state in (state.get("callbacks") or {}).items():
        if name in by_name and callable(getattr(by_name[name], "load_state_dict", None)):
            by_name[name].load_state_dict(cb_state)
    trainer.resume_data = state.get("data")
    trainer.resume_rng = state["rng"]


def resolve_resume(config: Any, resume_from: str | Path | None) -> tuple[Path | None, Path | None]:
    """Find the checkpoint to resume from.

    Args:
        resume_from: None (fresh run), ``"auto"`` or a checkpoint / checkpoints folder / run directory.

    Returns:
        (checkpoint path or None, the run directory it belongs to or None).

    ``auto`` looks in ``checkpointing.checkpoint_dir`` if set, else in the run named by
    ``tracking.run_name``, else in the newest unfinished run of the experiment; with nothing to
    resume it starts fresh. A corrupt newer checkpoint is skipped with a warning naming it.

    Raises:
        CheckpointError: an explicit path holds no valid checkpoint.
    """
    if resume_from is None:
        return None, None
    from trainengine.checkpoint import CheckpointManager

    if resume_from == "auto":
        candidates: list[Path] = []
        if config.checkpointing.checkpoint_dir:
            candidates.append(Path(config.checkpointing.checkpoint_dir))
        else:
            root = Path(config.tracking.output_dir) / config.tracking.experiment_name
            if config.tracking.run_name:
                candidates.append(root / config.tracking.run_name / "checkpoints")
            elif root.is_dir():
                runs = sorted((p for p in root.iterdir() if (p / "checkpoints").is_dir()), reverse=True)
                candidates.extend(p / "checkpoints" for p in runs if _run_status(p) != "completed")
        for directory in candidates:
            if directory.is_dir():
                path = _latest_valid(CheckpointManager(directory), directory)
                if path is not None:
                    return path, _run_dir_of(path)
        logger.info("resume auto: no checkpoint found, starting a fresh run")
        return None, None
    path = Path(resume_from)
    if (path / "run.json").is_file() and (path / "checkpoints").is_dir():
        path = path / "checkpoints"  # a run directory
    if not path.exists():
        raise CheckpointError(f"cannot resume from {path}: it does not exist")
    if (path / "manifest.json").exists() or path.name.startswith("ckpt-"):
        problems = CheckpointManager(path.parent).verify(path)
        if problems:
            raise CheckpointError(f"cannot resume from {path}: " + "; ".join(problems))
        return path, _run_dir_of(path)
    found = _latest_valid(CheckpointManager(path), path)
    if found is None:
        raise CheckpointError(f"cannot resume: no valid checkpoint in {path}")
    return found, _run_dir_of(found)


def _latest_valid(manager: Any, directory: Path) -> Path | None:
    path, skipped = manager.get_latest_valid_checkpoint()
    for bad, problem in skipped:
        logger.warning("skipping corrupt checkpoint %s (%s); resuming from an older one", bad, problem)
    return path


def _run_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _run_dir_of(checkpoint: Path) -> Path | None:
    run_dir = checkpoint.parent.parent
    return run_dir if (run_dir / "run.json").is_file() else None


class Checkpointing:
    """Callback: periodic checkpoints (every N steps / epochs), best-k / last-n pruning.

    Also writes the emergency checkpoints the Trainer asks for (interrupts, ``halt``) and serves
    ``rollback``. A failed save (disk full, permissions) stops training with the error, or only
    logs it with ``checkpointing.on_save_error: continue``; earlier checkpoints stay intact.
    """

    rank_zero_only = True

    def __init__(self, periodic: bool = True) -> None:
        self.periodic = periodic
        if not periodic:
            # Emergency saves only: take no per-step event at all (the hot loop stays as it was).
            self.on_step_end = None  # type: ignore[assignment]
            self.on_epoch_end = None  # type: ignore[assignment]
        self.manager: Any = None
        self.directory: Path | None = None
        self._handle: Any = None
        self.last_path: Path | None = None
        self.stalls: list[float] = []

    def on_train_start(self, trainer: Any) -> None:
        self.directory = checkpoint_dir_for(trainer.config, trainer.run_dir)
        if self.directory is None:
            raise ConfigError("checkpointing needs a folder: set checkpointing.checkpoint_dir or keep tracking.write_run_dir on")
        self._trainer = trainer
        if self.periodic:
            self._ensure_manager()
        # Emergency-only: nothing touches the disk unless a checkpoint is actually written.

    @property
    def available(self) -> bool:
        """True when this callback can write checkpoints (it has a folder)."""
        return self.directory is not None

    def _ensure_manager(self) -> Any:
        if self.manager is None:
            t = self._trainer
            self.manager = _manager(t.config, self.directory, t.monitor, t.monitor_mode)
        return self.manager

    def on_step_end(self, trainer: Any, output: Any) -> None:
        if self.periodic and trainer.config.checkpointing.save_every_n_steps and self.manager.should_save(step=trainer.state.step):
            self.save(trainer)

    def on_epoch_end(self, trainer: Any, epoch: int) -> None:
        if self.periodic and trainer.config.checkpointing.save_every_n_epochs and self.manager.should_save(epoch_end=epoch):
            if self.last_path is None or not self.last_path.name.endswith(f"{trainer.state.step:09d}"):
                self.save(trainer)

    def save(self, trainer: Any, tags: tuple[str, ...] = (), *, force_sync: bool = False) -> Path | None:
        """Write a checkpoint of the trainer now; returns its path (None if the save failed and we go on)."""
        self._ensure_manager()
        trainer.flush_log()  # the loss history in the checkpoint is complete up to this step
        metrics = dict(trainer.history["val"][-1]) if trainer.history["val"] else {}
        metrics = {k: v for k, v in metrics.items() if k not in ("step", "epoch") and isinstance(v, (int, float))}
        kwargs = dict(
            step=trainer.state.step, epoch=trainer.state.epoch, model=trainer.model, state=capture_training_state(trainer),
            metrics=metrics, meta=trainer.checkpoint_meta(), tags=list(tags),
        )
        try:
            if trainer.config.checkpointing.async_save and not force_sync:
                self._handle = self.manager.save_async(**kwargs)
                self.stalls.append(self._handle.stall_seconds)
                path = self._handle.path if hasattr(self._handle, "path") else None
            else:
                path = self.manager.save(**kwargs)
        except (CheckpointError, OSError) as exc:
            return self._failed(trainer, exc)
        self.last_path = path or self.last_path
        trainer.callbacks.fire("on_checkpoint", trainer, {"path": str(path) if path else None, "step": trainer.state.step, "tags": list(tags)})
        return path

    def _failed(self, trainer: Any, exc: BaseException) -> None:
        message = f"checkpoint at step {trainer.state.step} failed: {exc}"
        if trainer.config.checkpointing.on_save_error == "continue":
            logger.error("%s — continuing without it (checkpointing.on_save_error: continue)", message)
            return None
        raise CheckpointError(f"{message} — training stopped; earlier checkpoints are intact. Free space or fix the folder, then resume") from exc

    def finish(self) -> None:
        """Wait for an asynchronous write in flight (its error, if any, surfaces here)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                self.last_path = handle.wait()
            finally:
                if self.manager is not None:
                    self.manager.close()

    def on_train_end(self, trainer: Any, results: dict[str, Any]) -> None:
        self.finish()
        results["last_checkpoint"] = str(self.last_path) if self.last_path else None
        best = self.manager.get_best_checkpoint() if self.manager is not None else None
        results["best_checkpoint"] = str(best) if best else None
        if self.stalls:
            results["checkpoint_stall_seconds"] = list(self.stalls)  # async saves: time the loop waited

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        try:
            self.finish()
        except Exception:  # noqa: BLE001 - the original error matters more
            logger.exception("asynchronous checkpoint write failed")

    def rollback(self, trainer: Any) -> Path:
        """Reload the newest valid checkpoint into the trainer (for ``nonfinite_policy: rollback``)."""
        self._ensure_manager()
        self.finish()
        path, skipped = self.manager.get_latest_valid_checkpoint()
        for bad, problem in skipped:
            logger.warning("skipping corrupt checkpoint %s (%s)", bad, problem)
        if path is None:
            raise CheckpointError("nonfinite_policy rollback found no checkpoint to roll back to — save checkpoints more often (checkpointing.save_every_n_steps)")
        trainer.load_checkpoint_into_self(path)
        return path


def restore_rng(trainer: Any) -> None:
    if getattr(trainer, "resume_rng", None) is not None:
        restore_rng_state(trainer.resume_rng)
        trainer.resume_rng = None
