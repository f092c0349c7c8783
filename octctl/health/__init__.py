"""Health checks of the instances a node runs: the verdict (pure), the probes, the monitor."""

from .monitor import HealthMonitor, Instances
from .verdict import OUTPUT_LIMIT, Verdict

__all__ = ["OUTPUT_LIMIT", "HealthMonitor", "Instances", "Verdict"]
