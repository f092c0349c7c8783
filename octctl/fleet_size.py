"""How many nodes a project wants at least and at most, and the size of one more: what the
leader grows and shrinks the fleet by, and what ``oct plan`` replays (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from octctl.config import Config
from octctl.scheduler import NodeCapacity

__all__ = ["FleetSize", "fleet_size"]


@dataclass(frozen=True)
class FleetSize:
    min_nodes: int
    max_nodes: int | None
    template: NodeCapacity  # the size of a node the provider would add


def fleet_size(config: Config, own: NodeCapacity) -> FleetSize:
    """``own``: the size of the asking node, which new nodes of a cloud cluster copy."""
    provider = config.project.provider
    if provider is not None and provider.local is not None:
        local = provider.local
        return FleetSize(local.nodes, None, NodeCapacity(node="new", cpus=local.cpus, memory=local.memory))
    template = NodeCapacity(node="new", cpus=own.cpus, memory=own.memory)
    aws = provider.aws if provider is not None else None
    if aws is not None:
        return FleetSize(aws.min_nodes, aws.max_nodes, template)
    return FleetSize(1, None, template)
