"""Model specs: the JSON recipe ``{"architecture": name, "kwargs": {...}}`` that rebuilds a model.

Checkpoints, run directories, registry versions and export bundles store the spec next to the
weights, so ``ModelRegistry.get_model(...).load()`` and ``trainengine export --checkpoint``
can rebuild the module without the training script. Models made by :func:`build_model` carry
their spec; a :class:`GPT` derives it from its :class:`GPTConfig`; any other model needs a
spec given explicitly (``{"architecture": <registered name>, "kwargs": {...}}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

# rebuild_model lives in models/_registry.py (it builds by name); this module imports no builder,
# so models has no import cycle.
__all__ = ["model_spec", "attach_spec", "unwrap_model"]

SPEC_ATTR = "_trainengine_model_spec"


def _jsonable(value: Any) -> Any:
    """Tuples become lists (JSON has no tuple), recursively."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def attach_spec(model: nn.Module, architecture: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """Record on ``model`` how it was built (what :func:`build_model` does)."""
    object.__setattr__(model, SPEC_ATTR, {"architecture": architecture, "kwargs": _jsonable(dict(kwargs))})
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside ``torch.compile`` (``_orig_mod``) and DDP/FSDP (``module``) wrappers."""
    seen = 0
    while seen < 8:
        inner = getattr(model, "_orig_mod", None) or (
            getattr(model, "module", None)
            if type(model).__name__ in {"DistributedDataParallel", "DataParallel", "FullyShardedDataParallel"}
            else None
        )
        if not isinstance(inner, nn.Module):
            return model
        model, seen = inner, seen + 1
    return model


def model_spec(model: nn.Module, model_config: Any = None) -> dict[str, Any] | None:
    """The spec that rebuilds ``model``, or ``None`` when it cannot be known.

    Args:
        model: A module (compiled or DDP-wrapped modules are unwrapped).
        model_config: Optional hint: a :class:`GPTConfig`, or a dict ``{"architecture": ...,
            "kwargs": {...}}``; used when the model carries no spec of its own.

    Example:
        >>> from trainengine.models import build_model
        >>> model_spec(build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(8,)))["kwargs"]["hidden_dims"]
        [8]
    """
    from trainengine.models._gpt import GPT, GPTConfig

    inner = unwrap_model(model)
    spec = getattr(inner, SPEC_ATTR, None)
    if spec is not None:
        return {"architecture": spec["architecture"], "kwargs": dict(spec["kwargs"])}
    if isinstance(inner, GPT):
        return {"architecture": "gpt", "kwargs": _jsonable(dataclasses.asdict(inner.config))}
    if isinstance(model_config, GPTConfig):
        return {"architecture": "gpt", "kwargs": _jsonable(dataclasses.asdict(model_config))}
    if isinstance(model_config, Mapping) and isinstance(model_config.get("architecture"), str):
        return {
            "architecture": model_config["architecture"],
            "kwargs": _jsonable(dict(model_config.get("kwargs") or {})),
        }
    return None
