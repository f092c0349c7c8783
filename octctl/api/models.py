"""The JSON shapes of oct-ctl's HTTP API, shared by the daemon and the CLI so they cannot drift apart."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from octctl.addresses import DEFAULT_DNS_PORT
from octctl.names import check_name
from octctl.runtime.base import Usage
from octctl.state.kv import MAX_VALUE_BYTES
from octctl.state.model import ServiceChange

API_VERSION = "v1"
#: The Raft term of the leader sending a command to an agent; agents refuse terms older than one seen.
TERM_HEADER = "X-Oct-Term"

DeploymentState = Literal["pending", "in_progress", "succeeded", "failed", "destroying", "destroyed"]
NodeStatus = Literal["joining", "ready", "unreachable", "retiring"]
#: What a deploy does to one service: ``started`` (new in the file), ``replaced`` (its spec changed),
#: ``removed`` (gone from the file) or ``unchanged``.


class ErrorBody(BaseModel):
    """Every non-2xx answer: a one-line reason, plus structured details (e.g. config problems)."""

    error: str
    details: list[str] = Field(default_factory=list)


class Health(BaseModel):
    ok: bool
    cluster: str
    node: str
    version: str
    leader: str | None = None
    artifact: str | None = Field(
        default=None,
        description="sha256 of the oct wheel this node was installed from (AWS nodes); None for a checkout",
    )


class DeployRequest(BaseModel):
    """``config`` is the oct.toml model as JSON (env already rendered by the CLI)."""

    config: dict[str, Any]
    source_dir: str | None = None
    public_zone: str | None = Field(
        default=None,
        pattern=r"^(/hostedzone/)?[A-Za-z0-9]{1,32}$",
        description="the provider's DNS zone of project.domain (a Route53 hosted zone id on AWS), made "
        "by the CLI; the leader keeps <service>.<domain> pointing at the nodes running the services",
    )


PlannedChange = Literal["create", "update", "replace", "remove", "unchanged"]
#: What a plan shows instead of an env value: envs hold secrets.
SENSITIVE = "(sensitive value)"


class FieldChange(BaseModel):
    field: str = Field(description="dotted: cpus, envs.API_KEY, healthcheck.path ...")
    before: Any = Field(default=None, description="None: not set before; env values are masked")
    after: Any = Field(default=None, description="None: not set after; env values are masked")


class PlannedInstance(BaseModel):
    name: str
    node: str | None = Field(
        description="where it would run: a node id, new-N for a node to launch, None: no room"
    )
    was: str | None = Field(default=None, description="where it runs now")


class ServicePlan(BaseModel):
    name: str
    change: PlannedChange = Field(
        description="update: its instances keep running (e.g. more replicas); replace: they are restarted"
    )
    fields: list[FieldChange] = Field(default_factory=list)
    instances: list[PlannedInstance] = Field(default_factory=list)


class PlanResponse(BaseModel):
    """What deploying a config would do to the running cluster (``POST /v1/plan``): computed by
    the leader from its state, changing nothing."""

    cluster: str
    deployment: str | None = Field(description="the current deployment, which the plan is against")
    changed: bool = Field(description="false: the deploy would change nothing")
    services: list[ServicePlan]
    launch: list[str] = Field(default_factory=list, description="nodes the leader would launch (new-1 ...)")
    launch_types: dict[str, str] = Field(
        default_factory=dict, description="the machine type of each node to launch, where it has one (aws)"
    )
    retire: list[str] = Field(default_factory=list, description="nodes the leader would hand back")
    unplaced: list[str] = Field(default_factory=list, description="instances with no room even then")
    nodes_before: int
    nodes_after: int
    monthly_usd_before: float | None = None
    monthly_usd_after: float | None = None
    cost_note: str = ""


class DeployResponse(BaseModel):
    """``changes`` says per service what this deploy does to it (absent from older nodes: empty)."""

    deployment: str
    changed: bool
    changes: dict[str, ServiceChange] = Field(default_factory=dict)


class HistoryView(BaseModel):
    """One recorded deployment, without the project it deployed (its envs may hold secrets)."""

    id: str
    generation: int
    started_at: float
    finished_at: float | None
    state: str
    changes: dict[str, str]
    error: str | None = None
    failed_service: str | None = None
    log_tail: list[str] = Field(default_factory=list)
    rollback_of: str | None = None
    current: bool = False


class HistoryResponse(BaseModel):
    """The last deployments, newest first (at most 20)."""

    deployments: list[HistoryView]


class RollbackRequest(BaseModel):
    """Deploy a recorded deployment's project again; none named: the last one that succeeded
    before the current one."""

    deployment: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")


SNAPSHOT_ID = re.compile(r"snap-[0-9a-f]{8,17}")


class SnapshotRestoreRequest(BaseModel):
    """``oct restore SERVICE BACKUP`` on AWS: the EBS snapshot to fill each volume from."""

    snapshots: dict[str, str] = Field(
        description="volume name -> snapshot id (snap-...)", min_length=1, max_length=64
    )

    @field_validator("snapshots")
    @classmethod
    def _ids(cls, value: dict[str, str]) -> dict[str, str]:
        for volume, snapshot in value.items():
            check_name("volume", volume)
            if not SNAPSHOT_ID.fullmatch(snapshot):
                raise ValueError(f"{snapshot!r} is not an EBS snapshot id (snap-...)")
        return value


class RollbackResponse(DeployResponse):
    rollback_of: str


class DestroyResponse(BaseModel):
    deployment: str


class JoinRequest(BaseModel):
    node: str
    address: str
    api_port: int = Field(ge=1, le=65535)
    raft_port: int = Field(ge=1, le=65535)
    dns_port: int = Field(default=DEFAULT_DNS_PORT, ge=1, le=65535)
    proof: str = Field(
        default="",
        pattern=r"^[0-9a-f]{0,64}$",
        description="Secrets.raft_proof(cluster, node, address, raft_port): 64 hex digits",
    )
    voter: bool = Field(default=True, description="false: join as a non-voting replica")
    cpus: int = Field(gt=0)
    memory: int = Field(gt=0)
    instance_type: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9.\-]+$",
        description="the machine's type (aws), for its price",
    )


class MembersResponse(BaseModel):
    """Raft addresses (``host:port``) of the current voting members; ``voter_slots`` says how many
    more may join as voters (a joining node picks its role from it; the leader has the last word)."""

    members: list[str]
    voter_slots: int = 0


class DeploymentView(BaseModel):
    id: str
    state: DeploymentState
    message: str = ""
    failed_service: str | None = None
    error: str | None = None
    log_tail: list[str] = Field(default_factory=list)


class NodeView(BaseModel):
    id: str
    address: str
    api_port: int
    role: Literal["leader", "follower", "non-voter"]
    status: NodeStatus
    cpus: int
    memory: int
    cpus_used: int
    memory_used: int
    last_seen: float | None = None
    instance_type: str | None = Field(default=None, description="the machine's type (aws)")


class InstanceView(BaseModel):
    """One instance of a service: where it runs, the port it listens on there, how it is doing."""

    name: str
    node: str | None
    address: str | None
    port: int | None = None
    state: str
    #: The deployment whose spec it runs (its version), and that spec's content hash.
    deployment: str = ""
    spec_hash: str = ""
    #: The node's verdict from the service's healthcheck (``none``: it has none).
    health: str = "none"
    health_output: str = ""
    restarts: int = 0
    #: Out of DNS and the ingress, about to be stopped or replaced.
    draining: bool = False
    #: An extra instance of a start-first update (``web.4`` of three), removed when it ends.
    surge: bool = False


class ServiceView(BaseModel):
    name: str
    node: str | None
    address: str | None
    runtime: str
    state: str
    endpoint: str | None = None
    #: Where users reach a public service: ``https://<name>/`` per site name once its certificate
    #: is issued (``http://`` until then), and its ``external_port`` at the node's public address.
    urls: list[str] = Field(default_factory=list)
    restarts: int = 0
    error: str | None = None
    #: Every instance (``replicas``); ``node``, ``state`` and the rest above are the first one's.
    instances: list[InstanceView] = Field(default_factory=list)


#: Bumped when a field of ``oct status --json`` changes meaning or goes away (added ones do not).
STATUS_SCHEMA = 2


VolumeState = Literal["in use", "pending", "waiting", "unused", "kept"]


class VolumeView(BaseModel):
    """One volume of the project, as ``oct volumes`` shows it."""

    name: str
    service: str = Field(description="the service that declares it ('' if none does any more)")
    node: str | None = Field(description="the node that holds its data (None: not created yet)")
    state: VolumeState = Field(
        description="in use: its service runs on its node; pending: not created yet; waiting: its "
        "node is not ready, so its service waits; unused: no service declares it any more; kept: "
        "left by `oct destroy`, found with no cluster"
    )
    where: str | None = Field(default=None, description="where its data is (a Docker volume, a folder)")
    size_gb: int | None = Field(default=None, description="its size (aws); local volumes are not sized")
    disk: str | None = Field(default=None, description="the EBS volume that holds its data (aws)")


class StatusResponse(BaseModel):
    """A node's local view: ``stale`` is true when it comes from a replica that is not the leader."""

    schema_version: int = Field(default=STATUS_SCHEMA, description="of this document (oct status --json)")
    cluster: str
    project: str | None
    node: str
    leader: str | None
    stale: bool
    deployment: DeploymentView | None
    nodes: list[NodeView]
    services: list[ServiceView]
    volumes: list[VolumeView] = Field(default_factory=list)


class EventView(BaseModel):
    """One entry of the cluster's event and audit trail (``octctl/state/events.py``)."""

    seq: int = Field(description="its place in the trail; ask for what came after the last one seen")
    at: float | None = Field(description="Unix time (None: noted by a command from before they carried one)")
    kind: str = Field(description="deployment.*, node.*, instance.*, leader.elected or audit")
    subject: str = Field(description="a deployment, node or instance@node; for audit, who called")
    message: str


class EventsResponse(BaseModel):
    events: list[EventView]
    last: int = Field(description="the sequence number of the newest entry in the trail (0: none)")


class NodeUsage(BaseModel):
    """What one node's instances use (``oct top``), or why the node did not say."""

    node: str
    instances: list[Usage] = Field(default_factory=list)
    error: str | None = Field(default=None, description="the node did not answer: why")


class UsageResponse(BaseModel):
    at: float = Field(description="when it was gathered (Unix time): CPU rates divide by its differences")
    nodes: list[NodeUsage]


class UiLink(BaseModel):
    """A dashboard login link (``oct ui``): a path on the node that made it, good once."""

    path: str = Field(description="open it on the same node: https://<node address>:<api port><path>")
    expires_in: int = Field(description="seconds it works for")


class KvPut(BaseModel):
    value: str = Field(description="at most 64 KiB once encoded as UTF-8")

    @field_validator("value")
    @classmethod
    def _bounded_in_bytes(cls, value: str) -> str:
        """The limit is on what Raft replicates: bytes, not characters (an emoji is four)."""
        if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            raise ValueError(f"value is over {MAX_VALUE_BYTES} bytes in UTF-8")
        return value


class KvEntryView(BaseModel):
    """``revision`` is the store's revision at this key's last write (a total order over writes).
    ``stale`` is true when a follower answered from its own replica (``?stale=true``)."""

    key: str
    value: str
    revision: int
    stale: bool = False


class ReplicaView(BaseModel):
    """One node's own replica, unforwarded: what tests and operators compare across nodes."""

    node: str
    term: int
    leader: str | None
    is_leader: bool
    version: int
    commit_index: int
    kv_revision: int
    state_hash: str
