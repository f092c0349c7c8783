"""The EC2 price table, picking the cheapest type and fleet, Fargate task sizes, and the oct.toml
checks that follow from them ([project.provider.aws] settings, services no instance type holds)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from octctl.config import ConfigError, load_config_text
from octctl.providers.aws import pricing
from octctl.providers.aws.pricing import (
    DEFAULT_RESERVE,
    FAMILIES,
    HOURS_PER_MONTH,
    INSTANCE_TYPES,
    NoInstanceTypeFits,
    Reserve,
    cheapest_fit,
    cheapest_fleet,
    fargate_task,
    fleet_size,
    lookup,
)
from octctl.scheduler import Demand, NodeCapacity


def price(name: str) -> Decimal:
    t = lookup(name)
    assert t is not None, name
    return t.hourly


# --- the table ------------------------------------------------------------------------------------


def test_table_covers_the_families_once_each() -> None:
    names = [t.name for t in INSTANCE_TYPES]
    assert len(names) == len(set(names))
    assert {t.family for t in INSTANCE_TYPES} == set(FAMILIES)
    for t in INSTANCE_TYPES:
        assert t.arch == ("arm64" if t.family in ("t4g", "m7g", "c7g") else "x86_64"), t.name
        assert t.vcpus > 0 and t.memory_mib >= 512 and t.hourly > 0


def test_table_is_cheapest_first() -> None:
    prices = [t.hourly for t in INSTANCE_TYPES]
    assert prices == sorted(prices)


def test_seed_figure_and_units() -> None:
    medium = lookup("t4g.medium")
    assert medium is not None
    assert (medium.vcpus, medium.memory_mib, medium.arch, medium.hourly) == (
        2,
        4096,
        "arm64",
        Decimal("0.0336"),
    )
    assert medium.cpus == 2000  # millicores, as oct.toml counts
    assert medium.monthly == Decimal("0.0336") * HOURS_PER_MONTH == Decimal("24.528")
    assert medium.burstable and not lookup("m7g.medium").burstable  # type: ignore[union-attr]


def test_graviton_is_cheaper_than_intel_at_the_same_size() -> None:
    for arm, intel in (("t4g", "t3"), ("m7g", "m6i"), ("c7g", "c6i")):
        for size in ("large", "xlarge", "2xlarge"):
            assert price(f"{arm}.{size}") < price(f"{intel}.{size}")


def test_lookup_and_candidates() -> None:
    assert lookup("t9.huge") is None
    assert pricing.candidates(instance_type="t4g.small") == (lookup("t4g.small"),)
    assert pricing.candidates(arch="x86_64", instance_type="t4g.small") == ()
    assert pricing.candidates(instance_type="nope") == ()
    assert all(t.arch == "arm64" for t in pricing.candidates("arm64"))
    assert len(pricing.candidates("x86_64")) + len(pricing.candidates("arm64")) == len(INSTANCE_TYPES)


def test_capacity_takes_out_the_reserve_and_never_goes_negative() -> None:
    small = lookup("t4g.small")
    assert small is not None
    assert small.capacity(Reserve(cpus=250, memory=512)) == NodeCapacity("new", 1750, 1536)
    assert small.capacity(Reserve(cpus=9000, memory=9000)) == NodeCapacity("new", 0, 0)
    with pytest.raises(ValueError):
        Reserve(memory=-1)


# --- cheapest_fit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "memory", "arch", "expected"),
    [
        (500, 512, "any", "t4g.nano"),
        (500, 512, "x86_64", "t3.nano"),
        (2000, 512, "any", "t4g.nano"),
        (2000, 513, "any", "t4g.micro"),
        (2000, 4096, "any", "t4g.medium"),
        (2000, 4096, "x86_64", "t3.medium"),
        (2001, 512, "any", "t4g.xlarge"),  # 4 vCPUs: t4g.xlarge beats c7g/m7g/c6i .xlarge
        (1000, 4096, "arm64", "t4g.medium"),
        (64000, 262144, "any", "m7g.16xlarge"),
        (128000, 1024, "any", "c6i.32xlarge"),
    ],
)
def test_cheapest_fit(cpus: int, memory: int, arch: pricing.ArchPreference, expected: str) -> None:
    chosen = cheapest_fit(cpus, memory, arch=arch)
    assert chosen.name == expected
    fitting = [
        t for t in pricing.candidates(arch) if t.cpus >= cpus and t.memory_mib >= memory
    ]  # brute force: nothing that fits is cheaper
    assert chosen.hourly == min(t.hourly for t in fitting)


def test_cheapest_fit_honours_the_reserve() -> None:
    assert cheapest_fit(2000, 4096, reserve=Reserve(memory=1)).name == "t4g.large"
    assert cheapest_fit(1750, 3584, reserve=Reserve(cpus=250, memory=512)).name == "t4g.medium"
    assert cheapest_fit(1751, 512, reserve=Reserve(cpus=250)).name == "t4g.xlarge"


def test_cheapest_fit_none_fits() -> None:
    with pytest.raises(NoInstanceTypeFits) as caught:
        cheapest_fit(129000, 1024)
    assert "129000 millicores" in str(caught.value) and "m6i.32xlarge" in str(caught.value)
    with pytest.raises(NoInstanceTypeFits) as caught:
        cheapest_fit(1000, 1024, types=[])
    assert "no instance type to choose from" in str(caught.value)


# --- fleets ---------------------------------------------------------------------------------------

SEED = [Demand(name, 500, 1024) for name in ("django", "celery", "redis", "postgres")]


def test_fleet_size_replays_the_leader() -> None:
    capacity = NodeCapacity("new", 2000, 2048)
    count, placements = fleet_size(SEED, capacity)
    assert count == 2 and set(placements) == {d.service for d in SEED}
    assert fleet_size(SEED, capacity, min_nodes=3)[0] == 3
    same_port = [Demand(f"app{i}", 100, 64, frozenset({8000})) for i in range(3)]
    count, placements = fleet_size(same_port, NodeCapacity("new", 4000, 4096))
    assert count == 3 and len(set(placements.values())) == 3
    with pytest.raises(ValueError):
        fleet_size([Demand("big", 3000, 64)], capacity)
    assert fleet_size([], capacity) == (1, {})


def test_seed_fleet_is_one_t4g_medium() -> None:
    fleet = cheapest_fleet(SEED)
    assert (fleet.instance_type.name, fleet.nodes) == ("t4g.medium", 1)
    assert fleet.monthly == price("t4g.medium") * HOURS_PER_MONTH
    # Two t4g.small cost the same; the tie goes to fewer nodes.
    assert 2 * price("t4g.small") == price("t4g.medium")


def test_fleet_with_a_reserve_costs_more_and_still_fits() -> None:
    reserve = Reserve(memory=512)
    fleet = cheapest_fleet(SEED, reserve=reserve)
    assert fleet.hourly > price("t4g.medium")
    for node in fleet.node_ids:
        here = [d for d in SEED if fleet.placements[d.service] == node]
        assert sum(d.memory for d in here) <= fleet.instance_type.memory_mib - 512
        assert sum(d.cpus for d in here) <= fleet.instance_type.cpus


def test_fleet_max_nodes_picks_a_bigger_type() -> None:
    busy = [Demand(f"w{i}", 2000, 256) for i in range(4)]
    spread = cheapest_fleet(busy)
    assert (spread.instance_type.name, spread.nodes) == ("t4g.nano", 4)
    packed = cheapest_fleet(busy, max_nodes=1)
    assert (packed.instance_type.name, packed.nodes) == ("t4g.2xlarge", 1)
    with pytest.raises(NoInstanceTypeFits) as caught:
        cheapest_fleet(busy, max_nodes=1, arch="x86_64", instance_type="t3.micro")
    assert "at most 1 node" in str(caught.value)


def test_fleet_pinned_type_and_arch() -> None:
    pinned = cheapest_fleet(SEED, instance_type="m6i.large")
    assert (pinned.instance_type.name, pinned.nodes) == ("m6i.large", 1)
    assert cheapest_fleet(SEED, arch="x86_64").instance_type.name == "t3.medium"
    # At least three nodes: four t4g.micro (one service each) cost less than three of anything bigger.
    spread = cheapest_fleet(SEED, min_nodes=3)
    assert (spread.instance_type.name, spread.nodes) == ("t4g.micro", 4)
    assert spread.hourly < 3 * price("t4g.small")


# --- Fargate --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "memory", "vcpu", "gb"),
    [
        (500, 1024, "0.5", "1"),
        (250, 64, "0.25", "0.5"),
        (100, 3000, "0.5", "3"),  # 0.25 vCPU allows at most 2 GB
        (1000, 9000, "2", "9"),  # 1 vCPU allows at most 8 GB
        (8000, 16384, "8", "16"),
        (16000, 122880, "16", "120"),
    ],
)
def test_fargate_task_sizes(cpus: int, memory: int, vcpu: str, gb: str) -> None:
    task = fargate_task(cpus, memory)
    assert task is not None
    assert (task.vcpu, task.memory_gb) == (Decimal(vcpu), Decimal(gb))
    expected = (Decimal(vcpu) * Decimal("0.04048") + Decimal(gb) * Decimal("0.004445")) * 730
    assert task.monthly == expected


def test_fargate_has_a_largest_task() -> None:
    assert fargate_task(16001, 1024) is None
    assert fargate_task(1000, 120 * 1024 + 1) is None


# --- oct.toml checks ------------------------------------------------------------------------------

HEADER = """\
[project]
name = "shop"

[project.state_backend.local]
path = "state.json"
"""


def service(name: str = "web", cpus: int = 500, memory: int = 512) -> str:
    return f'\n[[project.services]]\nname = "{name}"\nimage = "x"\ncpus = {cpus}\nmemory = {memory}\n'


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, {}, filename="oct.toml")
    return [(p.line, p.path, p.message) for p in caught.value.problems]


def test_aws_defaults() -> None:
    config = load_config_text(HEADER + "\n[project.provider.aws]\n" + service(), {})
    aws = config.project.provider.aws  # type: ignore[union-attr]
    assert aws is not None
    assert (aws.region, aws.instance_type, aws.arch, aws.min_nodes, aws.max_nodes) == (
        "us-west-2",
        None,
        "any",
        1,
        10,
    )
    assert (aws.api_allowed_cidrs, aws.reserve_cpus, aws.reserve_memory) == (None, 50, 384)
    assert (aws.reserve_cpus, aws.reserve_memory) == (DEFAULT_RESERVE.cpus, DEFAULT_RESERVE.memory)


def test_aws_settings_parse() -> None:
    text = (
        HEADER
        + """
[project.provider.aws]
region = "eu-central-1"
instance_type = "c7g.large"
arch = "arm64"
min_nodes = 2
max_nodes = 4
api_allowed_cidrs = ["203.0.113.7/32", "2001:db8::/32", "198.51.100.9"]
reserve_cpus = 250
reserve_memory = 512
"""
        + service()
    )
    aws = load_config_text(text, {}).project.provider.aws  # type: ignore[union-attr]
    assert aws is not None and aws.instance_type == "c7g.large" and aws.reserve_memory == 512
    assert aws.api_allowed_cidrs == ["203.0.113.7/32", "2001:db8::/32", "198.51.100.9"]


def line_of(text: str, snippet: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if snippet in line)


def test_service_bigger_than_any_instance_type_is_an_error() -> None:
    text = HEADER + service("db", cpus=200000, memory=600000)
    assert problems(text) == [
        (
            line_of(text, "cpus = 200000"),
            "project.services[0].cpus",
            "service 'db' needs 200000 millicores of CPU, but the largest instance type oct can pick "
            "offers 127950 after the node reserve (m6i.32xlarge)",
        ),
        (
            line_of(text, "memory = 600000"),
            "project.services[0].memory",
            "service 'db' needs 600000 MB of memory, but the largest instance type oct can pick "
            "offers 523904 MB after the node reserve (m6i.32xlarge)",
        ),
    ]


def test_service_bigger_than_arch_after_reserve() -> None:
    text = (
        HEADER + '\n[project.provider.aws]\narch = "arm64"\nreserve_memory = 1024\n' + service(memory=262144)
    )
    ((line, path, message),) = problems(text)
    assert (line, path) == (line_of(text, "memory = 262144"), "project.services[0].memory")
    assert message == (
        "service 'web' needs 262144 MB of memory, but the largest arm64 instance type oct can pick offers "
        "261120 MB after the node reserve (m7g.16xlarge)"
    )


def test_service_bigger_than_pinned_type() -> None:
    text = HEADER + '\n[project.provider.aws]\ninstance_type = "t4g.small"\n' + service(cpus=4000)
    ((_, path, message),) = problems(text)
    assert path == "project.services[0].cpus"
    assert (
        message == "service 'web' needs 4000 millicores of CPU, but instance_type t4g.small offers 1950 "
        "after the node reserve"
    )


def test_local_projects_are_not_checked_against_instance_types() -> None:
    text = HEADER + "\n[project.provider.local]\ncpus = 300000\nmemory = 1024\n" + service(cpus=200000)
    assert load_config_text(text, {}).service("web").cpus == 200000


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        (
            'instance_type = "t4g.mediun"',
            "project.provider.aws.instance_type",
            "unknown instance type 't4g.mediun'; did you mean 't4g.medium'? "
            "(oct knows the prices of the t3, t4g, m6i, m7g, c6i, c7g families)",
        ),
        (
            'instance_type = "t4g.medium"\narch = "x86_64"',
            "project.provider.aws.instance_type",
            "instance type 't4g.medium' is arm64, but arch = \"x86_64\"",
        ),
        (
            'families = ["m7g", "t4h"]',
            "project.provider.aws.families[1]",
            "unknown instance family 't4h'; did you mean 't4g'? (oct knows t3, t4g, m6i, m7g, c6i, c7g)",
        ),
        (
            'families = ["m6i", "c6i"]\narch = "arm64"',
            "project.provider.aws.families",
            "no family listed has arm64 types",
        ),
        (
            "families = []",
            "project.provider.aws.families",
            "expected at least one family; remove the key to let oct pick from all of them",
        ),
        (
            'families = ["m7g"]\ninstance_type = "t4g.medium"',
            "project.provider.aws.instance_type",
            "instance type 't4g.medium' is of family t4g, which families does not list",
        ),
        (
            'region = "uswest2"',
            "project.provider.aws.region",
            "'uswest2' is not an AWS region name (like us-west-2)",
        ),
        (
            "min_nodes = 3\nmax_nodes = 2",
            "project.provider.aws.min_nodes",
            "min_nodes (3) is greater than max_nodes (2)",
        ),
        (
            "api_allowed_cidrs = []",
            "project.provider.aws.api_allowed_cidrs",
            "expected at least one CIDR; remove the key to allow only the deploying machine's address",
        ),
        (
            'api_allowed_cidrs = ["10.0.0.0/8", "1.2.3.4/24"]',
            "project.provider.aws.api_allowed_cidrs[1]",
            "'1.2.3.4/24' has host bits set; did you mean '1.2.3.0/24'?",
        ),
        (
            'api_allowed_cidrs = ["my laptop"]',
            "project.provider.aws.api_allowed_cidrs[0]",
            'expected an address or CIDR such as 203.0.113.7/32, got "my laptop"',
        ),
        ('arch = "riscv"', "project.provider.aws.arch", "expected 'any', 'x86_64' or 'arm64', got \"riscv\""),
        ("max_nodes = 0", "project.provider.aws.max_nodes", "expected an integer of at least 1, got 0"),
        (
            "reserve_memory = -1",
            "project.provider.aws.reserve_memory",
            "expected an integer of at least 0, got -1",
        ),
    ],
)
def test_aws_setting_errors(settings: str, path: str, message: str) -> None:
    text = HEADER + "\n[project.provider.aws]\n" + settings + "\n" + service()
    found = problems(text)
    assert [(p, m) for _, p, m in found] == [(path, message)]
    key = path.removeprefix("project.provider.aws.").split("[")[0]
    assert found[0][0] == line_of(text, key + " =")  # pinned to the key's line
