"""Seed 004's names ("training strategies"): ``ProductionTrainer`` and the schedule helpers.

``from trainengine.compat.seed004 import ProductionTrainer, get_warmup_cosine_scheduler`` replaces
the seed's own definitions (seed 004 lines 1257-1616). ``ProductionTrainer`` is a thin layer over
:class:`trainengine.Trainer`: it maps the seed's config dict onto a
:class:`~trainengine.config.TrainingConfig` and lets the engine run the one training loop, write
the pickle-free checkpoints and resume exactly. The schedule helpers return the engine's curves
(:mod:`trainengine.compat._schedules`).

Example:
    >>> import tempfile, torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from trainengine.compat.seed004 import ProductionTrainer
    >>> x = torch.randn(64, 4)
    >>> data = TensorDataset(x, (x[:, 0] > 0).long())
    >>> config = ProductionTrainer.get_default_config()
    >>> config.update(epochs=2, warmup_steps=2, use_wandb=False, checkpoint_dir=tempfile.mkdtemp())
    >>> trainer = ProductionTrainer(torch.nn.Linear(4, 2), DataLoader(data, batch_size=16), None, config)
    >>> trainer.training_config.scheduler.name, trainer.training_config.training.max_grad_norm
    ('cosine', 1.0)
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainengine.assembly import Trainer
from trainengine.checkpoint import load_model_state, read_checkpoint
from trainengine.compat._checkpoints import load_checkpoint as _load_record
from trainengine.compat._schedules import (
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
    get_warmup_cosine_scheduler,
)
from trainengine.config import TrainingConfig
from trainengine.engine import Checkpointer, Runtime, resolve_device, resolve_resume
from trainengine.errors import CheckpointError, ConfigError, TrainEngineError
from trainengine.tasks import TaskSpec

__all__ = [
    "ProductionTrainer",
    "get_warmup_cosine_scheduler",
    "get_linear_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)

# Seed 004's scheduler names -> the engine's (None: the seed builds no scheduler = constant lr).
_SCHEDULES = {"cosine": "cosine", "onecycle": "one_cycle", None: "constant", "none": "constant"}
# Keys accepted besides the seed's own: the number of classes when the model's last nn.Linear
# does not tell it.
_EXTRA_KEYS = ("num_classes",)
_PICKLE_SUFFIXES = (".pth", ".pt", ".pkl", ".bin")


class ProductionTrainer:
    """Seed 004's ``ProductionTrainer`` over :class:`trainengine.Trainer` (no second loop).

    The seed's config keys map onto the engine's config as follows (the result is
    :attr:`training_config`; everything else comes from ``training_config=`` or the defaults):

    ======================  ==================================================================
    seed key                engine field
    ======================  ==================================================================
    learning_rate           training.learning_rate
    weight_decay            optimizer.weight_decay (never on biases, norms, embeddings)
    optimizer               optimizer.name (``sgd`` with momentum 0.9 and Nesterov, as the seed)
    betas                   optimizer.beta1, optimizer.beta2
    scheduler               scheduler.name: cosine; onecycle -> one_cycle; None -> constant;
                            other engine names as they are
    warmup_steps            scheduler.warmup_steps (0 for one_cycle, which ramps by itself)
    total_steps             training.max_steps when shorter than ``epochs``: the run stops
                            after ``epochs`` or ``total_steps`` steps, whichever comes first,
                            and the schedule spans exactly that run
    min_lr_ratio            scheduler.min_lr_ratio
    epochs                  training.epochs
    accumulation_steps      training.gradient_accumulation_steps
    grad_clip               training.max_grad_norm (0 or None: no clipping)
    use_amp                 training.precision: auto (bf16 where supported) or fp32
    dropout                 not applied: the model you pass is used as built (as in the seed)
    label_smoothing         training.label_smoothing
    checkpoint_dir          checkpointing.checkpoint_dir (checkpointing enabled)
    save_every              checkpointing.save_every_n_epochs (after every N-th epoch)
    keep_last_k             checkpointing.keep_last_n (plus the best by val/loss)
    early_stopping,         training.early_stopping_patience (with validation data)
    patience
    use_wandb               tracking.backends gets ``wandb``
    project_name            tracking.project
    seed                    training.seed
    num_classes (extra)     the classification task's classes; default: the model's last
                            nn.Linear out_features
    ======================  ==================================================================

    The model is trained as classification (cross-entropy, accuracy), monitoring ``val/loss``
    (the seed's early stopping and best model). :meth:`save_checkpoint` and
    :meth:`load_checkpoint` store the engine's checkpoint folders (safetensors + JSON, full
    training state), never ``torch.save`` pickles.

    Args:
        model: The classifier to train.
        train_loader: Training batches ``(inputs, targets)``; used as given.
        val_loader: Validation batches, or None (no evaluation, no early stopping).
        config: The seed's config dict; missing keys take :meth:`get_default_config`'s values.
        rank: This process's rank; under torchrun it must match ``RANK`` (else 0).
        world_size: Number of processes; under torchrun it must match ``WORLD_SIZE`` (else 1).
            Several processes train with DDP (docs/distributed.md); the loaders must then carry a
            ``DistributedSampler``, as the seed's own script builds them.
        training_config: Base engine config for what the seed dict does not cover (tracking
            output, device, data loader settings); the seed keys are written over it.

    Attributes:
        trainer: The :class:`trainengine.Trainer` that trains.
        training_config: The engine config the seed dict maps to.
        epoch: Epochs completed (the epoch the next :meth:`train` starts in).
        global_step: Optimizer steps taken.
        best_val_loss: Best validation loss so far (``inf`` before any).
        patience_counter: Evaluations since the last improvement.
        results: What the last :meth:`train` returned (None before).

    Raises:
        ConfigError: ``rank`` / ``world_size`` that do not match the process, an unknown config key, a value the
            engine refuses, or a warmup not shorter than the run.

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> x = torch.randn(64, 4)
        >>> loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)
        >>> cfg = {"epochs": 1, "warmup_steps": 1, "use_wandb": False, "checkpoint_dir": tempfile.mkdtemp()}
        >>> ProductionTrainer(torch.nn.Linear(4, 2), loader, loader, cfg, world_size=2)
        Traceback (most recent call last):
        ...
        trainengine.errors.ConfigError: invalid ProductionTrainer arguments (1 problem):
          - world_size=2 (rank=0) does not match this process (RANK=0, WORLD_SIZE=1): ...
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader: Any,
        val_loader: Any = None,
        config: dict[str, Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
        *,
        training_config: TrainingConfig | None = None,
    ) -> None:
        env_rank, env_world = int(os.environ.get("RANK", "0") or 0), int(os.environ.get("WORLD_SIZE", "1") or 1)
        if (rank, world_size) != (env_rank, env_world):
            # DDP runs under torchrun, which gives every process its RANK and WORLD_SIZE.
            raise ConfigError(
                f"world_size={world_size} (rank={rank}) does not match this process (RANK={env_rank}, "
                f"WORLD_SIZE={env_world}): launch the script with `torchrun --nproc-per-node {world_size} ...` "
                "(it sets both), or pass rank=0, world_size=1 for one process",
                prefix="invalid ProductionTrainer arguments",
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.config: dict[str, Any] = _merge_config(config)
        self.rank = rank
        self.world_size = world_size
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.use_amp = bool(self.config["use_amp"])
        self.checkpoint_dir = Path(self.config["checkpoint_dir"])
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.logger = logger
        self.training_config: TrainingConfig = _to_training_config(
            self.config, steps_per_epoch=_len_or_none(train_loader), has_val=val_loader is not None,
            base=training_config,
        )  # fmt: skip
        self.device = resolve_device(self.training_config.training.device)
        self.model = model.to(self.device)
        num_classes = self.config.get("num_classes") or _infer_num_classes(model)
        self.task_spec = TaskSpec.classification("production_trainer", num_classes)
        self.trainer: Trainer = self._new_trainer()
        # Run state, read back from the engine after train() / load_checkpoint().
        self.epoch = 0
        self.global_step = 0
        self.best_val_loss = float("inf")
        self.patience_counter = 0
        self.results: dict[str, Any] | None = None
        self._resume_from: Path | None = None
        self._trained = False

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        """The seed's default configuration (seed 004 lines 1331-1371), key for key.

        Example:
            >>> ProductionTrainer.get_default_config()["scheduler"]
            'cosine'
        """
        return {
            # Optimization
            "learning_rate": 1e-3,
            "weight_decay": 1e-4,
            "optimizer": "adamw",
            "betas": (0.9, 0.999),
            # Learning rate schedule
            "scheduler": "cosine",
            "warmup_steps": 1000,
            "total_steps": 10000,
            "min_lr_ratio": 0.01,
            # Training
            "epochs": 100,
            "accumulation_steps": 1,
            "grad_clip": 1.0,
            "use_amp": True,
            # Regularization
            "dropout": 0.1,
            "label_smoothing": 0.1,
            # Checkpointing
            "checkpoint_dir": "./checkpoints",
            "save_every": 10,
            "keep_last_k": 5,
            # Early stopping
            "early_stopping": True,
            "patience": 10,
            # Experiment tracking
            "use_wandb": True,
            "project_name": "my-project",
            # Reproducibility
            "seed": 42,
        }

    # ------------------------------------------------------------------ the engine's parts
    @property
    def optimizer(self) -> Any:
        """The optimizer the engine built (None until :meth:`train` sets the run up)."""
        return self.trainer.optimizer

    @property
    def scheduler(self) -> Any:
        """The engine's :class:`~trainengine.engine.schedules.LRScheduleHandle` (None before :meth:`train`)."""
        return self.trainer.scheduler

    @property
    def scaler(self) -> Any:
        """The fp16 GradScaler (None before :meth:`train`, and for bf16 / fp32, which need none)."""
        runner = self.trainer.step_runner
        return runner.scaler if runner is not None else None

    def _new_trainer(self) -> Trainer:
        return Trainer(self.model, None, self.training_config, self.task_spec)

    # ------------------------------------------------------------------ seed API
    def train(self) -> dict[str, Any]:
        """Train for ``epochs`` (from the checkpoint :meth:`load_checkpoint` read, if any).

        Returns:
            The engine's results (``best_val_loss``, ``history``, ``best_checkpoint``, ...); the
            seed returned nothing.

        Raises:
            TrainEngineError: Called again after a finished run without :meth:`load_checkpoint`.
        """
        if self._trained:
            if self._resume_from is None:
                raise TrainEngineError(
                    "this ProductionTrainer has already trained; to continue, call "
                    "load_checkpoint(path) first (e.g. the results' last_checkpoint), or build a new ProductionTrainer"
                )
            self.trainer = self._new_trainer()  # a fresh run that resumes from the checkpoint
        self.logger.info("Starting training...")
        self.logger.info("Configuration: %s", json.dumps(self.config, indent=2, default=str))
        resume, self._resume_from = self._resume_from, None
        self._trained = True
        self.results = self.trainer.train(self.train_loader, self.val_loader, resume_from=resume)
        self._read_state(self.trainer.state.state_dict())
        self.logger.info("Training complete!")
        return self.results

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """Loss and accuracy (in percent, as the seed) on the validation data; None without it.

        The loss is the mean over samples (the seed averaged batch means). It runs the engine's
        evaluation and changes no run state (best metric, early stopping).

        Example:
            >>> import tempfile, torch
            >>> from torch.utils.data import DataLoader, TensorDataset
            >>> x = torch.randn(32, 4)
            >>> loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
            >>> cfg = {"warmup_steps": 1, "use_wandb": False, "checkpoint_dir": tempfile.mkdtemp()}
            >>> sorted(ProductionTrainer(torch.nn.Linear(4, 2), loader, loader, cfg).evaluate())
            ['accuracy', 'loss']
        """
        if self.val_loader is None:
            return None
        trainer = self.trainer
        if trainer.runtime is None:
            # Before train(): the engine builds its runtime and forward model in train(); an
            # evaluation needs only these two, so set them here instead of a second eval loop.
            t = self.training_config.training
            trainer.runtime = Runtime(t.device, t.precision)
            trainer.model = trainer.runtime.prepare_model(trainer.model)
            trainer.forward_model = trainer.model
        metrics = trainer.evaluate(self.val_loader)
        return {"loss": metrics["val/loss"], "accuracy": 100.0 * metrics["val/accuracy"]}

    def save_checkpoint(self, filename: str = "checkpoint.pth", is_best: bool = False) -> Path | None:
        """Save the full training state under ``checkpoint_dir/<filename without .pth>/``.

        The folder holds the engine's checkpoint (``ckpt-<step>/``: safetensors + JSON, SHA-256
        manifest): weights, optimizer, schedule, scaler, train state, RNG and data position. With
        ``is_best`` the same is saved under ``checkpoint_dir/best_model/``. Saving a name again
        keeps its newest checkpoint (and its best by val/loss).

        Args:
            filename: The seed's file name; its ``.pth`` / ``.pt`` suffix is dropped.
            is_best: Also save as ``best_model``.

        Returns:
            The checkpoint folder written (None on rank != 0, or when
            ``checkpointing.on_save_error: continue`` swallowed a failed write).

        Raises:
            TrainEngineError: Before :meth:`train` (the optimizer and data position do not exist yet).
        """
        if self.rank != 0:
            return None
        if self.trainer.step_runner is None:
            raise TrainEngineError(
                "save_checkpoint() saves the training state (optimizer, schedule, data position) that train() builds: "
                "call it after train(); to save only the weights use trainengine.checkpoint.save_weights_file"
            )
        path = self._save_into(self.checkpoint_dir / _stem(filename))
        if is_best:
            self._save_into(self.checkpoint_dir / "best_model", tags=("best",))
        self.logger.info("Checkpoint saved: %s", path)
        return path

    def load_checkpoint(self, checkpoint_path: str | Path) -> Path:
        """Restore a checkpoint: weights now, the full training state when :meth:`train` runs.

        ``checkpoint_path`` may be a ``ckpt-*`` folder, a folder of them (the newest valid one is
        used), or a name given to :meth:`save_checkpoint` (``checkpoints/best_model.pth`` reads
        ``checkpoints/best_model/``). A ``torch.save`` file is refused, never unpickled.

        Returns:
            The checkpoint folder read.

        Raises:
            CheckpointError: Nothing there, a pickle file, a damaged checkpoint, or one without
                a training state (weights only).
        """
        path = self._resolve_checkpoint(checkpoint_path)
        loaded = read_checkpoint(path, map_location="cpu")
        state = loaded.state if isinstance(loaded.state, dict) else {}
        if "train_state" not in state:
            raise CheckpointError(
                f"{path} holds no training state (optimizer, step, epoch): it was not written by a Trainer. "
                "Load its weights with trainengine.checkpoint.load_checkpoint(path, model) instead"
            )
        if self.trainer.step_runner is not None:
            self.trainer.load_checkpoint_into_self(path)  # set up: restore everything now
        else:
            load_model_state(self.model, loaded.model_state)
        self._read_state(state["train_state"])
        self._resume_from = path
        self.logger.info("Checkpoint loaded: %s", path)
        return path

    # ------------------------------------------------------------------ helpers
    def _read_state(self, train_state: dict[str, Any]) -> None:
        self.epoch = int(train_state["epoch"])
        self.global_step = int(train_state["step"])
        best = train_state.get("best_metric")
        self.best_val_loss = float(best) if best is not None else float("inf")
        self.patience_counter = int(train_state.get("evals_since_improvement", 0))

    def _save_into(self, folder: Path, tags: tuple[str, ...] = ()) -> Path | None:
        trainer = self.trainer
        cfg = TrainingConfig.from_dict(self.training_config.to_dict())
        c = cfg.checkpointing
        c.enabled, c.checkpoint_dir, c.async_save = True, str(folder), False
        c.keep_last_n, c.keep_best_k = 1, 1
        # The engine's Checkpointer writes exactly what a periodic checkpoint holds; here into
        # the named folder instead of the run's checkpoint_dir.
        checkpointer = Checkpointer(cfg, monitor=trainer.monitor, mode=trainer.monitor_mode, periodic=False)
        checkpointer.start(trainer)
        return checkpointer.save(trainer, tags, force_sync=True)

    def _resolve_checkpoint(self, checkpoint_path: str | Path) -> Path:
        p = Path(checkpoint_path)
        if p.is_file():
            raise CheckpointError(
                f"{p} is a file, not a checkpoint folder: ProductionTrainer reads only the engine's pickle-free "
                "checkpoints (a torch.save file is never unpickled). Convert a seed .pt/.pth file with "
                f"`trainengine checkpoints import {p}`"
            )
        if not p.exists() and p.suffix in _PICKLE_SUFFIXES and p.with_suffix("").is_dir():
            p = p.with_suffix("")  # save_checkpoint("best_model.pth") wrote the folder best_model/
        if not p.exists():
            raise CheckpointError(
                f"no checkpoint at {checkpoint_path}: give a ckpt-* folder, a folder of them, or a name passed to "
                f"save_checkpoint() (they live in {self.checkpoint_dir})"
            )
        path, _ = resolve_resume(self.training_config, p)
        if path is None:  # resolve_resume returns a path for every explicit one, or raises
            raise CheckpointError(f"no valid checkpoint in {p}")
        return path


# ---------------------------------------------------------------------------- config mapping


def _merge_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The seed's defaults with ``config`` written over them; unknown keys are refused."""
    defaults = ProductionTrainer.get_default_config()
    if config is None:
        return defaults
    if not isinstance(config, dict):
        raise ConfigError(
            f"config must be a dict of the seed's keys, got {type(config).__name__}",
            prefix="invalid ProductionTrainer config",
        )
    valid = [*defaults, *_EXTRA_KEYS]
    problems = []
    for key in config:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" — did you mean '{close[0]}'?" if close else f" — valid keys: {', '.join(valid)}"
            problems.append(f"unknown key '{key}'{hint}")
    if problems:
        raise ConfigError(problems, prefix="invalid ProductionTrainer config")
    return {**defaults, **config}


def _to_training_config(
    config: dict[str, Any], *, steps_per_epoch: int | None, has_val: bool = True, base: TrainingConfig | None = None
) -> TrainingConfig:
    """Map a complete seed-004 config dict onto a :class:`~trainengine.config.TrainingConfig`.

    Args:
        config: Every key of :meth:`ProductionTrainer.get_default_config`.
        steps_per_epoch: Batches per epoch of the training loader (None: no length).
        has_val: Whether there is validation data (early stopping needs it).
        base: Engine config for everything the seed keys do not cover.

    Raises:
        ConfigError: A value the engine refuses (the seed key named beside its engine field),
            or a warmup not shorter than the run.
    """
    c = config
    betas = c["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ConfigError(
            f"betas must be a pair like (0.9, 0.999), got {betas!r}", prefix="invalid ProductionTrainer config"
        )
    sched_key = c["scheduler"]
    schedule = _SCHEDULES.get(sched_key, sched_key) if isinstance(sched_key, (str, type(None))) else sched_key
    # The seed's one_cycle and "no scheduler" take no warmup; its cosine does.
    warmup = 0 if schedule in ("one_cycle", "cyclic") or sched_key in (None, "none") else int(c["warmup_steps"])

    accum = int(c["accumulation_steps"])
    planned = int(c["epochs"]) * math.ceil(steps_per_epoch / accum) if steps_per_epoch and accum > 0 else None
    total = c["total_steps"]
    max_steps = total if total is not None and (planned is None or total < planned) else None
    run_steps = max_steps if max_steps is not None else planned
    if isinstance(run_steps, int) and run_steps > 0 and warmup >= run_steps:
        raise ConfigError(
            f"warmup_steps={warmup} must be smaller than the run's {run_steps} optimizer steps (epochs={c['epochs']} x "
            f"{planned // int(c['epochs']) if planned else '?'} steps per epoch, total_steps={total}); lower "
            "warmup_steps — the seed's default of 1000 assumes a long run",
            prefix="invalid ProductionTrainer config",
        )

    data = base.to_dict() if base is not None else TrainingConfig().to_dict()
    grad_clip = c["grad_clip"]
    data["training"].update(
        learning_rate=c["learning_rate"],
        epochs=c["epochs"],
        max_steps=max_steps,
        gradient_accumulation_steps=accum,
        max_grad_norm=grad_clip if grad_clip else None,
        precision="auto" if c["use_amp"] else "fp32",
        label_smoothing=c["label_smoothing"],
        early_stopping_patience=c["patience"] if c["early_stopping"] and has_val else None,
        monitor="val/loss",
        monitor_mode="min",
        seed=c["seed"],
    )
    sgd = c["optimizer"] == "sgd"
    data["optimizer"].update(name=c["optimizer"], weight_decay=c["weight_decay"], beta1=betas[0], beta2=betas[1])
    if sgd:  # the seed's SGD: momentum 0.9 with Nesterov
        data["optimizer"].update(momentum=0.9, nesterov=True)
    data["scheduler"].update(name=schedule, warmup_steps=warmup, warmup_ratio=0.0, min_lr_ratio=c["min_lr_ratio"])
    data["checkpointing"].update(
        enabled=True,
        checkpoint_dir=str(c["checkpoint_dir"]),
        save_every_n_epochs=c["save_every"],
        keep_last_n=c["keep_last_k"],
        keep_best_k=1,
    )
    backends = [b for b in data["tracking"]["backends"] if b != "wandb"]
    data["tracking"].update(backends=[*backends, "wandb"] if c["use_wandb"] else backends, project=c["project_name"])
    try:
        return TrainingConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(
            [*exc.problems, "(ProductionTrainer maps the seed's keys onto these fields: see its docstring's table)"],
            prefix="invalid ProductionTrainer config",
        ) from None


def _len_or_none(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _infer_num_classes(model: nn.Module) -> int:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None or last.out_features < 2:
        raise ConfigError(
            "cannot tell the number of classes: the model has no final nn.Linear with >= 2 outputs; set "
            "config['num_classes']",
            prefix="invalid ProductionTrainer config",
        )
    return int(last.out_features)


def _stem(filename: str | Path) -> str:
    """``checkpoint_epoch_3.pth`` -> ``checkpoint_epoch_3`` (a folder name, never a path out of the folder)."""
    name = Path(filename).name
    stem = Path(name).stem if Path(name).suffix in _PICKLE_SUFFIXES else name
    if not stem or stem in (".", ".."):
        raise CheckpointError(f"save_checkpoint(filename={filename!r}) needs a file name such as 'checkpoint.pth'")
    return stem


def load_checkpoint(
    checkpoint_path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
) -> tuple[int, float]:
    """Seed 004's ``load_checkpoint``: restore a checkpoint folder and return ``(epoch, best_val_loss)``.

    The weights, optimizer, scheduler and grad-scaler states are restored as
    :func:`trainengine.compat.seed002.load_checkpoint` does (the engine's pickle-free folder
    format; a ``.pt`` file is converted once with ``trainengine checkpoints import``).
    ``best_val_loss`` is the saved one, else the saved ``val_loss``, else ``inf``.

    Example:
        >>> epoch, best_val_loss = load_checkpoint("checkpoints/ckpt-000000100", model)  # doctest: +SKIP
    """
    record = _load_record(checkpoint_path, model, optimizer, scheduler, scaler=scaler)
    best = record.get("best_val_loss", record.get("val_loss", math.inf))
    return int(record.get("epoch", 0)), float(best if best is not None else math.inf)
