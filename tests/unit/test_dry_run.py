"""The leader's dry run of a deploy (``octctl/dry_run.py``) on hand-made states: what changes per
service, where instances go, the nodes launched and retired, env values never shown."""

from __future__ import annotations

from typing import Any

from octctl.config import parse_config_data
from octctl.dry_run import NodeFacts, dry_run, field_changes
from octctl.instance_ports import instance_ports
from octctl.scheduler import NodeCapacity
from octctl.state.model import apply_command, command, empty_state
from octctl.state.shape import ClusterState
from tests.unit.leader_fakes import node, project, service

FACTS = NodeFacts(NodeCapacity("node-1", 4000, 4096), "node-1", "local", None, "oct")


def running(spec: dict[str, Any], nodes: int = 3, placements: dict[str, str] | None = None) -> ClusterState:
    state = empty_state()
    state["cluster"] = "c-test"
    for n in range(1, nodes + 1):
        apply_command(state, command("node_joined", node=node(n)))
    stored = parse_config_data(spec).model_dump(mode="json")  # as the deploy route stores it
    apply_command(state, command("deploy", project=stored, source_dir=None, deployment="d1", at=0.0))
    ports = instance_ports(parse_config_data(spec), placements or {}, state)  # (as the leader gives them)
    apply_command(state, command("set_placements", placements=placements or {}, ports=ports, at=1.0))
    return state


def plan(state: ClusterState, spec: dict[str, Any]) -> dict[str, Any]:
    return dry_run(state, parse_config_data(spec), None, FACTS).model_dump()


def test_the_same_config_changes_nothing() -> None:
    spec = project(service("web"), service("db"))
    found = plan(running(spec, placements={"web": "node-1", "db": "node-2"}), spec)
    assert found["changed"] is False and [s["change"] for s in found["services"]] == ["unchanged"] * 2
    assert found["launch"] == [] and found["retire"] == [] and found["nodes_after"] == 3
    assert found["deployment"] == "d1" and found["monthly_usd_before"] == found["monthly_usd_after"] == 0


def test_env_values_are_masked_and_an_env_change_replaces() -> None:
    before = project(service("web", envs={"TOKEN": "old-secret"}))
    after = project(service("web", envs={"TOKEN": "new-secret", "MORE": "x"}))
    found = plan(running(before, placements={"web": "node-1"}), after)
    (web,) = found["services"]
    assert web["change"] == "replace"
    assert web["fields"] == [
        {"field": "envs.MORE", "before": None, "after": "(sensitive value)"},
        {"field": "envs.TOKEN", "before": "(sensitive value)", "after": "(sensitive value)"},
    ]
    assert "secret" not in repr(found)


def test_more_replicas_update_in_place_on_distinct_real_nodes() -> None:
    state = running(project(service("web")), placements={"web": "node-2"})
    (web,) = plan(state, project(service("web", replicas=3)))["services"]
    assert web["change"] == "update" and web["fields"] == [{"field": "replicas", "before": 1, "after": 3}]
    placed = {i["name"]: (i["node"], i["was"]) for i in web["instances"]}
    assert placed["web"] == ("node-2", "node-2")
    assert {placed["web.2"][0], placed["web.3"][0]} == {"node-1", "node-3"}


def test_created_and_removed_services_and_the_nodes_that_come_and_go() -> None:
    state = running(project(service("web"), service("old")), placements={"web": "node-1", "old": "node-3"})
    found = plan(state, project(service("web"), service("big", cpus=3900, memory=4000), nodes=3))
    changes = {s["name"]: s for s in found["services"]}
    assert changes["old"]["change"] == "remove" and changes["old"]["instances"] == [
        {"name": "old", "node": None, "was": "node-3"}
    ]
    assert changes["big"]["change"] == "create" and changes["big"]["instances"][0]["node"] in (
        "node-2",
        "node-3",
    )
    # Fewer nodes wanted: the idle follower goes, never the leader.
    shrunk = plan(state, project(service("web"), nodes=2))
    assert shrunk["retire"] in (["node-3"], ["node-2"]) and shrunk["nodes_after"] == 2
    # More than fits: a node is launched for it.
    bigger = (service(f"s{i}", cpus=3000, internal_port=8001 + i) for i in range(4))
    grown = plan(state, project(service("web"), *bigger, nodes=3))
    assert grown["launch"] == ["new-1"] and grown["nodes_after"] == 4
    assert any(i["node"] == "new-1" for s in grown["services"] for i in s["instances"])


def test_field_changes_are_dotted() -> None:
    assert [c.field for c in field_changes({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4})] == [
        "a.c",
        "d",
    ]
