"""What the running fleet costs a month, for the dashboard and the plan: each node at its type's price.

Pure, from the price table (``octctl/providers/aws/pricing.py``, whose conventions it keeps: a
month of 730 hours, us-east-1 on-demand prices, compute only). A node says its type when it joins
(the state's node record); a record from before nodes said so is priced as the cluster's own
type. A local cluster costs nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from octctl.config import Config
from octctl.providers.aws import pricing
from octctl.state.shape import NodeRecord

__all__ = ["FleetCost", "billed_types", "fleet_cost", "volumes_gb"]


@dataclass(frozen=True)
class FleetCost:
    monthly_usd: Decimal | None  # None: no price is known
    note: str


def billed_types(nodes: Iterable[NodeRecord], fallback: str | None) -> list[str | None]:
    """The type of each node that is billed (not being retired); ``fallback`` for a record that
    names none."""
    return [n.get("instance_type") or fallback for n in nodes if n["status"] != "retiring"]


def fleet_cost(kind: str, types: Sequence[str | None], volumes_gb: int = 0) -> FleetCost:
    """A machine of each of ``types`` (instance types on AWS) of the cluster's provider ``kind``,
    and ``volumes_gb`` of volumes (EBS on AWS)."""
    if kind == "local":
        return FleetCost(Decimal(0), "a local cluster: nothing is billed")
    known = [pricing.lookup(t) if t else None for t in types]
    unknown = next((t for t, k in zip(types, known, strict=True) if k is None), None) if types else None
    if kind != "aws" or any(k is None for k in known):
        return FleetCost(None, f"no price known for {unknown or kind} nodes")
    priced = [k for k in known if k is not None]
    extras = pricing.node_extras_monthly()
    volumes = pricing.volumes_monthly(volumes_gb)
    counts = Counter(k.name for k in priced)
    each = {k.name: k.monthly + extras for k in priced}
    nodes = ", ".join(f"{counts[name]} {name} node(s) at ${each[name]:.2f}" for name in sorted(counts))
    return FleetCost(
        (sum(each[k.name] for k in priced) + volumes).quantize(Decimal("0.01")),
        f"{nodes or 'no nodes'} a month each (on-demand, us-east-1 prices of "
        f"{pricing.PRICES_AS_OF}, with its root volume and public IPv4; traffic not included)"
        + (f", and {volumes_gb} GB of volumes (${volumes:.2f})" if volumes_gb else ""),
    )


def volumes_gb(config: Config | None) -> int:
    """What the project's volumes add up to (each an EBS disk of its ``size`` on AWS)."""
    return sum(v.size for s in config.project.services for v in s.volumes) if config else 0
