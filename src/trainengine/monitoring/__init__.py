"""Training-health monitoring: gradient checks (more monitors join this package later).

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
    LogAlert,
    StopTrainingAlert,
    WebhookAlert,
)
from trainengine.monitoring._drift import (
    DatasetProfile,
    DriftReport,
    Histogram,
    compare_profiles,
    js_divergence,
    profile_dataset,
)
from trainengine.monitoring._engine import MetricsBackend, MetricsEngine, MetricsEngineCallback
from trainengine.monitoring._gradient import GradientHealth, GradientMonitor

__all__ = [
    "GradientHealth",
    "GradientMonitor",
    "MetricsEngine",
    "MetricsEngineCallback",
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
    "profile_dataset",
    "compare_profiles",
    "js_divergence",
    "DatasetProfile",
    "DriftReport",
    "Histogram",
]
