"""The cluster state and the only functions that change it.

Every change is a *command* (a small JSON-able dict) that Raft commits in the same order on every
node; :func:`apply_command` then runs here on each replica. So these functions must be
deterministic: no clock, no randomness, no I/O — times and ids arrive inside the command, chosen
once by the leader that proposed it.

The state is plain dicts and lists (not classes) so that the Raft journal and snapshots stay
readable across versions of oct.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal, NotRequired, TypedDict

from octctl.state.history import HistoryEntry, remember, settle

#: What a deploy does to one service, worked out by the ``deploy`` command (and shown by the CLI).
ServiceChange = Literal["started", "replaced", "removed", "unchanged"]

#: Voting members at most. Beyond this, nodes join as non-voting replicas: every commit waits for
#: a majority of voters, so more voters mean slower writes without a useful gain in fault
#: tolerance (5 voters already survive 2 failures), as in Consul and Nomad.
MAX_VOTERS = 5


class NodeRecord(TypedDict):
    id: str
    address: str
    api_port: int
    raft_port: int
    dns_port: NotRequired[int]  # absent in states written before nodes served DNS: then 53
    cpus: int
    memory: int
    status: str  # joining | ready | unreachable | retiring
    voter: NotRequired[bool]  # absent in states written before non-voters existed: then a voter
    public_address: NotRequired[str]  # the provider's public IPv4 of the node (aws), once known
    joined_at: float
    last_seen: float | None


class DeploymentRecord(TypedDict):
    id: str
    generation: int
    state: str  # pending | in_progress | succeeded | failed | destroying | destroyed
    started_at: float
    finished_at: float | None
    message: str
    failed_service: str | None
    error: str | None
    log_tail: list[str]


def api_address(node: NodeRecord) -> str:
    """Where a node's API (and agent) answers: ``host:port``."""
    return f"{node['address']}:{node['api_port']}"


def raft_address(node: NodeRecord) -> str:
    """A node's Raft member address: ``host:port``."""
    return f"{node['address']}:{node['raft_port']}"


def pending_voters(state: ClusterState, members: list[str]) -> list[str]:
    """Nodes the leader made voters that are not Raft members yet (a promotion under way): they
    hold a voter seat already, so admission counts them."""
    return sorted(
        n["id"]
        for n in state["nodes"].values()
        if n.get("voter", True)
        and n["status"] != "retiring"
        and f"{n['address']}:{n['raft_port']}" not in members
    )


class AcmeState(TypedDict):
    """What HTTPS needs on every node: the leader's account at the CA (reused by the next leader),
    the answers to the challenges under way (any node may be asked), and each public service's
    certificate with its key (every node serves it). Secrets, like the project's envs: the state
    is never served whole by the API."""

    account: dict[str, str] | None  # {"key": PEM, "uri": the account's URL at the CA}
    challenges: dict[str, str]  # token -> key authorization
    certificates: dict[str, dict[str, Any]]  # service -> {names, fullchain, key, not_before, not_after}


class ClusterState(TypedDict):
    cluster: str
    project: dict[str, Any] | None  # the desired oct.toml model as JSON; None once destroyed
    source_dir: str | None
    #: Where the leader publishes ``<service>.<domain>`` (set by deploys on AWS). Replicas restored
    #: from snapshots older than the key have none: read it with ``.get``.
    public_zone: str | None
    generation: int
    deployment: DeploymentRecord | None
    nodes: dict[str, NodeRecord]
    placements: dict[str, str]  # service -> node id
    #: service -> the port its instance listens on (public services: see ``octctl/instance_ports.py``).
    #: Snapshots older than the key have none: read it with ``.get``.
    instance_ports: dict[str, int]
    instances: dict[str, dict[str, dict[str, Any]]]  # node id -> service -> observed InstanceStatus
    provisioning: dict[str, float]  # node id -> when the leader asked the provider for it
    #: Snapshots older than the key have none: read it with :func:`acme_of`.
    acme: AcmeState
    #: "<instance>@<node>" -> when the leader took it out of DNS and every ingress, before
    #: stopping or replacing it. Snapshots older than the key have none: see :func:`draining_of`.
    draining: dict[str, float]
    #: The last deployments, oldest first (``octctl/state/history.py``). Snapshots older than the
    #: key have none: read it with :func:`history_of`.
    history: list[HistoryEntry]


def history_of(state: ClusterState) -> list[HistoryEntry]:
    return state.get("history") or []


def draining_of(state: ClusterState) -> dict[str, float]:
    return state.get("draining") or {}


def drain_key(instance: str, node: str) -> str:
    """Draining is per instance *and* node: an instance moving to another node is draining on the
    old one while it starts, and is served, on the new one."""
    return f"{instance}@{node}"


def acme_of(state: ClusterState) -> AcmeState:
    """The state's HTTPS part, empty in replicas restored from snapshots older than it."""
    return state.get("acme") or {"account": None, "challenges": {}, "certificates": {}}


class CommandError(Exception):
    """A command that cannot apply to the current state; it changes nothing on any replica."""


def empty_state() -> ClusterState:
    return {
        "cluster": "",
        "project": None,
        "source_dir": None,
        "public_zone": None,
        "generation": 0,
        "deployment": None,
        "nodes": {},
        "placements": {},
        "instance_ports": {},
        "instances": {},
        "provisioning": {},
        "acme": {"account": None, "challenges": {}, "certificates": {}},
        "draining": {},
        "history": [],
    }


def _init(state: ClusterState, cluster: str) -> None:
    if state["cluster"] and state["cluster"] != cluster:
        raise CommandError(f"this replica belongs to cluster {state['cluster']}, not {cluster}")
    state["cluster"] = cluster


def _node_joined(state: ClusterState, node: NodeRecord) -> None:
    state["nodes"][node["id"]] = node
    state["provisioning"].pop(node["id"], None)


def _node_left(state: ClusterState, node: str) -> None:
    state["nodes"].pop(node, None)
    state["instances"].pop(node, None)
    state["provisioning"].pop(node, None)
    state["placements"] = {s: n for s, n in state["placements"].items() if n != node}
    ports = state.get("instance_ports", {})
    state["instance_ports"] = {s: p for s, p in ports.items() if s in state["placements"]}


def _node_status(state: ClusterState, node: str, status: str, at: float) -> None:
    record = state["nodes"].get(node)
    if record is None:
        return
    record["status"] = status
    if status == "ready":
        record["last_seen"] = at


def _node_role(state: ClusterState, node: str, voter: bool) -> None:
    """The leader's decision to promote a non-voter; the node acts on it by itself."""
    record = state["nodes"].get(node)
    if record is not None:
        record["voter"] = voter


def _node_public_address(state: ClusterState, node: str, address: str) -> None:
    record = state["nodes"].get(node)
    if record is not None:
        record["public_address"] = address


def _provisioning(state: ClusterState, node: str, at: float) -> None:
    state["provisioning"][node] = at


def _provisioning_done(state: ClusterState, node: str) -> None:
    state["provisioning"].pop(node, None)


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
    if current is not None and current["state"] in ("pending", "in_progress"):
        settle(state.setdefault("history", []), {**current, "state": "superseded", "finished_at": at})
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
        "project": project,
        "source_dir": source_dir,
        "public_zone": public_zone,
        "rollback_of": rollback_of,
    }
    remember(state.setdefault("history", []), entry)
    return {"deployment": deployment, "changed": True, "changes": changes}


def _destroy(state: ClusterState, deployment: str, at: float) -> dict[str, Any]:
    current = state["deployment"]
    if state["project"] is None and current is not None and current["state"] in ("destroying", "destroyed"):
        return {"deployment": current["id"]}
    state["project"] = None
    state["generation"] += 1
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


def _deployment_update(state: ClusterState, deployment: str, fields: dict[str, Any]) -> None:
    """Progress of the current deployment; an update for an older one is ignored (it was superseded)."""
    current = state["deployment"]
    if current is None or current["id"] != deployment:
        return
    allowed = {"state", "finished_at", "message", "failed_service", "error", "log_tail"}
    unknown = set(fields) - allowed
    if unknown:
        raise CommandError(f"unknown deployment fields: {sorted(unknown)}")
    current.update(fields)  # type: ignore[typeddict-item]
    settle(state.setdefault("history", []), current)


def _set_placements(
    state: ClusterState, placements: dict[str, str], ports: dict[str, int] | None = None
) -> None:
    missing = {n for n in placements.values() if n not in state["nodes"]}
    if missing:
        raise CommandError(f"placement on unknown nodes: {sorted(missing)}")
    ports = dict(ports or {})
    if not set(ports) <= set(placements) or not all(
        isinstance(p, int) and 0 < p < 65536 for p in ports.values()
    ):
        raise CommandError(f"instance ports for unplaced services or out of range: {ports}")
    state["placements"] = dict(placements)
    state["instance_ports"] = ports


def _observe(state: ClusterState, node: str, instances: dict[str, dict[str, Any]]) -> None:
    """Replace what ``node`` runs, as last seen by the leader."""
    if node not in state["nodes"]:
        return
    state["instances"][node] = instances


def _observe_one(state: ClusterState, node: str, service: str, instance: dict[str, Any] | None) -> None:
    if node not in state["nodes"]:
        return
    seen = state["instances"].setdefault(node, {})
    if instance is None:
        seen.pop(service, None)
    else:
        seen[service] = instance


def _acme(state: ClusterState) -> AcmeState:
    acme = acme_of(state)
    state["acme"] = acme
    return acme


def _acme_account(state: ClusterState, key: str, uri: str) -> None:
    _acme(state)["account"] = {"key": key, "uri": uri}


def _acme_challenges(state: ClusterState, add: dict[str, str], remove: list[str]) -> None:
    """Challenges to answer from now on, and finished ones no node needs to answer any more."""
    challenges = _acme(state)["challenges"]
    for token in remove:
        challenges.pop(token, None)
    challenges.update(add)


def _certificate(state: ClusterState, service: str, certificate: dict[str, Any] | None) -> None:
    """A service's new certificate, or (None) the end of one whose service is no longer served."""
    certificates = _acme(state)["certificates"]
    if certificate is None:
        certificates.pop(service, None)
        return
    if set(certificate) != {"names", "fullchain", "key", "not_before", "not_after"}:
        raise CommandError(f"malformed certificate record: {sorted(certificate)}")
    certificates[service] = certificate


def _drain(state: ClusterState, instance: str, node: str, at: float | None) -> None:
    """Take an instance out of rotation (``at``: since when), or (None) put it back."""
    draining = state.setdefault("draining", {})
    if at is None:
        draining.pop(drain_key(instance, node), None)
    else:
        draining.setdefault(drain_key(instance, node), at)


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
    "acme_account": _acme_account,
    "acme_challenges": _acme_challenges,
    "certificate": _certificate,
    "drain": _drain,
}


def command(name: str, **args: Any) -> dict[str, Any]:
    """Build a command; unknown names fail here, on the proposer, rather than on every replica."""
    if name not in _COMMANDS:
        raise ValueError(f"unknown command {name!r}")
    return {"op": name, "args": args}


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


def snapshot(state: ClusterState) -> ClusterState:
    return copy.deepcopy(state)
