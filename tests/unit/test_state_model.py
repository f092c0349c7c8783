"""The replicated state transitions: deterministic, and a bad command changes nothing."""

from __future__ import annotations

import copy

from octctl.state.model import NodeRecord, apply_command, command, empty_state

PROJECT = {"project": {"name": "p", "services": []}}


def node(node_id: str) -> NodeRecord:
    return {
        "id": node_id,
        "address": "127.0.0.9",
        "api_port": 31888,
        "raft_port": 31889,
        "cpus": 1000,
        "memory": 1024,
        "status": "ready",
        "joined_at": 1.0,
        "last_seen": 1.0,
    }


def test_same_commands_same_state_on_every_replica() -> None:
    commands = [
        command("init", cluster="c1"),
        command("node_joined", node=node("n1")),
        command("deploy", project=PROJECT, source_dir="/x", deployment="d1", at=5.0),
        command("set_placements", placements={"a": "n1"}),
        command("observe", node="n1", instances={"a": {"state": "running"}}),
    ]
    replicas = [empty_state(), empty_state()]
    for replica in replicas:
        for cmd in commands:
            apply_command(replica, copy.deepcopy(cmd))
    assert replicas[0] == replicas[1]
    assert replicas[0]["placements"] == {"a": "n1"}


def test_unchanged_deploy_starts_no_new_deployment_but_a_failed_one_is_retried() -> None:
    state = empty_state()
    first = apply_command(state, command("deploy", project=PROJECT, source_dir=None, deployment="d1", at=1.0))
    assert first == {"deployment": "d1", "changed": True}
    again = apply_command(state, command("deploy", project=PROJECT, source_dir=None, deployment="d2", at=2.0))
    assert again == {"deployment": "d1", "changed": False}
    apply_command(state, command("deployment_update", deployment="d1", fields={"state": "failed"}))
    retry = apply_command(state, command("deploy", project=PROJECT, source_dir=None, deployment="d3", at=3.0))
    assert retry == {"deployment": "d3", "changed": True}
    assert state["generation"] == 2


def test_updates_for_a_superseded_deployment_are_ignored() -> None:
    state = empty_state()
    apply_command(state, command("deploy", project=PROJECT, source_dir=None, deployment="d1", at=1.0))
    apply_command(state, command("destroy", deployment="x1", at=2.0))
    apply_command(state, command("deployment_update", deployment="d1", fields={"state": "succeeded"}))
    assert state["deployment"] is not None and state["deployment"]["state"] == "destroying"
    assert state["project"] is None


def test_bad_commands_return_an_error_and_change_nothing() -> None:
    state = empty_state()
    apply_command(state, command("node_joined", node=node("n1")))
    before = copy.deepcopy(state)
    assert (
        "unknown nodes" in apply_command(state, command("set_placements", placements={"a": "ghost"}))["error"]
    )
    assert "malformed" in apply_command(state, {"op": "deploy", "args": {"nope": 1}})["error"]
    assert "malformed" in apply_command(state, {"op": "no-such-op"})["error"]
    apply_command(state, command("init", cluster="c1"))
    before["cluster"] = "c1"
    assert "belongs to cluster c1" in apply_command(state, command("init", cluster="c2"))["error"]
    assert state == before


def test_a_node_leaving_takes_its_placements_and_instances_with_it() -> None:
    state = empty_state()
    apply_command(state, command("node_joined", node=node("n1")))
    apply_command(state, command("node_joined", node=node("n2")))
    apply_command(state, command("set_placements", placements={"a": "n1", "b": "n2"}))
    apply_command(state, command("observe", node="n1", instances={"a": {"state": "running"}}))
    apply_command(state, command("node_left", node="n1"))
    assert set(state["nodes"]) == {"n2"}
    assert state["placements"] == {"b": "n2"}
    assert "n1" not in state["instances"]
