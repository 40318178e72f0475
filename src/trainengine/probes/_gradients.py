"""Gradient norms measured with one fused kernel per device and no host sync."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["collect_grads", "grad_norms"]


def collect_grads(named_params: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[str], list[torch.Tensor]]:
    """Names and gradient tensors of the parameters that have a gradient.

    Sparse gradients are coalesced to their values (the norm of a sparse grad is its values' norm).

    Example:
        >>> layer = torch.nn.Linear(2, 1)
        >>> layer(torch.ones(1, 2)).sum().backward()
        >>> collect_grads(layer.named_parameters())[0]
        ['weight', 'bias']
    """
    names: list[str] = []
    grads: list[torch.Tensor] = []
    for name, p in named_params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            g = g.coalesce()._values()
        names.append(name)
        grads.append(g)
    return names, grads


def grad_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """Per-parameter L2 norms plus the total norm as one float32 tensor ``(P + 1,)``.

    Stays on the device: no host sync here; the caller copies the result once.

    Example:
        >>> grad_norms([torch.tensor([3.0, 4.0]), torch.zeros(2)]).tolist()
        [5.0, 0.0, 5.0]
    """
    # _foreach_norm needs tensors of one device; group (models sharded by hand span several).
    by_device: dict[torch.device, list[int]] = {}
    for i, g in enumerate(grads):
        by_device.setdefault(g.device, []).append(i)
    home = grads[0].device
    norms: list[torch.Tensor | None] = [None] * len(grads)
    for device, idxs in by_device.items():
        # dtype=float32: a bf16/fp16 norm overflows or rounds badly for large layers.
        device_norms = torch._foreach_norm([grads[i] for i in idxs], 2, dtype=torch.float32)
        for i, n in zip(idxs, device_norms, strict=True):
            norms[i] = n if device == home else n.to(home, non_blocking=True)
    per_param = torch.stack(norms)  # type: ignore[arg-type]  # every slot filled above  # (P,)
    total = torch.linalg.vector_norm(per_param)  # ()
    return torch.cat([per_param, total.reshape(1)])  # (P + 1,)
