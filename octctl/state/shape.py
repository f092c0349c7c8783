"""What the cluster state is: its typed parts, how to read the parts older snapshots lack, and
an empty one. The commands that change it are in :mod:`octctl.state.model` (and, for what the
ingress needs, :mod:`octctl.state.ingress_state`).

The state is plain dicts and lists (not classes) so that the Raft journal and snapshots stay
readable across versions of oct.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, NotRequired, TypedDict

from octctl.state.events import Event
from octctl.state.history import HistoryEntry

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
    instance_type: NotRequired[str]  # the machine's type (aws), as the node says when it joins
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


class VolumeRecord(TypedDict):
    """Where a volume's data lives: the node that first ran its service, which the service is pinned
    to from then on (``octctl/volumes.py``)."""

    service: str  # the service that declared it when it was first placed
    node: str
    created_at: float
    #: Providers with network disks (aws): the disk holding the data, its zone, the device name it
    #: was attached as and the node it is attached to now (:func:`volume_disk`). Absent on a local
    #: cluster, where the data is a folder or Docker volume of the node.
    disk: NotRequired[str]
    zone: NotRequired[str]
    device: NotRequired[str]
    attached: NotRequired[str]


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
    #: instance -> the node launched for it (``octctl/fleet_growth.py``), until the node is ready and
    #: the instance placed. Snapshots older than the key have none: read it with :func:`targets_of`.
    targets: dict[str, str]
    #: node id -> the machine type a launch under way asked for (a new leader finishing it must ask
    #: for the same). Snapshots older than the key have none: read it with ``.get``.
    launch_types: dict[str, str]
    #: Snapshots older than the key have none: read it with :func:`acme_of`.
    acme: AcmeState
    #: "<instance>@<node>" -> when the leader took it out of DNS and every ingress, before
    #: stopping or replacing it. Snapshots older than the key have none: see :func:`draining_of`.
    draining: dict[str, float]
    #: The last deployments, oldest first (``octctl/state/history.py``). Snapshots older than the
    #: key have none: read it with :func:`history_of`.
    history: list[HistoryEntry]
    #: volume name -> where its data lives. Snapshots older than the key have none: read it with
    #: :func:`volumes_of`.
    volumes: dict[str, VolumeRecord]
    #: The event and audit trail, oldest first (``octctl/state/events.py``). Snapshots older than
    #: the key have none: read it with :func:`events_of`.
    events: list[Event]


def events_of(state: ClusterState) -> list[Event]:
    return state.get("events") or []


def history_of(state: ClusterState) -> list[HistoryEntry]:
    return state.get("history") or []


def volumes_of(state: ClusterState) -> dict[str, VolumeRecord]:
    return state.get("volumes") or {}


def targets_of(state: ClusterState) -> dict[str, str]:
    return state.get("targets") or {}


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
        "targets": {},
        "launch_types": {},
        "acme": {"account": None, "challenges": {}, "certificates": {}},
        "draining": {},
        "history": [],
        "volumes": {},
        "events": [],
    }


def snapshot(state: ClusterState) -> ClusterState:
    """A copy no later command changes. The trail's entries are never changed once written, so
    its list is copied and its entries shared: a thousand of them cost a list, not a deep copy,
    on every change of the state."""
    events = state.get("events")
    memo: dict[int, Any] = {} if events is None else {id(events): list(events)}
    return copy.deepcopy(state, memo)
