"""Measurements: gradient norms, throughput / MFU, memory, and data profiles for drift.

Probes sit below the engine (they import torch and nothing above ``tasks``); what *reacts* to
the numbers (the GradientMonitor callback, alerts, the metrics engine, drift checks) lives in
:mod:`trainengine.monitoring`, above the engine.

Example:
    >>> from trainengine.probes import mfu, rss_mib
    >>> rss_mib() > 0, mfu(100.0, 6.0, 600.0)
    (True, 1.0)
"""

from trainengine.probes._drift import (
    DatasetProfile,
    DriftReport,
    Histogram,
    compare_profiles,
    js_divergence,
    profile_dataset,
)
from trainengine.probes._gradients import collect_grads, grad_norms
from trainengine.probes._memory import gpu_memory_stats, rss_mib
from trainengine.probes._throughput import PEAK_FLOPS, mfu, peak_flops_for

__all__ = [
    "collect_grads",
    "grad_norms",
    "gpu_memory_stats",
    "rss_mib",
    "PEAK_FLOPS",
    "mfu",
    "peak_flops_for",
    "DatasetProfile",
    "DriftReport",
    "Histogram",
    "compare_profiles",
    "js_divergence",
    "profile_dataset",
]
