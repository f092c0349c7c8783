"""A cluster that buys priced machines grows by the cheapest mix of types, each node for its instances.

Against the leader's fakes: a first deploy buys the project's whole cheapest fleet (the one genesis
started the first node of, ``octctl.fleet_growth.project_fleet``) and the instances land exactly
where that fleet put them; a later service that fits nowhere gets the cheapest type that holds it;
a launch's type is an intent in Raft, so a new leader finishing it asks for the same machine; and
``oct plan``'s dry run replays all of it with the same prices.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from octctl.config import Config
from octctl.dry_run import NodeFacts, dry_run
from octctl.fleet_growth import project_fleet
from octctl.leader import Leader
from octctl.node_settings import NodeSettings, Secrets
from octctl.providers.aws.pricing import DEFAULT_RESERVE, candidates, lookup, node_extras_monthly
from octctl.providers.base import NodeRequest
from octctl.scheduler import NodeCapacity
from octctl.specs import demands
from octctl.state.model import NodeRecord, command, targets_of
from tests.unit.leader_fakes import FakeAgents, FakeProvider, FakeRaft, deploy, ticks

ARM = tuple(t.name for t in candidates("arm64"))
GENESIS = "g"
MEDIUM = lookup("t4g.medium")
assert MEDIUM is not None
OFFERED = MEDIUM.capacity(DEFAULT_RESERVE)


class PricedProvider(FakeProvider):
    """A provider that sells every arm64 type, as an AWS cluster's ledger lets its leader."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, NodeRequest]] = []
        self.allowed = ARM

    @property
    def instance_types(self) -> tuple[str, ...]:
        return self.allowed

    def provision(self, node: str, request: NodeRequest) -> None:
        self.requests.append((node, request))
        super().provision(node, request)


def record(node: str, n: int, cpus: int, memory: int, instance_type: str) -> NodeRecord:
    return {
        "id": node,
        "address": f"10.0.0.{n}",
        "api_port": 31888,
        "raft_port": 31889,
        "cpus": cpus,
        "memory": memory,
        "status": "ready",
        "joined_at": 0.0,
        "last_seen": 1e12,
        "instance_type": instance_type,
    }


def seed(*extra: dict[str, Any]) -> dict[str, Any]:
    """The seed's four 0.5 vCPU / 1 GB services on AWS, with oct's default reserve."""
    services = [
        {"name": name, "image": "busybox:1.36", "cpus": 500, "memory": 1024}
        for name in ("django", "celery", "redis", "postgres")
    ]
    return {
        "project": {
            "name": "seed",
            "state_backend": {"local": {"path": "state.json"}},
            "provider": {"aws": {}},
            "services": [*services, *extra],
        }
    }


def leader(raft: FakeRaft, provider: PricedProvider) -> Leader:
    settings = NodeSettings(
        node=GENESIS,
        cluster="c1",
        address="10.0.0.1",
        cpus=OFFERED.cpus,
        memory=OFFERED.memory,
        provider={"kind": "aws", "instance_type": "t4g.medium"},
    )
    return Leader(
        cluster=raft,
        agents=FakeAgents(),
        settings=settings,
        secrets=Secrets(token="t", raft_password="p", ca_key="", ca_cert=""),
        provider=provider,
    )


@pytest.fixture
def genesis() -> tuple[Leader, FakeRaft, PricedProvider]:
    """A cluster just after genesis: its one node, a t4g.medium, and nothing deployed."""
    raft, provider = FakeRaft(), PricedProvider()
    first = record(GENESIS, 1, OFFERED.cpus, OFFERED.memory, "t4g.medium")
    asyncio.run(raft.execute(command("node_joined", node=first)))
    return leader(raft, provider), raft, provider


def join(raft: FakeRaft, node: str, request: NodeRequest, n: int) -> None:
    """What the launched machine does: join with the size and type it was launched with, then
    answer the leader's polls."""
    assert request.instance_type is not None
    joined = record(node, n, request.cpus, request.memory, request.instance_type)
    asyncio.run(raft.execute(command("node_joined", node={**joined, "status": "joining"})))
    asyncio.run(raft.execute(command("node_status", node=node, status="ready", at=1.0)))


def test_a_first_deploy_buys_the_projects_cheapest_fleet_and_places_it_so(genesis) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, provider = genesis
    deploy(raft, seed())
    fleet = project_fleet(Config.model_validate(seed()), demands(Config.model_validate(seed())))
    assert [t.name for t in fleet.types] == ["t4g.medium", "t4g.small"], "the oracle's optimum"

    ticks(reconciler, 1)
    ((node, request),) = provider.requests
    small = lookup("t4g.small")
    assert small is not None
    offered = small.capacity(DEFAULT_RESERVE)
    assert (request.instance_type, request.cpus, request.memory) == (
        "t4g.small",
        offered.cpus,
        offered.memory,
    )
    waiting = sorted(i for i, n in fleet.placements.items() if n == "node-2")
    assert raft.state["launch_types"] == {node: "t4g.small"}
    assert targets_of(raft.state) == dict.fromkeys(waiting, node)
    on_genesis = sorted(i for i, n in fleet.placements.items() if n == "node-1")
    assert raft.state["placements"] == dict.fromkeys(on_genesis, GENESIS), "the rest wait for their node"

    join(raft, node, request, 2)
    ticks(reconciler, 2)
    expected = {i: (GENESIS if n == "node-1" else node) for i, n in fleet.placements.items()}
    assert raft.state["placements"] == expected
    assert targets_of(raft.state) == {} and raft.state["launch_types"] == {}
    assert len(provider.requests) == 1, "nothing more to buy"


def test_what_fits_nowhere_later_gets_the_cheapest_type_that_holds_it(genesis) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, provider = genesis
    deploy(raft, seed())
    ticks(reconciler, 1)
    join(raft, *provider.requests[0], 2)
    ticks(reconciler, 2)

    big = {"name": "search", "image": "busybox:1.36", "cpus": 1500, "memory": 3000}
    deploy(raft, seed(big), deployment="d2")
    ticks(reconciler, 1)
    node, request = provider.requests[-1]
    assert len(provider.requests) == 2
    assert request.instance_type == "t4g.medium", "the cheapest type whose offer holds 1.5 vCPU / 3000 MB"
    assert targets_of(raft.state) == {"search": node}

    # The leader dies before the node joins: its successor launches the same machine again.
    successor = leader(raft, provider)
    ticks(successor, 1)
    again = [r for n, r in provider.requests if n == node]
    assert len(again) == 2 and again[1].instance_type == "t4g.medium"
    assert provider.started.count(node) == 1 and provider.reserved == 2

    join(raft, node, request, 3)
    ticks(successor, 2)
    assert raft.state["placements"]["search"] == node


def test_a_launch_given_up_frees_its_instances_for_another() -> None:
    raft = FakeRaft()
    asyncio.run(
        raft.execute(command("provisioning", node="n-1", at=0.0, instance_type="t4g.small", targets=["a"]))
    )
    assert targets_of(raft.state) == {"a": "n-1"} and raft.state["launch_types"] == {"n-1": "t4g.small"}
    asyncio.run(raft.execute(command("provisioning_done", node="n-1")))
    assert targets_of(raft.state) == {} and raft.state["launch_types"] == {}


def test_a_launch_of_a_type_oct_no_longer_prices_is_finished_as_a_copy(genesis) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, provider = genesis
    provider.allowed = (*ARM, "x9.gone")  # (the ledger lists it; the price table no longer does)
    deploy(raft, seed())
    intent = command("provisioning", node="n-old", at=9e12, instance_type="x9.gone", targets=["redis"])
    asyncio.run(raft.execute(intent))
    ticks(reconciler, 1)  # (an earlier leader's launch: this one finishes it, and must not fail)
    request = next(r for n, r in provider.requests if n == "n-old")
    assert (request.instance_type, request.cpus, request.memory) == (None, OFFERED.cpus, OFFERED.memory)


def test_the_dry_run_replays_the_first_fleet_with_its_prices(genesis) -> None:  # type: ignore[no-untyped-def]
    _, raft, _ = genesis
    facts = NodeFacts(
        own=NodeCapacity(GENESIS, OFFERED.cpus, OFFERED.memory),
        leader=GENESIS,
        kind="aws",
        instance_type="t4g.medium",
        domain="oct",
        instance_types=ARM,
    )
    plan = dry_run(raft.view(), Config.model_validate(seed()), None, facts)
    assert plan.launch == ["new-1"] and plan.launch_types == {"new-1": "t4g.small"}
    small = lookup("t4g.small")
    assert small is not None
    extras = node_extras_monthly()
    assert plan.monthly_usd_before == float((MEDIUM.monthly + extras).quantize(Decimal("0.01")))
    assert plan.monthly_usd_after == float(
        (MEDIUM.monthly + small.monthly + 2 * extras).quantize(Decimal("0.01"))
    )
    where = {i.name: i.node for s in plan.services for i in s.instances}
    assert sorted(where.values(), key=str) == sorted([GENESIS] * 3 + ["new-1"])
