"""The engine's Trainer: a short loop that owns its parts and emits events.

What the loop *does* lives here; how it iterates data (:mod:`._data_iter`), keeps its logging
window (:mod:`._logwindow`), handles faults (:mod:`._faults`) and writes checkpoints
(:mod:`._checkpointing`) lives beside it. This Trainer builds no run directory, tracker, console,
export or alert: :class:`trainengine.Trainer` (``trainengine/assembly.py``) is this class with
those default callbacks attached from the config.
"""

from __future__ import annotations

import gc
import logging
import math
import signal
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from trainengine.config import TrainingConfig
from trainengine.data import build_dataloader
from trainengine.engine._activation_ckpt import apply_activation_checkpointing
from trainengine.engine._callbacks import CallbackList, TrainerCallback, early_stop_reason
from trainengine.engine._checkpointing import (
    Checkpointer,
    checkpoint_meta,
    load_checkpoint_into,
    resolve_resume,
    restore_rng,
)
from trainengine.engine._compile import CompiledStep, compile_module
from trainengine.engine._data_iter import DataIterator
from trainengine.engine._faults import FaultHandler, RolledBack, SignalGuard
from trainengine.engine._logwindow import LogWindow
from trainengine.engine._optim import build_optimizer
from trainengine.engine._runtime import Runtime, peak_flops_for, restore_determinism, seed_everything
from trainengine.engine._setup import (
    attach_loss_scoring,
    build_loaders,
    canonical_metric,
    check_label_values,
    model_config_dict,
    monitor_mode_for,
    plan_total_steps,
    record_data_facts,
    results_of,
    with_auto_class_weights,
    with_label_smoothing,
    with_task_section,
)
from trainengine.engine._state import TrainState
from trainengine.engine._step import StepOutput, StepRunner, call_model, extract_logits, split_batch
from trainengine.engine._transfer import TransferSchedule
from trainengine.engine.schedules import build_scheduler
from trainengine.errors import ConfigError, DataError, TaskError, TrainEngineError
from trainengine.tasks import TaskSpec

__all__ = ["Trainer"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


def _caller_outside_package() -> int:
    """``warnings.warn``'s ``stacklevel`` of the first frame outside trainengine, seen from the caller."""
    level = 1
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


logger = logging.getLogger("trainengine")

# Set on a module once a Trainer has taken an optimizer step with it: a later Trainer handed the
# same module warns (an Optuna objective that reuses one global model trains every trial on top of
# the previous ones). A plain attribute, so copies of a trained model carry it too; loading weights
# on purpose (load_state_dict, a checkpoint) clears it.
_TRAINED_ATTR = "_trainengine_trained"


def _mark_trained(model: nn.Module) -> None:
    if not hasattr(model, _TRAINED_ATTR):  # the hook once per module, not once per run
        model.register_load_state_dict_post_hook(_clear_trained_mark)
    setattr(model, _TRAINED_ATTR, True)


def _clear_trained_mark(module: nn.Module, incompatible_keys: Any) -> None:
    setattr(module, _TRAINED_ATTR, False)


class Trainer:
    """Train a model on a task with a validated :class:`~trainengine.config.TrainingConfig`.

    The engine's Trainer runs the loop, evaluation, checkpoints (``trainer.checkpointer``),
    early stopping and fault handling; files, consoles, trackers and exports are callbacks that
    :class:`trainengine.Trainer` attaches. Use this class for a bare loop with your own callbacks.

    Args:
        model: the ``nn.Module`` to train.
        config: the model's own config (e.g. a ``GPTConfig``), recorded in the run; None for a
            model you built yourself.
        training_config: the run's config; None = defaults.
        task_spec: what is learned — ``TaskSpec.classification(...)``, ``.language_modeling(...)``,
            ``.regression(...)`` or ``.vision_tiny()``. Required: it picks the loss and metrics.
        gradient_monitor: optional :class:`~trainengine.monitoring.GradientMonitor` (attached
            as a callback).
        callbacks: extra callbacks (objects with ``on_*`` event methods).

    Example:
        >>> from trainengine import TaskSpec, TrainingConfigBuilder
        >>> from trainengine.data import load_builtin
        >>> from trainengine.engine import Trainer
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
        gradient_monitor: TrainerCallback | None = None,
        callbacks: list[TrainerCallback] | None = None,
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

        # -- what is trained, on what, how (fixed for the trainer's life)
        self.model: nn.Module = model
        self.model_config = config
        self.config: TrainingConfig = training_config.validate()
        t = self.config.training
        # The config's task: section (metrics, class weights, compute_metrics) on top of the spec.
        spec = with_task_section(with_label_smoothing(task_spec, t.label_smoothing), self.config.task, t.monitor)
        self.task_spec: TaskSpec = spec
        self.loss_strategy = spec.loss_strategy
        self.monitor: str = canonical_metric(t.monitor or spec.monitor)
        available = [f"val/{m}" for m in spec.metrics]
        # A name compute_metrics returns is known only at the first evaluation (checked there).
        if self.monitor not in available and spec.compute_metrics is None:
            raise ConfigError(
                f"training.monitor '{self.monitor}' is not reported by a {spec.task_type} task — "
                f"available: {', '.join(available)}"
            )
        # auto = the direction of the metric actually monitored (loss down, accuracy up, ...).
        mode = monitor_mode_for(self.monitor, t.monitor_mode, spec)
        self.monitor_mode: Literal["min", "max"] = "max" if mode == "max" else "min"

        # -- owned components built from the config now
        self.checkpointer: Checkpointer | None = Checkpointer.from_config(
            self.config, monitor=self.monitor, mode=self.monitor_mode
        )
        self.faults = FaultHandler(
            t.nonfinite_policy,
            max_rollbacks=t.max_rollbacks,
            rollback_lr_factor=t.rollback_lr_factor,
            save_on_interrupt=self.config.checkpointing.save_on_interrupt,
            max_nonfinite_fraction=t.max_nonfinite_fraction,
        )
        self.gradient_monitor = gradient_monitor
        #: ``(device, precision, distributed section) -> Runtime``; None = one process. The public
        #: ``trainengine.Trainer`` sets ``trainengine.distributed.make_runtime`` (DDP under torchrun).
        self.runtime_factory: Callable[[str, str, Any], Runtime] | None = None
        self._callback_objects: list[TrainerCallback] = (
            [gradient_monitor] if gradient_monitor is not None else []
        ) + list(callbacks or [])

        # -- components built by train() from the config and the data
        self.runtime: Runtime | None = None
        self.train_loader: Any = None
        self.val_loader: Any = None
        self.train_model: Any = None  # what the step calls: the model, or its DDP wrapper
        self._world = 1  # processes training together (the runtime's world size, set up by train())
        # FSDP2: the final weights gathered whole on rank 0 at the end (the run directory's model.safetensors)
        self.full_weights: dict[str, torch.Tensor] | None = None
        self.forward_model: Any = None  # evaluation's forward: torch.compile(model) or the model itself
        # training.compile: graph breaks and recompilations (CompiledStep.report), filled after the first step
        self.compile_report: dict[str, Any] | None = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.transfer: TransferSchedule | None = None  # config.transfer's freezing and unfreezing
        self.step_runner: Any = None
        self.data_iter: Any = None  # DataIterator
        self.log_window: Any = None  # LogWindow
        self.callbacks = CallbackList([])  # rebuilt by train() once the rank is known

        # -- run state (checkpointed) and run facts
        self.state = TrainState()
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
        self.run_dir: Path | None = None  # set by a run-directory callback at on_train_start
        self.info: dict[str, Any] = {}  # run facts callbacks record (fingerprints, sizes, ...)
        self.batches_per_epoch: int | None = None
        self.total_steps = 0
        self.num_parameters = 0
        self.num_trainable_parameters = 0
        self.fused_loss_active = False  # training.fused_loss in use (set up in _setup)

        # -- loop control
        self.pending_signal: int | None = None  # set by SignalGuard; the loop stops at the next step boundary
        self._stop_reason: str | None = None
        self._patience = t.early_stopping_patience
        self._log_every = t.log_interval_steps
        self._eval_every = t.eval_interval_steps
        self._halt_or_rollback = t.nonfinite_policy != "skip"
        self._has_before_opt = False
        self._has_step_end = False
        self.resume_from: Path | None = None
        self.test_data: Any = None  # data.test_file / train(test_data=...): evaluated once after training
        self.resume_run_dir: Path | None = None
        self.resume_rng: dict[str, Any] | None = None  # RNG states restored when the loop starts
        self._eval_time = 0.0
        self._train_time = 0.0
        self._check_val_labels = True  # False once setup checked every val label
        self._has_trained = False  # this trainer took a step: its own model is no "earlier" training

    # ------------------------------------------------------------------ public API
    def add_callbacks(self, callbacks: list[TrainerCallback], *, first: bool = False) -> None:
        """Attach callbacks before :meth:`train` (``first``: before those already attached)."""
        self._callback_objects = (
            list(callbacks) + self._callback_objects if first else self._callback_objects + list(callbacks)
        )

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise TrainEngineError("the Trainer is not set up yet: call train() first")
        return self.runtime

    def request_stop(self, reason: str, *, early: bool = False) -> None:
        """Ask the loop to stop after the current optimizer step (callbacks use this)."""
        self._stop_reason = reason
        self.state.stop_reason = reason
        self.state.stopped_early = self.state.stopped_early or early

    def train(
        self,
        train_data: Any = None,
        val_data: Any = None,
        *,
        test_data: Any = None,
        resume_from: str | Path | None = None,
    ) -> dict[str, Any]:
        """Run training and return the results.

        Args:
            train_data: a torch Dataset, DataLoader, (X, y) tensors/arrays, or a list of samples.
                None = the built-in data set named by ``config.data.dataset``.
            val_data: the same kinds; None = no validation (unless a built-in data set is used).
            test_data: the same kinds; evaluated once with the final model after training, as
                ``test/...`` metrics in the results (``test_metrics``) and the run record. None = the
                ``data.test_file`` split when the config names files, else no test evaluation.
            resume_from: ``"auto"`` (the newest valid checkpoint of this run or experiment, else
                a fresh start), a checkpoint folder, a checkpoints folder or a run directory.
                The run continues at the exact batch where the checkpoint was taken.

        Raises:
            TrainingInterrupted: on SIGINT/SIGTERM, after the emergency checkpoint (exit code 130/143).

        Warns:
            UserWarning: the model was already trained by an earlier Trainer (e.g. an Optuna
                objective that reuses one model across trials) and neither ``resume_from`` nor a
                ``load_state_dict()`` has set its weights since.

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
        clean = False
        try:
            self.resume_from, self.resume_run_dir = resolve_resume(cfg, resume_from)
            self._warn_if_trained_elsewhere()
            train_data, val_data, self.test_data = self._resolve_data(train_data, val_data, test_data)
            factory = self.runtime_factory
            self.runtime = (
                factory(t.device, t.precision, cfg.distributed) if factory else Runtime(t.device, t.precision)
            )
            self._setup(train_data, val_data)
            if self.resume_from is not None:
                self.load_checkpoint_into_self(self.resume_from)
            with SignalGuard(self):
                results = self._run(wall_start)
            clean = True
            return results
        finally:
            restore_determinism(previous)
            if self.runtime is not None:
                self._release_wrapper()
                self.runtime.close(clean=clean)  # a process group this run created: every rank leaves it
            if self.state.step > 0:  # also after an error or interrupt: the weights have moved
                _mark_trained(self.model)
                self._has_trained = True

    def _release_wrapper(self) -> None:
        """Drop the DDP wrapper before its process group goes: its reducer holds communication work
        whose tensors must be freed while the interpreter is alive (freed at exit, gloo can abort)."""
        if self.train_model is not None and self.train_model is not self.model:
            self.train_model = self.model
            if self.step_runner is not None:
                self.step_runner.model = self.model
            gc.collect()

    def _warn_if_trained_elsewhere(self) -> None:
        """Warn when an earlier Trainer already trained this model and no checkpoint replaces its weights."""
        if self.resume_from is not None or self._has_trained or not getattr(self.model, _TRAINED_ATTR, False):
            return
        warnings.warn(
            f"this {type(self.model).__name__} was already trained by an earlier Trainer: this run starts from "
            "those weights, not from a fresh initialisation. In a hyperparameter search (an Optuna objective) "
            "build a fresh model inside the objective, e.g. `model = MLP(64, 10)` before `Trainer(model, ...)`, "
            "so each trial starts from new weights. To continue on purpose, pass resume_from= a checkpoint or load "
            "the weights you want with load_state_dict() first",
            UserWarning,
            stacklevel=_caller_outside_package(),  # the user's train() line, however many layers wrap it
        )

    # ------------------------------------------------------------------ setup
    def _resolve_data(self, train_data: Any, val_data: Any, test_data: Any) -> tuple[Any, Any, Any]:
        if train_data is not None:
            return train_data, val_data, test_data
        d = self.config.data
        if d.dataset is None and d.train_file is None:
            raise DataError(
                "no training data: pass train_data to Trainer.train(), set data.dataset (digits, diabetes, pystdlib) "
                "or data.train_file"
            )
        from trainengine.engine._build import load_data_for

        splits = load_data_for(self.config, self.task_spec)
        return (
            splits.train,
            val_data if val_data is not None else splits.val,
            test_data if test_data is not None else splits.test,
        )

    def _setup(self, train_data: Any, val_data: Any) -> None:
        cfg, t, rt = self.config, self.config.training, self._runtime()
        self.train_loader, self.val_loader = build_loaders(cfg, rt, train_data, val_data)
        if cfg.task.class_weights == "auto":  # from the training labels, once (run.json records the task's weights)
            self.task_spec = with_auto_class_weights(self.task_spec, self.train_loader)
            self.loss_strategy = self.task_spec.loss_strategy
        self.info.update(
            record_data_facts(self.train_loader, self.val_loader, self.task_spec, check=cfg.data.check_overlap)
        )
        labels_checked = check_label_values(self.train_loader, self.val_loader, self.task_spec, self.loss_strategy)
        try:
            self.batches_per_epoch = len(self.train_loader)
        except TypeError:
            self.batches_per_epoch = None
        self.total_steps = plan_total_steps(cfg, self.batches_per_epoch)
        accum = t.gradient_accumulation_steps

        if t.activation_checkpointing:  # in place, before the optimizer and compile; state_dict keys unchanged
            self.info["activation_checkpointing_blocks"] = apply_activation_checkpointing(self.model)
        if rt.world_size > 1 and t.nonfinite_policy == "rollback":
            raise ConfigError(
                "training.nonfinite_policy rollback is not available under several processes yet (every rank would "
                "have to reload rank 0's checkpoint); use skip or halt"
            )
        if rt.checkpoint_io is not None and cfg.export.enabled:
            raise ConfigError(
                "export.enabled is not available under distributed.strategy fsdp2 (the weights are sharded over the "
                "processes): export the run's last checkpoint afterwards, e.g. `trainengine checkpoints consolidate "
                "<checkpoint>` then `trainengine export` on the consolidated folder"
            )
        self.model = rt.prepare_model(self.model)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        attach_loss_scoring(  # curriculum.difficulty loss: score the data with the starting model
            self.train_loader, self.model, self.loss_strategy, rt, batch_size=t.eval_batch_size or 2 * t.batch_size
        )
        # config.transfer (freezing, per-layer-group lrs, unfreezing by epoch); None at its defaults.
        self.transfer = TransferSchedule.from_config(self.model, cfg)
        # At the start (LoRA adapters, a frozen backbone, transfer.freeze); gradual unfreezing adds more later.
        self.num_trainable_parameters = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        groups = (
            None if self.transfer is None else self.transfer.param_groups(cfg.optimizer.weight_decay, t.learning_rate)
        )
        self.optimizer = build_optimizer(self.model, cfg.optimizer, t.learning_rate, rt.device, groups=groups)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.scheduler, self.total_steps, monitor_mode=self.monitor_mode
        )
        # training.compile: each micro-batch's forward + loss is one compiled graph calling the plain
        # self.model (canonical state-dict keys); evaluation calls a compiled module (default mode).
        fused = self._fused_lm_loss()
        self.fused_loss_active = fused is not None
        compiled = (
            CompiledStep(self.loss_strategy, rt, mode=t.compile_mode, accumulation_steps=accum, fused=fused)
            if t.compile
            else None
        )
        self.compile_report = compiled.report if compiled is not None else None
        self.forward_model = compile_module(self.model) if t.compile else self.model
        # DDP under several processes: the step calls the wrapper, everything else the plain module.
        self.train_model = rt.wrap_for_training(self.model)
        self.step_runner = StepRunner(
            self.train_model,
            self.optimizer,
            self.loss_strategy,
            rt,
            t.max_grad_norm,
            rt.make_grad_scaler(),
            oom_policy=t.oom_policy,
            oom_max_splits=t.oom_max_splits,
            compiled=compiled,
            fused=fused if compiled is None else None,
        )
        self._world = rt.world_size
        self.step_runner.check_labels = "train" not in labels_checked  # else the first batch checks them
        self._check_val_labels = "val" not in labels_checked
        if self._halt_or_rollback:
            # halt/rollback act at the bad step itself, so its flag is read every step (opt-in cost).
            self.step_runner.check_on_host = True
        transfer_callbacks: list[TrainerCallback] = [] if self.transfer is None else [self.transfer]
        self.callbacks = CallbackList(transfer_callbacks + self._callback_objects, is_rank_zero=rt.is_rank_zero)
        self.data_iter = DataIterator(self.train_loader, self.state, accumulation_steps=accum, to_device=rt.to_device)
        flops_fn = getattr(self.model, "num_flops_per_token", None)
        language_modeling = self.task_spec.task_type == "language_modeling"
        self.log_window = LogWindow(
            rt,
            language_modeling=language_modeling,
            peak_flops=peak_flops_for(rt.device, cfg.monitoring.peak_flops),
            flops_per_token=flops_fn(self.info.get("seq_len")) if callable(flops_fn) and language_modeling else None,
        )

    def _fused_lm_loss(self) -> Any:
        """The fused linear + cross-entropy for ``training.fused_loss`` (language modeling), or None.

        ``auto`` uses it under ``training.compile`` where the model supports it (the built-in GPT,
        the Hugging Face causal LMs ``trainengine.engine._fused`` knows) and the task's loss is the
        built-in one; ``on`` uses it eagerly too and refuses a model that does not support it;
        ``off`` never uses it.
        """
        from trainengine.engine._fused import fused_lm_loss_for, fused_loss_unsupported_reason
        from trainengine.tasks._losses import LanguageModelingLoss

        t = self.config.training
        mode = t.fused_loss
        if mode == "off" or self.task_spec.task_type != "language_modeling":
            return None
        if self._runtime().world_size > 1:
            # The fused loss calls the model's body and head directly, past DDP's gradient hooks.
            if mode == "on":
                raise ConfigError("training.fused_loss on is not available under DDP yet; set it to auto or off")
            logger.info("fused LM loss not used: several processes (DDP)")
            return None
        if mode == "auto" and not t.compile:
            # Eager, the chunked loss's pointwise work runs as separate kernels: measured on an H200
            # (GPT-2 small) it halves peak memory but costs 10-20% of the step time, so auto leaves it
            # to `on`. Compiled, it is both faster and smaller than the plain loss (benchmarks/README.md).
            logger.info("fused LM loss not used: auto takes it under training.compile; set it on to save memory")
            return None
        strategy = self.loss_strategy
        fused = None
        if type(strategy) is LanguageModelingLoss:  # not a user-registered LM loss
            fused = fused_lm_loss_for(
                self.model, ignore_index=strategy.ignore_index, label_smoothing=strategy.label_smoothing
            )
        if fused is None:
            reason = (
                fused_loss_unsupported_reason(self.model)
                if type(strategy) is LanguageModelingLoss
                else f"the loss is {type(strategy).__name__}, not the built-in language-modeling loss"
            )
            if mode == "on":
                raise ConfigError(
                    f"training.fused_loss is on, but {reason}; set it to auto (the plain loss where unsupported) or off"
                )
            logger.info("fused LM loss not used: %s", reason)
        return fused

    # ------------------------------------------------------------------ the loop
    def _run(self, wall_start: float) -> dict[str, Any]:
        t, st, cb = self.config.training, self.state, self.callbacks
        self._has_before_opt = cb.has("on_before_optimizer_step")
        self._has_step_end = cb.has("on_step_end")
        self._eval_time = 0.0
        loop_start = time.perf_counter()
        self.log_window.reset(st.step)
        self.faults.start(self)
        # Set once: evaluate() restores the mode it found, so no per-step module walk is needed.
        self.model.train()
        try:
            cb.fire("on_train_start", self)
            if self.checkpointer is not None:
                self.checkpointer.start(self)  # after on_train_start: the run directory exists
            if t.eval_at_start and st.step == 0:
                self.evaluate()
            restore_rng(self)  # a resumed run continues every random stream where it stopped
            stop = self._should_stop()
            while not stop:
                stop = self._run_epoch()
            if self.pending_signal is not None:
                self.faults.interrupted(self)  # emergency checkpoint, then TrainingInterrupted
            self.faults.check_epoch(self)  # the last (partial) epoch: did any step succeed?
            if not self.history["val"] or self.history["val"][-1]["step"] != st.step:
                self.evaluate()  # the final model is always evaluated once
            self.flush_log()
            # Training time = the loop (data loading included) minus evaluations.
            self._train_time = time.perf_counter() - loop_start - self._eval_time
            test_metrics = self._evaluate_test()
            if self.checkpointer is not None:
                self.checkpointer.train_end()  # every write on disk: the paths in the results are final
            results = self._results(wall_start)
            if test_metrics:
                results["test_metrics"] = test_metrics
            io = self._runtime().checkpoint_io
            if io is not None and self.config.checkpointing.save_final_weights:  # sharded: gathered by every rank
                self.full_weights = io.full_state(self.model)
            cb.fire("on_train_end", self, results)
            return results
        except BaseException as exc:
            if self.checkpointer is not None:
                self.checkpointer.abort()
            cb.fire_safely("on_exception", self, exc)
            raise

    def _evaluate_test(self) -> dict[str, float]:
        """``test/...`` metrics of the final model on the test data (``{}`` without test data)."""
        if self.test_data is None or self.pending_signal is not None:
            return {}
        metrics = self.evaluate(self.test_data)
        return {"test/" + k.split("/", 1)[1]: v for k, v in metrics.items()}

    def _run_epoch(self) -> bool:
        """One pass over the training data from the current position; returns whether to stop."""
        st = self.state
        self.callbacks.fire("on_epoch_start", self, st.epoch)
        step_at_epoch_start, batch_at_epoch_start, stop = st.step, st.batch_in_epoch, False
        try:
            for window in self.data_iter.windows():
                self._train_step(window)
                stop = self._should_stop(per_step=True)
                if stop:
                    break
        except RolledBack:
            restore_rng(self)
            return self._should_stop()  # the data position changed: the next epoch pass starts from the checkpoint
        if self.pending_signal is not None:
            return True
        if st.step == step_at_epoch_start and not stop and batch_at_epoch_start == 0:
            # An exhausted iterable would otherwise spin here forever. (A run resumed from a checkpoint
            # taken after an epoch's last batch starts with that epoch consumed: it only ends it.)
            raise DataError(
                f"the training data produced no batches in epoch {st.epoch} — an iterable that can be "
                "iterated only once? Set training.max_steps within one pass, or pass a Dataset"
            )
        if not stop or st.batch_in_epoch >= (self.batches_per_epoch or 0):
            self._end_epoch()
            stop = self._should_stop()
        return stop

    def _train_step(self, window: list[Any]) -> None:
        """One optimizer step, then what follows it: ``on_step_end``, logging, evaluation, checkpoint."""
        st, runner = self.state, self.step_runner
        result = runner.forward_backward(window)
        if result is None:  # out of memory with oom_policy skip: the window is dropped, no step
            self.faults.oom_skipped(self, len(window))
            return
        loss, num_samples, num_tokens = result
        runner.unscale()  # fp16: callbacks see true gradient norms
        if self._has_before_opt:
            self.callbacks.fire("on_before_optimizer_step", self, st.step)
        loss, found_inf = runner.clip_and_step(loss)
        if self._halt_or_rollback and isinstance(found_inf, float) and found_inf:  # never bool() a device flag
            self.faults.nonfinite(self, loss)  # raises: halt, or rollback to the newest checkpoint
        self.scheduler.step()
        self.log_window.add(
            loss, found_inf, num_samples=num_samples, num_tokens=num_tokens
        )  # read back at the next log
        st.step += 1
        st.batch_in_epoch += len(window)
        world = self._world  # the run's counts: every process trains on equally many (padded shards)
        st.samples_seen += num_samples * world
        st.tokens_seen += num_tokens * world
        if self._has_step_end:
            self.callbacks.fire("on_step_end", self, StepOutput(loss, found_inf, num_samples, num_tokens))
        if st.step % self._log_every == 0:
            self.flush_log()
        if self._eval_every and st.step % self._eval_every == 0 and self._may_evaluate():
            self.evaluate()
        if self.checkpointer is not None:
            self.checkpointer.step_end(self)

    def _may_evaluate(self) -> bool:
        """An in-loop evaluation is skipped when the run ends now (the final evaluation covers it)."""
        return self.state.step < self.total_steps and self._stop_reason is None and self.pending_signal is None

    def _should_stop(self, *, per_step: bool = False) -> bool:
        """Whether the loop stops now: decided here only, once per step and at epoch ends.

        Gathers the stop requests (``request_stop`` from callbacks, early stopping, a signal)
        into one flag that every process agrees on (``Runtime.any_rank``: one collective under
        several processes, called on every rank at the same points), then the planned length.
        """
        st, t = self.state, self.config.training
        if self._patience is not None and self._stop_reason is None:
            reason = early_stop_reason(self, self._patience)
            if reason is not None:
                self.request_stop(reason, early=True)
        rt = self._runtime()
        local = self._stop_reason is not None or self.pending_signal is not None
        if per_step and rt.world_size > 1:
            # No collective and no read-back of its own per step: the flags ride in the next step's
            # all-reduce of the window's targets, and every rank reads the sums at the same steps.
            rt.note_stop(local, signal=self.pending_signal is not None)
            if st.step % self._log_every == 0:
                stop, signalled = rt.stop_agreed()
                if signalled and self.pending_signal is None:
                    # A peer was signalled (preemption reaches ranks at different moments): every
                    # rank stops as interrupted at this same step, so rank 0's checkpoint is exact.
                    self.pending_signal = signal.SIGTERM
                if stop:
                    return True
        elif rt.any_rank(local):
            return True
        # Epochs done also when steps fall short (skipped batches).
        return st.step >= self.total_steps or (t.max_steps is None and st.epoch >= t.epochs)

    def _end_epoch(self) -> None:
        st, t = self.state, self.config.training
        self.faults.check_epoch(self)  # stops a run whose steps were all skipped as non-finite
        if t.eval_every_epoch and not (self.history["val"] and self.history["val"][-1]["step"] == st.step):
            self.evaluate()
        finished = st.epoch
        # Advance first: a checkpoint taken at the epoch end resumes at the next epoch's start.
        st.epoch += 1
        st.batch_in_epoch = 0
        self.callbacks.fire("on_epoch_end", self, finished)
        if self.checkpointer is not None:
            self.checkpointer.epoch_end(self, finished)

    def flush_log(self) -> None:
        """Read the pending losses back (the only per-log sync) and emit a ``train`` log record now."""
        st = self.state
        if not self.log_window.pending or (self.history["train"] and self.history["train"][-1]["step"] == st.step):
            return
        record = self.log_window.flush(st, lr=self.scheduler.get_last_lr()[0], data_wait=self.data_iter.reset_wait())
        if record is None:
            return
        self.history["train"].append(
            {"step": st.step, "epoch": st.epoch, "loss": record["train/loss"], "lr": record["lr"]}
        )
        self.callbacks.fire("on_log", self, record)

    def checkpoint_meta(self) -> dict[str, Any]:
        """Run facts stored in every checkpoint's metadata."""
        return checkpoint_meta(self)

    def load_checkpoint_into_self(self, path: Path) -> None:
        """Restore weights and the full training state from a checkpoint (resume, rollback)."""
        load_checkpoint_into(self, path)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, data: Any = None) -> dict[str, float]:
        """Evaluate on ``data`` (default: the validation data) and return ``val/...`` metrics.

        Called by the loop every ``eval_interval_steps`` and at epoch ends; updates the best
        metric and fires ``on_eval_end``. Without validation data it returns ``{}``.
        """
        loader = (
            self.val_loader
            if data is None
            else build_dataloader(
                data,
                batch_size=self.config.training.eval_batch_size or 2 * self.config.training.batch_size,
                shuffle=False,
                seed=0,
            )
        )
        if loader is None:
            return {}
        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        rt = self._runtime()
        metrics_acc = self.task_spec.create_metrics(rt.device)
        strategy = self.loss_strategy
        for i, batch in enumerate(loader):
            if self.pending_signal is not None and data is None:
                self.model.train(was_training)
                return {}  # interrupted: stop evaluating, the loop saves and stops
            inputs, labels = split_batch(rt.to_device(batch))
            with rt.autocast():
                logits = extract_logits(call_model(self.forward_model, inputs))
            if i == 0 and (data is not None or self._check_val_labels):  # label values: first batch, one sync
                strategy.check_label_values(labels, num_classes=logits.shape[-1], what="val batch 0")
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
            raise ConfigError(
                f"training.monitor '{self.monitor}' is not among the evaluation metrics {sorted(metrics)}"
            )
        delta = self.config.training.early_stopping_min_delta
        better = st.best_metric is None or (
            value < st.best_metric - delta if self.monitor_mode == "min" else value > st.best_metric + delta
        )
        # A metric computed from non-finite outputs (NaN loss: accuracy of NaN logits) is never a best.
        if better and math.isfinite(value) and math.isfinite(metrics.get("val/loss", 0.0)):
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
        return results_of(self, train_time=self._train_time, wall_time=time.perf_counter() - wall_start)

    def model_config_dict(self) -> dict[str, Any] | None:
        """The model config as a plain dict (dataclass, pydantic model, dict), if there is one."""
        return model_config_dict(self.model_config)
