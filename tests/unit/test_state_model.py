"""The replicated state transitions: deterministic, and a bad command changes nothing."""

from __future__ import annotations

import copy
from typing import Any

from octctl.state.model import ClusterState, NodeRecord, apply_command, command, empty_state

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
    assert first == {"deployment": "d1", "changed": True, "changes": {}}
    again = apply_command(state, command("deploy", project=PROJECT, source_dir=None, deployment="d2", at=2.0))
    assert again == {"deployment": "d1", "changed": False, "changes": {}}
    apply_command(state, command("deployment_update", deployment="d1", fields={"state": "failed"}))
    retry = apply_command(state, command("deploy", project=PROJECT, source_dir=None, deployment="d3", at=3.0))
    assert retry == {"deployment": "d3", "changed": True, "changes": {}}
    assert state["generation"] == 2


def config(*services: dict[str, Any], name: str = "p") -> dict[str, Any]:
    """The desired state as the API stores it: the oct.toml model, ``{"project": {...}}``."""
    return {"project": {"name": name, "services": list(services)}}


def svc(name: str, runtime: str = "process", **envs: str) -> dict[str, Any]:
    return {
        "name": name,
        "runtime": runtime,
        "command": f"run {name}",
        "cpus": 100,
        "memory": 64,
        "envs": envs,
    }


def deploy(
    state: ClusterState, spec: dict[str, Any], deployment: str, source_dir: str | None = "/src"
) -> Any:
    return apply_command(
        state, command("deploy", project=spec, source_dir=source_dir, deployment=deployment, at=1.0)
    )


def test_deploy_reports_what_it_does_to_each_service() -> None:
    state = empty_state()
    first = deploy(state, config(svc("db"), svc("api"), svc("web")), "d1")
    assert first["changes"] == {"db": "started", "api": "started", "web": "started"}

    # An identical redeploy: every service unchanged, and no new deployment.
    again = deploy(state, config(svc("db"), svc("api"), svc("web")), "d2")
    assert again == {
        "deployment": "d1",
        "changed": False,
        "changes": {"db": "unchanged", "api": "unchanged", "web": "unchanged"},
    }

    # One env value changed, one service gone, one new: in file order, then the removed ones.
    second = deploy(state, config(svc("db"), svc("api", GREETING="hi"), svc("cache")), "d3")
    assert second["changed"] is True
    assert list(second["changes"].items()) == [
        ("db", "unchanged"),
        ("api", "replaced"),
        ("cache", "started"),
        ("web", "removed"),
    ]


def test_what_every_instance_carries_replaces_the_services_too() -> None:
    state = empty_state()
    deploy(state, config(svc("proc"), svc("box", runtime="docker")), "d1", source_dir="/a")
    # A process runs in the source folder; a container does not.
    moved = deploy(state, config(svc("proc"), svc("box", runtime="docker")), "d2", source_dir="/b")
    assert moved["changes"] == {"proc": "replaced", "box": "unchanged"}
    # Instances are named after the project.
    renamed = deploy(
        state, config(svc("proc"), svc("box", runtime="docker"), name="q"), "d3", source_dir="/b"
    )
    assert renamed["changes"] == {"proc": "replaced", "box": "replaced"}


def test_after_a_destroy_every_service_is_started_again() -> None:
    state = empty_state()
    deploy(state, config(svc("db")), "d1")
    apply_command(state, command("destroy", deployment="x1", at=2.0))
    assert deploy(state, config(svc("db")), "d2")["changes"] == {"db": "started"}


def test_deploy_changes_are_the_same_on_every_replica() -> None:
    specs = [config(svc("a"), svc("b")), config(svc("b", X="1"), svc("c")), config(svc("c"))]
    results = []
    for _ in range(2):
        replica = empty_state()
        results.append([deploy(replica, copy.deepcopy(spec), f"d{i}") for i, spec in enumerate(specs)])
    assert results[0] == results[1]
    assert [r["changes"] for r in results[0]] == [
        {"a": "started", "b": "started"},
        {"b": "replaced", "c": "started", "a": "removed"},
        {"c": "unchanged", "b": "removed"},
    ]


def test_a_malformed_deploy_changes_nothing() -> None:
    state = empty_state()
    deploy(state, config(svc("a")), "d1")
    before = copy.deepcopy(state)
    bad = apply_command(
        state,
        command(
            "deploy",
            project=config({"runtime": "process"}),
            source_dir="/src",
            deployment="d2",
            at=2.0,
            public_zone="Z1",
        ),
    )
    assert "malformed" in bad["error"]
    assert state == before


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
