"""Tests for the pure scheduler: worked examples for each rule plus a seeded randomized invariant sweep."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from octctl.scheduler import (
    Demand,
    NodeCapacity,
    Plan,
    fits_on_empty_node,
    nodes_needed,
    place,
    usage,
)


def d(service: str, cpus: int = 500, memory: int = 512, ports: Sequence[int] = ()) -> Demand:
    return Demand(service=service, cpus=cpus, memory=memory, host_ports=frozenset(ports))


def n(node: str, cpus: int = 2000, memory: int = 4096, schedulable: bool = True) -> NodeCapacity:
    return NodeCapacity(node=node, cpus=cpus, memory=memory, schedulable=schedulable)


THREE = [n("a"), n("b"), n("c")]


# --- spread -----------------------------------------------------------------------------------------


def test_equal_services_spread_one_per_node() -> None:
    plan = place([d("x"), d("y"), d("z")], THREE, {})
    assert sorted(plan.placements.values()) == ["a", "b", "c"]
    assert plan.unplaced == ()
    assert plan.moved == ()


def test_largest_first_and_ties_broken_by_node_id() -> None:
    plan = place([d("small", memory=100), d("big", memory=2000), d("mid", memory=1000)], THREE, {})
    # big goes first onto the lowest id among equally empty nodes, then the others avoid it.
    assert dict(plan.placements) == {"big": "a", "mid": "b", "small": "c"}


def test_ties_go_to_the_lowest_id_in_natural_order() -> None:
    # node-9 comes before node-10, as a person reads them (not as strings compare).
    nodes = [n("node-10"), n("node-9"), n("node-100")]
    plan = place([d("big", memory=2000), d("mid", memory=1000), d("small", memory=100)], nodes, {})
    assert dict(plan.placements) == {"big": "node-9", "mid": "node-10", "small": "node-100"}


def test_spread_balances_the_busier_resource() -> None:
    # "a" is memory-heavy already, "b" is cpu-heavy; a memory-heavy newcomer belongs on "b".
    nodes = [n("a", cpus=1000, memory=1000), n("b", cpus=1000, memory=1000)]
    current = {"memhog": "a", "cpuhog": "b"}
    demands = [d("memhog", cpus=100, memory=600), d("cpuhog", cpus=600, memory=100), d("new", 100, 300)]
    plan = place(demands, nodes, current)
    # a: max(0.2, 0.9)=0.9 ; b: max(0.7, 0.4)=0.7
    assert plan.placements["new"] == "b"


def test_three_nodes_share_many_services_evenly() -> None:
    plan = place([d(f"s{i}") for i in range(9)], THREE, {})
    assert Counter(plan.placements.values()) == {"a": 3, "b": 3, "c": 3}


# --- stability ---------------------------------------------------------------------------------------


def test_existing_placement_kept_when_a_service_is_added() -> None:
    # Spread alone would move "x" off the crowded node; stability must win.
    current = {"x": "c", "y": "c"}
    plan = place([d("x"), d("y"), d("new")], THREE, current)
    assert plan.placements["x"] == "c"
    assert plan.placements["y"] == "c"
    assert plan.placements["new"] == "a"
    assert plan.moved == ()


def test_grown_service_that_still_fits_stays() -> None:
    plan = place([d("x", cpus=1500, memory=3000), d("y")], THREE, {"x": "b", "y": "b"})
    assert plan.placements == {"x": "b", "y": "b"}
    assert plan.moved == ()


def test_grown_service_that_no_longer_fits_moves() -> None:
    # Kept services are processed by name: "a-svc" keeps its spot, "b-svc" has outgrown the node.
    current = {"a-svc": "b", "b-svc": "b"}
    plan = place([d("a-svc", memory=2048), d("b-svc", memory=3000)], THREE, current)
    assert plan.placements["a-svc"] == "b"
    assert plan.placements["b-svc"] in {"a", "c"}
    assert plan.moved == ("b-svc",)


def test_service_outgrowing_every_node_is_unplaced_not_moved() -> None:
    plan = place([d("x", memory=10_000)], THREE, {"x": "a"})
    assert plan.placements == {}
    assert plan.unplaced == ("x",)
    assert plan.moved == ()


def test_service_on_vanished_node_is_moved() -> None:
    plan = place([d("x")], THREE, {"x": "gone"})
    assert plan.placements == {"x": "a"}
    assert plan.moved == ("x",)


# --- ports -------------------------------------------------------------------------------------------


def test_port_clash_forces_a_different_node() -> None:
    # Plenty of room on "a", but "web" already binds 80 there.
    nodes = [n("a", cpus=10_000, memory=10_000), n("b", cpus=1000, memory=1000)]
    current = {"web": "a"}
    plan = place([d("web", ports=[80]), d("web2", cpus=900, memory=900, ports=[80, 8080])], nodes, current)
    assert plan.placements == {"web": "a", "web2": "b"}


def test_port_clash_everywhere_means_unplaced() -> None:
    nodes = [n("a"), n("b")]
    plan = place([d("p1", ports=[443]), d("p2", ports=[443]), d("p3", ports=[443])], nodes, {})
    assert len(plan.placements) == 2
    assert len(set(plan.placements.values())) == 2
    assert plan.unplaced == ("p3",)


def test_port_clash_among_current_services_keeps_the_first_by_name() -> None:
    plan = place([d("m", ports=[80]), d("k", ports=[80])], [n("a"), n("b")], {"m": "a", "k": "a"})
    assert plan.placements == {"k": "a", "m": "b"}
    assert plan.moved == ("m",)


# --- nothing fits / node retirement / removal --------------------------------------------------------


def test_nothing_fits_goes_to_unplaced_sorted() -> None:
    plan = place([d("zz", memory=5000), d("aa", cpus=3000), d("ok")], THREE, {})
    assert plan.unplaced == ("aa", "zz")
    assert set(plan.placements) == {"ok"}


def test_no_nodes_at_all() -> None:
    plan = place([d("x"), d("y")], [], {"x": "a"})
    assert plan == Plan(placements={}, unplaced=("x", "y"), moved=())


def test_unschedulable_node_gets_nothing_new_and_its_services_move() -> None:
    nodes = [n("a", schedulable=False), n("b"), n("c")]
    plan = place([d("old1"), d("old2"), d("new")], nodes, {"old1": "a", "old2": "a"})
    assert "a" not in plan.placements.values()
    assert set(plan.placements) == {"old1", "old2", "new"}
    assert plan.moved == ("old1", "old2")


def test_only_unschedulable_nodes_means_everything_unplaced() -> None:
    plan = place([d("x")], [n("a", schedulable=False)], {"x": "a"})
    assert plan.placements == {}
    assert plan.unplaced == ("x",)


def test_removed_services_are_dropped_and_free_their_room() -> None:
    nodes = [n("a", cpus=1000, memory=1000)]
    plan = place([d("new", cpus=1000, memory=1000)], nodes, {"removed": "a"})
    assert plan.placements == {"new": "a"}
    assert "removed" not in plan.moved
    assert plan.unplaced == ()


# --- validation --------------------------------------------------------------------------------------


def test_duplicate_demand_rejected() -> None:
    with pytest.raises(ValueError, match="x"):
        place([d("x"), d("x")], THREE, {})


def test_duplicate_node_rejected() -> None:
    with pytest.raises(ValueError, match="a"):
        place([d("x")], [n("a"), n("a")], {})


def test_negative_sizes_rejected() -> None:
    with pytest.raises(ValueError):
        Demand("x", -1, 1, frozenset())
    with pytest.raises(ValueError):
        NodeCapacity("a", 1, -1)


# --- determinism -------------------------------------------------------------------------------------


def test_shuffled_inputs_give_identical_plan() -> None:
    demands = [
        d(f"s{i}", cpus=100 * (i % 4 + 1), memory=256 * (i % 3 + 1), ports=[8000 + i % 5]) for i in range(20)
    ]
    nodes = [n(f"n{i}", cpus=1500 + 500 * (i % 2), memory=2048 * (1 + i % 2)) for i in range(5)]
    current = {"s1": "n0", "s2": "n0", "s7": "n3", "gone": "n1", "s9": "missing"}
    reference = place(demands, nodes, current)
    rng = random.Random(1234)
    for _ in range(25):
        ds, ns, cur = demands[:], nodes[:], list(current.items())
        rng.shuffle(ds)
        rng.shuffle(ns)
        rng.shuffle(cur)
        plan = place(ds, ns, dict(cur))
        assert plan == reference
        assert list(plan.placements) == list(reference.placements)


# --- usage / fits_on_empty_node ----------------------------------------------------------------------


def test_usage_sums_per_node_and_ignores_unknown_services() -> None:
    demands = [d("x", 100, 200), d("y", 300, 400), d("z", 1, 1)]
    assert usage({"x": "a", "y": "a", "z": "b", "ghost": "c"}, demands) == {"a": (400, 600), "b": (1, 1)}


def test_fits_on_empty_node_checks_both_resources() -> None:
    cap = n("t", cpus=1000, memory=1000)
    assert fits_on_empty_node(d("x", 1000, 1000), cap)
    assert not fits_on_empty_node(d("x", 1001, 10), cap)
    assert not fits_on_empty_node(d("x", 10, 1001), cap)
    assert fits_on_empty_node(d("x", 10, 10), n("t", schedulable=False))


# --- nodes_needed ------------------------------------------------------------------------------------


def test_nodes_needed_nothing_unplaced() -> None:
    assert nodes_needed([], n("t")) == 0


def test_nodes_needed_packs_first_fit_decreasing() -> None:
    cap = n("t", cpus=4000, memory=1000)
    # 600+400 | 600+300 | 500 -> 3 nodes (FFD: 600,600,500,400,300)
    demands = [d("a", 1, 400), d("b", 1, 600), d("c", 1, 300), d("e", 1, 600), d("f", 1, 500)]
    assert nodes_needed(demands, cap) == 3


def test_nodes_needed_cpu_can_be_the_binding_resource() -> None:
    cap = n("t", cpus=1000, memory=100_000)
    assert nodes_needed([d(f"s{i}", cpus=400, memory=1) for i in range(5)], cap) == 3


def test_nodes_needed_respects_port_clashes() -> None:
    cap = n("t", cpus=100_000, memory=100_000)
    assert nodes_needed([d(f"s{i}", 1, 1, ports=[80]) for i in range(4)], cap) == 4
    assert nodes_needed([d(f"s{i}", 1, 1, ports=[80 + i]) for i in range(4)], cap) == 1


def test_nodes_needed_impossible_demand_names_service_and_sizes() -> None:
    with pytest.raises(ValueError) as info:
        nodes_needed([d("ok"), d("huge", cpus=3000, memory=8192)], n("t", cpus=2000, memory=4096))
    message = str(info.value)
    for fragment in ("huge", "3000", "8192", "2000", "4096"):
        assert fragment in message


# --- host-bound services (an external port several services share) --------------------------------
# specs.demand gives each of them the shared port as a host port, so the port rule is the
# anti-affinity: they never share a node, and new nodes are counted one per sharer.


def test_services_sharing_a_host_bound_port_land_on_distinct_nodes() -> None:
    plan = place([d("app_1", ports=[80]), d("app_2", ports=[80]), d("nginx", ports=[80])], THREE, {})
    assert plan.unplaced == ()
    assert sorted(plan.placements.values()) == ["a", "b", "c"]


def test_a_sharer_moved_onto_another_sharer_s_node_is_moved_off() -> None:
    # app_2 sat on "a" before the port became shared; app_1 keeps "a" (first by name), app_2 moves.
    plan = place(
        [d("app_1", ports=[80]), d("app_2", ports=[80]), d("x")], THREE, {"app_1": "a", "app_2": "a"}
    )
    assert plan.placements["app_1"] == "a" and plan.placements["app_2"] != "a"
    assert plan.moved == ("app_2",)


def test_more_sharers_than_nodes_are_unplaced_and_counted_one_node_each() -> None:
    demands = [d(f"s{i}", cpus=10, memory=10, ports=[80]) for i in range(5)]
    plan = place(demands, THREE, {})
    assert len(plan.unplaced) == 2 and len(set(plan.placements.values())) == 3
    unplaced = [x for x in demands if x.service in plan.unplaced]
    assert nodes_needed(unplaced, n("t", cpus=100_000, memory=100_000)) == 2


# --- randomized invariants ---------------------------------------------------------------------------


def _random_case(rng: random.Random) -> tuple[list[Demand], list[NodeCapacity], dict[str, str]]:
    nodes = [
        n(
            f"n{i}",
            cpus=rng.choice([0, 500, 1000, 2000, 4000]),
            memory=rng.choice([0, 512, 1024, 4096]),
            schedulable=rng.random() > 0.2,
        )
        for i in range(rng.randint(0, 6))
    ]
    port_pool = [80, 443, 5432, 6379, 8080]
    demands = [
        d(
            f"svc{i}",
            cpus=rng.choice([0, 100, 250, 500, 1000, 3000]),
            memory=rng.choice([0, 64, 256, 512, 1024, 5000]),
            ports=rng.sample(port_pool, rng.randint(0, 2)),
        )
        for i in range(rng.randint(0, 15))
    ]
    node_ids = [c.node for c in nodes] + ["vanished"]
    services = [x.service for x in demands] + ["removed1", "removed2"]
    current = {s: rng.choice(node_ids) for s in services if rng.random() < 0.5}
    return demands, nodes, current


def _check_invariants(
    plan: Plan, demands: Sequence[Demand], nodes: Sequence[NodeCapacity], current: Mapping[str, str]
) -> None:
    by_name = {x.service: x for x in demands}
    by_node = {c.node: c for c in nodes}

    # Every demand placed xor unplaced, exactly once; nothing else appears.
    assert len(set(plan.unplaced)) == len(plan.unplaced)
    assert set(plan.placements).isdisjoint(plan.unplaced)
    assert set(plan.placements) | set(plan.unplaced) == set(by_name)
    assert list(plan.unplaced) == sorted(plan.unplaced)

    # Only existing, schedulable nodes; none over capacity.
    used = usage(plan.placements, demands)
    for node_id, (cpus, memory) in used.items():
        assert by_node[node_id].schedulable
        assert cpus <= by_node[node_id].cpus
        assert memory <= by_node[node_id].memory

    # No host port bound twice on one node.
    ports_on: dict[str, list[int]] = {}
    for service, node_id in plan.placements.items():
        ports_on.setdefault(node_id, []).extend(by_name[service].host_ports)
    for ports in ports_on.values():
        assert len(ports) == len(set(ports))

    # moved is exactly the placed services whose node changed.
    expected_moved = sorted(
        s for s, node_id in plan.placements.items() if s in current and current[s] != node_id
    )
    assert list(plan.moved) == expected_moved

    # Loads only grow during placement, so an unplaced service must not fit anywhere at the end.
    for service in plan.unplaced:
        demand = by_name[service]
        for capacity in nodes:
            if not capacity.schedulable:
                continue
            cpus, memory = used.get(capacity.node, (0, 0))
            fits = cpus + demand.cpus <= capacity.cpus and memory + demand.memory <= capacity.memory
            clash = not demand.host_ports.isdisjoint(ports_on.get(capacity.node, []))
            assert not fits or clash, f"{service} was left unplaced but fits on {capacity.node}"

    # Stability: re-planning from the plan itself moves nothing.
    again = place(demands, nodes, plan.placements)
    assert again.moved == ()
    assert again.placements == plan.placements


@pytest.mark.parametrize("chunk", range(4))
def test_randomized_invariants(chunk: int) -> None:
    for seed in range(chunk * 100, (chunk + 1) * 100):
        rng = random.Random(seed)
        demands, nodes, current = _random_case(rng)
        plan = place(demands, nodes, current)
        _check_invariants(plan, demands, nodes, current)

        shuffled_demands, shuffled_nodes = demands[:], nodes[:]
        rng.shuffle(shuffled_demands)
        rng.shuffle(shuffled_nodes)
        assert place(shuffled_demands, shuffled_nodes, dict(reversed(list(current.items())))) == plan

        template = n("t", cpus=4000, memory=8192)
        unplaced = [x for x in demands if x.service in plan.unplaced]
        if all(fits_on_empty_node(x, template) for x in unplaced):
            count = nodes_needed(unplaced, template)
            lower = max(
                math.ceil(sum(x.memory for x in unplaced) / template.memory),
                math.ceil(sum(x.cpus for x in unplaced) / template.cpus),
            )
            assert lower <= count <= len(unplaced)
        else:
            with pytest.raises(ValueError):
                nodes_needed(unplaced, template)


# --- the index against a plain scan ----------------------------------------------------------------


def _place_by_scan(
    demands: Sequence[Demand], nodes: Sequence[NodeCapacity], current: Mapping[str, str]
) -> Plan:
    """:func:`place` as it was before the index: every node weighed for every demand."""
    from types import MappingProxyType

    from octctl.scheduler import (
        _best_node,
        _index_demands,
        _index_nodes,
        _keep_current,
        _Load,
        _size_key,
        natural_key,
    )

    by_name, by_node = _index_demands(demands), _index_nodes(nodes)
    loads = {node_id: _Load() for node_id in by_node}
    placements = _keep_current(by_name, by_node, current, loads)
    candidates = sorted((c for c in by_node.values() if c.schedulable), key=lambda c: natural_key(c.node))
    unplaced: list[str] = []
    groups: dict[str, dict[str, int]] = {}
    for service, kept in placements.items():
        group = groups.setdefault(by_name[service].group or service, {})
        group[kept] = group.get(kept, 0) + 1
    for demand in sorted((x for x in by_name.values() if x.service not in placements), key=_size_key):
        group = groups.setdefault(demand.group or demand.service, {})
        best = _best_node(demand, candidates, loads, group)
        if best is None:
            unplaced.append(demand.service)
            continue
        loads[best] = loads[best].plus(demand)
        placements[demand.service] = best
        group[best] = group.get(best, 0) + 1
    moved = tuple(sorted(s for s, node_id in placements.items() if current.get(s, node_id) != node_id))
    return Plan(MappingProxyType(dict(sorted(placements.items()))), tuple(sorted(unplaced)), moved)


def _crowded_case(rng: random.Random) -> tuple[list[Demand], list[NodeCapacity], dict[str, str]]:
    """Many nodes of few sizes and services of few shapes (where the index's heaps matter), with
    replica groups, ports, pins, zero sizes and nodes that cannot take anything."""
    sizes = [
        (rng.choice([0, 1000, 2000, 4000]), rng.choice([0, 1024, 4096, 8192]))
        for _ in range(rng.randint(1, 3))
    ]
    nodes = [
        NodeCapacity(f"node-{i}", *rng.choice(sizes), schedulable=rng.random() > 0.1)
        for i in range(rng.randint(0, 40))
    ]
    shapes = [
        (rng.choice([0, 100, 250, 1000]), rng.choice([0, 64, 256, 1024, 3000]))
        for _ in range(rng.randint(1, 4))
    ]
    demands = []
    for i in range(rng.randint(0, 90)):
        cpus, memory = rng.choice(shapes)
        group = f"g{i // 3}" if rng.random() < 0.4 else ""
        ports = frozenset(rng.sample([80, 443, 5432], rng.randint(0, 1)))
        pinned = rng.choice([c.node for c in nodes] + ["gone"]) if nodes and rng.random() < 0.05 else None
        demands.append(Demand(f"s{i}", cpus, memory, ports, group=group, pinned=pinned))
    ids = [c.node for c in nodes] + ["vanished"]
    current = {x.service: rng.choice(ids) for x in demands if rng.random() < 0.3}
    return demands, nodes, current


@pytest.mark.parametrize("chunk", range(4))
def test_the_index_places_exactly_as_weighing_every_node(chunk: int) -> None:
    for seed in range(chunk * 250, (chunk + 1) * 250):
        demands, nodes, current = _crowded_case(random.Random(seed))
        assert place(demands, nodes, current) == _place_by_scan(demands, nodes, current), f"seed {seed}"
