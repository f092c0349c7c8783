"""The only functions that change the cluster state (its shape: :mod:`octctl.state.shape`).

Every change is a *command* (a small JSON-able dict) that Raft commits in the same order on every
node; :func:`apply_command` then runs here on each replica. So these functions must be
deterministic: no clock, no randomness, no I/O — times and ids arrive inside the command, chosen
once by the leader that proposed it.

The state's types and readers are re-exported here, where most code has always imported them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from octctl.state.events import audit, instance_events, leader_elected, note
from octctl.state.history import HistoryEntry, remember, settle
from octctl.state.ingress_state import acme_account, acme_challenges, certificate, drain
from octctl.state.shape import (
    MAX_VOTERS,
    AcmeState,
    ClusterState,
    CommandError,
    DeploymentRecord,
    NodeRecord,
    ServiceChange,
    acme_of,
    api_address,
    drain_key,
    draining_of,
    empty_state,
    history_of,
    pending_voters,
    raft_address,
    snapshot,
    targets_of,
    volumes_of,
)
from octctl.state.volume_state import volume_disk, volume_homes, volume_moved

__all__ = [
    "MAX_VOTERS",
    "AcmeState",
    "ClusterState",
    "CommandError",
    "DeploymentRecord",
    "NodeRecord",
    "ServiceChange",
    "acme_of",
    "api_address",
    "apply_command",
    "command",
    "drain_key",
    "draining_of",
    "empty_state",
    "history_of",
    "pending_voters",
    "raft_address",
    "rollback_command",
    "service_changes",
    "snapshot",
    "targets_of",
    "volumes_of",
]


def _init(state: ClusterState, cluster: str) -> None:
    if state["cluster"] and state["cluster"] != cluster:
        raise CommandError(f"this replica belongs to cluster {state['cluster']}, not {cluster}")
    state["cluster"] = cluster


def _node_joined(state: ClusterState, node: NodeRecord) -> None:
    if node["id"] not in state["nodes"]:
        note(state, "node.joined", node["id"], f"{node['id']} joined at {node['address']}", node["joined_at"])
    state["nodes"][node["id"]] = node
    state["provisioning"].pop(node["id"], None)
    _forget_launch_type(state, node["id"])


def _node_left(state: ClusterState, node: str, at: float | None = None) -> None:
    if node in state["nodes"]:
        note(state, "node.left", node, f"{node} left the cluster", at)
    state["nodes"].pop(node, None)
    state["instances"].pop(node, None)
    state["provisioning"].pop(node, None)
    _forget_launch(state, node)
    state["placements"] = {s: n for s, n in state["placements"].items() if n != node}
    ports = state.get("instance_ports", {})
    state["instance_ports"] = {s: p for s, p in ports.items() if s in state["placements"]}


def _node_status(state: ClusterState, node: str, status: str, at: float, reason: str | None = None) -> None:
    """``reason``: why the leader retires a node (a dead node it replaces says so)."""
    record = state["nodes"].get(node)
    if record is None:
        return
    was, record["status"] = record["status"], status
    if status == "ready":
        record["last_seen"] = at
    if status == "retiring" and reason:
        note(state, "node.replaced", node, f"{node} {reason}: retired, a new node takes its place", at)
    elif status != was and (status != "ready" or was == "unreachable"):
        kind = {"unreachable": "node.down", "ready": "node.up"}.get(status, f"node.{status}")
        note(state, kind, node, f"{node} is {status}", at)


def _node_role(state: ClusterState, node: str, voter: bool) -> None:
    """The leader's decision to promote a non-voter; the node acts on it by itself."""
    record = state["nodes"].get(node)
    if record is not None:
        record["voter"] = voter


def _node_public_address(state: ClusterState, node: str, address: str) -> None:
    record = state["nodes"].get(node)
    if record is not None:
        record["public_address"] = address


def _provisioning(
    state: ClusterState,
    node: str,
    at: float,
    instance_type: str | None = None,
    targets: list[str] | None = None,
) -> None:
    """A launch the leader is about to ask for; ``targets``: the instances it is bought for."""
    if node not in state["provisioning"]:
        what = f" ({instance_type})" if instance_type else ""
        note(state, "node.launching", node, f"{node}{what} is being launched", at)
    state["provisioning"][node] = at
    if instance_type:
        state["launch_types"] = {**state.get("launch_types", {}), node: instance_type}
    if targets:
        state["targets"] = {**targets_of(state), **dict.fromkeys(targets, node)}


def _provisioning_done(state: ClusterState, node: str) -> None:
    """A launch given up (it failed, or never joined): its instances are unplaced again."""
    state["provisioning"].pop(node, None)
    _forget_launch(state, node)


def _forget_launch_type(state: ClusterState, node: str) -> None:
    if node in state.get("launch_types", {}):
        state["launch_types"] = {n: t for n, t in state["launch_types"].items() if n != node}


def _forget_launch(state: ClusterState, node: str) -> None:
    """What a launch left in the state, once its node left or the launch was given up."""
    _forget_launch_type(state, node)
    if any(n == node for n in targets_of(state).values()):
        state["targets"] = {i: n for i, n in targets_of(state).items() if n != node}


def _project_of(config: dict[str, Any] | None) -> dict[str, Any]:
    """The ``[project]`` table of a desired state (the oct.toml model as JSON), {} for none."""
    project = (config or {}).get("project")
    return project if isinstance(project, dict) else {}


def service_changes(
    previous: dict[str, Any] | None,
    config: dict[str, Any],
    previous_source_dir: str | None,
    source_dir: str | None,
) -> dict[str, ServiceChange]:
    """What making ``config`` the desired state does to each service, compared with ``previous``.

    ``started``: not in the previous spec (or there was none: a first deploy, or after a destroy);
    ``replaced``: its part of the spec changed, or something every instance of it carries did (the
    project's name; the source folder for ``runtime = "process"``, its working directory);
    ``removed``: gone from the spec; ``unchanged`` otherwise. Services of ``config`` come first, in
    file order, then the removed ones in their previous order, so every replica returns the same.
    """
    old_project, new_project = _project_of(previous), _project_of(config)
    before = {s["name"]: s for s in old_project.get("services") or []}
    renamed = previous is not None and old_project.get("name") != new_project.get("name")
    moved = previous_source_dir != source_dir
    changes: dict[str, ServiceChange] = {}
    for service in new_project.get("services") or []:
        name = service["name"]
        old = before.get(name)
        if old is None:
            changes[name] = "started"
        elif old != service or renamed or (moved and service.get("runtime") == "process"):
            changes[name] = "replaced"
        else:
            changes[name] = "unchanged"
    for name in before:
        if name not in changes:
            changes[name] = "removed"
    return changes


def _deploy(
    state: ClusterState,
    project: dict[str, Any],
    source_dir: str | None,
    deployment: str,
    at: float,
    public_zone: str | None = None,
    rollback_of: str | None = None,
) -> dict[str, Any]:
    """Make ``project`` the desired state. An identical spec starts no new deployment.

    The result carries ``changes``, per service what this does to it (see :func:`service_changes`):
    computed from the state alone, so every replica returns the same.
    """
    changes = service_changes(state["project"], project, state["source_dir"], source_dir)
    state["public_zone"] = public_zone
    current = state["deployment"]
    if (
        state["project"] == project
        and state["source_dir"] == source_dir
        and current is not None
        and current["state"] not in ("failed", "destroying", "destroyed")
    ):
        return {"deployment": current["id"], "changed": False, "changes": changes}
    if current is not None:
        _replaced(state, current, deployment, rollback_of, at)
    state["project"] = project
    state["source_dir"] = source_dir
    state["generation"] += 1
    state["deployment"] = {
        "id": deployment,
        "generation": state["generation"],
        "state": "pending",
        "started_at": at,
        "finished_at": None,
        "message": "",
        "failed_service": None,
        "error": None,
        "log_tail": [],
    }
    entry: HistoryEntry = {
        "id": deployment,
        "generation": state["generation"],
        "started_at": at,
        "finished_at": None,
        "state": "pending",
        "changes": dict(changes),
        "error": None,
        "failed_service": None,
        "log_tail": [],
        "project": project,
        "source_dir": source_dir,
        "public_zone": public_zone,
        "rollback_of": rollback_of,
    }
    remember(state.setdefault("history", []), entry)
    _note_started(state, deployment, changes, rollback_of, at)
    return {"deployment": deployment, "changed": True, "changes": changes}


def _replaced(
    state: ClusterState, current: DeploymentRecord, deployment: str, rollback_of: str | None, at: float
) -> None:
    """What a new deployment does to the current one: a rollback of a failed one, or superseding
    one still under way."""
    if rollback_of is not None and current["state"] == "failed":
        why = f"{current['id']} failed: rolled back to {rollback_of} by {deployment}"
        note(state, "deployment.rolled_back", current["id"], why, at)
    if current["state"] in ("pending", "in_progress"):
        settle(state.setdefault("history", []), {**current, "state": "superseded", "finished_at": at})
        note(state, "deployment.superseded", current["id"], f"{current['id']} superseded by {deployment}", at)


def _note_started(
    state: ClusterState,
    deployment: str,
    changes: dict[str, ServiceChange],
    rollback_of: str | None,
    at: float,
) -> None:
    changed = ", ".join(f"{name} {change}" for name, change in changes.items() if change != "unchanged")
    what = f"rollback to {rollback_of}" if rollback_of else "started"
    note(state, "deployment.started", deployment, f"{deployment} {what}: {changed or 'nothing changed'}", at)


def _destroy(state: ClusterState, deployment: str, at: float) -> dict[str, Any]:
    current = state["deployment"]
    if state["project"] is None and current is not None and current["state"] in ("destroying", "destroyed"):
        return {"deployment": current["id"]}
    state["project"] = None
    state["generation"] += 1
    note(state, "deployment.destroying", deployment, f"{deployment} removes every service", at)
    state["deployment"] = {
        "id": deployment,
        "generation": state["generation"],
        "state": "destroying",
        "started_at": at,
        "finished_at": None,
        "message": "removing services",
        "failed_service": None,
        "error": None,
        "log_tail": [],
    }
    return {"deployment": deployment}


def _deployment_update(
    state: ClusterState, deployment: str, fields: dict[str, Any], at: float | None = None
) -> None:
    """Progress of the current deployment; an update for an older one is ignored (it was superseded)."""
    current = state["deployment"]
    if current is None or current["id"] != deployment:
        return
    allowed = {"state", "finished_at", "message", "failed_service", "error", "log_tail"}
    unknown = set(fields) - allowed
    if unknown:
        raise CommandError(f"unknown deployment fields: {sorted(unknown)}")
    ended = fields.get("state") if fields.get("state") != current["state"] else None
    progressed = fields.get("message") not in (None, "", current["message"])
    current.update(fields)  # type: ignore[typeddict-item]
    if progressed and current["state"] in ("pending", "in_progress"):
        note(state, "deployment.progressed", deployment, f"{deployment}: {current['message']}", at)
    settle(state.setdefault("history", []), current)
    if ended in ("succeeded", "failed", "destroyed"):
        why = (
            f": {current['failed_service'] or ''} {current['error'] or ''}".rstrip()
            if ended == "failed"
            else ""
        )
        note(state, f"deployment.{ended}", deployment, f"{deployment} {ended}{why}", current["finished_at"])


def _set_placements(
    state: ClusterState,
    placements: dict[str, str],
    ports: dict[str, int] | None = None,
    at: float | None = None,
) -> None:
    missing = {n for n in placements.values() if n not in state["nodes"]}
    if missing:
        raise CommandError(f"placement on unknown nodes: {sorted(missing)}")
    ports = dict(ports or {})
    if not set(ports) <= set(placements) or not all(
        isinstance(p, int) and 0 < p < 65536 for p in ports.values()
    ):
        raise CommandError(f"instance ports for unplaced services or out of range: {ports}")
    for name, node in sorted(placements.items()):
        was = state["placements"].get(name)
        if was is not None and was != node:
            note(state, "instance.moved", name, f"{name} moves from {was} to {node}", at)
    state["placements"] = dict(placements)
    state["instance_ports"] = ports
    # (a target is done once its instance is placed, or once its node is ready: placed there or not)
    waiting = set(state["provisioning"]) | {
        n for n, record in state["nodes"].items() if record["status"] == "joining"
    }
    targets = targets_of(state)
    if targets:
        state["targets"] = {i: n for i, n in targets.items() if i not in placements and n in waiting}


def _observe(
    state: ClusterState, node: str, instances: dict[str, dict[str, Any]], at: float | None = None
) -> None:
    """Replace what ``node`` runs, as last seen by the leader."""
    if node not in state["nodes"]:
        return
    instance_events(state, node, state["instances"].get(node, {}), instances, at)
    state["instances"][node] = instances


def _observe_one(
    state: ClusterState, node: str, service: str, instance: dict[str, Any] | None, at: float | None = None
) -> None:
    if node not in state["nodes"]:
        return
    seen = state["instances"].setdefault(node, {})
    instance_events(
        state,
        node,
        {service: seen[service]} if service in seen else {},
        {service: instance} if instance else {},
        at,
    )
    if instance is None:
        seen.pop(service, None)
    else:
        seen[service] = instance


_COMMANDS: dict[str, Callable[..., Any]] = {
    "init": _init,
    "node_joined": _node_joined,
    "node_left": _node_left,
    "node_status": _node_status,
    "node_role": _node_role,
    "node_public_address": _node_public_address,
    "provisioning": _provisioning,
    "provisioning_done": _provisioning_done,
    "deploy": _deploy,
    "destroy": _destroy,
    "deployment_update": _deployment_update,
    "set_placements": _set_placements,
    "observe": _observe,
    "observe_one": _observe_one,
    "acme_account": acme_account,
    "acme_challenges": acme_challenges,
    "certificate": certificate,
    "drain": drain,
    "volume_homes": volume_homes,
    "volume_disk": volume_disk,
    "volume_moved": volume_moved,
    "leader_elected": leader_elected,
    "audit": audit,
}


def command(name: str, **args: Any) -> dict[str, Any]:
    """Build a command; unknown names fail here, on the proposer, rather than on every replica."""
    if name not in _COMMANDS:
        raise ValueError(f"unknown command {name!r}")
    return {"op": name, "args": args}


def rollback_command(target: HistoryEntry, deployment: str, at: float) -> dict[str, Any]:
    """The deploy that makes a recorded deployment's project the desired one again."""
    return command(
        "deploy",
        project=target["project"],
        source_dir=target["source_dir"],
        public_zone=target["public_zone"],
        deployment=deployment,
        at=at,
        rollback_of=target["id"],
    )


def apply_command(state: ClusterState, cmd: dict[str, Any]) -> Any:
    """Apply one committed command. Errors are returned, not raised: a bad command must not stop
    the replica's apply loop, and since the state is only touched after validation it is unchanged."""
    try:
        fn = _COMMANDS[cmd["op"]]
        return fn(state, **cmd.get("args", {}))
    except CommandError as e:
        return {"error": str(e)}
    except (KeyError, TypeError) as e:
        return {"error": f"malformed command: {e}"}
