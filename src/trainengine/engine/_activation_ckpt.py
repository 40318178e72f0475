"""Activation checkpointing: recompute each transformer block's activations in the backward pass.

``training.activation_checkpointing: true`` trades compute for memory: a checkpointed block keeps
only its inputs from the forward pass and runs its forward again inside the backward to rebuild
the activations its gradients need (``torch.utils.checkpoint`` with ``use_reentrant=False``).
Peak activation memory drops from "every block's intermediates" to "one block's intermediates
plus every block's input"; a step costs about one extra forward pass.

What gets checkpointed (:func:`apply_activation_checkpointing`):

* **Hugging Face models** (anything in the model that is a ``PreTrainedModel`` with
  ``supports_gradient_checkpointing``, e.g. an ``AutoModelForCausalLM``, or the ``backbone`` of a
  :class:`~trainengine.models.RewardModel`, LoRA-wrapped or not): their own
  ``activation_checkpointing_enable`` (``gradient_checkpointing_enable`` before transformers 5.x)
  with ``use_reentrant=False``. The non-reentrant variant lets gradients reach LoRA adapters
  inside a block even when the embeddings are frozen (no ``enable_input_require_grads`` needed).
* **Other models** (the built-in ``GPT``, your own): the repeated blocks, i.e. the largest
  ``nn.ModuleList`` of two or more blocks of one class (the layer-group rule of
  ``transfer:``). Each block's ``forward`` is replaced on the instance by one that runs the
  original through ``torch.utils.checkpoint.checkpoint``; no module is wrapped or renamed, so
  parameter names, ``state_dict`` keys, checkpoints and resume are exactly those of the plain
  model.

Dropout inside a block recomputes identically (the RNG state is saved and restored:
``preserve_rng_state=True``), so a checkpointed run computes the same losses and gradients as a
plain one. Blocks run plainly in eval mode and under ``torch.no_grad()`` (nothing to save).
"""

from __future__ import annotations

import logging
from types import MethodType
from typing import Any, cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainengine.engine._transfer import _block_list
from trainengine.errors import ConfigError

__all__ = ["apply_activation_checkpointing", "remove_activation_checkpointing"]

logger = logging.getLogger("trainengine")

_INNER = "_trainengine_ckpt_forward"  # the block's original (bound) forward, kept on the instance


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A block's forward through ``torch.utils.checkpoint`` while training with grad enabled."""
    inner = getattr(self, _INNER)
    if self.training and torch.is_grad_enabled():
        return checkpoint(inner, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
    return inner(*args, **kwargs)


def _is_wrapped(module: nn.Module) -> bool:
    forward = module.__dict__.get("forward")
    return isinstance(forward, MethodType) and forward.__func__ is _checkpointed_forward


def _hf_models(model: nn.Module) -> list[nn.Module]:
    """The outermost Hugging Face models in ``model`` that support gradient checkpointing."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if any(name == f or name.startswith(f"{f}.") or not f for f, _ in found):
            continue  # inside one already found (its own enable call covers it)
        enable = getattr(module, "activation_checkpointing_enable", None) or getattr(
            module, "gradient_checkpointing_enable", None
        )
        if callable(enable) and getattr(module, "supports_gradient_checkpointing", False) is True:
            found.append((name, module))
    return [m for _, m in found]


def _hf_layer_count(hf: nn.Module) -> int:
    """How many layers the Hugging Face model's checkpointing flag covers."""
    layer_class: type | None
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer as layer_class
    except ImportError:  # older transformers: the layers have no common class
        layer_class = None
    if layer_class is not None:
        layers = sum(
            1 for m in hf.modules() if isinstance(m, layer_class) and getattr(m, "gradient_checkpointing", False)
        )
        if layers:
            return layers
    blocks = _block_list(hf)
    return len(cast(nn.ModuleList, hf.get_submodule(blocks))) if blocks is not None else 1


def _enable_hf(hf: nn.Module) -> int:
    """Turn on the model's own checkpointing (non-reentrant); return how many layers it covers."""
    kwargs = {"use_reentrant": False}
    enable: Any = getattr(hf, "activation_checkpointing_enable", None)
    if callable(enable):  # transformers >= 5.x (gradient_checkpointing_enable is its deprecated alias)
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        cast(Any, hf).gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # transformers 4.x
    return _hf_layer_count(hf)


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute ``model``'s transformer blocks in the backward pass (see the module docstring).

    Applied in place, before the optimizer is built and before ``torch.compile``; calling it
    again changes nothing. Parameter names and ``state_dict`` keys stay as they were.

    Args:
        model: the model to train (not yet compiled or wrapped for data parallelism).

    Returns:
        How many blocks are checkpointed.

    Raises:
        ConfigError: the model has neither a Hugging Face model that supports gradient
            checkpointing nor an ``nn.ModuleList`` of two or more blocks of one class.

    Example:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.GELU()) for _ in range(3))
        ...         self.head = nn.Linear(4, 2)
        ...
        ...     def forward(self, x):
        ...         for block in self.blocks:
        ...             x = block(x)
        ...         return self.head(x)
        >>> net = Net()
        >>> keys = list(net.state_dict())
        >>> apply_activation_checkpointing(net), list(net.state_dict()) == keys
        (3, True)
        >>> net(torch.randn(2, 4)).sum().backward()
    """
    hf_models = _hf_models(model)
    if hf_models:
        count = sum(_enable_hf(hf) for hf in hf_models)
        names = ", ".join(type(hf).__name__ for hf in hf_models)
        logger.info("activation checkpointing: %d layers of %s (Hugging Face, non-reentrant)", count, names)
        return count
    blocks_name = _block_list(model)
    if blocks_name is None:
        raise ConfigError(
            f"training.activation_checkpointing: found no blocks to checkpoint in {type(model).__name__}. "
            "It looks for a Hugging Face model that supports gradient checkpointing, or else for an "
            "nn.ModuleList of 2 or more blocks of one class that hold weights (a transformer's layers: "
            "'layers', 'h', 'encoder.layer', 'blocks'). Put the model's repeated blocks in an nn.ModuleList, "
            "or set training.activation_checkpointing: false",
            prefix="activation checkpointing cannot be applied",
        )
    blocks = cast(nn.ModuleList, model.get_submodule(blocks_name))
    for block in blocks:
        if not _is_wrapped(block):
            # The original forward (a bound method: deepcopy rebinds it to the copy) and its replacement
            # live on the instance; nothing is registered as a submodule, so state_dict keys are unchanged.
            setattr(block, _INNER, block.forward)
            block.forward = MethodType(_checkpointed_forward, block)
    logger.info(
        "activation checkpointing: %d blocks (%s.*, %s) recomputed in the backward",
        len(blocks),
        blocks_name or "<model>",
        type(blocks[0]).__name__,
    )
    return len(blocks)


def remove_activation_checkpointing(model: nn.Module) -> int:
    """Undo :func:`apply_activation_checkpointing`; return how many blocks were restored.

    Example:
        >>> blocks = nn.Sequential(nn.ModuleList(nn.Sequential(nn.Linear(2, 2)) for _ in range(2)))
        >>> apply_activation_checkpointing(blocks), remove_activation_checkpointing(blocks)
        (2, 2)
    """
    restored = 0
    for hf in _hf_models(model):
        restored += _hf_layer_count(hf)
        disable: Any = getattr(hf, "activation_checkpointing_disable", None)
        (disable if callable(disable) else cast(Any, hf).gradient_checkpointing_disable)()
    for module in model.modules():
        if _is_wrapped(module):
            del module.forward
            delattr(module, _INNER)
            restored += 1
    return restored
