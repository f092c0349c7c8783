"""The cheapest fleet when its nodes may be of different types, and where each instance goes (pure).

:func:`octctl.providers.aws.pricing.cheapest_fleet` picks one type for every node, which is how the
leader grows a cluster today. One type is often not the cheapest: a project that needs a little
more than one ``t4g.medium`` holds is cheaper on a ``t4g.medium`` and a ``t4g.small`` than on two
mediums. This module finds such fleets. The cost of a fleet is the sum of its nodes' prices, each
with its root volume and public address; a node's type is the cheapest that holds what is placed on
it. The rules a fleet must keep: instances of one service on distinct nodes (what the leader's
spreading aims at, a hard rule here), no two instances binding the same host port on one node, at
least ``min_nodes`` and at most ``max_nodes`` nodes.

How: two starting fleets, each then improved by local moves until none helps. One is the best
one-type fleet (first-fit decreasing onto each type, the cheapest kept); the other is built
largest instance first, each where it adds least to the cost (onto a node that admits it, whose
type may grow, or onto a new node of the cheapest type that holds it). The moves keep every rule
and each lowers the cost, so they end: move an instance to another node when the two then cost
less; merge two nodes into one when a type holds both for less; and on projects of up to
:data:`SWAP_UP_TO` instances, swap two instances between two nodes, or merge three nodes. The
cheaper of the two results wins. ``tests/unit/test_mixed_fleet.py`` checks it against an exact
search (every partition of the instances into nodes) on 200 seeded small projects.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal

from octctl.providers.aws.pricing import (
    ArchPreference,
    InstanceType,
    NoInstanceTypeFits,
    Reserve,
    candidates,
    node_extras_monthly,
)
from octctl.scheduler import Demand

__all__ = ["MixedFleet", "cheapest_mixed_fleet", "cheapest_type_for", "node_cost"]


#: Nothing kept from services on a node (the default; oct.toml's default reserve is the caller's).
NO_RESERVE = Reserve()

#: Swaps (every pair of instances on every pair of nodes) are tried up to this many instances; a
#: larger project is packed by the cheaper moves alone, within ``bench/placement.py``'s second.
SWAP_UP_TO = 200


@dataclass(frozen=True)
class MixedFleet:
    """Nodes ``node-1`` ... with their types, and the node each instance goes to."""

    types: tuple[InstanceType, ...]
    placements: dict[str, str]

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(f"node-{i + 1}" for i in range(len(self.types)))

    @property
    def total_monthly(self) -> Decimal:
        """The instances with every node's root volume and public IPv4 address."""
        return sum((node_cost(t) for t in self.types), Decimal(0))


def node_cost(t: InstanceType) -> Decimal:
    """What one node of type ``t`` costs a month, with its root volume and public address."""
    return t.monthly + node_extras_monthly()


def cheapest_type_for(
    cpus: int, memory: int, pool: Sequence[InstanceType], reserve: Reserve
) -> InstanceType | None:
    """The cheapest type of ``pool`` (sorted cheapest first) whose offer holds the load, or None."""
    for t in pool:
        offered = t.capacity(reserve)
        if cpus <= offered.cpus and memory <= offered.memory:
            return t
    return None


class _Node:
    """A node being packed: the instances on it, their total size, groups and host ports (its type
    is not kept: it is the cheapest that holds the total, :meth:`_Packer.fit`)."""

    __slots__ = ("cpus", "groups", "instances", "memory", "ports")

    def __init__(self) -> None:
        self.instances: list[Demand] = []
        self.cpus = 0
        self.memory = 0
        self.groups: set[str] = set()
        self.ports: set[int] = set()

    def admits(self, demand: Demand) -> bool:
        """Whether ``demand`` may share this node (the spreading and port rules; size aside)."""
        return (not demand.group or demand.group not in self.groups) and not (demand.host_ports & self.ports)

    def add(self, demand: Demand) -> None:
        self.instances.append(demand)
        self.cpus += demand.cpus
        self.memory += demand.memory
        if demand.group:
            self.groups.add(demand.group)
        self.ports |= demand.host_ports

    def remove(self, demand: Demand) -> None:
        self.instances.remove(demand)
        self.cpus -= demand.cpus
        self.memory -= demand.memory
        if demand.group:
            self.groups.discard(demand.group)
        self.ports -= demand.host_ports


class _Packer:
    """The types of one architecture, cheapest first, and the ways to pack nodes from them; every
    node's cost is the cheapest type holding its load (cached per load)."""

    def __init__(self, pool: Sequence[InstanceType], reserve: Reserve) -> None:
        self.pool = sorted(pool, key=lambda t: (node_cost(t), t.vcpus, t.memory_mib, t.name))
        self.reserve = reserve
        self.empty = node_cost(self.pool[0]) if self.pool else Decimal(0)
        self._fits: dict[tuple[int, int], InstanceType | None] = {}
        #: load -> what the cheapest node holding it costs (the moves ask this a million times)
        self._costs: dict[tuple[int, int], Decimal | None] = {(0, 0): Decimal(0)}

    def fit(self, cpus: int, memory: int) -> InstanceType | None:
        key = (cpus, memory)
        if key not in self._fits:
            self._fits[key] = cheapest_type_for(cpus, memory, self.pool, self.reserve)
        return self._fits[key]

    def cost(self, cpus: int, memory: int) -> Decimal | None:
        """A node holding this load at its cheapest; an empty node costs nothing (it goes away)."""
        key = (cpus, memory)
        try:
            return self._costs[key]
        except KeyError:
            t = self.fit(cpus, memory)
            cost = self._costs[key] = None if t is None else node_cost(t)
            return cost

    def one_type(self, demands: Sequence[Demand], max_nodes: int | None) -> list[_Node] | None:
        """The cheapest first-fit-decreasing packing onto nodes of a single type (None: no type
        packs them within ``max_nodes``). Types go cheapest-bound first, and the search stops at a
        type whose bound (enough nodes for the total load) costs more than the best packing."""
        order = sorted(demands, key=lambda d: (-d.memory, -d.cpus, d.service))
        cpus, memory = sum(d.cpus for d in demands), sum(d.memory for d in demands)
        best: tuple[Decimal, list[_Node]] | None = None
        for bound, t in sorted(((self._bound(t, cpus, memory), t) for t in self.pool), key=lambda b: b[0]):
            if best is not None and bound >= best[0]:
                break
            offered = t.capacity(self.reserve)
            nodes: list[_Node] = []
            for demand in order:
                home = next(
                    (
                        n
                        for n in nodes
                        if n.admits(demand)
                        and n.cpus + demand.cpus <= offered.cpus
                        and n.memory + demand.memory <= offered.memory
                    ),
                    None,
                )
                if home is None:
                    if demand.cpus > offered.cpus or demand.memory > offered.memory:
                        break
                    home = _Node()
                    nodes.append(home)
                home.add(demand)
            else:
                cost = node_cost(t) * max(len(nodes), 1)
                if (max_nodes is None or len(nodes) <= max_nodes) and (best is None or cost < best[0]):
                    best = (cost, nodes)
        return None if best is None else best[1]

    def greedy(self, demands: Sequence[Demand], max_nodes: int | None) -> list[_Node] | None:
        """Largest first, each instance where it adds the least to the fleet's cost: onto a node
        that admits it (its type may grow) or onto a new node of the cheapest type that holds it.
        This is how a fleet of mixed sizes is built: a large instance gets a large node, and small
        ones do not pay to share it when a small node of their own is cheaper."""
        nodes: list[_Node] = []
        for demand in sorted(demands, key=lambda d: (-d.memory, -d.cpus, d.service)):
            best: tuple[Decimal, _Node | None] | None = None
            if max_nodes is None or len(nodes) < max_nodes:
                alone = self.cost(demand.cpus, demand.memory)
                if alone is not None:
                    best = (alone, None)
            for n in nodes:
                if not n.admits(demand):
                    continue
                grown = self.cost(n.cpus + demand.cpus, n.memory + demand.memory)
                if grown is None:
                    continue
                delta = grown - self._cost_of(n)
                if best is None or delta < best[0] or (delta == best[0] and best[1] is None):
                    best = (delta, n)
            if best is None:
                return None
            home = best[1]
            if home is None:
                home = _Node()
                nodes.append(home)
            home.add(demand)
        return nodes

    def _cost_of(self, node: _Node) -> Decimal:
        """What a node of the fleet costs: an empty one (kept for ``min_nodes``) the cheapest type."""
        cost = self.cost(node.cpus, node.memory)
        assert cost is not None  # (a node only ever holds what a type holds)
        return cost or self.empty

    def _bound(self, t: InstanceType, cpus: int, memory: int) -> Decimal:
        offered = t.capacity(self.reserve)
        if (cpus and not offered.cpus) or (memory and not offered.memory):
            return Decimal("Infinity")
        count = max(
            1,
            -(-cpus // offered.cpus) if offered.cpus else 0,
            -(-memory // offered.memory) if offered.memory else 0,
        )
        return node_cost(t) * count

    def improve(self, nodes: list[_Node], min_nodes: int) -> None:
        """Apply moves and merges while one lowers the fleet's cost. The fleet keeps ``min_nodes``
        nodes (an emptied one then stays, at the cheapest type) and never gains one."""
        swaps = sum(len(n.instances) for n in nodes) <= SWAP_UP_TO
        while (
            self._move_one(nodes, min_nodes)
            or self._merge_two(nodes, min_nodes)
            or (swaps and (self._swap_two(nodes) or self._merge_three(nodes, min_nodes)))
        ):
            pass

    def total(self, nodes: list[_Node]) -> Decimal:
        return sum((self._cost_of(n) for n in nodes), Decimal(0))

    def _move_one(self, nodes: list[_Node], min_nodes: int) -> bool:
        """One sweep: each instance moves to the node where the move saves the most, if any."""
        moved = False
        for source in list(nodes):
            for demand in sorted(source.instances, key=lambda d: (-d.memory, -d.cpus, d.service)):
                here = self._cost_of(source)
                left = self.cost(source.cpus - demand.cpus, source.memory - demand.memory)
                assert left is not None
                if left == 0 and len(nodes) <= min_nodes:
                    left = self.empty  # (emptied, it stays: the fleet is at its minimum)
                if left >= here:
                    continue  # (the source would cost as much without it: no target can make it pay)
                best: tuple[Decimal, _Node] | None = None
                for target in nodes:
                    if target is source or not target.admits(demand):
                        continue
                    grown = self.cost(target.cpus + demand.cpus, target.memory + demand.memory)
                    if grown is None:
                        continue
                    saving = here + self._cost_of(target) - left - grown
                    if saving > 0 and (best is None or saving > best[0]):
                        best = (saving, target)
                if best is not None:
                    source.remove(demand)
                    best[1].add(demand)
                    moved = True
            if not source.instances and len(nodes) > min_nodes:
                nodes.remove(source)
        return moved

    def _swap_two(self, nodes: list[_Node]) -> bool:
        """Exchange two instances of two nodes when both nodes then cost less in all (a port or a
        service that must move off a node, and a smaller one that can take its place)."""
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                before = self._cost_of(a) + self._cost_of(b)
                for x in list(a.instances):
                    for y in list(b.instances):
                        after_a = self.cost(a.cpus - x.cpus + y.cpus, a.memory - x.memory + y.memory)
                        after_b = self.cost(b.cpus - y.cpus + x.cpus, b.memory - y.memory + x.memory)
                        if after_a is None or after_b is None or after_a + after_b >= before:
                            continue
                        a.remove(x)
                        b.remove(y)
                        if a.admits(y) and b.admits(x):
                            a.add(y)
                            b.add(x)
                            return True
                        a.add(x)
                        b.add(y)
        return False

    def _merge_three(self, nodes: list[_Node], min_nodes: int) -> bool:
        """Put three nodes' instances on one node of a larger type when it costs less than the
        three, where no merge of two of them does."""
        if len(nodes) - 2 < min_nodes:
            return False
        for a, b, c in itertools.combinations(nodes, 3):
            together = [*a.instances, *b.instances, *c.instances]
            merged = self.cost(a.cpus + b.cpus + c.cpus, a.memory + b.memory + c.memory)
            if merged is None or merged >= self._cost_of(a) + self._cost_of(b) + self._cost_of(c):
                continue
            groups = [d.group for d in together if d.group]
            ports = [port for d in together for port in d.host_ports]
            if len(groups) != len(set(groups)) or len(ports) != len(set(ports)):
                continue
            for d in [*b.instances, *c.instances]:
                (b if d in b.instances else c).remove(d)
                a.add(d)
            nodes.remove(b)
            nodes.remove(c)
            return True
        return False

    def _merge_two(self, nodes: list[_Node], min_nodes: int) -> bool:
        """One sweep: a node takes in another node's instances when one type holds both for less."""
        merged_any = False
        gone: set[int] = set()
        for i, a in enumerate(nodes):
            if id(a) in gone:
                continue
            for b in nodes[i + 1 :]:
                if id(b) in gone or len(nodes) - len(gone) <= min_nodes:
                    continue
                merged = self.cost(a.cpus + b.cpus, a.memory + b.memory)
                if merged is None or merged >= self._cost_of(a) + self._cost_of(b):
                    continue
                if any(not a.admits(d) for d in b.instances):
                    continue
                for d in list(b.instances):
                    b.remove(d)
                    a.add(d)
                gone.add(id(b))
                merged_any = True
        nodes[:] = [n for n in nodes if id(n) not in gone]
        return merged_any


def cheapest_mixed_fleet(
    demands: Sequence[Demand],
    *,
    reserve: Reserve = NO_RESERVE,
    arch: ArchPreference = "any",
    instance_type: str | None = None,
    min_nodes: int = 1,
    max_nodes: int | None = None,
    allowed: Collection[str] | None = None,
    families: Collection[str] | None = None,
) -> MixedFleet:
    """The cheapest fleet this module finds for ``demands`` (see the module docstring), all of one
    CPU architecture: with ``arch = "any"`` each is tried and the cheaper kept, because a fleet's
    nodes share one image and the services' images need not run on both. ``families``: oct.toml's
    choice of families; ``allowed``: the only type names it may use (a running cluster's node role
    may launch no others).
    Raises :class:`NoInstanceTypeFits` when no fleet within ``max_nodes`` runs them."""
    found: list[tuple[Decimal, _Packer, list[_Node]]] = []
    pools = [
        tuple(t for t in candidates(one, instance_type, families) if allowed is None or t.name in allowed)
        for one in (("arm64", "x86_64") if arch == "any" else (arch,))
    ]
    for bound, pool in sorted(
        ((_lower_bound(demands, p, reserve), p) for p in pools if p), key=lambda b: b[0]
    ):
        if found and bound >= min(f[0] for f in found):
            break  # (no fleet of this architecture can beat the one found)
        packer = _Packer(pool, reserve)
        starts = [packer.one_type(demands, max_nodes), packer.greedy(demands, max_nodes)]
        for start in (s for s in starts if s is not None):
            start += [_Node() for _ in range(max(0, min_nodes - len(start)))]
            packer.improve(start, min_nodes)
            found.append((packer.total(start), packer, start))
    if not found:
        limit = f" on at most {max_nodes} node{'s' if max_nodes != 1 else ''}" if max_nodes else ""
        raise NoInstanceTypeFits(
            f"no fleet runs the services ({sum(d.cpus for d in demands)} millicores, "
            f"{sum(d.memory for d in demands)} MB in all, one instance of a service per node){limit}"
        )
    _, packer, nodes = min(found, key=lambda f: f[0])
    chosen = [packer.fit(n.cpus, n.memory) or packer.pool[0] for n in nodes]  # (empty: the cheapest)
    chosen += [packer.pool[0]] * max(0, min_nodes - len(nodes))
    placements = {d.service: f"node-{i + 1}" for i, n in enumerate(nodes) for d in n.instances}
    return MixedFleet(tuple(chosen), placements)


def _lower_bound(demands: Sequence[Demand], pool: Sequence[InstanceType], reserve: Reserve) -> Decimal:
    """Less than any fleet of ``pool`` costs: the total CPU, and the total memory, each bought at
    the lowest price per unit any type offers it."""
    cpus, memory = sum(d.cpus for d in demands), sum(d.memory for d in demands)
    per_cpu = min(
        (node_cost(t) / t.capacity(reserve).cpus for t in pool if t.capacity(reserve).cpus > 0), default=None
    )
    per_mb = min(
        (node_cost(t) / t.capacity(reserve).memory for t in pool if t.capacity(reserve).memory > 0),
        default=None,
    )
    if per_cpu is None or per_mb is None:
        return Decimal("Infinity")
    return max(cpus * per_cpu, memory * per_mb)
