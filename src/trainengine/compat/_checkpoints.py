"""Seed 002's checkpoint API (``CheckpointManager(checkpoint_dir, keep_best_n, metric_mode)``,
``save(model, optimizer, scheduler, step=..., val_loss=...)``, ``load_best()``,
``load_checkpoint(path, model, ...)``) over :class:`trainengine.checkpoint.CheckpointManager`.

Every checkpoint is the engine's folder format (safetensors + JSON, verified, atomic): the seed's
``checkpoint_<step>.pt`` pickles are neither written nor read. What the seed reads back from a
checkpoint dict (``ckpt['model_state_dict']``, ``metadata['step']``, ``metadata.get('val_loss')``)
is a :class:`CheckpointRecord`, a read-only mapping that also reads as attributes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from trainengine.checkpoint import CheckpointManager as _CoreManager
from trainengine.checkpoint import CheckpointMetadata, read_checkpoint
from trainengine.checkpoint import load_checkpoint as _core_load_checkpoint
from trainengine.errors import CheckpointError

__all__ = ["CheckpointManager", "CheckpointRecord", "load_checkpoint"]

_STATE_NAMES = {
    "optimizer": "optimizer_state_dict",
    "scheduler": "scheduler_state_dict",
    "scaler": "scaler_state_dict",
}


class CheckpointRecord(Mapping[str, Any]):
    """A checkpoint as seed 002 reads it: a mapping (``record['step']``, ``record.get('val_loss')``)
    that also reads as attributes (``record.step``).

    Keys: ``step`` (and ``global_step``, seed 004's name), ``epoch``, each metric by its name (a
    ``val/loss`` metric also as ``val_loss``), ``metrics`` (all of them), ``config``,
    ``git_commit`` and whatever else was saved as metadata, ``timestamp``, ``tags``, ``path``;
    :meth:`CheckpointManager.load_best` adds ``model_state_dict`` and, when saved,
    ``optimizer_state_dict`` / ``scheduler_state_dict`` / ``scaler_state_dict``.

    Example:
        >>> record = CheckpointRecord({"step": 7000, "val_loss": 2.1})
        >>> record["step"], record.step, record.get("epoch", 0)
        (7000, 7000, 0)
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(f"{key!r} is not in this checkpoint; it holds: {', '.join(self._data)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"checkpoint record has no {name!r}; it holds: {', '.join(self._data)}") from None

    def __repr__(self) -> str:
        shown = {k: v for k, v in self._data.items() if not k.endswith("_state_dict")}
        return f"CheckpointRecord({shown})"


def _record(meta: CheckpointMetadata, state_dicts: Mapping[str, Any] | None = None) -> CheckpointRecord:
    data: dict[str, Any] = {"step": meta.step, "global_step": meta.step, "epoch": meta.epoch}
    for key, value in meta.metrics.items():
        data[key] = value
        if "/" in key:
            data.setdefault(key.replace("/", "_", 1), value)  # an engine run's "val/loss" read as "val_loss"
    data["metrics"] = dict(meta.metrics)
    data["config"] = meta.extra.get("config")
    data["git_commit"] = meta.extra.get("git_commit")
    for key, value in meta.extra.items():
        data.setdefault(key, value)
    data.update(timestamp=meta.timestamp, tags=list(meta.tags), path=meta.path)
    if state_dicts:
        data.update(state_dicts)
    return CheckpointRecord(data)


def _config_dict(config: Any) -> Any:
    """A config as JSON-friendly data: dicts, ``to_dict()`` (TrainingConfig), dataclasses, namespaces."""
    if config is None or isinstance(config, Mapping):
        return None if config is None else dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if hasattr(config, "model_dump"):
        return config.model_dump()
    if hasattr(config, "__dict__"):
        return {k: v for k, v in vars(config).items() if not k.startswith("_")}
    return config  # stored as its str by the checkpoint writer


def _metric(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise CheckpointError(f"metric '{name}' is a tensor of shape {list(value.shape)}; pass one number")
        return float(value.detach().float().item())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"metric '{name}' must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def _refuse_pt(path: Path) -> None:
    if path.is_file() and path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        raise CheckpointError(
            f"{path} is a torch.save file, which trainengine never unpickles; convert it once with "
            f"`trainengine checkpoints import {path}` (it reads tensors only, with torch.load(weights_only=True)) "
            "and load the checkpoint folder it prints"
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    device: str | torch.device = "cpu",
    scaler: Any = None,
    *,
    strict: bool = True,
) -> CheckpointRecord:
    """Load a checkpoint folder into ``model`` (and optimizer, scheduler, grad scaler); seed 002's function.

    Args:
        path: A ``ckpt-*`` folder (``CheckpointManager.save`` returns it; ``trainengine
            checkpoints import FILE.pt`` converts a seed ``.pt`` file into one).
        model: Receives the weights (plain, compiled or DDP-wrapped).
        optimizer: Receives the optimizer state when the checkpoint has one.
        scheduler: Receives the scheduler state when the checkpoint has one.
        device: Where the weights are read to before being copied into ``model``.
        scaler: Receives the grad-scaler state when the checkpoint has one.
        strict: Refuse weights that do not match the model's keys.

    Returns:
        The checkpoint's metadata: ``metadata['step']``, ``metadata['epoch']``,
        ``metadata.get('val_loss', float('inf'))``, ``metadata.config``, ...

    Raises:
        CheckpointError: A ``.pt`` file (never unpickled: the message says how to convert it), a
            corrupt checkpoint, or state that does not fit the objects given.

    Example:
        >>> import tempfile, torch
        >>> manager = CheckpointManager(tempfile.mkdtemp())
        >>> model = torch.nn.Linear(2, 1)
        >>> path = manager.save(model, None, None, step=10, val_loss=0.5)
        >>> metadata = load_checkpoint(path=path, model=model, device="cpu")
        >>> metadata["step"], metadata.get("val_loss", float("inf"))
        (10, 0.5)
    """
    p = Path(path)
    _refuse_pt(p)
    meta = _core_load_checkpoint(p, model, optimizer, scheduler, scaler, strict=strict, map_location=device)
    return _record(meta)


class CheckpointManager:
    """Seed 002's checkpoint manager: keep the best ``keep_best_n`` checkpoints by validation loss.

    A thin layer over :class:`trainengine.checkpoint.CheckpointManager` (available as
    :attr:`core` for listing, verifying and the engine's own ``save``): each save is an atomic
    ``ckpt-<step>`` folder (safetensors + JSON) holding the weights, the optimizer, scheduler and
    grad-scaler state, the step, the metrics, the config and the git commit. After each save the
    folder keeps the ``keep_best_n`` best checkpoints by ``val_loss`` **and the newest one** (the
    seed would delete the newest when it ranks worst; here a resume point is never lost).

    Args:
        checkpoint_dir: Folder of the checkpoints (created if missing).
        keep_best_n: How many best checkpoints to keep.
        metric_mode: ``"min"`` when lower ``val_loss`` is better (a loss), ``"max"`` when higher is.
        monitor: The metric that ranks checkpoints (``val_loss`` also matches ``val/loss``).
        keep_last_n: Also keep this many newest checkpoints (the newest is always kept).

    Raises:
        ConfigError: An argument is out of range (the message names it).

    Example:
        >>> import tempfile, torch
        >>> model = torch.nn.Linear(2, 1)
        >>> optimizer = torch.optim.AdamW(model.parameters())
        >>> checkpoint_manager = CheckpointManager(tempfile.mkdtemp(), keep_best_n=2, metric_mode="min")
        >>> for step, val_loss in [(100, 3.8), (200, 3.2), (300, 3.5), (400, 3.9)]:
        ...     _ = checkpoint_manager.save(model, optimizer, None, step=step, val_loss=val_loss)
        >>> [step for _, _, step in checkpoint_manager.checkpoints]  # best first; 400 is the newest
        [200, 300, 400]
        >>> checkpoint_manager.load_best()["step"]
        200
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str] = "checkpoints",
        keep_best_n: int = 3,
        metric_mode: Literal["min", "max"] = "min",
        *,
        monitor: str = "val_loss",
        keep_last_n: int = 0,
    ) -> None:
        self.core = _CoreManager(
            checkpoint_dir, keep_best_k=keep_best_n, keep_last_n=keep_last_n, monitor=monitor, mode=metric_mode
        )
        self.checkpoint_dir = self.core.checkpoint_dir
        self.keep_best_n = keep_best_n
        self.metric_mode: Literal["min", "max"] = metric_mode
        self._git: dict[str, Any] | None = None

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        step: int | Mapping[str, Any] | None = None,
        val_loss: float | torch.Tensor | None = None,
        config: Any = None,
        *,
        metrics: Mapping[str, Any] | None = None,
        epoch: int = 0,
        scaler: Any = None,
    ) -> Path:
        """Save a checkpoint, then prune to the best ``keep_best_n`` (and the newest); returns its folder.

        Both of the seeds' call forms work::

            checkpoint_manager.save(model, optimizer, scheduler, step=step, val_loss=val_loss, config=config)
            checkpoint_manager.save(model, optimizer, step, metrics)  # no scheduler; metrics a dict

        Args:
            model: The model (its weights under canonical keys).
            optimizer: Its optimizer (state saved with parameter names), or None.
            scheduler: An LR scheduler (its ``state_dict()``), or None. An int here is the step
                of the ``save(model, optimizer, step, metrics)`` form.
            step: Optimizer steps done; names the folder (``ckpt-<step>``).
            val_loss: The validation loss that ranks the checkpoint (``inf`` / NaN never rank best).
            config: The run's config (a dict, a dataclass, a TrainingConfig...), stored as JSON.
            metrics: More metrics (numbers or one-element tensors).
            epoch: Current epoch.
            scaler: A ``torch.amp.GradScaler`` (its state), or None.

        Raises:
            CheckpointError: No step, a metric that is not a number, or a failed write (earlier
                checkpoints stay intact).
        """
        if isinstance(scheduler, int) and not isinstance(scheduler, bool):
            # save(model, optimizer, step, metrics): the third argument is the step.
            if step is not None and not isinstance(step, Mapping):
                raise CheckpointError(
                    f"save() got the step twice ({scheduler!r} as the third argument and step={step!r}); use "
                    "save(model, optimizer, step, metrics) or save(model, optimizer, scheduler, step=..., val_loss=...)"
                )
            if step is not None and metrics is not None:
                raise CheckpointError("save() got metrics twice (as the fourth argument and metrics=); pass one")
            if isinstance(step, Mapping):
                metrics = step
            scheduler, step = None, scheduler
        if isinstance(step, Mapping):
            raise CheckpointError(
                "save() got a dict where the step goes; use save(model, optimizer, step, metrics) or "
                "save(model, optimizer, scheduler, step=..., val_loss=..., metrics=...)"
            )
        if step is None:
            raise CheckpointError("save() needs the step: save(model, optimizer, scheduler, step=1000, val_loss=2.3)")
        values = {str(k): _metric(str(k), v) for k, v in (metrics or {}).items()}
        if val_loss is not None:
            values["val_loss"] = _metric("val_loss", val_loss)
        state: dict[str, Any] = {}
        if optimizer is not None:
            state["optimizer"] = optimizer  # the core saves it with parameter names
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if self._git is None:
            from trainengine.provenance import git_info

            self._git = git_info()
        meta = {
            "config": _config_dict(config),
            "git_commit": self._git.get("commit"),
            "git_dirty": self._git.get("dirty"),
        }
        return self.core.save(step=step, epoch=epoch, model=model, state=state, metrics=values, meta=meta)

    @property
    def checkpoints(self) -> list[tuple[float, str, int]]:
        """``(metric, path, step)`` of the checkpoints that have the monitored metric, best first (the seed's list)."""
        infos = [i for i in self.core.list_checkpoints() if i.metric is not None]
        sign = 1.0 if self.metric_mode == "min" else -1.0
        infos.sort(key=lambda i: (sign * float(i.metric or 0.0), i.step))
        return [(float(i.metric or math.nan), str(i.path), i.step) for i in infos]

    def get_best_checkpoint_path(self) -> Path | None:
        """The folder of the best checkpoint; None when no checkpoint has the monitored metric."""
        return self.core.get_best_checkpoint()

    def load_best(self, device: str | torch.device = "cpu") -> CheckpointRecord | None:
        """Read the best checkpoint as the seed's dict (``best['model_state_dict']``, ``best['step']``, ...).

        Args:
            device: Where the model weights are read to (optimizer and scheduler state stay on CPU;
                ``optimizer.load_state_dict`` moves them next to the parameters).

        Returns:
            A :class:`CheckpointRecord` with ``model_state_dict`` (canonical keys: no ``module.`` /
            ``_orig_mod.`` prefixes) and, when saved, ``optimizer_state_dict``,
            ``scheduler_state_dict`` and ``scaler_state_dict``; None when no checkpoint has the
            monitored metric.

        Raises:
            CheckpointError: The best checkpoint is corrupt (the message names the file).
        """
        best = self.get_best_checkpoint_path()
        if best is None:
            return None
        loaded = read_checkpoint(best, map_location=device)
        states = {"model_state_dict": loaded.model_state}
        states |= {name: loaded.state[key] for key, name in _STATE_NAMES.items() if loaded.state.get(key) is not None}
        return _record(loaded.meta, states)

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        device: str | torch.device = "cpu",
        scaler: Any = None,
        *,
        strict: bool = True,
    ) -> CheckpointRecord:
        """:func:`load_checkpoint` with ``path`` also relative to :attr:`checkpoint_dir` (``"ckpt-000001000"``)."""
        p = Path(path)
        if not p.exists() and not p.is_absolute() and (self.checkpoint_dir / p).exists():
            p = self.checkpoint_dir / p
        return load_checkpoint(p, model, optimizer, scheduler, device, scaler, strict=strict)
