"""Peak FLOP/s lookup and model FLOPs utilisation (MFU)."""

from __future__ import annotations

import torch

__all__ = ["PEAK_FLOPS", "peak_flops_for", "mfu"]

# Dense bf16 peak FLOP/s of one device, for MFU (model FLOPs utilisation); matched by substring
# of ``torch.cuda.get_device_name``.
PEAK_FLOPS: dict[str, float] = {
    "H100": 989e12,
    "H200": 989e12,
    "H800": 989e12,
    "A100": 312e12,
    "A10G": 125e12,
    "L4": 121e12,
    "4090": 165e12,
}


def peak_flops_for(device: torch.device, override: float | None) -> float | None:
    """Peak FLOP/s used for MFU: the configured value, else a lookup by GPU name.

    Args:
        device: the training device.
        override: ``monitoring.peak_flops`` from the config; wins when set.

    Returns:
        FLOP/s of one device, or None when unknown (CPU, an unlisted GPU).

    Example:
        >>> peak_flops_for(torch.device("cpu"), None) is None
        True
        >>> peak_flops_for(torch.device("cpu"), 1e12)
        1000000000000.0
    """
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def mfu(
    tokens_per_second: float | None, flops_per_token: float | None, peak_flops: float | None, world_size: int = 1
) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak of all devices (None if unknown).

    Example:
        >>> mfu(1000.0, 6e9, 1e13, world_size=2)
        0.3
        >>> mfu(1000.0, None, 1e13) is None
        True
    """
    if not tokens_per_second or not flops_per_token or not peak_flops:
        return None
    return tokens_per_second * flops_per_token / (peak_flops * world_size)
