"""The leader publishes what the outside sees: public DNS names and public addresses.

With a zone in the deployment, ``<service>.<domain>`` follows a service the cluster moves, is
published once per change, retried after a failure and withdrawn on destroy; without one nothing
is published. ``{{ services.X.public_ip }}`` is the provider's public address from the first
start (asked once per node, retried after a failed lookup), or the node's address without one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from octctl.addresses import container_address
from octctl.leader.liveness import UNREACHABLE_AFTER
from octctl.state.model import command
from tests.unit.leader_fakes import FakeProvider, deploy, project, service, ticks


class DnsProvider(FakeProvider):
    """A provider with public DNS: every publish call, and a switch to make the next ones fail."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, dict[str, str], str]] = []
        self.failing = False

    def publish(self, zone: str, names: Mapping[str, str], owner: str) -> bool:
        if self.failing:
            raise ConnectionError("route53 unreachable")
        self.published.append((zone, dict(names), owner))
        return True


def ready_nodes(raft) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    return tuple(sorted(n["id"] for n in raft.state["nodes"].values() if n["status"] == "ready"))


def test_public_names_point_at_every_ready_node_and_follow_a_node_that_dies(parts) -> None:  # type: ignore[no-untyped-def]
    """With a zone in the deployment, the leader publishes <service>.<domain> for services with an
    external port at every ready node (each one's ingress serves it), once per change (not every
    pass), and again without a node that died."""
    reconciler, raft, agents, _ = parts
    provider = reconciler.provider = DnsProvider()
    spec = project(service("web", external_port=8080), service("db", internal_port=5432))
    spec["project"]["domain"] = "Shop.Example.com"
    asyncio.run(raft.execute(command("init", cluster="c1")))
    deploy(raft, spec, zone="Z123")
    ticks(reconciler, 4)
    everyone = ready_nodes(raft)
    assert len(everyone) > 1
    assert provider.published == [("Z123", {"web.shop.example.com": everyone}, "c1")], "owner: the cluster"

    first = raft.state["placements"]["web"]
    agents.down.add(f"{raft.state['nodes'][first]['address']}:31888")
    ticks(reconciler, UNREACHABLE_AFTER + 3)
    assert raft.state["placements"]["web"] != first
    left = tuple(n for n in everyone if n != first)
    assert provider.published[-1] == ("Z123", {"web.shop.example.com": left}, "c1")
    assert len(provider.published) == 2, "published on each change only"


def test_public_names_are_withdrawn_on_destroy_and_retried_after_a_failure(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, _, _ = parts
    provider = reconciler.provider = DnsProvider()
    spec = project(service("web", external_port=8080))
    spec["project"]["domain"] = "shop.example.com"
    provider.failing = True
    deploy(raft, spec, zone="Z123")
    ticks(reconciler, 3)
    assert provider.published == []
    provider.failing = False
    reconciler.duties.publisher.due = 0.0  # PUBLISH_RETRY has passed
    ticks(reconciler, 1)
    assert [names for _, names, _ in provider.published] == [{"web.shop.example.com": ready_nodes(raft)}]

    asyncio.run(raft.execute(command("destroy", deployment="d2", at=1.0)))
    ticks(reconciler, 4)
    assert provider.published[-1][1] == {}, "destroy withdraws every name"


def test_no_zone_means_no_publishing(parts) -> None:  # type: ignore[no-untyped-def]
    """Local clusters (and AWS projects without a domain) never call the provider's DNS."""
    reconciler, raft, _, _ = parts
    provider = reconciler.provider = DnsProvider()
    spec = project(service("web", external_port=8080))
    spec["project"]["domain"] = "shop.example.com"
    deploy(raft, spec)
    ticks(reconciler, 3)
    assert provider.published == []


PUBLIC_IP_OF_A = {"A": "{{ services.a.public_ip }}"}


class AddressProvider(FakeProvider):
    """Nodes with public addresses, as EC2 gives them."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []

    def public_addresses(self, nodes: Sequence[str]) -> dict[str, str]:
        self.asked.append(list(nodes))
        return {n: f"203.0.113.{n.rsplit('-', 1)[1]}" for n in nodes}


def test_public_ip_is_the_providers_public_address_from_the_first_start(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    provider = reconciler.provider = AddressProvider()
    deploy(raft, project(service("a"), service("b", internal_port=8001, envs=PUBLIC_IP_OF_A)))
    ticks(reconciler, 4)
    a_node = raft.state["placements"]["a"]
    expected = f"203.0.113.{a_node.rsplit('-', 1)[1]}"
    assert raft.state["nodes"][a_node]["public_address"] == expected
    b_starts = [spec for spec in agents.specs if spec.service == "b"]
    assert [spec.env["A"] for spec in b_starts] == [expected], "started once, with the public address"
    assert len(provider.asked) == 1, "asked once per node, not every pass"


def test_without_public_addresses_public_ip_is_the_node_address(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    deploy(raft, project(service("a"), service("b", internal_port=8001, envs=PUBLIC_IP_OF_A)))
    ticks(reconciler, 4)
    a_node = raft.state["nodes"][raft.state["placements"]["a"]]
    assert "public_address" not in a_node
    # (b is a container of a local cluster: it gets the node's address for containers, 198.18.0.N)
    expected = container_address(a_node["address"])
    assert [spec.env["A"] for spec in agents.specs if spec.service == "b"] == [expected]


def test_a_failed_address_lookup_is_retried_and_a_answered_one_is_not(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, _, _ = parts
    provider = reconciler.provider = AddressProvider()
    real = provider.public_addresses
    calls: list[list[str]] = []

    def flaky(nodes: Sequence[str]) -> dict[str, str]:
        calls.append(list(nodes))
        if len(calls) == 1:
            raise ConnectionError("ec2 unreachable")
        return real(nodes)

    provider.public_addresses = flaky  # type: ignore[method-assign]
    deploy(raft, project(service("a")))
    ticks(reconciler, 3)
    assert len(calls) == 1, "not asked again before PUBLISH_RETRY"
    assert all("public_address" not in n for n in raft.state["nodes"].values())
    publisher = reconciler.duties.publisher
    publisher.asked = dict.fromkeys(publisher.asked, 0.0)  # the retry is due
    ticks(reconciler, 3)
    assert len(calls) == 2
    assert all(n["public_address"].startswith("203.0.113.") for n in raft.state["nodes"].values())
