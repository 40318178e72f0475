"""Canonical model-state keys: the same names whatever wraps the model.

``torch.compile`` stores the model under ``_orig_mod`` and DDP under ``module``, so the same
weights appear as ``_orig_mod.fc.weight`` / ``module.fc.weight`` / ``fc.weight``. Checkpoints
store the canonical ``fc.weight`` and loading maps it onto whatever names the target model uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainengine.errors import CheckpointError

__all__ = [
    "canonical_keys",
    "model_tensors",
    "checkpoint_weights",
    "load_model_state",
    "save_weights_file",
    "load_weights_file",
]

_COMPILED = "_orig_mod"
_DDP = "module."


def canonical_keys(keys: Iterable[str]) -> dict[str, str]:
    """Map each state-dict key to its canonical form.

    Every ``_orig_mod`` path component is dropped (``torch.compile`` wraps any submodule too),
    then a leading ``module.`` is stripped while *every* key has it (DDP / DataParallel wrap the
    whole model, so a common prefix is a wrapper; stripping a prefix all keys share cannot make
    two keys collide).

    Args:
        keys: State-dict keys of one model.

    Returns:
        ``{original_key: canonical_key}``.

    Raises:
        CheckpointError: Two keys would get the same canonical name.

    Example:
        >>> canonical_keys(["module._orig_mod.fc.weight", "module._orig_mod.fc.bias"])
        {'module._orig_mod.fc.weight': 'fc.weight', 'module._orig_mod.fc.bias': 'fc.bias'}
    """
    originals = list(keys)
    names = [".".join(part for part in k.split(".") if part != _COMPILED) for k in originals]
    while names and all(n.startswith(_DDP) for n in names):
        names = [n[len(_DDP) :] for n in names]
    mapping = dict(zip(originals, names, strict=True))
    if len(set(names)) != len(names):
        seen: dict[str, str] = {}
        for orig, name in mapping.items():
            if name in seen:
                raise CheckpointError(
                    f"state-dict keys '{seen[name]}' and '{orig}' both become '{name}' once wrapper prefixes "
                    "are removed; rename one of the submodules"
                )
            seen[name] = orig
    return mapping


def model_tensors(model: nn.Module | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's weights under canonical keys, each tied tensor once.

    Returns:
        ``(tensors, aliases)``: ``aliases[name] = other`` means ``name`` is the very same tensor
        as ``other`` (tied weights such as a GPT's embedding and head); only ``other`` is stored.

    Raises:
        CheckpointError: A state-dict entry is not a tensor (``get_extra_state`` objects).
    """
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    mapping = canonical_keys(state)
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for orig, value in state.items():
        name = mapping[orig]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"model state '{orig}' is a {type(value).__name__}, not a tensor; "
                "put non-tensor module state into save(state=...) instead"
            )
        t = value.detach()
        if t.device.type == "meta":
            raise CheckpointError(
                f"model weight '{orig}' is on the meta device (it has no data); materialise the model before saving"
            )
        if t.numel():
            # The same storage, offset, shape, strides and dtype: the same tensor under two names.
            sig = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
            if sig in seen:
                aliases[name] = seen[sig]
                continue
            seen[sig] = name
        tensors[name] = t
    return tensors, aliases


def _checkpoint_hook(model: nn.Module) -> Any:
    """The model's ``checkpoint_state_dict`` method (looked up inside compile / DDP wrappers), or None."""
    from trainengine.models._spec import unwrap_model  # lazy: models is a lower layer, kept off import time

    hook = getattr(unwrap_model(model), "checkpoint_state_dict", None)
    return hook if callable(hook) else None


def checkpoint_weights(model: nn.Module | Mapping[str, torch.Tensor]) -> nn.Module | Mapping[str, torch.Tensor]:
    """What a checkpoint stores of ``model``: its ``checkpoint_state_dict()`` when it has one, else the module.

    A model may define ``checkpoint_state_dict() -> {key: tensor}`` (keys as in its own
    ``state_dict``) to keep a checkpoint to the weights its spec cannot rebuild, e.g. a LoRA
    model's adapters and head (:class:`trainengine.models.RewardModel`); :func:`load_model_state`
    then requires exactly those keys. Whole-model weight files (:func:`save_weights_file`,
    export bundles) always hold every weight.

    Example:
        >>> from torch import nn
        >>> class Half(nn.Sequential):
        ...     def checkpoint_state_dict(self):
        ...         return {k: v for k, v in self.state_dict().items() if k.startswith("1.")}
        >>> sorted(checkpoint_weights(Half(nn.Linear(2, 2), nn.Linear(2, 1))))
        ['1.bias', '1.weight']
    """
    if isinstance(model, nn.Module):
        hook = _checkpoint_hook(model)
        if hook is not None:
            return dict(hook())
    return model


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool = True) -> None:
    """Copy canonical-key weights into ``model``, whatever wrapper (compile, DDP) it has.

    Args:
        model: The target module (plain, ``torch.compile``'d or DDP-wrapped).
        state: ``{canonical_key: tensor}`` as stored in ``model.safetensors``.
        strict: Refuse missing or unexpected keys (shape mismatches are always refused). A model
            with ``checkpoint_state_dict()`` (see :func:`checkpoint_weights`) needs only the keys
            that method returns; other weights of the model may be present too.

    Raises:
        CheckpointError: Keys do not match (with ``strict``) or a shape differs; the message
            lists the first offending keys.
    """
    own = model.state_dict()
    mapping = canonical_keys(own)
    target = {canon: orig for orig, canon in mapping.items()}
    remapped = {target[k]: v for k, v in state.items() if k in target}
    if strict:
        hook = _checkpoint_hook(model)
        required = set(canonical_keys(hook()).values()) if hook is not None else set(target)
        missing = [k for k in target if k in required and k not in state]
        unexpected = [k for k in state if k not in target]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing from the checkpoint: {_few(missing)}")
            if unexpected:
                parts.append(f"not in the model: {_few(unexpected)}")
            raise CheckpointError(
                "checkpoint weights do not fit the model (" + "; ".join(parts) + "); build the model with the "
                "configuration the checkpoint was saved with, or pass strict=False to load the overlap"
            )
    try:
        model.load_state_dict(remapped, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit the model: {exc}") from exc


def _few(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def save_weights_file(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s weights to one safetensors file under canonical keys, each tied tensor once.

    Load it back with :func:`load_weights_file`. The write is atomic (temp file + rename).

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> path = Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> _ = save_weights_file(nn.Linear(2, 2), path)
        >>> target = nn.Linear(2, 2)
        >>> load_weights_file(target, path)
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors, _ = model_tensors(model)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    return path


def load_weights_file(model: nn.Module, path: str | Path, *, strict: bool = True) -> None:
    """Load a safetensors weights file into ``model`` (plain, compiled or DDP-wrapped).

    Accepts files written by :func:`save_weights_file`, a run directory's ``model.safetensors``
    and ``safetensors.torch.save_model`` output: a tied weight stored under only one of its names
    is filled in for the others, from the target model's own tying. Nothing is unpickled.

    Raises:
        CheckpointError: The file is not a safetensors file, or the weights do not fit ``model``.
    """
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError
        raise CheckpointError(f"cannot read weights file {path}: {exc}") from exc
    _, tied = model_tensors(model)  # canonical name -> the name it shares storage with
    for name, other in tied.items():
        if name not in state and other in state:
            state[name] = state[other]
        elif other not in state and name in state:
            state[other] = state[name]
    load_model_state(model, state, strict=strict)
