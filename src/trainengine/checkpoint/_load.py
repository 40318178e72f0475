"""Putting a checkpoint back into a model, optimizer, scheduler and grad scaler."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from trainengine.checkpoint._format import CheckpointMetadata, LoadedCheckpoint, read_checkpoint
from trainengine.checkpoint._keys import load_model_state
from trainengine.checkpoint._optim_state import load_optimizer_state, load_scheduler_state
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
        optimizer: Receives ``state["optimizer"]`` when the checkpoint has it. Per-parameter
            state is matched by parameter name, so any group layout over the same parameters
            works (e.g. ``torch.optim.AdamW(model.parameters())`` for a run that used decay /
            no-decay groups); then the given groups' hyperparameters stand (a warning says so).
        scheduler: Receives ``state["scheduler"]`` when the checkpoint has it and it is of the
            same kind (a trainengine schedule of the same name, or the same torch scheduler
            class); see :func:`~trainengine.checkpoint.load_scheduler_state`.
        scaler: Receives ``state["scaler"]`` when the checkpoint has it.
        strict: Refuse weights that do not match the model's keys.
        map_location: Device the weights are read to before being copied into the model.

    Returns:
        The checkpoint's metadata.

    Raises:
        CheckpointError: Corrupt checkpoint, state that does not fit the objects given, an
            optimizer over a different set of parameters (the message names them) or a
            scheduler of another kind.
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
            raise CheckpointError(
                f"checkpoint {loaded.meta.path} holds no model weights (it was saved with model=None); "
                "pass strict=False to skip them"
            )
        if loaded.model_state:
            load_model_state(model, loaded.model_state, strict=strict)
    where = str(loaded.meta.path)
    if optimizer is not None and loaded.state.get("optimizer") is not None:
        load_optimizer_state(optimizer, loaded.state["optimizer"], model, where=where)
    if scheduler is not None and loaded.state.get("scheduler") is not None:
        load_scheduler_state(scheduler, loaded.state["scheduler"], where=where)
    if scaler is not None and loaded.state.get("scaler") is not None:
        try:
            scaler.load_state_dict(loaded.state["scaler"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {where}: the saved scaler state does not fit the {type(scaler).__name__} given: {exc}"
            ) from exc
    return loaded.meta
