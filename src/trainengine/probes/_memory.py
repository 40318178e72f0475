"""Process and GPU memory readings (host-side counters: no device sync)."""

from __future__ import annotations

import os

import torch

__all__ = ["rss_mib", "gpu_memory_stats"]


def rss_mib() -> float:
    """Resident memory of this process in MiB (current on Linux, peak elsewhere).

    Example:
        >>> rss_mib() > 0
        True
    """
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        # ru_maxrss is KiB on Linux (bytes on macOS, where /proc is absent anyway: close enough
        # for a trend line, and never the hot path).
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_memory_stats(device: torch.device | str) -> dict[str, float]:
    """Allocated, reserved and peak-allocated CUDA memory of ``device`` in GiB.

    These are the caching allocator's host-side counters, so reading them does not synchronise
    with the GPU. Off CUDA the result is empty.

    Returns:
        ``{"gpu_mem_allocated_gib", "gpu_mem_reserved_gib", "gpu_mem_peak_gib"}`` or ``{}``.

    Example:
        >>> gpu_memory_stats("cpu")
        {}
    """
    device = torch.device(device)
    if device.type != "cuda":
        return {}
    return {
        "gpu_mem_allocated_gib": torch.cuda.memory_allocated(device) / 2**30,
        "gpu_mem_reserved_gib": torch.cuda.memory_reserved(device) / 2**30,
        "gpu_mem_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
    }
