"""The leader's loop against in-memory fakes of Raft, agents and the provider.

The end-to-end suite runs the same loop with real processes; here each tick can be stepped and
inspected, so ordering and failure rules are pinned down exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from octctl.leader import Leader
from octctl.leader.liveness import UNREACHABLE_AFTER
from octctl.node_settings import NodeSettings, Secrets
from octctl.peers import PeerError
from octctl.providers.base import NodeRequest, Provider
from octctl.runtime.base import InstanceSpec, InstanceStatus
from octctl.state.machine import RaftUnavailable
from octctl.state.model import ClusterState, NodeRecord, apply_command, command, empty_state, snapshot


class FakeRaft:
    """Commits instantly, in order: the state machine semantics without the network."""

    def __init__(self) -> None:
        self.state = empty_state()
        self.removed_members: list[str] = []
        self.barriers = 0
        self.cut_off = False  # a leader that lost its majority: barriers fail
        self.current_term = 7

    def view(self) -> ClusterState:
        return snapshot(self.state)

    def is_leader(self) -> bool:
        return True

    def term(self) -> int:
        return self.current_term

    def members(self) -> list[str]:
        voters = [n for n in self.state["nodes"].values() if n.get("voter", True)]
        return [f"{n['address']}:{n['raft_port']}" for n in voters]

    async def execute(self, cmd: dict[str, Any], timeout: float = 5.0) -> Any:
        result = apply_command(self.state, cmd)
        if isinstance(result, dict) and set(result) == {"error"}:
            raise ValueError(result["error"])
        return result

    async def remove_member(self, address: str, timeout: float = 15.0) -> None:
        self.removed_members.append(address)

    async def barrier(self, timeout: float = 2.0) -> None:
        self.barriers += 1
        if self.cut_off:
            raise RaftUnavailable("raft did not commit within 2s (no quorum?)")


class FakeAgents:
    """Agents by API address: what each runs, and every call made, in order."""

    def __init__(self) -> None:
        self.running: dict[str, dict[str, InstanceStatus]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.specs: list[InstanceSpec] = []
        self.down: set[str] = set()
        self.fail_image: str | None = None
        self.term = 7  # what every command must carry: the leader's term

    def _check(self, address: str) -> None:
        if address in self.down:
            raise PeerError(f"{address}: connection refused")

    async def instances(self, address: str, project: str | None = None) -> list[InstanceStatus]:
        self._check(address)
        return list(self.running.get(address, {}).values())

    async def apply(
        self, address: str, spec: InstanceSpec, term: int, timeout: float = 300.0
    ) -> InstanceStatus:
        self._check(address)
        assert term == self.term, "every command carries the leader's term"
        self.calls.append(("apply", address, spec.service))
        self.specs.append(spec)
        state = "failed" if spec.image == self.fail_image else "running"
        status = InstanceStatus(
            project=spec.project,
            service=spec.service,
            runtime=spec.runtime,
            deployment=spec.deployment,
            spec_hash=spec.spec_hash,
            state=state,
            error=f"cannot pull image '{spec.image}'" if state == "failed" else None,
        )
        if state == "running":
            self.running.setdefault(address, {})[spec.service] = status
        return status

    async def remove(self, address: str, project: str, service: str, term: int) -> None:
        self._check(address)
        assert term == self.term, "every command carries the leader's term"
        self.calls.append(("remove", address, service))
        self.running.get(address, {}).pop(service, None)


class FakeProvider(Provider):
    def __init__(self) -> None:
        self.provisioned: list[NodeRequest] = []
        self.started: list[str] = []
        self.provision_calls: list[str] = []
        self.reserved = 0
        self.retired: list[str] = []

    def reserve(self, request: NodeRequest) -> str:
        self.reserved += 1
        return f"new-{self.reserved}"

    def provision(self, node: str, request: NodeRequest) -> None:
        self.provision_calls.append(node)
        if node in self.started:
            return  # the same id again: no second machine
        self.started.append(node)
        self.provisioned.append(request)

    def retire(self, node: str) -> None:
        self.retired.append(node)


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


def node(n: int) -> NodeRecord:
    return {
        "id": f"node-{n}",
        "address": f"127.0.0.{n}",
        "api_port": 31888,
        "raft_port": 31889,
        "cpus": 4000,
        "memory": 4096,
        "status": "ready",
        "joined_at": 0.0,
        "last_seen": 1e12,
    }


def service(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox:1.36", "internal_port": 8000, "cpus": 100, "memory": 32, **extra}


def project(*services: dict[str, Any], nodes: int = 3) -> dict[str, Any]:
    return {
        "project": {
            "name": "shop",
            "state_backend": {"local": {"path": "state.json"}},
            "provider": {"local": {"nodes": nodes}},
            "services": list(services),
        }
    }


@pytest.fixture
def parts() -> tuple[Leader, FakeRaft, FakeAgents, FakeProvider]:
    raft, agents, provider = FakeRaft(), FakeAgents(), FakeProvider()
    for n in (2, 3, 4):
        asyncio.run(raft.execute(command("node_joined", node=node(n))))
    settings = NodeSettings(node="node-2", cluster="c1", address="127.0.0.2", cpus=4000, memory=4096)
    reconciler = Leader(
        cluster=raft,
        agents=agents,
        settings=settings,
        secrets=Secrets(token="t", raft_password="p", ca_key="", ca_cert=""),
        provider=provider,
    )
    return reconciler, raft, agents, provider


def deploy(raft: FakeRaft, spec: dict[str, Any], deployment: str = "d1", zone: str | None = None) -> None:
    asyncio.run(
        raft.execute(
            command("deploy", project=spec, source_dir=None, deployment=deployment, at=0.0, public_zone=zone)
        )
    )


def ticks(reconciler: Leader, count: int) -> list[bool]:
    async def run() -> list[bool]:
        return [await reconciler.tick() for _ in range(count)]

    return asyncio.run(run())


def test_dependents_start_only_after_what_they_depend_on_runs(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    deploy(raft, project(service("db"), service("cache"), service("app", depends_on=["db", "cache"])))
    ticks(reconciler, 1)
    assert sorted(s for _, _, s in agents.calls) == ["cache", "db"]
    ticks(reconciler, 1)
    assert [s for _, _, s in agents.calls][-1] == "app"
    ticks(reconciler, 2)
    assert raft.state["deployment"]["state"] == "succeeded"  # type: ignore[index]
    assert len({raft.state["placements"][s] for s in ("db", "cache", "app")}) == 3  # spread
    # Nothing changed: further ticks push nothing.
    before = list(agents.calls)
    assert ticks(reconciler, 3) == [False, False, False]
    assert agents.calls == before


def test_a_changed_service_is_replaced_and_a_removed_one_removed(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    deploy(raft, project(service("a"), service("b")))
    ticks(reconciler, 3)
    agents.calls.clear()
    deploy(raft, project(service("a", envs={"MODE": "debug"})), deployment="d2")
    ticks(reconciler, 3)
    assert sorted((op, s) for op, _, s in agents.calls) == [("apply", "a"), ("remove", "b")]
    assert raft.state["deployment"]["state"] == "succeeded"  # type: ignore[index]


def test_a_failed_start_fails_the_deployment_once(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    agents.fail_image = "nope:1"
    deploy(raft, project(service("ok"), service("bad", image="nope:1")))
    ticks(reconciler, 4)
    deployment = raft.state["deployment"]
    assert deployment is not None and deployment["state"] == "failed"
    assert deployment["failed_service"] == "bad" and "nope:1" in (deployment["error"] or "")
    assert [s for op, _, s in agents.calls if op == "apply"].count("bad") == 1, (
        "retried within one deployment"
    )
    # A new deployment of the same spec tries again.
    deploy(raft, project(service("ok"), service("bad", image="nope:1")), deployment="d2")
    ticks(reconciler, 1)
    assert [s for op, _, s in agents.calls if op == "apply"].count("bad") == 2


def test_an_unreachable_node_loses_its_services_after_repeated_misses(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    deploy(raft, project(service("a"), service("b", internal_port=8001), service("c", internal_port=8002)))
    ticks(reconciler, 3)
    victim = raft.state["placements"]["a"]
    address = f"{raft.state['nodes'][victim]['address']}:31888"
    agents.down.add(address)
    ticks(reconciler, UNREACHABLE_AFTER - 1)
    assert raft.state["nodes"][victim]["status"] == "ready", "one slow poll must not move services"
    ticks(reconciler, 3)
    assert raft.state["nodes"][victim]["status"] == "unreachable"
    assert raft.state["placements"]["a"] != victim
    moved_to = raft.state["nodes"][raft.state["placements"]["a"]]
    assert "a" in agents.running[f"{moved_to['address']}:31888"]


def test_services_that_clash_on_a_port_ask_for_another_node(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, _, provider = parts
    deploy(raft, project(*(service(name) for name in "abcd")))  # all on port 8000: one per node
    ticks(reconciler, 2)
    assert len(raft.state["placements"]) == 3
    assert len(provider.provisioned) == 1


def test_the_fleet_grows_to_the_minimum_before_placing(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, provider = parts
    deploy(raft, project(service("a"), nodes=5))
    ticks(reconciler, 2)
    assert len(provider.provisioned) == 2, "asks once for the two missing nodes"
    assert agents.calls == [], "waits for the new nodes before placing"
    assert set(raft.state["provisioning"]) == {"new-1", "new-2"}


def test_destroy_removes_everything_then_retires_the_followers(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, provider = parts
    deploy(raft, project(service("a"), service("b")))
    ticks(reconciler, 3)
    asyncio.run(raft.execute(command("destroy", deployment="x1", at=1.0)))
    ticks(reconciler, 3)
    assert all(not running for running in agents.running.values())
    assert sorted(provider.retired) == ["node-3", "node-4"]
    assert sorted(raft.removed_members) == ["127.0.0.3:31889", "127.0.0.4:31889"]
    assert list(raft.state["nodes"]) == ["node-2"]
    assert raft.state["deployment"]["state"] == "destroyed"  # type: ignore[index]


def test_a_provider_that_cannot_start_nodes_fails_the_deployment(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, _, provider = parts

    def broken(request: NodeRequest) -> str:
        raise RuntimeError("no free 127.0.0.N address left for another local node")

    provider.reserve = broken  # type: ignore[method-assign]
    deploy(raft, project(service("a"), nodes=4))
    ticks(reconciler, 1)
    deployment = raft.state["deployment"]
    assert deployment is not None and deployment["state"] == "failed"
    assert (
        deployment["error"]
        == "cannot start another node: no free 127.0.0.N address left for another local node"
    )


def test_a_leader_cut_off_from_the_majority_acts_on_nothing(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, provider = parts
    raft.cut_off = True
    deploy(raft, project(service("a"), nodes=5))
    assert ticks(reconciler, 3) == [False, False, False]
    assert agents.calls == [] and provider.provisioned == []
    assert raft.state["placements"] == {}
    raft.cut_off = False
    ticks(reconciler, 3)
    assert len(provider.provisioned) == 2 and raft.barriers == 6  # healed: it grows the fleet again


def test_a_node_dead_for_too_long_is_removed_and_replaced(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, provider = parts
    spec = project(service("a"), service("b"))
    spec["project"]["cluster"] = {"replace_dead_after": 30}
    deploy(raft, spec)
    ticks(reconciler, 3)
    victim = next(n for n in ("node-3", "node-4") if n in raft.state["placements"].values())
    agents.down.add(f"{raft.state['nodes'][victim]['address']}:31888")
    ticks(reconciler, UNREACHABLE_AFTER + 1)
    assert raft.state["nodes"][victim]["status"] == "unreachable"
    assert victim in raft.state["nodes"] and provider.retired == [], "not dead for long enough yet"

    raft.state["nodes"][victim]["last_seen"] = 1.0  # silent since long ago
    ticks(reconciler, 2)
    assert victim not in raft.state["nodes"] and provider.retired == [victim]
    assert raft.removed_members == [f"{node(int(victim[-1]))['address']}:31889"]
    assert len(provider.provisioned) == 1, "the fleet grows back to its minimum of 3"
    assert victim not in raft.state["placements"].values()


def test_voters_stay_at_five_and_a_non_voter_replaces_a_lost_one(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    for n in (5, 6):
        asyncio.run(raft.execute(command("node_joined", node=node(n))))
    for n in (7, 8):
        asyncio.run(raft.execute(command("node_joined", node={**node(n), "voter": False})))
    spec = project(service("a"), nodes=7)
    spec["project"]["cluster"] = {"replace_dead_after": 30}
    deploy(raft, spec)
    ticks(reconciler, 3)
    assert len(raft.members()) == 5, "five voters already: nobody is promoted"
    assert [n["id"] for n in raft.state["nodes"].values() if not n.get("voter", True)] == ["node-7", "node-8"]

    agents.down.add("127.0.0.6:31888")
    ticks(reconciler, UNREACHABLE_AFTER + 1)
    raft.state["nodes"]["node-6"]["last_seen"] = 1.0
    ticks(reconciler, 2)
    assert "node-6" not in raft.state["nodes"]
    assert raft.state["nodes"]["node-7"]["voter"] is True and raft.state["nodes"]["node-8"]["voter"] is False
    assert len(raft.members()) == 5


def test_a_launch_is_an_intent_in_raft_first_and_a_new_leader_finishes_it(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, provider = parts
    seen_intents: list[dict[str, float]] = []
    real_provision = provider.provision

    def provision(node: str, request: NodeRequest) -> None:
        seen_intents.append(dict(raft.state["provisioning"]))
        real_provision(node, request)

    provider.provision = provision  # type: ignore[method-assign]
    deploy(raft, project(service("a"), nodes=4))
    ticks(reconciler, 1)
    assert provider.started == ["new-1"] and "new-1" in seen_intents[0], "intent committed before the call"

    # The leader dies before the node joins; its successor provisions the same id again.
    successor = Leader(
        cluster=raft,
        agents=agents,
        settings=reconciler.settings,
        secrets=reconciler.secrets,
        provider=provider,
    )
    ticks(successor, 2)
    assert provider.provision_calls == ["new-1", "new-1"] and provider.started == ["new-1"]
    assert provider.reserved == 1, "no second node for the same need"


def test_an_empty_follower_above_the_minimum_is_handed_back(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, _, provider = parts
    asyncio.run(raft.execute(command("node_joined", node=node(5))))
    deploy(raft, project(service("a"), service("b"), service("c"), nodes=3))
    ticks(reconciler, 4)
    assert len(provider.retired) == 1 and provider.retired[0] != "node-2", "one idle follower goes"
    assert sorted(raft.state["nodes"]) == sorted(set(raft.state["placements"].values()))
    ticks(reconciler, 3)
    assert len(raft.state["nodes"]) == 3, "never below the minimum"


def test_destroy_does_not_wait_for_an_unreachable_node(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, provider = parts
    deploy(raft, project(service("a"), service("b"), service("c")))
    ticks(reconciler, 4)
    # The last follower in the replica's order, so that a plain walk would retire the live one first.
    victim = [n for n in raft.state["nodes"] if n in raft.state["placements"].values() and n != "node-2"][-1]
    agents.down.add(f"{raft.state['nodes'][victim]['address']}:31888")
    ticks(reconciler, UNREACHABLE_AFTER + 1)
    asyncio.run(raft.execute(command("destroy", deployment="x1", at=0.0)))
    ticks(reconciler, 4)
    assert raft.state["deployment"]["state"] == "destroyed"  # type: ignore[index]
    assert victim in provider.retired, "the dead node's machine is handed back, with what it ran"
    # Removing the live follower first would leave the leader and a dead voter: no majority.
    assert raft.removed_members[0] == f"{raft_address_of(victim)}", "the dead voter leaves Raft first"


def raft_address_of(node_id: str) -> str:
    n = int(node_id.rsplit("-", 1)[1])
    return f"{node(n)['address']}:{node(n)['raft_port']}"


def test_no_idle_follower_is_retired_while_a_node_is_unreachable(parts) -> None:  # type: ignore[no-untyped-def]
    """Shrinking removes a live voter; with another voter dead that would cost the majority."""
    reconciler, raft, agents, provider = parts
    agents.down.add("127.0.0.3:31888")
    asyncio.run(raft.execute(command("node_status", node="node-3", status="unreachable", at=time.time())))
    deploy(raft, project(service("a"), nodes=1))  # a minimum of one node: two could go
    ticks(reconciler, 4)
    assert raft.state["placements"]["a"] != "node-3"
    assert provider.retired == [], "node-4 is idle, but retiring it would leave node-2 of {2, 3}"


def test_public_names_follow_a_service_the_cluster_moves(parts) -> None:  # type: ignore[no-untyped-def]
    """With a zone in the deployment, the leader publishes <service>.<domain> for services with an
    external port, once per change (not every pass), and again when a dead node's service moves."""
    reconciler, raft, agents, _ = parts
    provider = reconciler.provider = DnsProvider()
    spec = project(service("web", external_port=8080), service("db", internal_port=5432))
    spec["project"]["domain"] = "Shop.Example.com"
    asyncio.run(raft.execute(command("init", cluster="c1")))
    deploy(raft, spec, zone="Z123")
    ticks(reconciler, 4)
    first = raft.state["placements"]["web"]
    assert provider.published == [("Z123", {"web.shop.example.com": first}, "c1")], "owner: the cluster"

    agents.down.add(f"{raft.state['nodes'][first]['address']}:31888")
    ticks(reconciler, UNREACHABLE_AFTER + 3)
    moved = raft.state["placements"]["web"]
    assert moved != first
    assert provider.published[-1] == ("Z123", {"web.shop.example.com": moved}, "c1")
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
    assert [names for _, names, _ in provider.published] == [
        {"web.shop.example.com": raft.state["placements"]["web"]}
    ]

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
    assert [spec.env["A"] for spec in agents.specs if spec.service == "b"] == [a_node["address"]]


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


def test_a_new_term_starts_with_fresh_duties(parts) -> None:  # type: ignore[no-untyped-def]
    """What a leader learned in one term (a push that failed, missed polls) is not carried into
    the next: a new term acts on the replicated state alone, as a leader on another node would."""
    reconciler, raft, agents, _ = parts
    agents.fail_image = "busybox:1.36"
    deploy(raft, project(service("a")))
    ticks(reconciler, 2)
    first = reconciler.duties
    assert first.converger.failed, "the failed push is remembered within the term"
    tries = len(agents.specs)
    ticks(reconciler, 2)
    assert len(agents.specs) == tries, "not retried in the same term"

    raft.current_term = agents.term = 8
    agents.fail_image = None
    ticks(reconciler, 1)
    assert reconciler.duties is not first and reconciler.duties.term == 8
    assert len(agents.specs) == tries + 1, "the new term tries again"
