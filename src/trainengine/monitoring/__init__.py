"""What reacts to training events: gradient checks, the metrics engine, alerts and drift alerts.

This package sits above the engine (callbacks, alert actions, trackers as metric sinks). The
measurements it reacts to live below the engine in :mod:`trainengine.probes` (gradient norms,
throughput / MFU, memory, data profiles and the Jensen–Shannon divergence); the drift names are
re-exported here so ``trainengine.monitoring.profile_dataset`` keeps working.

Example:
    >>> from trainengine.monitoring import GradientMonitor
    >>> GradientMonitor(check_interval=10).should_check(20)
    True
"""

from trainengine.monitoring._alerts import (
    Alert,
    AlertAction,
    AlertConfig,
    AlertKind,
    AlertSeverity,
    CallbackAlert,
    EmailAlert,
    LogAlert,
    StopTrainingAlert,
    WebhookAlert,
    dispatch_alert,
)
from trainengine.monitoring._engine import MetricsBackend, MetricsEngine, MetricsEngineCallback, MetricsTracker
from trainengine.monitoring._gradient import GradientHealth, GradientMonitor
from trainengine.monitoring._samples import SamplePrompts, build_sample_prompts

# Data profiles and the drift divergence are measurements: they live with the probes, below
# the engine (tracking and export read them); re-exported here, where they always were.
from trainengine.probes._drift import (
    DatasetProfile,
    DriftReport,
    Histogram,
    compare_profiles,
    js_divergence,
    profile_dataset,
)

__all__ = [
    "SamplePrompts",
    "build_sample_prompts",
    "GradientHealth",
    "GradientMonitor",
    "MetricsEngine",
    "MetricsEngineCallback",
    "MetricsTracker",
    "MetricsBackend",
    "AlertConfig",
    "Alert",
    "AlertAction",
    "AlertKind",
    "AlertSeverity",
    "LogAlert",
    "CallbackAlert",
    "StopTrainingAlert",
    "WebhookAlert",
    "EmailAlert",
    "dispatch_alert",
    "profile_dataset",
    "compare_profiles",
    "js_divergence",
    "DatasetProfile",
    "DriftReport",
    "Histogram",
]
