"""Checkpoints in the loop: the Trainer's checkpointer, the full training state, and resume.

The storage format lives in :mod:`trainengine.checkpoint`; this module decides *what* a
checkpoint of a training run holds and *when* it is written, and puts a run back exactly where a
checkpoint left it (model, optimizer, schedule, scaler, train state, every RNG, the data order
and position, callback state and the loss history).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trainengine.engine._faults import SignalGuard, TrainingInterrupted
from trainengine.engine._state import restore_rng_state
from trainengine.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from trainengine.config import TrainingConfig
    from trainengine.engine._trainer import Trainer

__all__ = [
    "Checkpointer",
    "Checkpointing",
    "TrainingInterrupted",
    "SignalGuard",
    "capture_training_state",
    "restore_training_state",
    "resolve_resume",
    "checkpoint_dir_for",
]

logger = logging.getLogger("trainengine")


def checkpoint_dir_for(config: Any, run_dir: Path | None) -> Path | None:
    """``checkpointing.checkpoint_dir`` if set, else ``<run_dir>/checkpoints`` (None without either)."""
    if config.checkpointing.checkpoint_dir:
        return Path(config.checkpointing.checkpoint_dir)
    return Path(run_dir) / "checkpoints" if run_dir is not None else None


def _manager(config: Any, directory: Path, monitor: str, mode: Literal["min", "max"]) -> Any:
    from trainengine.checkpoint import CheckpointManager

    c = config.checkpointing
    return CheckpointManager(
        directory,
        keep_best_k=c.keep_best_k,
        keep_last_n=c.keep_last_n,
        save_interval_epochs=c.save_every_n_epochs,
        save_interval_steps=c.save_every_n_steps,
        monitor=monitor,
        mode=mode,
        folder_name=c.folder_name,
    )


def capture_training_state(trainer: Trainer, *, optimizer: bool = True) -> dict[str, Any]:
    """Everything but the weights that a resume needs, as a nested dict of tensors and scalars.

    ``optimizer=False`` leaves the optimizer out (a sharded checkpoint stores it through DCP).
    """
    from trainengine.checkpoint import named_optimizer_state
    from trainengine.engine._state import capture_rng_state

    scaler = trainer.step_runner.scaler
    out = {
        # With parameter names, so the state loads into any grouping of the same parameters.
        "optimizer": named_optimizer_state(trainer.optimizer, trainer.model) if optimizer else None,
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "train_state": trainer.state.state_dict(),
        "rng": capture_rng_state(),
        "data": trainer.data_iter.state_dict(),
        "callbacks": _callback_states(trainer),
        "history": trainer.history,
    }
    if not optimizer:
        del out["optimizer"]
    return out


def _callback_states(trainer: Trainer) -> dict[str, Any]:
    """``{class name: state_dict()}`` of the callbacks that have state (saved in checkpoints)."""
    getters = {type(cb).__name__: getattr(cb, "state_dict", None) for cb in trainer.callbacks.callbacks}
    return {name: get() for name, get in getters.items() if callable(get)}


def restore_training_state(trainer: Trainer, loaded: Any, *, optimizer: bool = True) -> None:
    """Put a set-up Trainer back at the checkpoint (weights are loaded by the caller).

    ``optimizer=False``: the caller loaded the optimizer too (a sharded checkpoint).
    """
    from trainengine.checkpoint import load_optimizer_state

    state = loaded.state
    if optimizer:
        load_optimizer_state(trainer.optimizer, state["optimizer"], trainer.model, where=str(loaded.meta.path))
    trainer.scheduler.load_state_dict(state["scheduler"])
    scaler = trainer.step_runner.scaler
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    trainer.state.load_state_dict(state["train_state"])
    trainer.history = {k: list(v) for k, v in state["history"].items()}
    loaders = {type(cb).__name__: getattr(cb, "load_state_dict", None) for cb in trainer.callbacks.callbacks}
    for name, cb_state in (state.get("callbacks") or {}).items():
        load = loaders.get(name)
        if callable(load):
            load(cb_state)
    trainer.data_iter.load_state_dict(state.get("data"))
    trainer.resume_rng = state["rng"]


def checkpoint_meta(trainer: Trainer) -> dict[str, Any]:
    """Run facts stored in every checkpoint's metadata (config, task, model spec, git, versions)."""
    from trainengine.models import model_spec
    from trainengine.provenance import git_info, library_versions

    return {
        "config": trainer.config.to_dict(),
        "task": trainer.task_spec.to_dict(),
        "model_spec": model_spec(trainer.model, trainer.model_config),
        "git": git_info(),
        "versions": library_versions(),
        "run_dir": str(trainer.run_dir) if trainer.run_dir is not None else None,
        "world_size": getattr(
            trainer.runtime, "world_size", 1
        ),  # a resume on another world size is refused or resharded
        # File data: what serving needs to see inputs as training did (export reads it from here).
        "data": {k: trainer.info[k] for k in ("preprocessing", "tokenizer", "tokenizer_json") if trainer.info.get(k)},
    }


def load_checkpoint_into(trainer: Trainer, path: Path) -> None:
    """Restore weights and the full training state from a checkpoint into a set-up trainer.

    Under FSDP2 every rank loads its slices (any saved world size, resharded by DCP). Elsewhere a
    sharded checkpoint is assembled whole; a whole checkpoint written by another number of
    processes is refused, because its data order cannot continue exactly.

    Raises:
        CheckpointError: the checkpoint is corrupt, or was written by another world size under DDP.
    """
    from trainengine.checkpoint import CheckpointManager, load_model_state

    rt = trainer._runtime()
    if rt.checkpoint_io is not None:
        got = rt.checkpoint_io.load(Path(path), trainer.model, trainer.optimizer)
        if got.rank_state is not None:
            got.state["rng"] = got.rank_state["rng"]  # this rank's own streams
        restore_training_state(trainer, got, optimizer=False)
        saved_world = got.saved_world
        resharded = True
    else:
        loaded = CheckpointManager(Path(path).parent).read(path)
        saved_world = int((loaded.sharded or {}).get("world_size") or loaded.meta.extra.get("world_size") or 1)
        resharded = loaded.sharded is not None
        if saved_world != rt.world_size and not resharded:
            raise CheckpointError(
                f"cannot resume {path} on {rt.world_size} process(es): it was written by {saved_world}, and the data "
                "order of a run depends on its number of processes, so it would not continue exactly. Relaunch with "
                f"--nproc-per-node {saved_world} (world size {saved_world}), or train with distributed.strategy fsdp2, "
                "whose sharded checkpoints resume on any number of processes"
            )
        load_model_state(trainer.model, loaded.model_state)  # plain, compiled or DDP-wrapped
        restore_training_state(trainer, loaded)
    if saved_world != rt.world_size:
        saved_config = (got.meta if rt.checkpoint_io is not None else loaded.meta).config or {}
        saved_batch = int((saved_config.get("training") or {}).get("batch_size") or trainer.config.training.batch_size)
        _rescale_position(trainer, saved_world * saved_batch, rt.world_size)
    st = trainer.state
    logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, st.step, st.epoch, st.batch_in_epoch)


def _rescale_position(trainer: Trainer, saved_micro_batch: int, world: int) -> None:
    """The position inside the epoch in micro-batches of this run (the same samples seen).

    ``saved_micro_batch``: the samples of one micro-batch over all processes of the saved run.
    Each global micro-batch is a contiguous stretch of the epoch's order, so the position carries
    over exactly when the sample count divides into this run's windows.
    """
    st = trainer.state
    t = trainer.config.training
    samples = st.batch_in_epoch * saved_micro_batch
    window = t.batch_size * world * t.gradient_accumulation_steps
    st.batch_in_epoch = samples // window * t.gradient_accumulation_steps
    kept = st.batch_in_epoch // t.gradient_accumulation_steps * window
    logger.warning(
        "resuming a checkpoint written by another number of processes on %d: the run continues after %d samples of "
        "epoch %d%s",
        world,
        kept,
        st.epoch,
        "" if kept == samples else f" (rounded down from {samples}: those samples are seen twice)",
    )


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
    from trainengine.checkpoint import is_checkpoint_name

    if (path / "manifest.json").exists() or is_checkpoint_name(path.name):
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


class Checkpointer:
    """The Trainer's checkpointer: periodic saves, emergency saves, rollback, best / last paths.

    A component the Trainer owns (``trainer.checkpointer``) and calls at fixed points of the
    loop: :meth:`start` after ``on_train_start`` (the run directory exists then),
    :meth:`step_end` after each step's logging and evaluation, :meth:`epoch_end` after
    ``on_epoch_end``, :meth:`save` for emergencies (interrupt, ``halt``), :meth:`rollback`, and
    :meth:`train_end` before ``on_train_end``. Each write fires ``on_checkpoint``. Callbacks read
    :attr:`last_path` / :attr:`best_path`; they never save through it.

    A failed save (disk full, permissions) stops training with the error, or only logs it with
    ``checkpointing.on_save_error: continue``; earlier checkpoints stay intact.

    Args:
        config: the run's config (``checkpointing`` section).
        monitor: the metric that ranks checkpoints (``val/accuracy``).
        mode: ``min`` or ``max`` for ``monitor``.
        periodic: save every N steps / epochs (``checkpointing.enabled``); False = emergency
            saves only, and the loop's per-step call does nothing.

    Example:
        >>> from trainengine import TrainingConfigBuilder
        >>> cfg = TrainingConfigBuilder.baseline().build()
        >>> ckpt = Checkpointer.from_config(cfg, monitor="val/loss", mode="min")
        >>> ckpt.periodic, ckpt.last_path, ckpt.available  # no folder until training starts
        (True, None, False)
    """

    def __init__(
        self, config: TrainingConfig, *, monitor: str, mode: Literal["min", "max"], periodic: bool = True
    ) -> None:
        c = config.checkpointing
        self.config = config
        self.monitor = monitor
        self.mode = mode
        self.periodic = periodic
        self.every_n_steps = c.save_every_n_steps if periodic else None
        self.every_n_epochs = c.save_every_n_epochs if periodic else None
        self.directory: Path | None = None
        self.manager: Any = None  # a CheckpointManager, opened on the first save
        self.last_path: Path | None = None
        self.stalls: list[float] = []  # async saves: seconds the loop waited for each copy
        # This process writes checkpoint folders. False on ranks other than 0: under DDP they only take part in
        # the save's collectives (the log flush), under FSDP2 they write their shards as well.
        self.writes = True
        self._saved_step: int | None = None  # the step of the last save (every rank: the same decisions)
        self._handle: Any = None  # the asynchronous write in flight

    @classmethod
    def from_config(cls, config: TrainingConfig, *, monitor: str, mode: Literal["min", "max"]) -> Checkpointer | None:
        """A checkpointer when the config asks for periodic or emergency saves, else None."""
        c = config.checkpointing
        wants_emergency = c.save_on_interrupt or config.training.nonfinite_policy != "skip"
        if c.enabled or (wants_emergency and (c.checkpoint_dir or config.tracking.write_run_dir)):
            return cls(config, monitor=monitor, mode=mode, periodic=c.enabled)
        return None

    @property
    def available(self) -> bool:
        """True when checkpoints can be written (there is a folder)."""
        return self.directory is not None

    @property
    def best_path(self) -> Path | None:
        """The checkpoint with the best monitored metric so far (None when none has it)."""
        return self.manager.get_best_checkpoint() if self.manager is not None else None

    def start(self, trainer: Trainer) -> None:
        """Pick the folder: ``checkpointing.checkpoint_dir``, else ``<run_dir>/checkpoints``.

        Raises:
            ConfigError: periodic checkpoints with neither folder.
        """
        self.directory = checkpoint_dir_for(self.config, trainer.run_dir)
        rt = trainer._runtime()
        self.writes = rt.is_rank_zero  # sharded saves: every rank writes shards, rank 0 the rest
        if rt.world_size > 1:  # the other ranks have no run directory: rank 0's folder, everywhere
            shared = rt.broadcast_text(str(self.directory) if self.directory is not None else None)
            self.directory = Path(shared) if shared is not None else None
        if self.directory is None and self.periodic:
            raise ConfigError(
                "checkpointing needs a folder: set checkpointing.checkpoint_dir or keep tracking.write_run_dir on"
            )
        if self.periodic and self.writes:
            self._ensure_manager()
        # Emergency-only: nothing touches the disk unless a checkpoint is actually written.

    def _ensure_manager(self) -> Any:
        if self.manager is None:
            if self.directory is None:
                raise ConfigError(
                    "no checkpoint folder: set checkpointing.checkpoint_dir or keep tracking.write_run_dir on"
                )
            self.manager = _manager(self.config, self.directory, self.monitor, self.mode)
        return self.manager

    def step_end(self, trainer: Trainer) -> None:
        """After a step's logging and evaluation: save when ``save_every_n_steps`` asks for it."""
        step = trainer.state.step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.save(trainer)

    def epoch_end(self, trainer: Trainer, epoch: int) -> None:
        """After ``on_epoch_end``: save when ``save_every_n_epochs`` asks (once per step)."""
        saved_this_step = self._saved_step == trainer.state.step
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0 and not saved_this_step:
            self.save(trainer)

    def save(self, trainer: Trainer, tags: tuple[str, ...] = (), *, force_sync: bool = False) -> Path | None:
        """Write a checkpoint of the trainer now; returns its path (None if the save failed and we go on)."""
        io = trainer._runtime().checkpoint_io
        if self.writes:
            self._ensure_manager()
        trainer.flush_log()  # the loss history in the checkpoint is complete up to this step (a collective)
        self._saved_step = trainer.state.step
        metrics = dict(trainer.history["val"][-1]) if trainer.history["val"] else {}
        metrics = {k: v for k, v in metrics.items() if k not in ("step", "epoch") and isinstance(v, (int, float))}
        if io is not None:
            return self._save_sharded(trainer, io, tags, metrics, asynchronous=not force_sync)
        if not self.writes:
            return None  # DDP: rank 0 holds the same weights and writes them
        kwargs: dict[str, Any] = {
            "step": trainer.state.step,
            "epoch": trainer.state.epoch,
            "model": trainer.model,
            "state": capture_training_state(trainer),
            "metrics": metrics,
            "meta": trainer.checkpoint_meta(),
            "tags": list(tags),
        }
        try:
            if self.config.checkpointing.async_save and not force_sync:
                self._handle = self.manager.save_async(**kwargs)
                self.stalls.append(self._handle.stall_seconds)
                path = self._handle.path if hasattr(self._handle, "path") else None
            else:
                path = self.manager.save(**kwargs)
        except (CheckpointError, OSError) as exc:
            self._failed(trainer, exc)
            return None
        self.last_path = path or self.last_path
        trainer.callbacks.fire(
            "on_checkpoint",
            trainer,
            {"path": str(path) if path else None, "step": trainer.state.step, "tags": list(tags)},
        )
        return path

    def _save_sharded(
        self, trainer: Trainer, io: Any, tags: tuple[str, ...], metrics: dict[str, Any], *, asynchronous: bool
    ) -> Path | None:
        """FSDP2: every rank writes its shards, rank 0 the rest; ``async_save``: in a background thread."""
        from trainengine.engine._state import capture_rng_state

        st, world = trainer.state, trainer._runtime().world_size
        asynchronous = asynchronous and self.config.checkpointing.async_save
        step, epoch = st.step, st.epoch
        state = capture_training_state(trainer, optimizer=False)
        if asynchronous:  # written after the loop moved on: a copy of this moment (the history list keeps growing)
            state = copy.deepcopy(state)
        manager, meta = self.manager, trainer.checkpoint_meta() if self.writes else None

        def publish(tmp: Path, written: dict[str, dict[str, Any]], doc: dict[str, Any]) -> Path:
            sharded = {"world_size": world, **doc}
            return manager.complete(
                tmp, written=written, state_extra={"sharded": sharded}, step=step, epoch=epoch,
                state=state, metrics=metrics, meta=meta, tags=list(tags),
            )  # fmt: skip

        from trainengine.checkpoint import checkpoint_name

        assert self.directory is not None  # start() picked it, or refused to go on without one
        final = self.directory / checkpoint_name(step, self.config.checkpointing.folder_name)
        kwargs: dict[str, Any] = {
            "directory": self.directory,
            "step": step,
            "model": trainer.model,
            "optimizer": trainer.optimizer,
            "rank_state": {"rng": capture_rng_state()},
            "publish": publish if self.writes else None,
        }
        try:
            if asynchronous:
                self.finish()  # one save in flight: the previous one's error surfaces here, on every rank
                self._handle = io.save_async(final=final, **kwargs)
                self.stalls.append(self._handle.stall_seconds)
                path = final
            else:
                path = io.save(**kwargs) or final  # the other ranks: the folder rank 0 completed
        except (CheckpointError, OSError) as exc:
            self._failed(trainer, exc)
            return None
        self.last_path = path
        trainer.callbacks.fire("on_checkpoint", trainer, {"path": str(path), "step": step, "tags": list(tags)})
        return Path(path)

    def _failed(self, trainer: Trainer, exc: BaseException) -> None:
        message = f"checkpoint at step {trainer.state.step} failed: {exc}"
        if self.config.checkpointing.on_save_error == "continue":
            logger.error("%s — continuing without it (checkpointing.on_save_error: continue)", message)
            return None
        raise CheckpointError(
            f"{message} — training stopped; earlier checkpoints are intact. Free space or fix the folder, then resume"
        ) from exc

    def finish(self) -> None:
        """Wait for an asynchronous write in flight (its error, if any, surfaces here)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                self.last_path = handle.wait()
            finally:
                if self.manager is not None:
                    self.manager.close()

    def train_end(self) -> None:
        """Before ``on_train_end``: every write is on disk, so the paths are final."""
        self.finish()

    def abort(self) -> None:
        """Training failed: wait for the write in flight, logging (not raising) its error."""
        try:
            self.finish()
        except Exception:
            logger.exception("asynchronous checkpoint write failed")

    def rollback(self, trainer: Trainer) -> Path:
        """Reload the newest valid checkpoint into the trainer (for ``nonfinite_policy: rollback``)."""
        self._ensure_manager()
        self.finish()
        path, skipped = self.manager.get_latest_valid_checkpoint()
        for bad, problem in skipped:
            logger.warning("skipping corrupt checkpoint %s (%s)", bad, problem)
        if path is None:
            raise CheckpointError(
                "nonfinite_policy rollback found no checkpoint to roll back to — "
                "save checkpoints more often (checkpointing.save_every_n_steps)"
            )
        trainer.load_checkpoint_into_self(path)
        return path


# The name before the checkpointer became a Trainer component (it was a callback then).
Checkpointing = Checkpointer


def restore_rng(trainer: Trainer) -> None:
    """Continue every random stream where the checkpoint left it (once, at the loop's start)."""
    if trainer.resume_rng is not None:
        restore_rng_state(trainer.resume_rng)
        trainer.resume_rng = None
