"""Training-health monitoring: gradient checks (more monitors join this package later).

Example:
    >>> from trainengine.monitoring import GradientMonitor
    >>> GradientMonitor(check_interval=10).should_check(20)
    True
"""

from trainengine.monitoring._gradient import GradientHealth, GradientMonitor

__all__ = ["GradientHealth", "GradientMonitor"]
