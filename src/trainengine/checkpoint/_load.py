"""Putting a checkpoint back into a model, optimizer, scheduler and grad scaler."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from trainengine.checkpoint._format import CheckpointMetadata, LoadedCheckpoint, read_checkpoint
from trainengine.checkpoint._keys import load_model_state
from trainengine.errors import CheckpointError

__all__ = ["load_checkpoint", "apply_checkpoint"]


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    *,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> CheckpointMetadata:
    """Verify, read and apply a checkpoint (see :func:`apply_checkpoint`).

    Args:
        path: The ``ckpt-*`` folder.
        model: Receives the weights (canonical keys fit plain, compiled and DDP models).
        optimizer: Receives ``state["optimizer"]`` when the checkpoint has it.
        scheduler: Receives ``state["scheduler"]`` when the checkpoint has it.
        scaler: Receives ``state["scaler"]`` when the checkpoint has it.
        strict: Refuse weights that do not match the model's keys.
        map_location: Device the weights are read to before being copied into the model.

    Returns:
        The checkpoint's metadata.

    Raises:
        CheckpointError: Corrupt checkpoint, or state that does not fit the objects given.
    """
    loaded = read_checkpoint(path, map_location=map_location)
    return apply_checkpoint(loaded, model, optimizer, scheduler, scaler, strict=strict)


def apply_checkpoint(
    loaded: LoadedCheckpoint,
    model: nn.Module | None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    *,
    strict: bool = True,
) -> CheckpointMetadata:
    """Put an already read checkpoint into the given objects; entries it lacks are skipped."""
    if model is not None:
        if not loaded.model_state and strict:
            raise CheckpointError(f"checkpoint {loaded.meta.path} holds no model weights (it was saved with model=None); pass strict=False to skip them")
        if loaded.model_state:
            load_model_state(model, loaded.model_state, strict=strict)
    for obj, key in ((optimizer, "optimizer"), (scheduler, "scheduler"), (scaler, "scaler")):
        if obj is not None and loaded.state.get(key) is not None:
            try:
                obj.load_state_dict(loaded.state[key])
            except (KeyError, ValueError, RuntimeError, TypeError) as exc:
                raise CheckpointError(f"checkpoint {loaded.meta.path}: the saved {key} state does not fit the {type(obj).__name__} given: {exc}") from exc
    return loaded.meta
