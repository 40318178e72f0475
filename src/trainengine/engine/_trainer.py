"""The Trainer: a short loop that emits events; everything else is a callback."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from dataclasses import asdict, is_dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import IterableDataset

from trainengine.config import TrainingConfig
from trainengine.data import build_dataloader, check_overlap, fingerprint_dataset
from trainengine.engine._callbacks import CallbackList, EarlyStopping
from trainengine.engine._checkpointing import (
    Checkpointing,
    SignalGuard,
    TrainingInterrupted,
    resolve_resume,
    restore_rng,
    restore_training_state,
)
from trainengine.engine._optim import build_optimizer
from trainengine.engine._runtime import Runtime, peak_flops_for, restore_determinism, seed_everything
from trainengine.engine._state import TrainState, capture_rng_state, restore_rng_state
from trainengine.engine._step import StepOutput, StepRunner, call_model, extract_logits, split_batch
from trainengine.engine.schedules import build_scheduler
from trainengine.errors import ConfigError, DataError, TaskError, TrainEngineError
from trainengine.models import model_spec
from trainengine.tasks import METRIC_MODES, TaskSpec

__all__ = ["Trainer"]

logger = logging.getLogger("trainengine")


class Trainer:
    """Train a model on a task with a validated :class:`~trainengine.config.TrainingConfig`.

    Args:
        model: the ``nn.Module`` to train.
        config: the model's own config (e.g. a ``GPTConfig``), recorded in the run; None for a
            model you built yourself.
        training_config: the run's config; None = defaults.
        task_spec: what is learned — ``TaskSpec.classification(...)``, ``.language_modeling(...)``,
            ``.regression(...)`` or ``.vision_tiny()``. Required: it picks the loss and metrics.
        gradient_monitor: optional :class:`~trainengine.monitoring.GradientMonitor`.
        callbacks: extra callbacks (objects with ``on_*`` event methods).

    Example:
        >>> from trainengine import Trainer, TaskSpec, TrainingConfigBuilder
        >>> from trainengine.data import load_builtin
        >>> from trainengine.models import MLP
        >>> splits = load_builtin("digits")
        >>> cfg = TrainingConfigBuilder.quick_prototype().with_tracking(write_run_dir=False, progress="off").build()
        >>> results = Trainer(MLP(64, 10), None, cfg, TaskSpec.classification("digits", 10)).train(splits.train, splits.val)
        >>> results["best_metric"] > 0.9
        True
    """

    # Swappable components, set in __init__ / train().
    model: nn.Module
    task_spec: TaskSpec
    config: TrainingConfig
    runtime: Runtime
    optimizer: torch.optim.Optimizer
    scheduler: Any
    callbacks: CallbackList
    # Fixed state.
    state: TrainState
    history: dict[str, list[dict[str, Any]]]
    run_dir: Any

    def __init__(
        self,
        model: nn.Module,
        config: Any = None,
        training_config: TrainingConfig | None = None,
        task_spec: TaskSpec | None = None,
        gradient_monitor: Any = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        if isinstance(config, TrainingConfig) and training_config is None:
            # Trainer(model, training_config) called positionally without a model config.
            config, training_config = None, config
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if task_spec is None:
            raise TaskError(
                "task_spec is required: it selects the loss and the metrics. Pass one of "
                "TaskSpec.classification(name, num_classes), TaskSpec.language_modeling(name), "
                "TaskSpec.regression(name) or TaskSpec.vision_tiny()"
            )
        if not isinstance(task_spec, TaskSpec):
            raise TaskError(f"task_spec must be a TaskSpec, got {type(task_spec).__name__}")
        training_config = training_config if training_config is not None else TrainingConfig()
        if not isinstance(training_config, TrainingConfig):
            raise ConfigError(f"training_config must be a TrainingConfig, got {type(training_config).__name__}")
        self.model = model
        self.model_config = config
        self.config = training_config.validate()
        self.task_spec = _with_label_smoothing(task_spec, training_config.training.label_smoothing)
        self.gradient_monitor = gradient_monitor
        self.extra_callbacks = list(callbacks or [])
        self.state = TrainState()
        self.history = {"train": [], "val": []}
        self.run_dir = None
        self.info: dict[str, Any] = {}  # run facts callbacks record (fingerprints, sizes, ...)
        t = self.config.training
        self.monitor = _canonical_metric(t.monitor or task_spec.monitor)
        available = [f"val/{m}" for m in task_spec.metrics]
        if self.monitor not in available:
            raise ConfigError(f"training.monitor '{self.monitor}' is not reported by a {task_spec.task_type} task — available: {', '.join(available)}")
        # auto = the direction of the metric actually monitored (loss down, accuracy up, ...).
        self.monitor_mode = METRIC_MODES[self.monitor.split("/", 1)[1]] if t.monitor_mode == "auto" else t.monitor_mode
        self._stop_reason: str | None = None
        self.pending_signal: int | None = None  # set by SignalGuard; the loop stops at the next step boundary
        self.resume_from: Path | None = None
        self.resume_run_dir: Path | None = None
        self.resume_data: dict[str, Any] | None = None
        self.resume_rng: dict[str, Any] | None = None
        self.checkpointing: Checkpointing | None = None
        self._rollbacks = 0

    # ------------------------------------------------------------------ public API
    def request_stop(self, reason: str, *, early: bool = False) -> None:
        """Ask the loop to stop after the current optimizer step (callbacks use this)."""
        self._stop_reason = reason
        self.state.stop_reason = reason
        self.state.stopped_early = self.state.stopped_early or early

    def train(self, train_data: Any = None, val_data: Any = None, *, resume_from: str | Path | None = None) -> dict[str, Any]:
        """Run training and return the results.

        Args:
            train_data: a torch Dataset, DataLoader, (X, y) tensors/arrays, or a list of samples.
                None = the built-in data set named by ``config.data.dataset``.
            val_data: the same kinds; None = no validation (unless a built-in data set is used).
            resume_from: ``"auto"`` (the newest valid checkpoint of this run or experiment, else
                a fresh start), a checkpoint folder, a checkpoints folder or a run directory.
                The run continues at the exact batch where the checkpoint was taken.

        Raises:
            TrainingInterrupted: on SIGINT/SIGTERM, after the emergency checkpoint (exit code 130/143).

        Returns:
            dict with ``best_val_loss``, ``best_metric``, ``best_metric_name``, ``final_metrics``,
            ``best_step``, ``history``, ``steps``, ``epochs``, ``stopped_early``, ``stop_reason``, ``run_dir``,
            ``samples_per_second``, ``tokens_per_second``, ``mfu``, ``train_time_s``,
            ``wall_time_s``, ``nonfinite_steps``, ``num_parameters``, ``device``, ``precision``,
            ``last_checkpoint``, ``best_checkpoint``.
        """
        wall_start = time.perf_counter()
        cfg = self.config
        t = cfg.training
        previous = seed_everything(t.seed, deterministic=t.deterministic)
        try:
            self.resume_from, self.resume_run_dir = resolve_resume(cfg, resume_from)
            train_data, val_data = self._resolve_data(train_data, val_data)
            self.runtime = Runtime(t.device, t.precision)
            self._setup(train_data, val_data)
            if self.resume_from is not None:
                self.load_checkpoint_into_self(self.resume_from)
            with SignalGuard(self):
                return self._run(wall_start)
        finally:
            restore_determinism(previous)

    # ------------------------------------------------------------------ setup
    def _resolve_data(self, train_data: Any, val_data: Any) -> tuple[Any, Any]:
        if train_data is not None:
            return train_data, val_data
        name = self.config.data.dataset
        if name is None:
            raise DataError("no training data: pass train_data to Trainer.train() or set data.dataset (digits, diabetes, pystdlib)")
        from trainengine.engine._build import load_data_for

        splits = load_data_for(self.config, self.task_spec)
        return splits.train, (val_data if val_data is not None else splits.val)

    def _setup(self, train_data: Any, val_data: Any) -> None:
        cfg, t, rt = self.config, self.config.training, self.runtime
        pin = rt.pin_memory(cfg.data.pin_memory)
        self.train_loader = build_dataloader(
            train_data, batch_size=t.batch_size, shuffle=cfg.data.shuffle, seed=t.seed, drop_last=cfg.data.drop_last,
            num_workers=cfg.data.num_workers, pin_memory=pin, deterministic=t.deterministic,
        )
        self.val_loader = None
        if val_data is not None:
            self.val_loader = build_dataloader(
                val_data, batch_size=t.eval_batch_size or 2 * t.batch_size, shuffle=False, seed=t.seed,
                num_workers=cfg.data.num_workers, pin_memory=pin,
            )
        if self.val_loader is None:
            needs = [n for n, on in (("training.early_stopping_patience", t.early_stopping_patience is not None),
                                     ("scheduler.name reduce_on_plateau", cfg.scheduler.name == "reduce_on_plateau")) if on]
            if needs:
                raise ConfigError(f"{' and '.join(needs)} need validation data — pass val_data to train() or use a built-in data set")
        self._record_data_facts(train_data, val_data)
        try:
            self.batches_per_epoch = len(self.train_loader)
        except TypeError:
            self.batches_per_epoch = None
        accum = t.gradient_accumulation_steps
        if t.max_steps is not None:
            self.total_steps = t.max_steps
        elif self.batches_per_epoch is None:
            raise ConfigError("the training data has no length (an IterableDataset?): set training.max_steps")
        else:
            self.total_steps = t.epochs * math.ceil(self.batches_per_epoch / accum)
        if self.total_steps < 1:
            raise DataError("the training data produced no batches — check the data set and data.drop_last")

        self.model = rt.prepare_model(self.model)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        self.optimizer = build_optimizer(self.model, cfg.optimizer, t.learning_rate, rt.device)
        s = cfg.scheduler
        self.scheduler = build_scheduler(
            self.optimizer, name=s.name, total_steps=self.total_steps, warmup_steps=s.warmup_steps, warmup_ratio=s.warmup_ratio,
            min_lr_ratio=s.min_lr_ratio, cycle_steps=s.cycle_steps, cyclic_base_lr_ratio=s.cyclic_base_lr_ratio,
            cyclic_mode=s.cyclic_mode, cyclic_gamma=s.cyclic_gamma, one_cycle_pct_start=s.one_cycle_pct_start, one_cycle_div_factor=s.one_cycle_div_factor,
            one_cycle_final_div_factor=s.one_cycle_final_div_factor, plateau_factor=s.plateau_factor,
            plateau_patience=s.plateau_patience, plateau_threshold=s.plateau_threshold, plateau_mode=self.monitor_mode,
            plateau_cooldown=s.plateau_cooldown,
        )
        # The loop calls the compiled module; self.model stays the plain one (canonical state-dict keys).
        self.forward_model = torch.compile(self.model) if t.compile else self.model
        self.loss_strategy = self.task_spec.loss_strategy
        self.step_runner = StepRunner(
            self.forward_model, self.optimizer, self.loss_strategy, rt, t.max_grad_norm, rt.make_grad_scaler(),
            oom_policy=t.oom_policy, oom_max_splits=t.oom_max_splits,
        )
        if t.nonfinite_policy != "skip":
            # halt/rollback act at the bad step itself, so its flag is read every step (opt-in cost).
            self.step_runner.check_on_host = True
        self.callbacks = CallbackList(self._default_callbacks() + self.extra_callbacks, is_rank_zero=rt.is_rank_zero)
        self.peak_flops = peak_flops_for(rt.device, cfg.monitoring.peak_flops)
        flops_fn = getattr(self.model, "num_flops_per_token", None)
        seq_len = self.info.get("seq_len")
        self.flops_per_token = flops_fn(seq_len) if callable(flops_fn) and self.task_spec.task_type == "language_modeling" else None

    def _record_data_facts(self, train_data: Any, val_data: Any) -> None:
        train_ds = getattr(self.train_loader, "dataset", None)
        val_ds = getattr(self.val_loader, "dataset", None) if self.val_loader is not None else None
        self.info["num_train_samples"] = _safe_len(train_ds)
        self.info["num_val_samples"] = _safe_len(val_ds)
        self.info["train_fingerprint"] = _safe_fingerprint(train_ds)
        self.info["val_fingerprint"] = _safe_fingerprint(val_ds)
        indexable = not isinstance(train_ds, IterableDataset) and not isinstance(val_ds, IterableDataset)
        if train_ds is not None and val_ds is not None and indexable and self.config.data.check_overlap:
            try:
                self.info["train_val_overlap"] = check_overlap(train_ds, val_ds)
            except (TypeError, DataError):
                self.info["train_val_overlap"] = None  # a dataset we cannot index or hash
        if self.task_spec.task_type == "language_modeling" and indexable and train_ds is not None and _safe_len(train_ds):
            sample = train_ds[0]
            _, labels = split_batch(sample)
            self.info["seq_len"] = int(labels.shape[-1])

    def _default_callbacks(self) -> list[Any]:
        from trainengine.tracking import ConsoleProgress, RunDirectory

        cfg = self.config
        callbacks: list[Any] = []
        if cfg.export.enabled:
            from trainengine.export._callback import ExportOnTrainEnd

            callbacks.append(ExportOnTrainEnd())  # before RunDirectory: run.json records export_dir
        if cfg.tracking.write_run_dir:
            callbacks.append(RunDirectory())
        c = cfg.checkpointing
        wants_emergency = c.save_on_interrupt or cfg.training.nonfinite_policy != "skip"
        if c.enabled or (wants_emergency and (c.checkpoint_dir or cfg.tracking.write_run_dir)):
            self.checkpointing = Checkpointing(periodic=c.enabled)
            callbacks.append(self.checkpointing)
        if cfg.tracking.backends:
            from trainengine.tracking._callbacks import TrackerCallback

            callbacks.append(TrackerCallback(cfg.tracking.backends))
        if cfg.tracking.experiment_db and cfg.tracking.write_run_dir:
            from trainengine.tracking._callbacks import ExperimentDBCallback

            url = cfg.tracking.db_url or str(Path(cfg.tracking.output_dir) / "experiments.db")
            callbacks.append(ExperimentDBCallback(url))
        if cfg.tracking.progress != "off":
            callbacks.append(ConsoleProgress(mode=cfg.tracking.progress))
        if cfg.training.early_stopping_patience is not None:
            callbacks.append(EarlyStopping(cfg.training.early_stopping_patience))
        monitor = self.gradient_monitor
        if monitor is None and cfg.monitoring.gradient_monitor:
            from trainengine.monitoring import GradientMonitor

            m = cfg.monitoring
            monitor = GradientMonitor(check_interval=m.gradient_check_interval, norm_threshold_warning=m.grad_norm_warning, norm_threshold_critical=m.grad_norm_critical)
            self.gradient_monitor = monitor  # visible to callbacks (MetricsEngineCallback turns findings into alerts)
        if monitor is not None:
            callbacks.append(monitor)
        return callbacks

    # ------------------------------------------------------------------ the loop
    def _run(self, wall_start: float) -> dict[str, Any]:
        t = self.config.training
        st = self.state
        # (loss, found_inf) device tensors of the steps since the last log: read back together.
        self._pending: list[tuple[Any, Any]] = []
        self._eval_time = 0.0
        self._has_before_opt = self.callbacks.has("on_before_optimizer_step")
        self._has_step_end = self.callbacks.has("on_step_end")
        self._log_every = t.log_interval_steps
        self._nonfinite_policy = t.nonfinite_policy
        loop_start = time.perf_counter()
        self._log_window_start = time.perf_counter()
        self._log_samples = self._log_tokens = 0
        self._log_step = st.step
        self._data_wait = 0.0
        cb = self.callbacks
        # Set once: evaluate() restores the mode it found, so no per-step module walk is needed.
        self.model.train()
        try:
            cb.fire("on_train_start", self)
            if t.eval_at_start and st.step == 0:
                self.evaluate()
            restore_rng(self)  # a resumed run continues every random stream where it stopped
            while not self._finished():
                cb.fire("on_epoch_start", self, st.epoch)
                step_at_epoch_start = st.step
                try:
                    for window in self._windows():
                        output = self._train_step(window)
                        if t.eval_interval_steps and st.step % t.eval_interval_steps == 0 and not self._finished():
                            self.evaluate()
                        if output is not None and self._has_step_end:
                            cb.fire("on_step_end", self, output)
                        if self._finished():
                            break
                except _RolledBack:
                    restore_rng(self)
                    continue  # the data position changed: restart the epoch loop from the checkpoint
                if self.pending_signal is not None:
                    break
                if st.step == step_at_epoch_start and not self._finished():
                    # An exhausted iterable would otherwise spin here forever.
                    raise DataError(f"the training data produced no batches in epoch {st.epoch} — an iterable that can be iterated only once? Set training.max_steps within one pass, or pass a Dataset")
                if not self._finished() or st.batch_in_epoch >= (self.batches_per_epoch or 0):
                    self._end_epoch()
            if self.pending_signal is not None:
                self._interrupted()
            if self.history["val"] == [] or self.history["val"][-1]["step"] != st.step:
                self.evaluate()  # the final model is always evaluated once
            self._flush_log()
            # Training time = the loop (data loading included) minus evaluations.
            self._train_time = time.perf_counter() - loop_start - self._eval_time
            results = self._results(wall_start)
            cb.fire("on_train_end", self, results)
            return results
        except BaseException as exc:
            cb.fire_safely("on_exception", self, exc)
            raise

    def _finished(self) -> bool:
        t, st = self.config.training, self.state
        if self._stop_reason is not None or st.step >= self.total_steps:
            return True
        if t.max_steps is None and st.epoch >= t.epochs:
            return True  # epochs done (steps can fall short when batches were skipped)
        return self.runtime.any_rank(self.pending_signal is not None)

    def _interrupted(self) -> None:
        """After SIGINT/SIGTERM: emergency checkpoint, log it, raise TrainingInterrupted."""
        signum, path = self.pending_signal, None
        assert signum is not None
        if self.checkpointing is not None and self.checkpointing.available and self.config.checkpointing.save_on_interrupt:
            path = self.checkpointing.save(self, tags=("emergency",), force_sync=True)
        self.flush_log()
        self.callbacks.fire("on_log", self, {"type": "interrupt", "step": self.state.step, "signal": signum, "checkpoint": str(path) if path else None})
        exc = TrainingInterrupted(signum, self.state.step, path)
        logger.warning("%s", exc)
        raise exc

    def _data_generator(self) -> torch.Generator | None:
        loader = self.train_loader
        gen = getattr(loader, "generator", None)
        return gen if gen is not None else getattr(getattr(loader, "sampler", None), "generator", None)

    def data_position(self) -> dict[str, Any]:
        """The data order's random state at the start of the current epoch (for exact resume)."""
        gen = self._data_generator()
        if self.state.batch_in_epoch == 0:  # between epochs: the next epoch starts from now
            return {"generator": gen.get_state() if gen is not None else None, "global_rng": torch.get_rng_state()}
        return dict(self._epoch_start_data)

    def _windows(self):
        """Yield lists of ``gradient_accumulation_steps`` device batches; the epoch's last may be shorter."""
        accum = self.config.training.gradient_accumulation_steps
        window: list[Any] = []
        to_device = self.runtime.to_device
        skip = self.state.batch_in_epoch  # resume mid-epoch: batches already consumed
        gen = self._data_generator()
        resume_rng = None
        if self.resume_data is not None:
            # Re-create the epoch's order exactly: the sampler draws from these states.
            if gen is not None and self.resume_data.get("generator") is not None:
                gen.set_state(self.resume_data["generator"])
            if skip:
                resume_rng = capture_rng_state()
                torch.set_rng_state(self.resume_data["global_rng"])
            self.resume_data = None
        self._epoch_start_data = {"generator": gen.get_state() if gen is not None else None, "global_rng": torch.get_rng_state()}
        for i, batch in enumerate(self._timed(self.train_loader)):
            if resume_rng is not None:
                # The sampler has drawn its order (on the first batch): continue the random
                # streams (dropout, ...) where the checkpoint left them.
                restore_rng_state(resume_rng)
                resume_rng = None
            if i < skip:
                continue
            window.append(to_device(batch))
            if len(window) == accum:
                yield window
                window = []
        if window:
            yield window

    def _timed(self, loader: Any):
        """Iterate ``loader`` while adding the time spent waiting for batches to ``_data_wait``."""
        clock = time.perf_counter
        it = iter(loader)
        while True:
            start = clock()
            try:
                batch = next(it)
            except StopIteration:
                return
            self._data_wait += clock() - start
            yield batch

    def _train_step(self, window: list[Any]) -> StepOutput | None:
        st, runner, cb = self.state, self.step_runner, self.callbacks
        result = runner.forward_backward(window)
        if result is None:  # out of memory with oom_policy skip: the batch is dropped, no step
            st.batch_in_epoch += len(window)
            st.extra["oom_skipped_batches"] = st.extra.get("oom_skipped_batches", 0) + 1
            logger.warning("out of memory at step %d: batch skipped (oom_policy skip; %d so far)", st.step, st.extra["oom_skipped_batches"])
            return None
        loss, num_samples, num_tokens = result
        runner.unscale()  # fp16: callbacks see true gradient norms
        if self._has_before_opt:
            cb.fire("on_before_optimizer_step", self, st.step)
        loss, found_inf = runner.clip_and_step(loss)
        if self._nonfinite_policy != "skip" and isinstance(found_inf, float) and found_inf:  # never bool() a device flag
            self._nonfinite_stop(loss)  # halt or rollback, before anything else moves on
        self.scheduler.step()
        self._pending.append((loss, found_inf))  # device values are read back on the next logging step
        st.step += 1
        st.batch_in_epoch += len(window)
        st.samples_seen += num_samples
        st.tokens_seen += num_tokens
        self._log_samples += num_samples
        self._log_tokens += num_tokens
        if st.step % self._log_every == 0:
            self._flush_log()
        return StepOutput(loss, found_inf, num_samples, num_tokens) if self._has_step_end else None

    def _nonfinite_stop(self, loss: float) -> None:
        st = self.state
        ckpt = self.checkpointing
        self.flush_log()
        nonfinite = st.num_nonfinite_steps + 1  # this step counts, whatever happens next
        st.num_nonfinite_steps = nonfinite
        self.callbacks.fire("on_log", self, {"type": "nonfinite", "step": st.step + 1, "loss": loss, "train/nonfinite_steps": nonfinite, "policy": self._nonfinite_policy})
        if self._nonfinite_policy == "halt":
            path = ckpt.save(self, tags=("emergency", "nonfinite"), force_sync=True) if ckpt is not None and ckpt.available else None
            where = f"; emergency checkpoint of the last good state: {path}" if path else ""
            raise TrainEngineError(
                f"non-finite loss or gradient at step {st.step + 1} (loss {loss}): halted (training.nonfinite_policy halt){where}. "
                "Lower the learning rate, set training.max_grad_norm, or check the data"
            )
        self._rollbacks += 1
        max_rb = self.config.training.max_rollbacks
        if self._rollbacks > max_rb:
            raise TrainEngineError(f"non-finite loss or gradient at step {st.step + 1} after {max_rb} rollbacks: giving up (training.max_rollbacks)")
        if ckpt is None or not ckpt.available:
            raise TrainEngineError("training.nonfinite_policy rollback needs checkpoints: enable checkpointing or keep tracking.write_run_dir on")
        path = ckpt.rollback(self)
        factor = self.config.training.rollback_lr_factor ** self._rollbacks
        self.scheduler.scale(factor)
        self.state.extra["rollbacks"] = self._rollbacks
        self.state.num_nonfinite_steps = nonfinite  # the reload must not hide the bad step
        logger.warning("non-finite step: rolled back to %s (step %d), learning rate x%g (rollback %d of %d)", path, self.state.step, factor, self._rollbacks, max_rb)
        self.callbacks.fire("on_log", self, {"type": "rollback", "step": self.state.step, "checkpoint": str(path), "lr_factor": factor, "rollbacks": self._rollbacks})
        raise _RolledBack()

    def _system_metrics(self, elapsed: float) -> dict[str, float]:
        """Speed and memory since the last log (host-side counters only: no device sync)."""
        steps = max(self.state.step - self._log_step, 1)
        out = {
            "system/step_time_ms": elapsed / steps * 1e3,
            "system/data_wait_fraction": min(self._data_wait / elapsed, 1.0),
            "system/rss_mib": _rss_mib(),
        }
        if self.task_spec.task_type == "language_modeling":
            tps = self._log_tokens / elapsed
            out["train/tokens_per_second"] = tps
            if self.flops_per_token and self.peak_flops:
                out["system/mfu"] = tps * self.flops_per_token / (self.peak_flops * self.runtime.world_size)
        if self.runtime.device.type == "cuda":
            dev = self.runtime.device
            out["system/gpu_mem_allocated_gib"] = torch.cuda.memory_allocated(dev) / 2**30
            out["system/gpu_mem_reserved_gib"] = torch.cuda.memory_reserved(dev) / 2**30
            out["system/gpu_mem_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        return out

    def flush_log(self) -> None:
        """Read pending losses back and emit a log record now (checkpoints call this)."""
        self._flush_log()

    def checkpoint_meta(self) -> dict[str, Any]:
        """Run facts stored in every checkpoint's metadata."""
        from trainengine.tracking import git_info, library_versions

        return {
            "config": self.config.to_dict(),
            "task": self.task_spec.to_dict(),
            "model_spec": model_spec(self.model, self.model_config),
            "git": git_info(),
            "versions": library_versions(),
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
        }

    def load_checkpoint_into_self(self, path: Path) -> None:
        """Restore weights and the full training state from a checkpoint (resume, rollback)."""
        from trainengine.checkpoint import CheckpointManager, load_model_state

        loaded = CheckpointManager(Path(path).parent).read(path)
        load_model_state(self.model, loaded.model_state)  # plain, compiled or DDP-wrapped
        restore_training_state(self, loaded)
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.state.step, self.state.epoch, self.state.batch_in_epoch)

    def _flush_log(self) -> None:
        """Read the running loss back from the device (the only per-log sync) and emit ``on_log``."""
        st = self.state
        if self.history["train"] and self.history["train"][-1]["step"] == st.step:
            return
        if st.step == 0:
            return
        if not self._pending:
            return
        # One read-back for all steps since the last log: [loss0, flag0, loss1, flag1, ...].
        flat = [v for pair in self._pending for v in pair]
        values = flat if isinstance(flat[0], float) else torch.stack([t.float() for t in flat]).tolist()
        losses, flags = values[0::2], values[1::2]
        self._pending = []
        kept = [v for v, bad in zip(losses, flags) if not bad]
        skipped_now = int(sum(flags))
        st.num_nonfinite_steps += skipped_now
        now = time.perf_counter()
        elapsed = max(now - self._log_window_start, 1e-9)
        record = {
            "type": "train",
            "step": st.step,
            "epoch": st.epoch,
            "train/loss": sum(kept) / len(kept) if kept else float("nan"),
            "lr": self.scheduler.get_last_lr()[0],
            "train/samples_per_second": self._log_samples / elapsed,
            "train/nonfinite_steps": st.num_nonfinite_steps,
            **self._system_metrics(elapsed),
        }
        if skipped_now:
            logger.warning(
                "%d optimizer step(s) skipped because the loss or a gradient was not finite (total %d, up to step %d)",
                skipped_now, st.num_nonfinite_steps, st.step,
            )
        self._log_window_start, self._log_samples, self._log_tokens = now, 0, 0
        self._log_step, self._data_wait = st.step, 0.0
        self.history["train"].append({"step": st.step, "epoch": st.epoch, "loss": record["train/loss"], "lr": record["lr"]})
        self.callbacks.fire("on_log", self, record)

    def _end_epoch(self) -> None:
        st, t = self.state, self.config.training
        if t.eval_every_epoch and not (self.history["val"] and self.history["val"][-1]["step"] == st.step):
            self.evaluate()
        finished = st.epoch
        # Advance first: a checkpoint taken at on_epoch_end resumes at the next epoch's start.
        st.epoch += 1
        st.batch_in_epoch = 0
        self.callbacks.fire("on_epoch_end", self, finished)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, data: Any = None) -> dict[str, float]:
        """Evaluate on ``data`` (default: the validation data) and return ``val/...`` metrics.

        Called by the loop every ``eval_interval_steps`` and at epoch ends; updates the best
        metric and fires ``on_eval_end``. Without validation data it returns ``{}``.
        """
        loader = self.val_loader if data is None else build_dataloader(data, batch_size=self.config.training.eval_batch_size or 2 * self.config.training.batch_size, shuffle=False, seed=0)
        if loader is None:
            return {}
        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        metrics_acc = self.task_spec.create_metrics(self.runtime.device)
        strategy = self.loss_strategy
        for batch in loader:
            if self.pending_signal is not None and data is None:
                self.model.train(was_training)
                return {}  # interrupted: stop evaluating, the loop saves and stops
            inputs, labels = split_batch(self.runtime.to_device(batch))
            with self.runtime.autocast():
                logits = extract_logits(call_model(self.forward_model, inputs))
            metrics_acc.update(logits, labels, strategy.loss_sum(logits, labels), strategy.num_targets(labels))
        self.model.train(was_training)
        metrics = {f"val/{k}": float(v) for k, v in metrics_acc.compute().items()}
        if data is None:
            self._after_eval(metrics)
            self._eval_time += time.perf_counter() - start
        return metrics

    def _after_eval(self, metrics: dict[str, float]) -> None:
        st = self.state
        value = metrics.get(self.monitor)
        if value is None:
            raise ConfigError(f"training.monitor '{self.monitor}' is not among the evaluation metrics {sorted(metrics)}")
        delta = self.config.training.early_stopping_min_delta
        better = st.best_metric is None or (value < st.best_metric - delta if self.monitor_mode == "min" else value > st.best_metric + delta)
        if better and math.isfinite(value):
            st.best_metric, st.best_step, st.evals_since_improvement = value, st.step, 0
        else:
            st.evals_since_improvement += 1
        if self.scheduler.needs_metric:
            self.scheduler.step_eval(value)
        self.history["val"].append({"step": st.step, "epoch": st.epoch, **metrics})
        self.callbacks.fire("on_log", self, {"type": "eval", "step": st.step, "epoch": st.epoch, **metrics})
        self.callbacks.fire("on_eval_end", self, metrics)

    # ------------------------------------------------------------------ results
    def _results(self, wall_start: float) -> dict[str, Any]:
        st = self.state
        val_losses = [r["val/loss"] for r in self.history["val"] if "val/loss" in r]
        train_time = max(self._train_time, 1e-9)
        tokens_per_second = st.tokens_seen / train_time if self.task_spec.task_type == "language_modeling" else None
        mfu = None
        if tokens_per_second and self.flops_per_token and self.peak_flops:
            mfu = tokens_per_second * self.flops_per_token / (self.peak_flops * self.runtime.world_size)
        epochs_done = st.epoch + (st.batch_in_epoch / self.batches_per_epoch if self.batches_per_epoch else 0)
        return {
            "best_val_loss": min(val_losses) if val_losses else None,
            "best_metric": st.best_metric,
            "best_metric_name": self.monitor,
            "best_step": st.best_step,
            "final_metrics": self.history["val"][-1] if self.history["val"] else {},
            "history": self.history,
            "steps": st.step,
            "epochs": round(epochs_done, 4),
            "stopped_early": st.stopped_early,
            "stop_reason": st.stop_reason,
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
            "samples_per_second": st.samples_seen / train_time,
            "tokens_per_second": tokens_per_second,
            "mfu": mfu,
            "train_time_s": self._train_time,
            "wall_time_s": time.perf_counter() - wall_start,
            "nonfinite_steps": st.num_nonfinite_steps,
            "num_parameters": self.num_parameters,
            "device": str(self.runtime.device),
            "precision": self.runtime.precision,
            "last_checkpoint": None,  # filled in by the Checkpointing callback
            "best_checkpoint": None,
        }

    def model_config_dict(self) -> dict[str, Any] | None:
        """The model config as a plain dict (dataclass, pydantic model, dict), if there is one."""
        c = self.model_config
        if c is None:
            return None
        if is_dataclass(c) and not isinstance(c, type):
            return asdict(c)
        if hasattr(c, "model_dump"):
            return c.model_dump(mode="json")
        if isinstance(c, dict):
            return dict(c)
        return {"repr": repr(c)}


def _rss_mib() -> float:
    """Resident memory of this process in MiB (current on Linux, peak elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _RolledBack(Exception):
    """Internal: a rollback moved the data position; the epoch loop restarts from it."""


def _with_label_smoothing(spec: TaskSpec, value: float) -> TaskSpec:
    """Apply ``training.label_smoothing`` to the task (a value set on the TaskSpec itself wins).

    Raises:
        ConfigError: smoothing asked for a regression task, or two different values.
    """
    if not value or spec.label_smoothing == value:
        return spec
    if spec.task_type == "regression":
        raise ConfigError(f"training.label_smoothing ({value}) applies to class targets; the task is regression — set it to 0")
    if spec.label_smoothing:
        raise ConfigError(
            f"training.label_smoothing ({value}) differs from the TaskSpec's label_smoothing ({spec.label_smoothing}) — set one of them"
        )
    return TaskSpec.from_dict({**spec.to_dict(), "label_smoothing": value})


def _canonical_metric(name: str) -> str:
    """``val_loss`` -> ``val/loss`` (both spellings are accepted in configs)."""
    for prefix in ("val_", "train_"):
        if name.startswith(prefix):
            return prefix[:-1] + "/" + name[len(prefix):]
    return name if "/" in name else f"val/{name}"


def _safe_len(ds: Any) -> int | None:
    try:
        return len(ds) if ds is not None else None
    except TypeError:
        return None


def _safe_fingerprint(ds: Any) -> str | None:
    if ds is None or isinstance(ds, IterableDataset):
        return None  # a stream may be readable once only: never consume it for a hash
    try:
        return fingerprint_dataset(ds, max_items=10_000)
    except (TypeError, DataError, NotImplementedError):
        return None
