"""What the EC2 types oct may pick cost, which one fits, and what Fargate would charge instead.

Pure (no boto3, no network), so ``oct plan`` and ``oct validate`` work offline, without credentials.

The prices are in ``prices.json`` beside this module, with the date they were read:

- EC2: on-demand, Linux, shared tenancy, us-east-1 (us-west-2 lists the same prices for these
  families). Other regions cost more (up to about 30%), which ``oct plan`` says rather than guess.
- Fargate: us-east-1, per vCPU-hour and per GB-hour, Linux/x86 and Linux/arm64 (20% less).
  Application Load Balancer: per hour, plus LCU charges that depend on traffic and are left out.
- ``price_list.py`` (``make prices``) refreshes the table from AWS's public offer files.

Conventions, stated once because every figure depends on them:

- **A month is 730 hours** (8760 / 12), the convention of AWS's pricing calculator. (The seed
  issue's $25.5 and $92 used 760 hours.)
- **Units**: oct.toml's ``cpus`` are millicores, so a type with *n* vCPUs offers ``n * 1000``;
  ``memory`` is in MB as Docker reads it (``mem_limit="<n>m"``, i.e. MiB), so a type with
  4 GiB offers 4096. Fargate's "GB" are GiB as well, so 1024 MB = 1 GB there.
- **Reserve**: a node offers its size less a :class:`Reserve` for the OS, Docker and oct-ctl;
  :data:`DEFAULT_RESERVE` is measured (``bench/node_reserve.py``).
- **Burstable types** (t3, t4g) count all their vCPUs, like the original opencloudtool did, but
  sustain only a baseline share of them (20% per vCPU for a ``.medium``); in their default
  "unlimited" mode, sustained use above it is billed on top of the prices here.
- **Beside the instance** every node pays for its root volume and its public IPv4 address
  (:func:`node_extras_monthly`); data transfer and load balancer LCUs are left out on both sides.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from octctl.scheduler import Demand, NodeCapacity, nodes_needed, place

__all__ = [
    "ALB_HOURLY",
    "DEFAULT_RESERVE",
    "FAMILIES",
    "FARGATE_ARM_GB_HOURLY",
    "FARGATE_ARM_VCPU_HOURLY",
    "FARGATE_GB_HOURLY",
    "FARGATE_VCPU_HOURLY",
    "GP3_GB_MONTHLY",
    "HOURS_PER_MONTH",
    "INSTANCE_TYPES",
    "PRICES_AS_OF",
    "PUBLIC_IPV4_HOURLY",
    "ROOT_VOLUME_GB",
    "Arch",
    "ArchPreference",
    "FargateTask",
    "Fleet",
    "InstanceType",
    "NoInstanceTypeFits",
    "Reserve",
    "candidates",
    "cheapest_fit",
    "cheapest_fleet",
    "fargate_task",
    "fleet_size",
    "lookup",
    "monthly",
    "node_extras_monthly",
    "volumes_monthly",
]

Arch = Literal["x86_64", "arm64"]
ArchPreference = Literal["any", "x86_64", "arm64"]

HOURS_PER_MONTH = Decimal(730)
#: The price table (``prices.json`` beside this module; ``price_list.py`` refreshes it from AWS's
#: offer files): its date, EC2 types, Fargate's prices and what a node costs beside its instance.
_TABLE: dict[str, Any] = json.loads(Path(__file__).with_name("prices.json").read_text())
#: When the table's prices were read (shown in ``oct plan``).
PRICES_AS_OF: str = _TABLE["as_of"]
FARGATE_VCPU_HOURLY = Decimal(_TABLE["fargate"]["x86_64"]["vcpu_hourly"])
FARGATE_GB_HOURLY = Decimal(_TABLE["fargate"]["x86_64"]["gb_hourly"])
#: Fargate on Graviton (Linux/arm64), 20% less: what arm64 nodes are compared with.
FARGATE_ARM_VCPU_HOURLY = Decimal(_TABLE["fargate"]["arm64"]["vcpu_hourly"])
FARGATE_ARM_GB_HOURLY = Decimal(_TABLE["fargate"]["arm64"]["gb_hourly"])
ALB_HOURLY = Decimal(_TABLE["alb_hourly"])
#: What every node costs beside its instance: its root volume (``instances.launch``: 20 GB of
#: gp3 at $0.08 per GB-month) and its public IPv4 address ($0.005 an hour since February 2024).
ROOT_VOLUME_GB = 20
GP3_GB_MONTHLY = Decimal(_TABLE["gp3_gb_monthly"])
PUBLIC_IPV4_HOURLY = Decimal(_TABLE["public_ipv4_hourly"])


def monthly(hourly: Decimal) -> Decimal:
    """A price per hour as a price per month of :data:`HOURS_PER_MONTH` hours."""
    return hourly * HOURS_PER_MONTH


def volumes_monthly(size_gb: int) -> Decimal:
    """``size_gb`` of gp3 EBS volumes a month (``volumes`` of oct.toml): the same on ECS Fargate,
    whose tasks take EBS volumes at the same price."""
    return size_gb * GP3_GB_MONTHLY


def node_extras_monthly() -> Decimal:
    """A node's root volume and public IPv4 address a month, whatever its type ($5.25)."""
    return ROOT_VOLUME_GB * GP3_GB_MONTHLY + monthly(PUBLIC_IPV4_HOURLY)


@dataclass(frozen=True)
class Reserve:
    """What a node keeps for itself (OS, Docker, oct-ctl): millicores and MB not offered to services."""

    cpus: int = 0
    memory: int = 0

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.memory < 0:
            raise ValueError(f"a reserve cannot be negative (got {self.cpus}m, {self.memory} MB)")


#: What every node keeps for the OS, Docker and oct-ctl unless oct.toml says otherwise
#: (``reserve_cpus``, ``reserve_memory``), measured by ``bench/node_reserve.py``: oct-ctl, its
#: HAProxy, dockerd and containerd idle beside the docker quickstart take about 230 MB and 20
#: millicores; with 100 MB for a Debian cloud image's own services and 15% headroom, 384 MB, and
#: twice the idle CPU for deploys and health checks, 50 millicores. See docs/oct-toml.md.
DEFAULT_RESERVE = Reserve(cpus=50, memory=384)


@dataclass(frozen=True)
class InstanceType:
    """One EC2 type: its size, CPU architecture and on-demand price (Linux, us-east-1)."""

    name: str
    vcpus: int
    memory_mib: int
    arch: Arch
    hourly: Decimal

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def burstable(self) -> bool:
        return self.family.startswith("t")

    @property
    def cpus(self) -> int:
        """Millicores, the unit of oct.toml's ``cpus``."""
        return self.vcpus * 1000

    @property
    def monthly(self) -> Decimal:
        return monthly(self.hourly)

    def capacity(self, reserve: Reserve = Reserve(), node: str = "new") -> NodeCapacity:
        """What a node of this type offers to services once its reserve is taken out (never negative)."""
        return NodeCapacity(
            node=node, cpus=max(0, self.cpus - reserve.cpus), memory=max(0, self.memory_mib - reserve.memory)
        )


#: The families in :data:`INSTANCE_TYPES`: burstable, general purpose, compute optimized.
FAMILIES = ("t3", "t4g", "m6i", "m7g", "c6i", "c7g")

#: Every type oct may pick, cheapest first (ties: fewer vCPUs, less memory, then name).
INSTANCE_TYPES: tuple[InstanceType, ...] = tuple(
    sorted(
        (
            InstanceType(t["name"], t["vcpus"], t["memory_mib"], t["arch"], Decimal(t["hourly"]))
            for t in _TABLE["ec2"]
            if t["name"].split(".")[0] in FAMILIES
        ),
        key=lambda t: (t.hourly, t.vcpus, t.memory_mib, t.name),
    )
)

_BY_NAME: Mapping[str, InstanceType] = MappingProxyType({t.name: t for t in INSTANCE_TYPES})


def lookup(name: str) -> InstanceType | None:
    """The type called ``name`` (``"t4g.medium"``), or None when oct does not know its price."""
    return _BY_NAME.get(name)


def candidates(
    arch: ArchPreference = "any", instance_type: str | None = None, families: Collection[str] | None = None
) -> tuple[InstanceType, ...]:
    """The types oct may choose from: one if ``instance_type`` pins it, else all of ``arch`` (and
    of ``families``, when given).

    Unknown names and a pinned type of the other architecture or family give an empty tuple;
    validation reports each with its key, so callers here only need to cope with "nothing to
    choose from".
    """
    if instance_type is not None:
        pinned = lookup(instance_type)
        if pinned is None or arch not in ("any", pinned.arch):
            return ()
        return (pinned,) if families is None or pinned.family in families else ()
    return tuple(
        t for t in INSTANCE_TYPES if arch in ("any", t.arch) and (families is None or t.family in families)
    )


class NoInstanceTypeFits(ValueError):
    """No candidate type can hold what was asked; the message says what and the largest on offer."""


def cheapest_fit(
    cpus_milli: int,
    memory_mb: int,
    *,
    reserve: Reserve = Reserve(),
    arch: ArchPreference = "any",
    types: Sequence[InstanceType] | None = None,
) -> InstanceType:
    """The cheapest type whose size, less ``reserve``, holds ``cpus_milli`` and ``memory_mb``.

    ``types`` defaults to :func:`candidates` of ``arch``; ties in price go to the smaller type.
    """
    pool = candidates(arch) if types is None else tuple(types)
    for t in sorted(pool, key=lambda t: (t.hourly, t.vcpus, t.memory_mib, t.name)):
        offered = t.capacity(reserve)
        if cpus_milli <= offered.cpus and memory_mb <= offered.memory:
            return t
    raise NoInstanceTypeFits(
        f"no instance type holds {cpus_milli} millicores and {memory_mb} MB"
        + (f" plus a node reserve of {reserve.cpus}m / {reserve.memory} MB" if reserve != Reserve() else "")
        + _largest_note(pool)
    )


def _largest_note(pool: Sequence[InstanceType]) -> str:
    if not pool:
        return " (no instance type to choose from)"
    cpu = max(pool, key=lambda t: (t.cpus, t.memory_mib))
    mem = max(pool, key=lambda t: (t.memory_mib, t.cpus))
    if cpu == mem:
        return f" (the largest is {cpu.name}: {cpu.vcpus} vCPUs, {cpu.memory_mib} MB)"
    return f" (the most vCPUs: {cpu.name}, {cpu.vcpus}; the most memory: {mem.name}, {mem.memory_mib} MB)"


# -- fleets ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """Nodes of one type and where the leader would place the services on them.

    One type for the whole fleet because that is how the cluster grows: the leader asks for new
    nodes of its own size (``octctl.leader.fleet``). ``placements`` maps service -> node id
    (``node-1`` is the leader); ``capacity`` is what each node offers after the reserve.
    """

    instance_type: InstanceType
    nodes: int
    placements: Mapping[str, str]
    capacity: NodeCapacity

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(_node_id(i) for i in range(self.nodes))

    @property
    def hourly(self) -> Decimal:
        return self.instance_type.hourly * self.nodes

    @property
    def monthly(self) -> Decimal:
        """The instances alone."""
        return monthly(self.hourly)

    @property
    def total_monthly(self) -> Decimal:
        """The instances with every node's root volume and public IPv4 address."""
        return self.monthly + node_extras_monthly() * self.nodes


def _node_id(index: int) -> str:
    return f"node-{index + 1}"


def fleet_size(
    demands: Sequence[Demand], capacity: NodeCapacity, min_nodes: int = 1
) -> tuple[int, Mapping[str, str]]:
    """How many nodes of ``capacity`` the services end up on, placed as the leader would place them.

    Replays the leader's fleet: start ``min_nodes`` nodes, :func:`place`, and for what did not fit ask
    for :func:`nodes_needed` more, until everything is placed. Spreading can leave a service
    unplaced where first-fit packing would not, so this may count a node more than
    ``nodes_needed`` alone; it is the count a deploy would really reach.

    Raises ValueError (from ``nodes_needed``) when a service does not fit on an empty node.
    """
    count = max(1, min_nodes)
    current: Mapping[str, str] = {}
    # Every round adds at least one node and a service fits on any empty node, so len+1 rounds suffice.
    for _ in range(len(demands) + 1):
        nodes = [NodeCapacity(_node_id(i), capacity.cpus, capacity.memory) for i in range(count)]
        plan = place(demands, nodes, current)
        if not plan.unplaced:
            return count, plan.placements
        unplaced = set(plan.unplaced)
        count += nodes_needed([d for d in demands if d.service in unplaced], capacity)
        current = plan.placements
    raise AssertionError("placement did not converge")  # pragma: no cover - see the loop bound


def cheapest_fleet(
    demands: Sequence[Demand],
    *,
    reserve: Reserve = Reserve(),
    arch: ArchPreference = "any",
    instance_type: str | None = None,
    min_nodes: int = 1,
    max_nodes: int | None = None,
    families: Collection[str] | None = None,
) -> Fleet:
    """The cheapest fleet of one type (from :func:`candidates`) that runs every service.

    For each type: how many nodes the services need (:func:`fleet_size`, at least ``min_nodes``),
    times its price, with every node's volume and address. The cheapest total wins; on a tie,
    fewer nodes (less to run and fewer hops), then the smaller type. A type that would need more
    than ``max_nodes`` is skipped.
    Raises :class:`NoInstanceTypeFits` when no type works.
    """
    pool = candidates(arch, instance_type, families)
    best: tuple[tuple[Decimal, int, int], Fleet] | None = None
    # Cheapest first by a bound no fleet of the type can beat, so a type whose bound already costs
    # more than the best fleet found is never replayed: the answer is the same, found sooner.
    for bound, index, t in sorted((_bound(demands, t, reserve, min_nodes), i, t) for i, t in enumerate(pool)):
        if best is not None and bound > best[0][0]:
            break
        capacity = t.capacity(reserve)
        try:
            count, placements = fleet_size(demands, capacity, min_nodes)
        except ValueError:
            continue  # some service is bigger than this type
        if max_nodes is not None and count > max_nodes:
            continue
        fleet = Fleet(t, count, placements, capacity)
        key = (fleet.total_monthly, count, index)
        if best is None or key < best[0]:
            best = (key, fleet)
    if best is None:
        total_cpus = sum(d.cpus for d in demands)
        total_memory = sum(d.memory for d in demands)
        limit = f" on at most {max_nodes} node{'s' if max_nodes != 1 else ''}" if max_nodes else ""
        raise NoInstanceTypeFits(
            f"no instance type runs the services ({total_cpus} millicores, {total_memory} MB in all){limit}"
            + _largest_note(pool)
        )
    return best[1]


def _bound(demands: Sequence[Demand], t: InstanceType, reserve: Reserve, min_nodes: int) -> Decimal:
    """The least a fleet of ``t`` can cost: enough nodes for the total CPU and memory asked."""
    capacity = t.capacity(reserve)
    cpus, memory = sum(d.cpus for d in demands), sum(d.memory for d in demands)
    if (cpus and not capacity.cpus) or (memory and not capacity.memory):
        return Decimal("Infinity")
    nodes = max(
        min_nodes,
        1,
        -(-cpus // capacity.cpus) if capacity.cpus else 0,
        -(-memory // capacity.memory) if capacity.memory else 0,
    )
    return (t.monthly + node_extras_monthly()) * nodes


# -- Fargate ---------------------------------------------------------------------------------------

#: Fargate's valid task sizes: vCPU -> the memory sizes (GB) allowed with it.
_FARGATE_SIZES: tuple[tuple[Decimal, tuple[int | Decimal, ...]], ...] = (
    (Decimal("0.25"), (Decimal("0.5"), 1, 2)),
    (Decimal("0.5"), (1, 2, 3, 4)),
    (Decimal(1), tuple(range(2, 9))),
    (Decimal(2), tuple(range(4, 17))),
    (Decimal(4), tuple(range(8, 31))),
    (Decimal(8), tuple(range(16, 61, 4))),
    (Decimal(16), tuple(range(32, 121, 8))),
)


@dataclass(frozen=True)
class FargateTask:
    """The smallest valid Fargate task size that holds a service, and its price on ``arch``."""

    vcpu: Decimal
    memory_gb: Decimal
    arch: Arch = "x86_64"

    @property
    def hourly(self) -> Decimal:
        if self.arch == "arm64":
            return self.vcpu * FARGATE_ARM_VCPU_HOURLY + self.memory_gb * FARGATE_ARM_GB_HOURLY
        return self.vcpu * FARGATE_VCPU_HOURLY + self.memory_gb * FARGATE_GB_HOURLY

    @property
    def monthly(self) -> Decimal:
        return monthly(self.hourly)


def fargate_task(cpus_milli: int, memory_mb: int, arch: Arch = "x86_64") -> FargateTask | None:
    """The cheapest Fargate task size holding ``cpus_milli`` and ``memory_mb``; None past 16 vCPU/120 GB.

    Fargate only sells fixed combinations (0.5 vCPU comes with 1-4 GB, ...), so a 250m / 64 MB
    service pays for 0.25 vCPU and 0.5 GB: comparing against the raw sizes would flatter Fargate.
    """
    need_cpu = Decimal(cpus_milli) / 1000
    need_memory = Decimal(memory_mb) / 1024
    best: FargateTask | None = None
    for vcpu, memories in _FARGATE_SIZES:
        if vcpu < need_cpu:
            continue
        for memory in memories:
            if memory >= need_memory:
                task = FargateTask(vcpu, Decimal(memory), arch)
                if best is None or task.hourly < best.hourly:
                    best = task
                break
    return best
