"""What the leader launches for what does not fit (``octctl/fleet_growth.py``), pure."""

from __future__ import annotations

import pytest

from octctl.config import Config
from octctl.fleet_growth import NewNode, first_fleet, grow, machines
from octctl.fleet_size import FleetSize
from octctl.providers.aws.pricing import DEFAULT_RESERVE, INSTANCE_TYPES, candidates, lookup
from octctl.scheduler import Demand, NodeCapacity
from octctl.specs import demands

TEMPLATE = NodeCapacity("new", 2000, 2048)
ARM = [t.name for t in candidates("arm64")]


def aws(**settings: object) -> Config:
    return Config.model_validate(
        {
            "project": {
                "name": "p",
                "state_backend": {"local": {"path": "s.json"}},
                "provider": {"aws": settings},
                "services": [{"name": "a", "image": "x", "cpus": 500, "memory": 1024}],
            }
        }
    )


def offer(name: str) -> NewNode:
    t = lookup(name)
    assert t is not None
    c = t.capacity(DEFAULT_RESERVE)
    return NewNode(c.cpus, c.memory, name)


def test_copies_are_as_many_as_first_fit_needs_and_at_least_the_minimum() -> None:
    fleet = FleetSize(min_nodes=3, max_nodes=None, template=TEMPLATE)
    three = [Demand(f"s{i}", 1500, 100) for i in range(3)]
    assert grow(three, fleet, count=5, machines=None).nodes == (NewNode(2000, 2048),) * 3
    assert grow([], fleet, count=1, machines=None).nodes == (NewNode(2000, 2048),) * 2
    capped = FleetSize(min_nodes=1, max_nodes=6, template=TEMPLATE)
    assert len(grow(three, capped, count=5, machines=None).nodes) == 1, "never beyond max_nodes"
    with pytest.raises(ValueError, match="more than an empty node"):
        grow([Demand("huge", 9000, 100)], fleet, count=3, machines=None)


def test_priced_growth_buys_the_cheapest_type_that_holds_each_and_targets_it() -> None:
    buying = machines(aws(), ARM)
    assert buying is not None and buying.allowed == frozenset(ARM)
    fleet = FleetSize(min_nodes=1, max_nodes=10, template=TEMPLATE)
    growth = grow([Demand("db", 1500, 3000), Demand("cache", 100, 200)], fleet, count=2, machines=buying)
    assert growth.nodes == (offer("t4g.medium"),), "one medium holds both, for less than two nodes"
    assert growth.targets == {"db": 0, "cache": 0}


def test_priced_growth_keeps_to_the_types_the_cluster_may_launch() -> None:
    buying = machines(aws(), ["t4g.xlarge"])  # (an older cluster's ledger names one type)
    assert buying is not None
    fleet = FleetSize(min_nodes=1, max_nodes=10, template=TEMPLATE)
    assert grow([Demand("db", 100, 100)], fleet, count=1, machines=buying).nodes == (offer("t4g.xlarge"),)


def test_priced_growth_to_the_minimum_buys_the_cheapest_nodes() -> None:
    buying = machines(aws(), ARM)
    assert buying is not None
    fleet = FleetSize(min_nodes=3, max_nodes=10, template=TEMPLATE)
    cheapest = next(t.name for t in INSTANCE_TYPES if t.arch == "arm64")
    assert grow([], fleet, count=1, machines=buying).nodes == (offer(cheapest),) * 2


def test_priced_growth_stops_at_max_nodes_and_what_does_not_fit_waits() -> None:
    buying = machines(aws(), ARM)
    assert buying is not None
    fleet = FleetSize(min_nodes=1, max_nodes=3, template=TEMPLATE)
    group = [Demand(f"web-{i}", 100, 100, group="web") for i in range(4)]  # one a node
    growth = grow(group, fleet, count=1, machines=buying)
    assert len(growth.nodes) == 2 and len(growth.targets) == 2
    assert grow(group, fleet, count=3, machines=buying).nodes == ()


def test_no_priced_growth_without_aws_or_without_types() -> None:
    local = Config.model_validate(
        {
            "project": {
                "name": "p",
                "state_backend": {"local": {"path": "s.json"}},
                "provider": {"local": {"nodes": 1}},
                "services": [],
            }
        }
    )
    assert machines(local, ARM) is None
    assert machines(aws(), []) is None


def test_a_first_fleet_starts_with_the_genesis_type_or_not_at_all() -> None:
    config = aws()
    buying = machines(config, ARM)
    assert buying is not None
    growth = first_fleet(config, demands(config), buying, "t4g.small")
    assert growth is not None and growth.first == ("a",) and growth.nodes == ()
    changed = first_fleet(config, demands(config), buying, "t4g.xlarge")  # (oct.toml changed since genesis)
    assert changed is None


def test_the_cluster_sells_only_allowed_types_it_knows_the_size_of() -> None:
    buying = machines(aws(), ["t4g.small", "x9.gone"])  # (a type a newer price table dropped)
    assert buying is not None
    assert buying.sells("t4g.small")
    assert not buying.sells("x9.gone") and not buying.sells("t4g.medium") and not buying.sells(None)
