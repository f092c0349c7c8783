"""What the running fleet costs a month, for the dashboard: its nodes times their type's price.

Pure, from the price table (``octctl/providers/aws/pricing.py``, whose conventions it keeps: a
month of 730 hours, us-east-1 on-demand prices, compute only). A node knows the type its cluster
launches from its provider section; a local cluster costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from octctl.config import Config
from octctl.providers.aws import pricing

__all__ = ["FleetCost", "fleet_cost", "volumes_gb"]


@dataclass(frozen=True)
class FleetCost:
    monthly_usd: Decimal | None  # None: no price is known
    note: str


def fleet_cost(kind: str, instance_type: str | None, nodes: int, volumes_gb: int = 0) -> FleetCost:
    """``nodes`` machines of the cluster's provider ``kind`` (and ``instance_type`` on AWS), and
    ``volumes_gb`` of volumes (EBS on AWS)."""
    if kind == "local":
        return FleetCost(Decimal(0), "a local cluster: nothing is billed")
    known = pricing.lookup(instance_type) if instance_type else None
    if kind != "aws" or known is None:
        return FleetCost(None, f"no price known for {instance_type or kind} nodes")
    each = known.monthly + pricing.node_extras_monthly()
    volumes = pricing.volumes_monthly(volumes_gb)
    return FleetCost(
        (each * nodes + volumes).quantize(Decimal("0.01")),
        f"{nodes} {known.name} node(s) at ${each:.2f} a month each (on-demand, us-east-1 prices of "
        f"{pricing.PRICES_AS_OF}, with its root volume and public IPv4; traffic not included)"
        + (f", and {volumes_gb} GB of volumes (${volumes:.2f})" if volumes_gb else ""),
    )


def volumes_gb(config: Config | None) -> int:
    """What the project's volumes add up to (each an EBS disk of its ``size`` on AWS)."""
    return sum(v.size for s in config.project.services for v in s.volumes) if config else 0
