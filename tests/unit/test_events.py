"""The event and audit trail: what the commands note as they apply (deployments, nodes,
instances, moves), the two commands of its own, its bound, and reading it after a number."""

from __future__ import annotations

from typing import Any

from octctl.state.events import EVENTS_SIZE, events_after
from octctl.state.model import apply_command, command, empty_state
from octctl.state.shape import ClusterState, events_of
from tests.unit.leader_fakes import node, project, service


def trail(state: ClusterState) -> list[tuple[str, str, str]]:
    return [(e["kind"], e["subject"], e["message"]) for e in events_of(state)]


def applied(*commands: dict[str, Any]) -> ClusterState:
    state = empty_state()
    for cmd in commands:
        assert not isinstance(result := apply_command(state, cmd), dict) or "error" not in result, result
    return state


def test_deployments_and_nodes_are_noted_as_their_commands_apply() -> None:
    spec = project(service("web"), service("db", internal_port=5432))
    state = applied(
        command("node_joined", node=node(2)),
        command("deploy", project=spec, source_dir=None, deployment="d1", at=10.0),
        command(
            "deployment_update", deployment="d1", fields={"state": "in_progress", "message": "0/2"}, at=11.0
        ),
        command(
            "deployment_update", deployment="d1", fields={"message": "0/2"}, at=11.2
        ),  # the same: nothing
        command("deployment_update", deployment="d1", fields={"message": "1/2"}, at=11.5),
        command("deployment_update", deployment="d1", fields={"state": "succeeded", "finished_at": 12.0}),
        command("node_status", node="node-2", status="unreachable", at=20.0),
        command("node_status", node="node-2", status="unreachable", at=21.0),  # no change: no event
        command("node_status", node="node-2", status="ready", at=30.0),
        command("deploy", project=spec, source_dir=None, deployment="d1b", at=31.0),  # same: nothing new
        command("node_left", node="node-2", at=40.0),
    )
    assert trail(state) == [
        ("node.joined", "node-2", "node-2 joined at 127.0.0.2"),
        ("deployment.started", "d1", "d1 started: web started, db started"),
        ("deployment.progressed", "d1", "d1: 0/2"),
        ("deployment.progressed", "d1", "d1: 1/2"),
        ("deployment.succeeded", "d1", "d1 succeeded"),
        ("node.down", "node-2", "node-2 is unreachable"),
        ("node.up", "node-2", "node-2 is ready"),
        ("node.left", "node-2", "node-2 left the cluster"),
    ]
    assert [e["at"] for e in events_of(state)] == [0.0, 10.0, 11.0, 11.5, 12.0, 20.0, 30.0, 40.0]
    assert [e["seq"] for e in events_of(state)] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_dead_node_replaced_a_launch_and_a_rollback_are_noted() -> None:
    spec = project(service("web"))
    state = applied(
        command("node_joined", node=node(2)),
        command("node_status", node="node-2", status="retiring", at=5.0, reason="was unreachable for 60 s"),
        command("provisioning", node="node-3", at=6.0),
        command("provisioning", node="node-3", at=6.5),  # the same launch, retried: noted once
        command("deploy", project=spec, source_dir=None, deployment="d1", at=10.0),
        command("deployment_update", deployment="d1", fields={"state": "failed", "finished_at": 11.0}),
        command("deploy", project=project(service("web", cpus=200)), source_dir=None, deployment="d2",
                at=12.0, rollback_of="d0"),
    )  # fmt: skip
    assert trail(state)[1:3] == [
        ("node.replaced", "node-2", "node-2 was unreachable for 60 s: retired, a new node takes its place"),
        ("node.launching", "node-3", "node-3 is being launched"),
    ]
    assert ("deployment.rolled_back", "d1", "d1 failed: rolled back to d0 by d2") in trail(state)


def test_instances_are_noted_from_what_the_leader_observes() -> None:
    running = {"state": "running", "spec_hash": "h1", "deployment": "d1", "restarts": 0, "health": "healthy"}
    state = applied(
        command("node_joined", node=node(2)),
        command("node_joined", node=node(3)),
        command("observe", node="node-2", instances={"web": running}, at=1.0),
        command("observe", node="node-2", instances={"web": running}, at=2.0),  # the same: nothing
        command("observe", node="node-2", instances={"web": {**running, "restarts": 1}}, at=3.0),
        command(
            "observe_one",
            node="node-2",
            service="web",
            instance={**running, "restarts": 1, "health": "unhealthy", "health_output": "HTTP 500"},
            at=4.0,
        ),
        command("set_placements", placements={"web": "node-2"}, at=4.5),
        command("set_placements", placements={"web": "node-3"}, at=5.0),
        command("observe_one", node="node-2", service="web", instance=None, at=6.0),
        command(
            "observe",
            node="node-3",
            instances={"web": {**running, "state": "failed", "error": "no image"}},
            at=7.0,
        ),
    )
    assert trail(state)[2:] == [
        ("instance.started", "web@node-2", "web on node-2 runs deployment d1"),
        ("instance.restarted", "web@node-2", "web on node-2 restarted (1 in all)"),
        ("instance.unhealthy", "web@node-2", "web on node-2 fails its health check: HTTP 500"),
        ("instance.moved", "web", "web moves from node-2 to node-3"),
        ("instance.stopped", "web@node-2", "web on node-2 stopped"),
        ("instance.failed", "web@node-3", "web on node-3 failed: no image"),
    ]


def test_leaders_and_audits_are_commands_and_the_trail_is_bounded() -> None:
    state = applied(
        command("leader_elected", node="node-2", term=3, at=1.0),
        command(
            "audit",
            who="api token from 127.0.0.1",
            action="POST /v1/deploy",
            result="202 deployment d1",
            at=2.0,
        ),
    )
    assert trail(state) == [
        ("leader.elected", "node-2", "node-2 leads (term 3)"),
        ("audit", "api token from 127.0.0.1", "POST /v1/deploy: 202 deployment d1"),
    ]
    for n in range(EVENTS_SIZE + 5):
        apply_command(state, command("audit", who="me", action=f"call {n}", result="200", at=3.0))
    kept = events_of(state)
    assert len(kept) == EVENTS_SIZE and kept[-1]["seq"] == EVENTS_SIZE + 7 and kept[0]["seq"] == 8
    after = events_after(state, EVENTS_SIZE + 4, limit=10)
    assert [e["seq"] for e in after] == [EVENTS_SIZE + 5, EVENTS_SIZE + 6, EVENTS_SIZE + 7]
    assert [e["seq"] for e in events_after(state, 0, limit=2)] == [8, 9]
