"""Optimizer construction: parameter groups with and without weight decay."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from trainengine.config import OptimizerSection
from trainengine.errors import ConfigError
from trainengine.registries import OPTIMIZERS

__all__ = [
    "OptimizerBuilder",
    "no_decay_ids",
    "build_optimizer",
    "param_groups",
    "supports_found_inf",
    "build_adamw",
    "build_adam",
    "build_sgd",
]

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm, nn.Embedding)


def no_decay_ids(model: nn.Module) -> set[int]:
    """``id()`` of every parameter that is never weight-decayed: biases, norms, embeddings, scalars.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        >>> sorted(n for n, p in model.named_parameters() if id(p) in no_decay_ids(model))
        ['0.bias', '1.bias', '1.weight']
    """
    ids: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, _NORM_TYPES) or name.endswith("bias") or param.ndim < 2:
                ids.add(id(param))
    return ids


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters: decay matrices, never biases, norms or embeddings.

    Decaying a bias or a norm's gain only pulls it towards zero and hurts; the usual practice
    (GPT-2, BERT, nanoGPT) decays only weight matrices of linear and conv layers.
    """
    no_decay_ids_ = no_decay_ids(model)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))  # tied weights appear once
        (no_decay if id(param) in no_decay_ids_ else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _fused_ok(params: list[torch.Tensor], device: torch.device) -> bool:
    # Fused kernels exist for CPU and CUDA floating-point parameters.
    return device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)


class OptimizerBuilder(Protocol):
    """Builds one optimizer: the value of a :data:`trainengine.registries.OPTIMIZERS` entry.

    Receives the parameter groups (weight matrices with ``section.weight_decay``, the rest
    without), the optimizer section to read settings from, the peak learning rate and whether
    fused kernels should be used (a builder without fused kernels ignores it).
    """

    def __call__(self, param_groups: list[dict], section: Any, *, lr: float, fused: bool) -> torch.optim.Optimizer: ...


def build_optimizer(
    model: nn.Module,
    cfg: OptimizerSection,
    learning_rate: float,
    device: torch.device,
    *,
    groups: list[dict] | None = None,
) -> torch.optim.Optimizer:
    """Build the optimizer ``config.optimizer.name`` from the OPTIMIZERS name -> builder table.

    Fused kernels are used where available (``fused: auto``): besides being faster they accept
    a device-side ``found_inf`` flag, so a step with non-finite gradients is skipped without
    reading anything back to the host. An optimizer added with
    :func:`~trainengine.registries.register_optimizer` is selectable by its name the same way.

    ``groups`` replaces the default grouping (:func:`param_groups`): the ``transfer:`` section
    passes per-layer-group learning rates, and parameters frozen now that train later.

    Raises:
        ValueError: the model has no trainable parameters.
        ConfigError: the name is not registered (listing the registered ones).

    Example:
        >>> from trainengine.config import OptimizerSection
        >>> opt = build_optimizer(nn.Linear(2, 2), OptimizerSection(name="sgd"), 0.1, torch.device("cpu"))
        >>> type(opt).__name__, [g["weight_decay"] for g in opt.param_groups]
        ('SGD', [0.01, 0.0])
    """
    groups = param_groups(model, cfg.weight_decay) if groups is None else groups
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False) — nothing to train")
    fused = cfg.fused == "on" or (cfg.fused == "auto" and _fused_ok(params, device))
    builder = OPTIMIZERS.get(cfg.name)
    optimizer = builder(groups, cfg, lr=learning_rate, fused=fused)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"optimizer {cfg.name!r} returned {type(optimizer).__name__}; "
            "an optimizer builder must return a torch.optim.Optimizer"
        )
    return optimizer


# ----------------------------------------------------------------------------- built-in optimizers
# The entries of trainengine.registries.OPTIMIZERS (registered there lazily by "module:attr").


def _fused_kwargs(fused: bool) -> dict[str, Any]:
    return {"fused": True} if fused else {}


def build_adamw(param_groups: list[dict], section: Any, *, lr: float, fused: bool) -> torch.optim.Optimizer:
    """``adamw``: decoupled weight decay (the default)."""
    return torch.optim.AdamW(
        param_groups, lr=lr, betas=(section.beta1, section.beta2), eps=section.eps, **_fused_kwargs(fused)
    )


def build_adam(param_groups: list[dict], section: Any, *, lr: float, fused: bool) -> torch.optim.Optimizer:
    """``adam``: weight decay is L2 in the gradient; the same grouping is kept."""
    return torch.optim.Adam(
        param_groups, lr=lr, betas=(section.beta1, section.beta2), eps=section.eps, **_fused_kwargs(fused)
    )


def build_sgd(param_groups: list[dict], section: Any, *, lr: float, fused: bool) -> torch.optim.Optimizer:
    """``sgd``: momentum SGD, Nesterov when asked and momentum > 0."""
    return torch.optim.SGD(
        param_groups,
        lr=lr,
        momentum=section.momentum,
        nesterov=section.nesterov and section.momentum > 0,
        **_fused_kwargs(fused),
    )


def supports_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer.step`` honours a device-side ``found_inf`` flag (fused kernels)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))
