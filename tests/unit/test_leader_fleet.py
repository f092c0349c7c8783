"""The leader keeps the fleet: nodes join, fall silent, are replaced, and are handed back.

An unreachable node loses its services only after repeated misses; the fleet grows to its
minimum (and for services that clash on a port) before placing, each launch an intent in Raft
first; a node dead for too long is removed and replaced, voters stay at five, an idle follower
above the minimum is handed back unless that could cost the majority, and destroy removes
everything and retires the followers without waiting for a dead one.
"""

from __future__ import annotations

import asyncio
import time

from octctl.leader import Leader
from octctl.leader.liveness import UNREACHABLE_AFTER
from octctl.providers.base import NodeRequest
from octctl.state.model import command
from tests.unit.leader_fakes import deploy, node, project, raft_address_of, service, ticks


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


def test_an_empty_follower_above_the_minimum_is_handed_back(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, _, provider = parts
    asyncio.run(raft.execute(command("node_joined", node=node(5))))
    deploy(raft, project(service("a"), service("b"), service("c"), nodes=3))
    ticks(reconciler, 4)
    assert len(provider.retired) == 1 and provider.retired[0] != "node-2", "one idle follower goes"
    assert sorted(raft.state["nodes"]) == sorted(set(raft.state["placements"].values()))
    ticks(reconciler, 3)
    assert len(raft.state["nodes"]) == 3, "never below the minimum"


def test_no_idle_follower_is_retired_while_a_node_is_unreachable(parts) -> None:  # type: ignore[no-untyped-def]
    """Shrinking removes a live voter; with another voter dead that would cost the majority."""
    reconciler, raft, agents, provider = parts
    agents.down.add("127.0.0.3:31888")
    asyncio.run(raft.execute(command("node_status", node="node-3", status="unreachable", at=time.time())))
    deploy(raft, project(service("a"), nodes=1))  # a minimum of one node: two could go
    ticks(reconciler, 4)
    assert raft.state["placements"]["a"] != "node-3"
    assert provider.retired == [], "node-4 is idle, but retiring it would leave node-2 of {2, 3}"


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
