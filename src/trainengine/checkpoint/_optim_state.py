"""Optimizer and scheduler state that survives a different parameter-group layout.

An optimizer's ``state_dict`` numbers parameters by position across its groups, so the state of
an engine-built AdamW (decay / no-decay groups) does not line up with the
``torch.optim.AdamW(model.parameters())`` a user builds to continue. Checkpoints therefore store
each group's parameter names (``param_groups[i]["param_names"]``, torch's own key, canonical
model keys) and loading matches per-parameter state (moments, step) by name. When the layouts
differ the target optimizer's group hyperparameters (lr, weight_decay, ...) stay as built; when
they match exactly, loading is torch's plain ``load_state_dict`` (hyperparameters restored).
Checkpoints written before names were stored load only when the layouts match.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainengine.checkpoint._keys import canonical_keys
from trainengine.errors import CheckpointError

__all__ = ["named_optimizer_state", "load_optimizer_state", "load_scheduler_state"]

logger = logging.getLogger("trainengine")

_NAMES = "param_names"


def _param_names(model: nn.Module) -> dict[int, str]:
    """``id(param) -> canonical name`` (tied weights: the first name, as ``named_parameters``)."""
    named = list(model.named_parameters())
    canonical = canonical_keys(name for name, _ in named)
    return {id(p): canonical[name] for name, p in named}


def _group_names(optimizer: torch.optim.Optimizer, model: nn.Module, what: str) -> list[list[str]]:
    by_id = _param_names(model)
    groups = []
    for i, group in enumerate(optimizer.param_groups):
        names = []
        for p in group["params"]:
            if id(p) not in by_id:
                raise CheckpointError(
                    f"{what}: parameter group {i} holds a tensor of shape {list(p.shape)} that is not a parameter "
                    f"of the model {type(model).__name__}; build the optimizer from model.parameters()"
                )
            names.append(by_id[id(p)])
        groups.append(names)
    return groups


def named_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any]:
    """``optimizer.state_dict()`` with each group's canonical parameter names added.

    Args:
        optimizer: The optimizer to save.
        model: The model whose parameters it updates (plain, compiled or DDP-wrapped).

    Returns:
        The state dict; ``param_groups[i]["param_names"]`` lists group ``i``'s parameter names.

    Raises:
        CheckpointError: The optimizer updates a tensor that is not a parameter of ``model``.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> named_optimizer_state(torch.optim.SGD(model.parameters(), lr=0.1), model)["param_groups"][0]["param_names"]
        ['weight', 'bias']
    """
    state = optimizer.state_dict()
    names = _group_names(optimizer, model, "cannot name the optimizer's parameters")
    groups = []
    for group, group_names in zip(state["param_groups"], names, strict=True):
        group = dict(group)
        group[_NAMES] = group_names  # canonical names, whatever torch's own names said
        groups.append(group)
    return {"state": state["state"], "param_groups": groups}


def _few(names: list[str], n: int = 8) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], model: nn.Module | None, *, where: str
) -> None:
    """Load a saved optimizer state into ``optimizer``, matching parameters by name.

    Args:
        optimizer: The target (any group layout over the same parameters).
        saved: The saved state dict (with ``param_names`` per group when written by this version).
        model: The model ``optimizer`` updates; needed to name its parameters.
        where: The checkpoint, for error messages.

    Raises:
        CheckpointError: The parameter sets differ (the message names the missing and the
            unexpected parameters), an old checkpoint without names does not match the layout,
            or the state does not fit the optimizer's kind.
    """
    saved_groups = list(saved.get("param_groups") or [])
    has_names = bool(saved_groups) and all(_NAMES in g and len(g[_NAMES]) == len(g["params"]) for g in saved_groups)
    target = optimizer.state_dict()
    if not has_names or model is None:
        # Checkpoint from before names were stored (or nothing to name the target's
        # parameters with): positional loading is only right when the layouts agree.
        saved_sizes = [len(g["params"]) for g in saved_groups]
        target_sizes = [len(g["params"]) for g in target["param_groups"]]
        if saved_sizes != target_sizes:
            raise CheckpointError(
                f"checkpoint {where}: the saved optimizer has parameter groups of sizes {saved_sizes}, the "
                f"{type(optimizer).__name__} given has {target_sizes}, and this checkpoint does not record parameter "
                "names to match them by; build the optimizer with the same groups as the run that saved it"
            )
        _torch_load(optimizer, _without_names(saved, target), where)
        return

    target_names = _group_names(optimizer, model, f"checkpoint {where}")
    saved_names = [list(g[_NAMES]) for g in saved_groups]
    flat_saved = [n for g in saved_names for n in g]
    flat_target = [n for g in target_names for n in g]
    missing = sorted(set(flat_target) - set(flat_saved))
    unexpected = sorted(set(flat_saved) - set(flat_target))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {_few(missing)}")
        if unexpected:
            parts.append(f"in the checkpoint but not in the optimizer: {_few(unexpected)}")
        raise CheckpointError(
            f"checkpoint {where}: the optimizer given updates a different set of parameters than the saved one "
            f"({'; '.join(parts)}); build the optimizer over the same parameters (e.g. model.parameters() of the same "
            "architecture), or load only the model"
        )
    if saved_names == target_names:
        _torch_load(optimizer, _without_names(saved, target), where)
        return

    # Different grouping of the same parameters: move each parameter's state to its index in
    # the target layout and keep the target's group hyperparameters.
    saved_index = {
        name: idx
        for g, names in zip(saved_groups, saved_names, strict=True)
        for idx, name in zip(g["params"], names, strict=True)
    }
    saved_state = saved.get("state") or {}
    state: dict[int, Any] = {}
    for group, names in zip(target["param_groups"], target_names, strict=True):
        for idx, name in zip(group["params"], names, strict=True):
            entry = saved_state.get(saved_index[name])
            if entry is not None:
                state[idx] = entry
    remapped = {"state": state, "param_groups": target["param_groups"]}
    logger.warning(
        "checkpoint %s: optimizer state loaded by parameter name into %d parameter group(s) (saved with %d); "
        "the given optimizer's group hyperparameters (lr, weight_decay, ...) stand",
        where,
        len(target_names),
        len(saved_names),
    )
    _torch_load(optimizer, remapped, where)


def _without_names(saved: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """Drop saved ``param_names`` where the target's groups have none (torch would copy them in)."""
    groups = []
    for i, group in enumerate(saved.get("param_groups") or []):
        target_has = i < len(target["param_groups"]) and _NAMES in target["param_groups"][i]
        groups.append(group if target_has else {k: v for k, v in group.items() if k != _NAMES})
    return {"state": saved.get("state") or {}, "param_groups": groups}


def _torch_load(optimizer: torch.optim.Optimizer, state: Mapping[str, Any], where: str) -> None:
    try:
        optimizer.load_state_dict(dict(state))
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {where}: the saved optimizer state does not fit the {type(optimizer).__name__} given: {exc}"
        ) from exc


# ----------------------------------------------------------------------------- schedulers

_HANDLE_KEYS = {"name", "num_steps", "base_lrs", "lrs", "scheduler"}


def _is_handle_state(state: Any) -> bool:
    return isinstance(state, Mapping) and set(state) >= _HANDLE_KEYS


def _is_handle(obj: Any) -> bool:
    # trainengine.engine.schedules.LRScheduleHandle, recognised by shape: checkpoint sits below
    # the engine and must not import it.
    return all(hasattr(obj, a) for a in ("name", "scheduler", "optimizer", "base_lrs", "step_eval"))


def _kind(state: Mapping[str, Any]) -> str:
    if _is_handle_state(state):
        return f"trainengine schedule {state['name']!r}"
    return "a torch scheduler with state keys " + ", ".join(sorted(map(str, state)))


def load_scheduler_state(scheduler: Any, saved: Mapping[str, Any], *, where: str) -> None:
    """Load a saved scheduler state when the kinds match; raise a clear error otherwise.

    The saved state is either a trainengine schedule (``LRScheduleHandle.state_dict()``, what
    the Trainer saves) or a torch scheduler's. It loads into a handle of the same schedule name
    or into a torch scheduler of the same class as the one inside (recognised by its state's
    keys). When the target's optimizer has another number of parameter groups, the schedule's
    position carries over: every group's lr becomes its own base lr times the saved
    lr / base-lr factor (which must be the same for every saved group).

    Raises:
        CheckpointError: Another kind of scheduler, or per-group factors that differ.
    """
    handle_state = saved if _is_handle_state(saved) else None
    if _is_handle(scheduler):
        if handle_state is None or handle_state["name"] != scheduler.name:
            raise CheckpointError(
                f"checkpoint {where}: the saved scheduler is {_kind(saved)} but the scheduler given is trainengine "
                f"schedule {scheduler.name!r}; pass a scheduler of the saved kind, or leave scheduler= out"
            )
        groups = scheduler.optimizer.param_groups
        if len(handle_state["lrs"]) != len(groups):
            factor = _factor(handle_state["lrs"], handle_state["base_lrs"], where)
            base = list(scheduler.base_lrs)
            handle_state = dict(handle_state)
            handle_state["base_lrs"] = base
            handle_state["lrs"] = [b * factor for b in base]
            handle_state["scheduler"] = _regroup(
                handle_state["scheduler"], scheduler.scheduler.state_dict(), [b * factor for b in base]
            )
        _call_load(scheduler, handle_state, where)
        return
    if not callable(getattr(scheduler, "load_state_dict", None)) or not callable(
        getattr(scheduler, "state_dict", None)
    ):
        raise CheckpointError(
            f"checkpoint {where}: scheduler= must have state_dict()/load_state_dict(), got {type(scheduler).__name__}"
        )
    inner = handle_state["scheduler"] if handle_state is not None else saved
    current = scheduler.state_dict()
    if not isinstance(inner, Mapping) or set(inner) != set(current):
        raise CheckpointError(
            f"checkpoint {where}: the saved scheduler is {_kind(saved)}"
            + (
                f" (a torch scheduler with state keys {', '.join(sorted(map(str, inner)))})"
                if handle_state is not None and isinstance(inner, Mapping)
                else ""
            )
            + f", which a {type(scheduler).__name__} (state keys {', '.join(sorted(map(str, current)))}) cannot take; "
            "pass a scheduler of the saved kind, or leave scheduler= out"
        )
    optimizer = getattr(scheduler, "optimizer", None)
    saved_lrs = inner.get("_last_lr")
    if optimizer is not None and isinstance(saved_lrs, list) and len(saved_lrs) != len(optimizer.param_groups):
        if handle_state is not None:
            factor = _factor(handle_state["lrs"], handle_state["base_lrs"], where)
        else:
            factor = _factor(saved_lrs, inner.get("base_lrs") or [], where)
        base = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        lrs = [b * factor for b in base]
        _call_load(scheduler, _regroup(inner, current, lrs), where)
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        return
    _call_load(scheduler, copy.copy(dict(inner)), where)


def _factor(lrs: list[float], base_lrs: list[float], where: str) -> float:
    factors = [lr / b for lr, b in zip(lrs, base_lrs, strict=False) if b]
    if not factors or len(factors) != len(lrs) or any(not math.isclose(f, factors[0], rel_tol=1e-6) for f in factors):
        raise CheckpointError(
            f"checkpoint {where}: the saved schedule scales its parameter groups differently (lrs {lrs}, base lrs "
            f"{base_lrs}), so it cannot be mapped onto another group layout; build the scheduler on an optimizer "
            "with the saved groups, or leave scheduler= out"
        )
    return factors[0]


def _regroup(saved: Mapping[str, Any], current: Mapping[str, Any], lrs: list[float]) -> dict[str, Any]:
    """Saved scalars (position, horizon) with the target's per-group lists; ``_last_lr`` = ``lrs``."""
    out = dict(saved)
    for key, value in current.items():
        if isinstance(value, list) and isinstance(saved.get(key), list) and len(saved[key]) != len(value):
            out[key] = value
    if "_last_lr" in out:
        out["_last_lr"] = list(lrs)
    return out


def _call_load(scheduler: Any, state: Mapping[str, Any], where: str) -> None:
    try:
        scheduler.load_state_dict(state)
    except CheckpointError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {where}: the saved scheduler state does not fit the {type(scheduler).__name__} given: {exc}"
        ) from exc
