"""``oct plan``: what a deploy would create and what it would cost, worked out offline.

Nothing here talks to AWS or to a cluster: the plan is a pure function of oct.toml (and of the
state file's record, when there is one), so it needs no credentials and can run in CI on every
change. The node count comes from replaying the leader's own placement (``octctl.scheduler``
through :func:`octctl.providers.aws.pricing.fleet_size`), so the plan shows the fleet a deploy
would really reach, not a back-of-the-envelope sum. Prices and their conventions (730-hour
month, what is left out) are those of :mod:`octctl.providers.aws.pricing`. The plan's terminal
form is :func:`octcli.terminal.plan_lines`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from octctl.addresses import DEFAULT_API_PORT, DEFAULT_RAFT_PORT
from octctl.api.models import PlanResponse
from octctl.config import AwsProvider, Config, LocalProvider
from octctl.config.validate import aws_settings
from octctl.fleet_cost import volumes_gb
from octctl.fleet_growth import project_fleet
from octctl.providers.aws import pricing
from octctl.providers.aws.mixed_fleet import MixedFleet
from octctl.scheduler import Demand, NodeCapacity, usage
from octctl.specs import demands as specs_demands

__all__ = ["DeployPlan", "ExistingCluster", "FargateComparison", "build"]

#: The layout of ``octctl.providers.aws.infra``: one VPC, a public subnet in each of two zones.
VPC_CIDR = "10.0.0.0/16"
SUBNET_CIDRS = ("10.0.1.0/24", "10.0.2.0/24")  # as infra.ensure_base carves them
ANYWHERE = "0.0.0.0/0"
MY_ADDRESS = "your address (looked up at deploy)"
#: Stands for the cluster id genesis mints (``c-`` and 8 hex digits), unknown before it runs.
NEW_CLUSTER = "<cluster>"
_PRICED_REGIONS = ("us-east-1", "us-west-2")

Role = Literal["leader", "follower"]


class PlannedResource(BaseModel):
    kind: str
    name: str
    detail: str


class PlannedNode(BaseModel):
    """One node: its size offered to services (after the reserve) and, on AWS, its type and price."""

    id: str
    role: Role
    instance_type: str | None = None
    arch: str | None = None
    cpus: int = Field(description="millicores offered to services")
    memory: int = Field(description="MB offered to services")
    hourly_usd: float | None = None
    monthly_usd: float | None = None
    services: list[str]


class FargateTaskLine(BaseModel):
    service: str
    vcpu: float
    memory_gb: float
    monthly_usd: float


class FargateComparison(BaseModel):
    """The same services on ECS Fargate: one task each, plus a load balancer if anything is public."""

    arch: Literal["x86_64", "arm64"] = Field(
        default="x86_64", description="Fargate's prices for the nodes' architecture: like with like"
    )
    tasks: list[FargateTaskLine]
    unpriced: list[str] = Field(description="services bigger than any Fargate task (16 vCPU, 120 GB)")
    load_balancer_monthly_usd: float
    volumes_monthly_usd: float = Field(
        default=0.0, description="the same gp3 EBS volumes, attached to the tasks, in monthly_usd"
    )
    monthly_usd: float
    ratio: float | None = Field(description="Fargate's monthly cost divided by the EC2 plan's")


class ExistingCluster(BaseModel):
    """What the state file says already runs; the plan cannot see more without asking the cluster."""

    cluster: str
    provider: str
    nodes: int
    state_file: str


class DeployPlan(BaseModel):
    """The answer of ``oct plan`` (``--json`` prints exactly this)."""

    project: str
    provider: Literal["local", "aws"]
    region: str | None = None
    hours_per_month: int
    reserve_cpus: int = 0
    reserve_memory: int = 0
    prices_as_of: str | None = Field(default=None, description="when the price table was read (aws)")
    node_extras_monthly_usd: float | None = Field(
        default=None, description="every node's root volume and public IPv4 a month (aws), in monthly_usd"
    )
    volumes_monthly_usd: float | None = Field(
        default=None, description="the services' volumes as gp3 EBS volumes a month (aws), in monthly_usd"
    )
    resources: list[PlannedResource]
    nodes: list[PlannedNode]
    monthly_usd: float | None = None
    fargate: FargateComparison | None = None
    existing: ExistingCluster | None = None
    changes: list[str]
    notes: list[str]
    diff: PlanResponse | None = Field(
        default=None, description="against the running cluster: what changes per service, on its real nodes"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def changed(self) -> bool:
        """Whether deploying would change anything (a first deploy always does)."""
        return self.diff.changed if self.diff is not None else True


def _usd(amount: Decimal) -> float:
    """Money for JSON: a number, to a hundredth of a cent (the table's own precision)."""
    return float(round(amount, 4))


def build(config: Config, existing: ExistingCluster | None = None, *, state_read: bool = True) -> DeployPlan:
    """The plan for ``config``; raises :class:`pricing.NoInstanceTypeFits` if no AWS fleet can run it.

    ``existing`` is the state file's record of a running cluster; ``state_read=False`` says the
    state lives where the plan does not look (S3), so "no cluster yet" is not claimed.
    """
    aws = aws_settings(config.project.provider)
    demands = specs_demands(config)
    if aws is None:
        local = config.project.provider.local if config.project.provider else None
        assert local is not None  # aws_settings is None only for a local project
        result = _local_plan(config, local, demands, existing)
    else:
        result = _aws_plan(config, aws, demands, existing)
    if not state_read:
        result.changes = [
            "the state is in S3 and oct plan does not read it (it stays offline): if a cluster exists, "
            "deploy creates only what is missing",
            *result.changes[1:],
        ]
    return result


def _roles(placements: Mapping[str, str], node_ids: Sequence[str]) -> list[tuple[str, Role, list[str]]]:
    """Each node with its role (the first is the genesis node, the leader) and its services."""
    by_node: dict[str, list[str]] = {node: [] for node in node_ids}
    for service, node in placements.items():
        by_node[node].append(service)
    return [
        (node, "leader" if i == 0 else "follower", sorted(by_node[node])) for i, node in enumerate(node_ids)
    ]


def _local_plan(
    config: Config, local: LocalProvider, demands: list[Demand], existing: ExistingCluster | None
) -> DeployPlan:
    capacity = NodeCapacity("new", local.cpus, local.memory)
    count, placements = pricing.fleet_size(demands, capacity, local.nodes)
    ids = [f"node-{i + 1}" for i in range(count)]
    nodes = [
        PlannedNode(id=node, role=role, cpus=local.cpus, memory=local.memory, services=services)
        for node, role, services in _roles(placements, ids)
    ]
    if existing is None:
        changes = [
            f"no cluster yet: `oct deploy` starts {count} oct-ctl process{'es' if count != 1 else ''} "
            "on this machine (127.0.0.N) and the services on them"
        ]
    else:
        changes = _changes_to_existing(existing, count)
    return DeployPlan(
        project=config.project.name,
        provider="local",
        hours_per_month=int(pricing.HOURS_PER_MONTH),
        resources=[],
        nodes=nodes,
        existing=existing,
        changes=changes,
        notes=[
            "local nodes are oct-ctl processes on this machine: nothing is bought, so there are no prices"
        ],
    )


def _aws_plan(
    config: Config, aws: AwsProvider, demands: list[Demand], existing: ExistingCluster | None
) -> DeployPlan:
    reserve = pricing.Reserve(cpus=aws.reserve_cpus, memory=aws.reserve_memory)
    fleet = project_fleet(config, demands)
    nodes = []
    for (node, role, services), t in zip(_roles(fleet.placements, fleet.node_ids), fleet.types, strict=True):
        offered = t.capacity(reserve)
        nodes.append(
            PlannedNode(
                id=node,
                role=role,
                instance_type=t.name,
                arch=t.arch,
                cpus=offered.cpus,
                memory=offered.memory,
                hourly_usd=_usd(t.hourly),
                monthly_usd=_usd(t.monthly),
                services=services,
            )
        )
    t = fleet.types[0]
    volumes = pricing.volumes_monthly(volumes_gb(config))
    fargate = _fargate(config, fleet.total_monthly + volumes, t.arch, volumes)
    if existing is None:
        changes = [
            "no cluster yet: `oct deploy` creates the resources and the leader listed here (genesis); "
            "the leader starts the followers and the services"
        ]
    else:
        changes = _changes_to_existing(existing, len(fleet.types))
    return DeployPlan(
        project=config.project.name,
        provider="aws",
        region=aws.region,
        hours_per_month=int(pricing.HOURS_PER_MONTH),
        reserve_cpus=reserve.cpus,
        reserve_memory=reserve.memory,
        resources=_aws_resources(config, aws, existing.cluster if existing else NEW_CLUSTER),
        nodes=nodes,
        prices_as_of=pricing.PRICES_AS_OF,
        node_extras_monthly_usd=_usd(pricing.node_extras_monthly()),
        volumes_monthly_usd=_usd(volumes),
        monthly_usd=_usd(fleet.total_monthly + volumes),
        fargate=fargate,
        existing=existing,
        changes=changes,
        notes=_aws_notes(aws, fleet, reserve, demands),
    )


def _aws_resources(config: Config, aws: AwsProvider, cluster: str) -> list[PlannedResource]:
    """What genesis creates before the first instance, as ``octctl.providers.aws.infra.ensure_base``
    does it (mirrored, not imported: that module loads boto3, and a plan must not need it)."""
    prefix = f"oct-{config.project.name}-{cluster}"
    iam_name = prefix[:64]
    api_sources = ", ".join(aws.api_allowed_cidrs) if aws.api_allowed_cidrs is not None else MY_ADDRESS
    resources = [
        PlannedResource(kind="vpc", name=f"{prefix}-vpc", detail=VPC_CIDR),
        PlannedResource(kind="internet gateway", name=f"{prefix}-igw", detail="attached to the VPC"),
        *(
            PlannedResource(
                kind="subnet", name=f"{prefix}-subnet-{i}", detail=f"{block}, public, one availability zone"
            )
            for i, block in enumerate(SUBNET_CIDRS)
        ),
        PlannedResource(kind="route table", name=f"{prefix}-rtb", detail=f"{ANYWHERE} -> internet gateway"),
        PlannedResource(kind="security group", name=f"{prefix}-nodes", detail="the nodes' firewall"),
        PlannedResource(
            kind="security group rule", name=f"api {DEFAULT_API_PORT}/tcp", detail=f"from {api_sources}"
        ),
        PlannedResource(
            kind="security group rule",
            name="between nodes",
            detail=f"API {DEFAULT_API_PORT}/tcp, Raft {DEFAULT_RAFT_PORT}/tcp, DNS 53/tcp+udp from the group",
        ),
    ]
    for service in config.project.services:
        if service.external_port is not None:
            resources.append(
                PlannedResource(
                    kind="security group rule",
                    name=f"{service.name} {service.external_port}/tcp",
                    detail=f"from {ANYWHERE} (external_port)",
                )
            )
    resources += [
        PlannedResource(
            kind="iam role", name=iam_name, detail="lets the leader start and stop this cluster's nodes only"
        ),
        PlannedResource(kind="instance profile", name=iam_name, detail="gives the role to the nodes"),
        PlannedResource(
            kind="ssm parameter", name=f"/oct/{cluster}/secrets", detail="the cluster's secrets, encrypted"
        ),
    ]
    return resources


def _fargate(config: Config, ec2_monthly: Decimal, arch: pricing.Arch, volumes: Decimal) -> FargateComparison:
    """Like with like: Fargate on the nodes' architecture (arm64 is 20% cheaper there too), with
    the same EBS volumes."""
    tasks: list[FargateTaskLine] = []
    unpriced: list[str] = []
    total = volumes
    for service in config.project.services:
        task = pricing.fargate_task(service.cpus, service.memory, arch)
        if task is None:
            unpriced.append(service.name)
            continue
        total += task.monthly
        tasks.append(
            FargateTaskLine(
                service=service.name,
                vcpu=float(task.vcpu),
                memory_gb=float(task.memory_gb),
                monthly_usd=_usd(task.monthly),
            )
        )
    public = any(service.external_port is not None for service in config.project.services)
    load_balancer = pricing.monthly(pricing.ALB_HOURLY) if public else Decimal(0)
    total += load_balancer
    return FargateComparison(
        arch=arch,
        tasks=tasks,
        unpriced=unpriced,
        load_balancer_monthly_usd=_usd(load_balancer),
        volumes_monthly_usd=_usd(volumes),
        monthly_usd=_usd(total),
        ratio=float(round(total / ec2_monthly, 2)) if ec2_monthly and tasks else None,
    )


def _changes_to_existing(existing: ExistingCluster, planned: int) -> list[str]:
    """Only roughly: what runs now is known to the cluster, and the plan does not ask it."""
    more = max(0, planned - existing.nodes)
    return [
        f"cluster {existing.cluster} exists ({existing.nodes} node{'s' if existing.nodes != 1 else ''} "
        f"in {existing.state_file}): nothing listed is created again, except missing nodes",
        f"`oct deploy` sends the spec; only changed services are replaced, and the leader starts at most "
        f"{more} more node{'s' if more != 1 else ''} if the services need them",
        "services no longer in oct.toml are removed from their nodes; only `oct destroy` removes nodes",
    ]


def _aws_notes(
    aws: AwsProvider, fleet: MixedFleet, reserve: pricing.Reserve, demands: Sequence[Demand]
) -> list[str]:
    t = fleet.types[0]
    where = (
        ""
        if aws.region in _PRICED_REGIONS
        else f"; {aws.region} is usually dearer (up to about 30%), so expect more there"
    )
    notes = [
        f"prices: on-demand Linux list prices of us-east-1 and us-west-2 as of {pricing.PRICES_AS_OF}"
        f"{where}; a month is {int(pricing.HOURS_PER_MONTH)} hours",
        f"each node's {pricing.ROOT_VOLUME_GB} GB gp3 root volume and public IPv4 address are included "
        f"(${pricing.node_extras_monthly():.2f} a month a node); data transfer and load balancer LCUs are "
        "extra, on both sides",
    ]
    default = pricing.DEFAULT_RESERVE
    if (aws.reserve_cpus, aws.reserve_memory) == (default.cpus, default.memory):
        notes.append(
            f"each node keeps {default.memory} MB and {default.cpus} millicores for the OS, Docker and "
            "oct-ctl (measured: bench/node_reserve.py); set reserve_memory and reserve_cpus to change it"
        )
    elif aws.reserve_memory < default.memory:
        used = usage(fleet.placements, demands)
        free = min(
            kind.capacity(reserve).memory - used.get(node, (0, 0))[1]
            for node, kind in zip(fleet.node_ids, fleet.types, strict=True)
        )
        notes.append(
            f"less memory is reserved for the OS, Docker and oct-ctl than they use ({aws.reserve_memory} "
            f"of about {default.memory} MB): they live in what services leave unused under their memory "
            f"limits (the fullest node has {free} MB not promised to any service)"
        )
    if len({kind.name for kind in fleet.types}) > 1:
        notes.append(
            "the nodes are of several types: the cheapest mix that holds the services (genesis starts "
            "the first, the leader buys the rest for the services they are listed with)"
        )
    burstable = sorted({kind.family for kind in fleet.types if kind.burstable})
    if burstable:
        notes.append(
            f"{', '.join(burstable)} {'is' if len(burstable) == 1 else 'are'} burstable: it sustains only "
            "part of its vCPUs (5-40% by size); sustained use above that is billed on top (unlimited mode)"
        )
    if t.arch == "arm64":
        notes.append('arm64 nodes need images built for linux/arm64; set arch = "x86_64" otherwise')
    notes.append(
        f"Fargate: Linux/{t.arch} prices (like the nodes), one task per service at the smallest valid "
        "task size, and one load balancer only if a service has an external_port"
    )
    return notes
