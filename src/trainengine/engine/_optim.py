"""Optimizer construction: parameter groups with and without weight decay."""

from __future__ import annotations

import torch
from torch import nn

from trainengine.config import OptimizerSection

__all__ = ["build_optimizer", "param_groups", "supports_found_inf"]

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm, nn.Embedding)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters: decay matrices, never biases, norms or embeddings.

    Decaying a bias or a norm's gain only pulls it towards zero and hurts; the usual practice
    (GPT-2, BERT, nanoGPT) decays only weight matrices of linear and conv layers.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, _NORM_TYPES) or name.endswith("bias") or param.ndim < 2:
                no_decay_ids.add(id(param))
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))  # tied weights appear once
        (no_decay if id(param) in no_decay_ids else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _fused_ok(params: list[torch.Tensor], device: torch.device) -> bool:
    # Fused kernels exist for CPU and CUDA floating-point parameters.
    return device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)


def build_optimizer(model: nn.Module, cfg: OptimizerSection, learning_rate: float, device: torch.device) -> torch.optim.Optimizer:
    """Build the optimizer from ``config.optimizer``.

    Fused kernels are used where available (``fused: auto``): besides being faster they accept
    a device-side ``found_inf`` flag, so a step with non-finite gradients is skipped without
    reading anything back to the host.

    Raises:
        ValueError: the model has no trainable parameters.
    """
    groups = param_groups(model, cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False) — nothing to train")
    fused = cfg.fused == "on" or (cfg.fused == "auto" and _fused_ok(params, device))
    kwargs: dict = {"lr": learning_rate}
    if fused:
        kwargs["fused"] = True
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kwargs)
    if cfg.name == "adam":
        # Adam's weight decay is L2 in the gradient; keep the same grouping.
        return torch.optim.Adam(groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kwargs)
    return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, **kwargs)


def supports_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer.step`` honours a device-side ``found_inf`` flag (fused kernels)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))
