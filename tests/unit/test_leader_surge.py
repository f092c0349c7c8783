"""Start-first updates of processes, stepped one leader pass at a time against the fakes: surge
instances of the new version start first, an old instance is drained only while ``replicas`` others serve,
the surge leaves once every instance runs the new version, and a surge with no room is not
waited for (the update goes on stop-first, without growing the fleet)."""

from __future__ import annotations

import pytest

from octctl.instances import service_of
from octctl.leader import converge
from octctl.server.views import status_view
from tests.unit.leader_fakes import FakeAgents, FakeRaft, deploy, project, service, ticks

START_FIRST = {"order": "start-first"}


def process_service(name: str, **extra: object) -> dict[str, object]:
    """A process service: one replaced by a surge (a container is replaced beside instead)."""
    found = {**service(name, **extra), "runtime": "process", "command": "python3 serve.py"}
    found.pop("image")
    return found


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(converge, "DRAIN_GRACE", 0.0)


def _serving(raft: FakeRaft, agents: FakeAgents, name: str) -> dict[str, str]:
    """instance -> spec hash of every running instance of ``name`` that is in rotation."""
    draining = {key.partition("@")[0] for key in raft.state.get("draining", {})}
    return {
        status.service: status.spec_hash
        for instances in agents.running.values()
        for status in instances.values()
        if service_of(status.service) == name and status.service not in draining
    }


def _new_hashes(agents: FakeAgents) -> set[str]:
    return {spec.spec_hash for spec in agents.specs if spec.deployment == "d2"}


def test_a_start_first_update_keeps_every_replica_serving_and_the_surge_leaves_after(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    web = process_service("web", external_port=80, replicas=2, update=START_FIRST)
    deploy(raft, project(web))
    ticks(reconciler, 3)
    assert raft.state["deployment"]["state"] == "succeeded"  # type: ignore[index]
    agents.calls.clear()

    deploy(raft, project({**web, "envs": {"MODE": "new"}}), deployment="d2")
    first = ticks(reconciler, 1)
    assert first == [True]
    assert [(op, s) for op, _, s in agents.calls] == [("apply", "web.3")], "the surge starts first"
    seen_surge = False
    for _ in range(20):
        assert len(_serving(raft, agents, "web")) >= 2, "fewer than replicas in rotation"
        ticks(reconciler, 1)
        assert raft.state["deployment"]["message"].endswith("/2 instances running")  # type: ignore[index]
        shown = {
            i.name: i.surge for s in status_view(raft.view(), "node-2", None).services for i in s.instances
        }
        assert shown.get("web") is False and shown.get("web.2") is False
        seen_surge |= shown.get("web.3", False)
        if raft.state["deployment"]["state"] == "succeeded" and "web.3" not in raft.state["placements"]:  # type: ignore[index]
            break
    ticks(reconciler, 2)
    serving = _serving(raft, agents, "web")
    assert sorted(serving) == ["web", "web.2"], "the surge is removed"
    assert set(serving.values()) <= _new_hashes(agents), "every instance runs the new version"
    assert ("remove", "web.3") in [(op, s) for op, _, s in agents.calls]
    assert "web.3" not in raft.state["placements"] and not raft.state.get("draining")
    assert seen_surge, "oct status marks the surge instance while it runs"


def test_a_surge_with_no_room_is_not_waited_for_and_grows_nothing(parts) -> None:  # type: ignore[no-untyped-def]
    """An internal-only port is claimed on its node: three replicas on three nodes leave the
    surge nowhere to go."""
    reconciler, raft, agents, provider = parts
    db = service("db", replicas=3, update=START_FIRST)
    deploy(raft, project(db))
    ticks(reconciler, 3)
    deploy(raft, project({**db, "envs": {"MODE": "new"}}), deployment="d2")
    ticks(reconciler, 12)
    assert raft.state["deployment"]["state"] == "succeeded"  # type: ignore[index]
    assert set(_serving(raft, agents, "db").values()) <= _new_hashes(agents)
    assert len(_serving(raft, agents, "db")) == 3 and provider.provisioned == []
    assert "db.4" not in [s for _, _, s in agents.calls]


def test_a_first_deploy_and_an_unchanged_one_start_no_surge(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    web = process_service("web", external_port=80, update=START_FIRST)
    deploy(raft, project(web))
    ticks(reconciler, 3)
    deploy(raft, project(web), deployment="d2")
    ticks(reconciler, 3)
    assert [s for _, _, s in agents.calls] == ["web"]


def test_an_instance_draining_out_is_not_counted_as_serving(parts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A deploy right after a start-first update, while the last surge still drains out with the
    previous version: that surge serves nobody, so the only instance must wait for a new one."""
    reconciler, raft, agents, _ = parts
    web = process_service("web", external_port=80, update=START_FIRST)
    deploy(raft, project(web))
    ticks(reconciler, 3)
    deploy(raft, project({**web, "envs": {"MODE": "two"}}), deployment="d2")
    for _ in range(10):
        ticks(reconciler, 1)
        if any(key.startswith("web.2@") for key in raft.state["draining"]):
            break
    assert any(key.startswith("web.2@") for key in raft.state["draining"]), "the surge drains out"
    monkeypatch.setattr(converge, "DRAIN_GRACE", 1000.0)  # and is still draining when d3 comes
    deploy(raft, project({**web, "envs": {"MODE": "three"}}), deployment="d3")
    agents.calls.clear()
    ticks(reconciler, 5)
    assert ("apply", "web") not in [(op, s) for op, _, s in agents.calls], "replaced with nothing serving"
    monkeypatch.setattr(converge, "DRAIN_GRACE", 0.0)
    for _ in range(12):
        assert _serving(raft, agents, "web"), "nothing in rotation"
        ticks(reconciler, 1)
    assert raft.state["deployment"]["state"] == "succeeded"  # type: ignore[index]
    assert sorted(_serving(raft, agents, "web")) == ["web"]


def test_a_drain_ends_once_every_ready_nodes_ingress_has_let_the_instance_go(parts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Not before: a node that still routes to it, or has not said, keeps the instance running
    (up to the grace); then at once, without waiting the grace."""
    reconciler, raft, agents, _ = parts
    monkeypatch.setattr(converge, "DRAIN_GRACE", 1000.0)
    monkeypatch.setattr(converge, "DRAIN_SETTLE", 0.0)
    web = process_service("web", external_port=80, replicas=2)
    deploy(raft, project(web))
    ticks(reconciler, 3)
    deploy(raft, project({**web, "envs": {"MODE": "new"}}), deployment="d2")
    agents.calls.clear()
    ticks(reconciler, 3)
    (key,) = raft.state["draining"]
    name, _, node = key.partition("@")
    endpoint = f"{raft.state['nodes'][node]['address']}:{raft.state['instance_ports'][name]}"
    addresses = [f"{n['address']}:{n['api_port']}" for n in raft.state["nodes"].values()]
    assert agents.calls == [] and reconciler.duties.converger.waiting_on_drain, "nobody said yet"

    agents.routed = {a: frozenset({endpoint}) for a in addresses[:1]}
    agents.routed.update({a: frozenset() for a in addresses[1:]})
    ticks(reconciler, 2)
    assert agents.calls == [], "one node still routes to it"

    agents.routed = {a: frozenset() for a in addresses}
    ticks(reconciler, 1)
    assert ("apply", name) in [(op, s) for op, _, s in agents.calls], "replaced without the grace"
