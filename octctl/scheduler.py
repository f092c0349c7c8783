"""Decide which node runs which service.

The Raft leader calls :func:`place` with a snapshot (what every service needs, what every node offers,
where services run today) and gets back a :class:`Plan`. Everything here is a pure function of its
arguments -- no I/O, no clock, no randomness, no dependence on dict or list order -- so every leader
that replays the same log computes the same plan, and a plan can be unit-tested exhaustively.

Policy, in order of priority:

1. **Stability.** Moving a service means downtime and a cold start, so a service stays on its current
   node whenever that node still exists, is schedulable, still has room for it (counting the other
   services that stay there) and no other service kept there binds one of its host ports.
2. **Spread.** The rest are placed largest first (big items are the hard ones to fit later), each on
   the node holding the fewest instances of the same service (its ``group``: replicas go to distinct
   nodes when there are enough), then on the node left least loaded by taking it, so load -- and
   the blast radius of losing a node -- is evenly shared.
3. **Report the rest.** Whatever fits nowhere is returned in ``unplaced``; the leader asks the provider
   for more nodes (see :func:`nodes_needed`). Honouring ``min_nodes`` is also the leader's business.

A demand ``pinned`` to a node (its volumes are there) goes there or nowhere: pass 1 keeps it only
there, and pass 2 considers no other node.

Pass 2 does not weigh every node for every demand: :class:`_LeastPressed` keeps the nodes in heaps
by the pressure they would have after taking each service shape, so it finds the same node (the
same float, the same ties) in O(log n) (``bench/scheduler.py``).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "Demand",
    "NodeCapacity",
    "Plan",
    "fits_on_empty_node",
    "nodes_needed",
    "place",
    "usage",
]

_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Demand:
    """What one service needs from the node it runs on.

    ``cpus`` is in millicores and ``memory`` in MB so all arithmetic stays in exact integers.
    ``host_ports`` are the ports the service binds on its node's address (its external port, and its
    internal port when it publishes it); two services on one node may not share one.
    """

    service: str
    cpus: int
    memory: int
    host_ports: frozenset[int] = frozenset()
    #: Instances of one service share a group, and are spread over distinct nodes when possible.
    group: str = ""
    #: The only node it may run on (the one holding its volumes); None: any.
    pinned: str | None = None

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.memory < 0:
            raise ValueError(
                f"service {self.service!r}: cpus and memory must be >= 0 (got {self.cpus}m, {self.memory} MB)"
            )


@dataclass(frozen=True)
class NodeCapacity:
    """What one node offers to services.

    ``schedulable`` is False for nodes being retired or currently unreachable: nothing new may go
    there, and services already there are moved off (keeping them would pin them to a dying node).
    """

    node: str
    cpus: int
    memory: int
    schedulable: bool = True

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.memory < 0:
            raise ValueError(
                f"node {self.node!r}: cpus and memory must be >= 0 (got {self.cpus}m, {self.memory} MB)"
            )


@dataclass(frozen=True)
class Plan:
    """The scheduler's answer.

    ``placements`` maps every service that fits to its node (read-only, ordered by service name).
    ``unplaced`` lists services that fit on no current node, sorted by name.
    ``moved`` lists services that are placed on a node other than the one ``current`` had them on,
    sorted by name; it is a subset of ``placements`` (a previously placed service that now fits
    nowhere is reported in ``unplaced`` only).
    """

    placements: Mapping[str, str]
    unplaced: tuple[str, ...]
    moved: tuple[str, ...]


@dataclass(frozen=True)
class _Load:
    """What is already committed on one node; immutable so a tentative placement never leaks."""

    cpus: int = 0
    memory: int = 0
    ports: frozenset[int] = frozenset()

    def plus(self, demand: Demand) -> _Load:
        return _Load(self.cpus + demand.cpus, self.memory + demand.memory, self.ports | demand.host_ports)

    def admits(self, demand: Demand, capacity: NodeCapacity) -> bool:
        """Both resources must fit: a node out of memory is useless however idle its CPUs are."""
        return (
            self.cpus + demand.cpus <= capacity.cpus
            and self.memory + demand.memory <= capacity.memory
            and self.ports.isdisjoint(demand.host_ports)
        )


def _size_key(demand: Demand) -> tuple[int, int, str]:
    """Largest first: memory is the resource that cannot be overcommitted, so it dominates."""
    return (-demand.memory, -demand.cpus, demand.service)


def _share(used: int, total: int) -> float:
    """``used / total`` as a float, which orders exactly here: two different fractions with
    denominators below 2**26 (capacities are at most a few million) are further apart than two
    divisions can err, and equal ones divide to the same float; so ties between nodes are real
    ties and break on node id. (Fraction gives the same order, several times slower.)"""
    if total == 0:
        # Only reachable with used == 0: a zero-capacity resource admits nothing else.
        return 0.0
    return used / total


def _index_demands(demands: Iterable[Demand]) -> dict[str, Demand]:
    """Duplicate names would make "where does X run" ambiguous, so they are a caller bug."""
    by_name: dict[str, Demand] = {}
    for demand in demands:
        if demand.service in by_name:
            raise ValueError(f"duplicate demand for service {demand.service!r}")
        by_name[demand.service] = demand
    return by_name


def _index_nodes(nodes: Iterable[NodeCapacity]) -> dict[str, NodeCapacity]:
    by_id: dict[str, NodeCapacity] = {}
    for capacity in nodes:
        if capacity.node in by_id:
            raise ValueError(f"duplicate capacity for node {capacity.node!r}")
        by_id[capacity.node] = capacity
    return by_id


def _keep_current(
    by_name: Mapping[str, Demand],
    by_node: Mapping[str, NodeCapacity],
    current: Mapping[str, str],
    loads: dict[str, _Load],
) -> dict[str, str]:
    """Pass 1: leave services where they are when that is still valid.

    Services are visited by name so that, when a node became too small for all of its services, which
    ones stay never depends on the order of ``current``.
    """
    kept: dict[str, str] = {}
    for service in sorted(current):
        demand = by_name.get(service)
        capacity = by_node.get(current[service])
        if demand is None or capacity is None or not capacity.schedulable:
            continue
        if demand.pinned is not None and demand.pinned != capacity.node:
            continue
        load = loads[capacity.node]
        if load.admits(demand, capacity):
            loads[capacity.node] = load.plus(demand)
            kept[service] = capacity.node
    return kept


def natural_key(node: str) -> tuple[tuple[int, int | str], ...]:
    """``node-9`` before ``node-10``: digit runs compare as numbers, so "the lowest id" is the one
    a person reading the list would pick."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(node) if part)


def _best_node(
    demand: Demand,
    candidates: Sequence[NodeCapacity],
    loads: Mapping[str, _Load],
    siblings: Mapping[str, int],
) -> str | None:
    """Spread: the node with the fewest instances of the demand's group, then the one whose
    pressure *after* taking the demand is lowest; ties go to the first candidate (the lowest id,
    in natural order)."""
    best: tuple[int, float, int] | None = None
    for rank, capacity in enumerate(candidates):
        if demand.pinned is not None and demand.pinned != capacity.node:
            continue
        load = loads[capacity.node]
        if not load.admits(demand, capacity):
            continue
        # The busier of the two resources after taking it is what limits the node: balance that.
        pressure = max(
            _share(load.cpus + demand.cpus, capacity.cpus),
            _share(load.memory + demand.memory, capacity.memory),
        )
        key = (siblings.get(capacity.node, 0), pressure, rank)
        if best is None or key < best:
            best = key
    return None if best is None else candidates[best[2]].node


class _LeastPressed:
    """Finds what :func:`_best_node` finds without weighing every node for every demand.

    For each demand shape (millicores, MB) and node size there is a heap of ``(pressure after
    taking that shape, rank, version)``, the pressure computed exactly as :func:`_best_node` does,
    so its order (ties included, broken by rank) is the scan's. A placement changes one node's
    load: its new entries are pushed and the old ones, their version stale, are dropped when they
    surface. Loads only grow during one :func:`place`, so a node too full for a shape never fits it
    again and leaves that heap for good; nodes skipped for a port clash or a sibling are put back.
    Costs O(log n) a placement for the few shapes a project has, instead of O(n).
    """

    def __init__(self, candidates: Sequence[NodeCapacity], loads: Mapping[str, _Load]) -> None:
        self._candidates = candidates
        self._loads = loads
        self._rank = {c.node: i for i, c in enumerate(candidates)}
        self._version = [0] * len(candidates)
        self._sizes: dict[tuple[int, int], list[int]] = {}
        for i, c in enumerate(candidates):
            self._sizes.setdefault((c.cpus, c.memory), []).append(i)
        self._heaps: dict[tuple[int, int, int, int], list[tuple[float, int, int]]] = {}

    def _pressure(self, i: int, cpus: int, memory: int) -> float:
        capacity, load = self._candidates[i], self._loads[self._candidates[i].node]
        return max(_share(load.cpus + cpus, capacity.cpus), _share(load.memory + memory, capacity.memory))

    def _heap(self, size: tuple[int, int], cpus: int, memory: int) -> list[tuple[float, int, int]]:
        key = (*size, cpus, memory)
        heap = self._heaps.get(key)
        if heap is None:
            heap = [(self._pressure(i, cpus, memory), i, self._version[i]) for i in self._sizes[size]]
            heapq.heapify(heap)
            self._heaps[key] = heap
        return heap

    def placed(self, node: str) -> None:
        """``node``'s load grew: its entries in every heap of its size are replaced."""
        i = self._rank[node]
        self._version[i] += 1
        c = self._candidates[i]
        for (cpus_size, memory_size, cpus, memory), heap in self._heaps.items():
            if (cpus_size, memory_size) == (c.cpus, c.memory):
                heapq.heappush(heap, (self._pressure(i, cpus, memory), i, self._version[i]))

    def best(self, demand: Demand, siblings: Mapping[str, int]) -> str | None:
        if demand.pinned is not None:
            return _best_node(demand, self._candidates, self._loads, siblings)
        found: tuple[float, int] | None = None
        for size in self._sizes:
            top = self._lowest_free(self._heap(size, demand.cpus, demand.memory), demand, siblings)
            if top is not None and (found is None or top < found):
                found = top
        if found is not None:
            return self._candidates[found[1]].node
        # Every node that could take it already runs one of its group: the fewest siblings wins.
        crowded = [self._candidates[self._rank[n]] for n in siblings if n in self._rank]
        return _best_node(demand, sorted(crowded, key=lambda c: self._rank[c.node]), self._loads, siblings)

    def _lowest_free(
        self, heap: list[tuple[float, int, int]], demand: Demand, siblings: Mapping[str, int]
    ) -> tuple[float, int] | None:
        """The lowest (pressure, rank) in ``heap`` of a node with room, no port clash and none of
        the demand's group; entries passed over for a clash or a sibling go back."""
        aside = []
        found = None
        while heap:
            pressure, i, version = heap[0]
            if version != self._version[i]:
                heapq.heappop(heap)
                continue
            capacity = self._candidates[i]
            load = self._loads[capacity.node]
            if load.cpus + demand.cpus > capacity.cpus or load.memory + demand.memory > capacity.memory:
                heapq.heappop(heap)  # too full for this shape now, and loads only grow
                continue
            if not load.ports.isdisjoint(demand.host_ports) or siblings.get(capacity.node, 0):
                aside.append(heapq.heappop(heap))
                continue
            found = (pressure, i)
            break
        for entry in aside:
            heapq.heappush(heap, entry)
        return found


def place(demands: Sequence[Demand], nodes: Sequence[NodeCapacity], current: Mapping[str, str]) -> Plan:
    """Compute where every demanded service should run, given where services run now.

    ``current`` may mention services no longer demanded (they are dropped: their resources are free)
    and nodes that no longer exist (their services are re-placed and reported in ``moved``).
    """
    by_name = _index_demands(demands)
    by_node = _index_nodes(nodes)
    loads = {node_id: _Load() for node_id in by_node}

    placements = _keep_current(by_name, by_node, current, loads)

    candidates = sorted((c for c in by_node.values() if c.schedulable), key=lambda c: natural_key(c.node))
    unplaced: list[str] = []
    groups: dict[str, dict[str, int]] = {}
    for service, kept in placements.items():
        group = groups.setdefault(by_name[service].group or service, {})
        group[kept] = group.get(kept, 0) + 1
    index = _LeastPressed(candidates, loads)
    for demand in sorted((d for d in by_name.values() if d.service not in placements), key=_size_key):
        group = groups.setdefault(demand.group or demand.service, {})
        best = index.best(demand, group)
        if best is None:
            unplaced.append(demand.service)
            continue
        loads[best] = loads[best].plus(demand)
        index.placed(best)
        placements[demand.service] = best
        group[best] = group.get(best, 0) + 1

    moved = tuple(
        sorted(service for service, node_id in placements.items() if current.get(service, node_id) != node_id)
    )
    return Plan(
        placements=MappingProxyType(dict(sorted(placements.items()))),
        unplaced=tuple(sorted(unplaced)),
        moved=moved,
    )


def fits_on_empty_node(demand: Demand, capacity: NodeCapacity) -> bool:
    """Whether a node of this size could ever run the service.

    ``capacity.schedulable`` is deliberately ignored: this answers "is the size big enough", which is
    what decides whether asking the provider for such a node can help at all.
    """
    return _Load().admits(demand, capacity)


def usage(placements: Mapping[str, str], demands: Sequence[Demand]) -> dict[str, tuple[int, int]]:
    """Resources committed per node as ``node -> (cpus, memory)``.

    Placements of services absent from ``demands`` are ignored (they are being removed), and nodes
    with nothing on them are absent rather than ``(0, 0)``, since the caller knows its node list.
    """
    by_name = _index_demands(demands)
    totals: dict[str, tuple[int, int]] = {}
    for service in sorted(placements):
        demand = by_name.get(service)
        if demand is None:
            continue
        node_id = placements[service]
        cpus, memory = totals.get(node_id, (0, 0))
        totals[node_id] = (cpus + demand.cpus, memory + demand.memory)
    return totals


def nodes_needed(unplaced: Sequence[Demand], capacity: NodeCapacity) -> int:
    """How many new, empty nodes of ``capacity`` would hold all of ``unplaced``.

    First-fit-decreasing is not optimal packing, but it is deterministic and its answer is an actual
    packing, so it may occasionally ask for one node too many but never for too few -- the cheaper
    mistake when the alternative is services left unplaced for another round.

    Raises ValueError if some demand would not fit even on an empty node: no number of new nodes of
    this size helps, and the operator must change either the service or the node size.
    """
    for demand in unplaced:
        if not fits_on_empty_node(demand, capacity):
            raise ValueError(
                f"service {demand.service!r} needs {demand.cpus}m CPU / {demand.memory} MB, "
                f"more than an empty node of {capacity.cpus}m CPU / {capacity.memory} MB offers"
            )
    bins: list[_Load] = []
    for demand in sorted(_index_demands(unplaced).values(), key=_size_key):
        for index, load in enumerate(bins):
            if load.admits(demand, capacity):
                bins[index] = load.plus(demand)
                break
        else:
            bins.append(_Load().plus(demand))
    return len(bins)
