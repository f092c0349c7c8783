"""The nodes a leader launches for what does not fit, and which instances each one is for (pure).

Clusters grow in one of two ways:

- **copies** (local): every new node has the size of the template (:class:`FleetSize`), as many
  as first-fit decreasing packs the instances into (:func:`nodes_needed`); the scheduler places
  the instances when the nodes join;
- **priced types** (AWS): the cheapest fleet of the types the cluster may launch
  (:func:`cheapest_mixed_fleet`) for the instances left unplaced, each instance *targeted* at the
  node bought for it. The leader records the targets in Raft with the launch, and the scheduler
  keeps them as if they were placements once the node is ready, so the packing that made the
  fleet cheapest is the one that runs.

A first deploy (only the genesis node, nothing placed) buys for the whole project at once, with
the genesis node as the fleet's first node: genesis launched that type from :func:`project_fleet`
with the same inputs, so ``oct plan``, genesis and the leader agree on the fleet.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from octctl.config import Config
from octctl.config.validate import aws_settings
from octctl.fleet_size import FleetSize
from octctl.providers.aws.mixed_fleet import MixedFleet, cheapest_mixed_fleet
from octctl.providers.aws.pricing import ArchPreference, NoInstanceTypeFits, Reserve, lookup
from octctl.scheduler import Demand, nodes_needed
from octctl.state.shape import ClusterState, targets_of

__all__ = [
    "Growth",
    "Machines",
    "NewNode",
    "awaiting",
    "first_fleet",
    "grow",
    "is_first_deploy",
    "machines",
    "project_fleet",
]


@dataclass(frozen=True)
class NewNode:
    """A node to launch: what it offers to services, and its type (None: the provider's one size)."""

    cpus: int
    memory: int
    instance_type: str | None = None


@dataclass(frozen=True)
class Growth:
    nodes: tuple[NewNode, ...] = ()
    #: instance -> index in ``nodes`` of the node launched for it (priced types only).
    targets: Mapping[str, int] = field(default_factory=dict)
    #: The instances a first deploy puts on the genesis node (:func:`first_fleet`).
    first: tuple[str, ...] = ()


@dataclass(frozen=True)
class Machines:
    """What a cluster on a priced provider may buy: the types its role may launch, the CPU
    architecture, pinned type and families of oct.toml, and the reserve kept from services on
    every node."""

    allowed: frozenset[str]
    reserve: Reserve
    arch: ArchPreference = "any"
    instance_type: str | None = None
    families: tuple[str, ...] | None = None

    def sells(self, instance_type: str | None) -> bool:
        """Whether the cluster may launch ``instance_type`` and oct knows its size (a type a new
        price table dropped is launched no more: its nodes are then copies of the leader)."""
        return instance_type in self.allowed and lookup(instance_type) is not None

    def node(self, instance_type: str) -> NewNode:
        known = lookup(instance_type)
        if known is None:  # pragma: no cover - the fleet is built from the price table's types
            raise ValueError(f"no price known for {instance_type}")
        offered = known.capacity(self.reserve)
        return NewNode(offered.cpus, offered.memory, instance_type)


def machines(config: Config, allowed: Collection[str]) -> Machines | None:
    """The priced growth of an AWS project whose cluster may launch ``allowed`` (its ledger's
    ``instance_types``); None for other providers, or a cluster that names no type."""
    aws = aws_settings(config.project.provider)
    if aws is None or not allowed:
        return None
    return Machines(
        allowed=frozenset(allowed),
        reserve=Reserve(aws.reserve_cpus, aws.reserve_memory),
        arch=aws.arch,
        instance_type=aws.instance_type,
        families=tuple(aws.families) if aws.families is not None else None,
    )


def project_fleet(
    config: Config, needs: Sequence[Demand], allowed: Collection[str] | None = None
) -> MixedFleet:
    """The cheapest fleet for the whole project, as genesis, ``oct plan`` and a first deploy see it.

    Raises :class:`NoInstanceTypeFits` when none runs it (or ValueError without AWS settings).
    """
    aws = aws_settings(config.project.provider)
    if aws is None:
        raise ValueError("only an AWS project buys its nodes")
    return cheapest_mixed_fleet(
        needs,
        reserve=Reserve(aws.reserve_cpus, aws.reserve_memory),
        arch=aws.arch,
        instance_type=aws.instance_type,
        min_nodes=aws.min_nodes,
        max_nodes=aws.max_nodes,
        allowed=allowed,
        families=aws.families,
    )


def is_first_deploy(view: ClusterState, node: str) -> bool:
    """``node`` (genesis) is the cluster's only node, and nothing is placed or being launched yet."""
    return list(view["nodes"]) == [node] and not view["placements"] and not view["provisioning"]


def first_fleet(config: Config, needs: Sequence[Demand], machines: Machines, genesis: str) -> Growth | None:
    """A first deploy's fleet: the project's cheapest, with the genesis node (of type ``genesis``)
    as its first node. None when that fleet would not start with that type (oct.toml changed
    since genesis): the leader then grows from what the genesis node holds (:func:`grow`)."""
    try:
        fleet = project_fleet(config, needs, machines.allowed)
    except NoInstanceTypeFits:
        return None
    if not fleet.types or fleet.types[0].name != genesis:
        return None
    ids = fleet.node_ids
    return Growth(
        nodes=tuple(machines.node(t.name) for t in fleet.types[1:]),
        targets={i: ids.index(n) - 1 for i, n in fleet.placements.items() if n != ids[0]},
        first=tuple(sorted(i for i, n in fleet.placements.items() if n == ids[0])),
    )


def grow(unplaced: Sequence[Demand], fleet: FleetSize, count: int, machines: Machines | None) -> Growth:
    """The nodes to add to a cluster of ``count`` nodes (launching ones included) for the
    ``unplaced`` instances, and to reach ``fleet.min_nodes``; never beyond ``fleet.max_nodes``.

    Raises ValueError when an instance fits on no node the cluster can launch.
    """
    at_least = max(0, fleet.min_nodes - count)
    room = None if fleet.max_nodes is None else max(0, fleet.max_nodes - count)
    if (not unplaced and not at_least) or room == 0:
        return Growth()
    if machines is None:
        wanted = max(nodes_needed(unplaced, fleet.template), at_least)
        wanted = wanted if room is None else min(wanted, room)
        copy = NewNode(fleet.template.cpus, fleet.template.memory)
        return Growth(nodes=(copy,) * wanted)
    bought = _buy(unplaced, machines, at_least, room)
    index = {n: k for k, n in enumerate(bought.node_ids)}
    return Growth(
        nodes=tuple(machines.node(t.name) for t in bought.types),
        targets={i: index[n] for i, n in bought.placements.items()},
    )


def _buy(unplaced: Sequence[Demand], machines: Machines, at_least: int, room: int | None) -> MixedFleet:
    """The cheapest nodes for ``unplaced``; when more than ``room`` would be needed, the first
    ``room`` of them (what does not fit waits, as it would on a full fleet)."""

    def buy(limit: int | None) -> MixedFleet:
        return cheapest_mixed_fleet(
            unplaced,
            reserve=machines.reserve,
            arch=machines.arch,
            instance_type=machines.instance_type,
            min_nodes=at_least,
            max_nodes=limit,
            allowed=machines.allowed,
            families=machines.families,
        )

    try:
        unbounded = buy(None)
    except NoInstanceTypeFits as e:
        raise ValueError(str(e)) from None
    if room is None or len(unbounded.types) <= room:
        return unbounded
    try:
        return buy(room)
    except NoInstanceTypeFits:
        kept = set(unbounded.node_ids[:room])
        return MixedFleet(
            unbounded.types[:room], {i: n for i, n in unbounded.placements.items() if n in kept}
        )


def awaiting(view: ClusterState) -> tuple[set[str], dict[str, str]]:
    """The instances waiting for the node launched for them (kept out of this pass, so they take
    no other node's room), and where instances stay: their placements, and the ready nodes
    bought for them (the scheduler keeps both, as it keeps any placement that still fits)."""
    nodes = view["nodes"]
    awaited = {i for i, n in targets_of(view).items() if n not in nodes or nodes[n]["status"] == "joining"}
    arrived = {i: n for i, n in targets_of(view).items() if i not in awaited and i not in view["placements"]}
    return awaited, {**arrived, **view["placements"]}
