"""Start-first updates of containers, replaced beside: each instance's new version starts on the
other port of its pair while the running one keeps serving; no surge instance, no drain; the next
update goes back to the first port, and an unchanged deploy touches nothing. Stepped one leader
pass at a time against the fakes (the docker runtime's side is in tests/runtime)."""

from __future__ import annotations

from octctl.ingress.routes import Upstream
from octctl.instance_ports import PARTNER_OFFSET, assign_instance_ports, partner
from octctl.served_routes import routes_from_state
from tests.unit.leader_fakes import FakeAgents, FakeRaft, deploy, project, service, ticks

WEB = service("web", external_port=80, replicas=2, update={"order": "start-first"})


def _ports(agents: FakeAgents) -> dict[str, int | None]:
    return {s.service: s.port for instances in agents.running.values() for s in instances.values()}


def _update(reconciler, raft: FakeRaft, agents: FakeAgents, mode: str, deployment: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Deploy ``MODE = mode`` and step until it succeeds; the instances applied, in order."""
    agents.calls.clear()
    deploy(raft, project({**WEB, "envs": {"MODE": mode}}), deployment=deployment)
    for _ in range(20):
        ticks(reconciler, 1)
        if raft.state["deployment"]["state"] == "succeeded":  # type: ignore[index]
            break
    assert raft.state["deployment"]["state"] == "succeeded"  # type: ignore[index]
    return [s for op, _, s in agents.calls if op == "apply"]


def test_each_instance_starts_beside_on_its_partner_port_then_back(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    deploy(raft, project(WEB))
    ticks(reconciler, 3)
    first = _ports(agents)
    assert set(first) == {"web", "web.2"} and all(p is not None for p in first.values())

    applied = _update(reconciler, raft, agents, "two", "d2")
    assert sorted(applied) == ["web", "web.2"], "no surge instance, each replaced once"
    beside = [s for s in agents.specs if s.deployment == "d2"]
    assert all(s.beside for s in beside)
    assert _ports(agents) == {name: partner(port) for name, port in first.items()}  # type: ignore[arg-type]
    assert not raft.state.get("draining"), "nothing drains: the old one serves until its node retires it"
    assert raft.state["instance_ports"] == first, "the state keeps the pair's first port"

    _update(reconciler, raft, agents, "three", "d3")
    assert _ports(agents) == first, "the next update goes back to the first port"

    agents.calls.clear()
    deploy(raft, project({**WEB, "envs": {"MODE": "three"}}), deployment="d4")
    ticks(reconciler, 3)
    assert [op for op, _, _ in agents.calls] == [], "an unchanged service on its partner port stays"


def test_the_ingress_keeps_the_previous_generation_until_the_new_one_serves(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, _, _ = parts
    deploy(raft, project({**WEB, "replicas": 1}))
    ticks(reconciler, 3)
    node = next(iter(raft.state["instances"]))
    address = raft.state["nodes"][node]["address"]
    port = raft.state["instance_ports"]["web"]
    seen = raft.state["instances"][node]["web"]
    assert routes_from_state(raft.view(), address).routes[0].upstreams == (Upstream(address, port),)

    starting = {
        **seen,
        "port": partner(port),
        "previous_port": port,
        "health": "starting",
        "spec_hash": "new",
    }
    raft.state["instances"][node]["web"] = starting
    assert routes_from_state(raft.view(), address).routes[0].upstreams == (Upstream(address, port),)

    raft.state["instances"][node]["web"] = {**starting, "health": "healthy"}
    upstreams = routes_from_state(raft.view(), address).routes[0].upstreams
    assert upstreams == (Upstream(address, partner(port)),)

    raft.state["instances"][node]["web"] = {**starting, "health": "unhealthy", "previous_port": None}
    assert routes_from_state(raft.view(), address).routes[0].upstreams == ()


def test_a_port_is_given_only_with_its_partner_free() -> None:
    first = 20000
    ports = assign_instance_ports(
        proxied={"a", "b"},
        placements={"a": "n1", "b": "n1"},
        published={},
        before={},
        placed_before={},
        reserved={first + PARTNER_OFFSET},  # an external port in the upper half
    )
    assert ports == {"a": first + 1, "b": first + 2}
    assert partner(first + 1) == first + 1 + PARTNER_OFFSET and partner(partner(first + 1)) == first + 1

    kept = assign_instance_ports(
        proxied={"a"},
        placements={"a": "n1", "db": "n1"},
        published={"db": partner(first + 1)},  # a published port now sits on a's partner
        before={"a": first + 1},
        placed_before={"a": "n1"},
    )
    assert kept["a"] != first + 1, "a port whose partner was taken is given up for a whole pair"
