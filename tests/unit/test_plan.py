"""``oct plan``: the seed example's prices against Fargate, the resources genesis would create, local
plans, what a plan says about an existing cluster, and the CLI (exit codes, ``--json``)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from octcli import api
from octcli.errors import InvalidConfig
from octcli.main import app
from octcli.plan import DeployPlan, ExistingCluster, build
from octctl.config import Config, load_config_text
from octctl.providers.aws.pricing import (
    ALB_HOURLY,
    DEFAULT_RESERVE,
    FARGATE_ARM_GB_HOURLY,
    FARGATE_ARM_VCPU_HOURLY,
    FARGATE_GB_HOURLY,
    FARGATE_VCPU_HOURLY,
    HOURS_PER_MONTH,
    NoInstanceTypeFits,
    lookup,
)

runner = CliRunner()

HEADER = """\
[project]
name = "seed"

[project.state_backend.local]
path = "state.json"
"""

#: The issue's example: Django, Celery, Redis and Postgres at 0.5 vCPU / 1 GB each, one public port.
SEED_SERVICES = """
[[project.services]]
name = "django"
image = "ghcr.io/me/django:1"
internal_port = 8000
external_port = 80
cpus = 500
memory = 1024
depends_on = ["postgres", "redis"]

[[project.services]]
name = "celery"
image = "ghcr.io/me/django:1"
command = "celery -A app worker"
cpus = 500
memory = 1024
depends_on = ["redis"]

[[project.services]]
name = "redis"
image = "redis:7"
internal_port = 6379
cpus = 500
memory = 1024

[[project.services]]
name = "postgres"
image = "postgres:16"
internal_port = 5432
cpus = 500
memory = 1024
"""


def seed(provider: str = "") -> Config:
    return load_config_text(HEADER + provider + SEED_SERVICES, {})


def usd(amount: Decimal) -> float:
    return float(round(amount, 4))


# --- the seed example -----------------------------------------------------------------------------


NO_RESERVE = "[project.provider.aws]\nreserve_cpus = 0\nreserve_memory = 0\n"
EXTRAS = Decimal("0.08") * 20 + Decimal("0.005") * HOURS_PER_MONTH  # a node's gp3 root volume and IPv4


def test_seed_example_with_the_default_reserve_needs_two_nodes() -> None:
    """Each node keeps 384 MB and 50 millicores for itself: four 0.5 vCPU / 1 GB services no longer
    fit on one 2-vCPU node. Two t4g.medium would hold them; a t4g.medium and a t4g.small hold them
    for less (the mixed fleet: the oracle's optimum, ``test_mixed_fleet.py``)."""
    plan = build(seed())
    assert plan.provider == "aws" and plan.region == "us-west-2" and plan.hours_per_month == 730
    assert (
        (plan.reserve_cpus, plan.reserve_memory)
        == (DEFAULT_RESERVE.cpus, DEFAULT_RESERVE.memory)
        == (50, 384)
    )
    assert [
        (n.id, n.role, n.instance_type, n.arch, n.cpus, n.memory, len(n.services)) for n in plan.nodes
    ] == [
        ("node-1", "leader", "t4g.medium", "arm64", 1950, 4096 - 384, 3),
        ("node-2", "follower", "t4g.small", "arm64", 1950, 2048 - 384, 1),
    ]
    medium, small = lookup("t4g.medium"), lookup("t4g.small")
    assert medium is not None and small is not None
    assert plan.monthly_usd == usd(medium.monthly + small.monthly + 2 * EXTRAS) == 47.292
    assert plan.node_extras_monthly_usd == usd(EXTRAS) == 5.25
    assert any("several types" in note for note in plan.notes)


def test_seed_example_without_a_reserve_is_the_seeds_one_node() -> None:
    plan = build(seed(NO_RESERVE))
    (node,) = plan.nodes
    assert node.instance_type == "t4g.medium" and node.services == ["celery", "django", "postgres", "redis"]
    assert node.monthly_usd == 24.528  # the seed's "$25.5" (at 760 hours; 730 here), the instance alone
    assert plan.monthly_usd == usd(Decimal("24.528") + EXTRAS) == 29.778
    assert plan.fargate is not None and plan.fargate.ratio == 2.49


def test_seed_example_against_fargate_like_with_like() -> None:
    """arm64 nodes against arm64 Fargate (20% under x86), the load balancer because django is public."""
    plan = build(seed())
    fargate = plan.fargate
    assert fargate is not None and fargate.arch == "arm64"
    assert [(t.service, t.vcpu, t.memory_gb) for t in fargate.tasks] == [
        ("django", 0.5, 1.0),
        ("celery", 0.5, 1.0),
        ("redis", 0.5, 1.0),
        ("postgres", 0.5, 1.0),
    ]
    task = (Decimal("0.5") * FARGATE_ARM_VCPU_HOURLY + 1 * FARGATE_ARM_GB_HOURLY) * HOURS_PER_MONTH
    assert all(t.monthly_usd == usd(task) for t in fargate.tasks)
    assert fargate.load_balancer_monthly_usd == usd(ALB_HOURLY * HOURS_PER_MONTH)
    assert fargate.monthly_usd == usd(4 * task + ALB_HOURLY * HOURS_PER_MONTH) == 74.095
    assert plan.monthly_usd is not None
    assert fargate.ratio == pytest.approx(fargate.monthly_usd / plan.monthly_usd, abs=0.01) == 1.57
    x86 = build(seed('[project.provider.aws]\narch = "x86_64"\n')).fargate
    assert x86 is not None and x86.arch == "x86_64"
    assert x86.tasks[0].monthly_usd == usd((Decimal("0.5") * FARGATE_VCPU_HOURLY + FARGATE_GB_HOURLY) * 730)


def test_no_load_balancer_without_external_port() -> None:
    text = HEADER + SEED_SERVICES.replace("external_port = 80\n", "")
    fargate = build(load_config_text(text, {})).fargate
    assert fargate is not None and fargate.load_balancer_monthly_usd == 0
    task = Decimal("0.5") * FARGATE_ARM_VCPU_HOURLY + FARGATE_ARM_GB_HOURLY
    assert fargate.monthly_usd == usd(4 * task * 730)


def test_volumes_are_priced_as_gp3_on_both_sides() -> None:
    """postgres's 20 GB and redis's 10 (the default size): $2.40 a month of gp3, on the EC2 side
    and on Fargate's alike (its tasks take EBS volumes at the same price), so the ratio compares
    the rest like with like."""
    with_volumes = SEED_SERVICES.replace(
        'name = "postgres"\n',
        'name = "postgres"\nvolumes = [{ name = "pgdata", path = "/data", size = 20 }]\n',
    ).replace('name = "redis"\n', 'name = "redis"\nvolumes = ["redisdata:/data"]\n')
    plan = build(load_config_text(HEADER + with_volumes, {}))
    bare = build(seed())
    volumes = usd(30 * Decimal("0.08"))
    assert plan.volumes_monthly_usd == volumes and bare.volumes_monthly_usd == 0
    assert plan.monthly_usd == pytest.approx((bare.monthly_usd or 0) + volumes)
    assert plan.fargate is not None and bare.fargate is not None
    assert plan.fargate.volumes_monthly_usd == volumes
    assert plan.fargate.monthly_usd == pytest.approx(bare.fargate.monthly_usd + volumes)
    from rich.text import Text

    from octcli.terminal import plan_lines

    assert "volumes (gp3 EBS): $2.40 a month" in [
        str(line) for line in plan_lines(plan) if isinstance(line, Text)
    ]


def test_seed_example_resources() -> None:
    plan = build(seed())
    kinds = [r.kind for r in plan.resources]
    for kind in ("vpc", "internet gateway", "route table", "security group", "iam role", "instance profile"):
        assert kinds.count(kind) == 1, kind
    assert kinds.count("subnet") == 2
    names = {r.kind: r.name for r in plan.resources}
    assert names["vpc"] == "oct-seed-<cluster>-vpc" and names["iam role"] == "oct-seed-<cluster>"
    rules = {r.name: r.detail for r in plan.resources if r.kind == "security group rule"}
    assert rules["api 31888/tcp"] == "from your address (looked up at deploy)"
    assert rules["django 80/tcp"].startswith("from 0.0.0.0/0")
    assert "Raft 31889/tcp" in rules["between nodes"]
    assert not any("5432" in name or "6379" in name for name in rules)  # internal ports stay closed
    existing = ExistingCluster(cluster="c-1234abcd", provider="aws", nodes=1, state_file="s")
    assert build(seed(), existing).resources[0].name == "oct-seed-c-1234abcd-vpc"


def test_settings_change_the_plan() -> None:
    plan = build(
        seed(
            '\n[project.provider.aws]\nregion = "eu-west-1"\narch = "x86_64"\n'
            'api_allowed_cidrs = ["203.0.113.0/24"]\n'
        )
    )
    assert [n.instance_type for n in plan.nodes] == ["t3.medium", "t3.small"]
    rules = {r.name: r.detail for r in plan.resources if r.kind == "security group rule"}
    assert rules["api 31888/tcp"] == "from 203.0.113.0/24"
    assert any("eu-west-1 is usually dearer" in note for note in plan.notes)
    assert not any("arm64 nodes need" in note for note in plan.notes)


def test_families_limit_the_types_oct_picks_from() -> None:
    """No burstable types: the seed's services on general-purpose Graviton nodes only."""
    plan = build(seed('\n[project.provider.aws]\nfamilies = ["m7g"]\n'))
    assert {n.instance_type.split(".")[0] for n in plan.nodes if n.instance_type} == {"m7g"}
    assert sorted(s for n in plan.nodes for s in n.services) == ["celery", "django", "postgres", "redis"]
    assert not any("burstable" in note for note in plan.notes)


def test_reserve_makes_room_on_every_node() -> None:
    plan = build(seed("\n[project.provider.aws]\nreserve_memory = 512\nreserve_cpus = 100\n"))
    assert (plan.reserve_cpus, plan.reserve_memory) == (100, 512)
    medium = lookup("t4g.medium")
    assert medium is not None and plan.monthly_usd is not None
    assert plan.monthly_usd > usd(medium.monthly)  # one t4g.medium no longer holds it all
    for node in plan.nodes:
        t = lookup(node.instance_type or "")
        assert t is not None
        assert (node.cpus, node.memory) == (t.cpus - 100, t.memory_mib - 512)
        assert len(node.services) * 1024 <= node.memory and len(node.services) * 500 <= node.cpus
    assert sorted(s for n in plan.nodes for s in n.services) == ["celery", "django", "postgres", "redis"]
    assert not any("no memory is reserved" in note for note in plan.notes)


def test_followers_and_min_nodes() -> None:
    """t4g.small keeps 1664 MB after the reserve: one 1 GB service a node, so four nodes (min 3)."""
    plan = build(seed('\n[project.provider.aws]\ninstance_type = "t4g.small"\nmin_nodes = 3\n'))
    assert [(n.id, n.role, n.instance_type) for n in plan.nodes] == [
        ("node-1", "leader", "t4g.small"),
        ("node-2", "follower", "t4g.small"),
        ("node-3", "follower", "t4g.small"),
        ("node-4", "follower", "t4g.small"),
    ]
    small = lookup("t4g.small")
    assert small is not None
    assert plan.monthly_usd == usd(4 * (small.hourly * HOURS_PER_MONTH + EXTRAS))
    for node in plan.nodes:
        assert sum(1024 for _ in node.services) <= node.memory


def test_no_fleet_within_max_nodes() -> None:
    config = seed(
        '\n[project.provider.aws]\ninstance_type = "t4g.micro"\nmax_nodes = 2\nreserve_memory = 0\n'
    )
    with pytest.raises(NoInstanceTypeFits) as caught:
        build(config)
    assert "at most 2 nodes" in str(caught.value)


# --- local projects -------------------------------------------------------------------------------


def test_local_plan_shows_nodes_and_placements_without_prices() -> None:
    plan = build(seed("\n[project.provider.local]\nnodes = 2\ncpus = 1000\nmemory = 2048\n"))
    assert plan.provider == "local" and plan.resources == [] and plan.fargate is None
    assert plan.monthly_usd is None and all(
        n.monthly_usd is None and n.instance_type is None for n in plan.nodes
    )
    assert len(plan.nodes) == 2
    assert all((n.cpus, n.memory) == (1000, 2048) and len(n.services) == 2 for n in plan.nodes)


def test_local_plan_grows_like_the_leader() -> None:
    # Four services on 1 node of 1000m: the leader would ask for more nodes; so does the plan.
    plan = build(seed("\n[project.provider.local]\nnodes = 1\ncpus = 1000\nmemory = 4096\n"))
    assert len(plan.nodes) == 2
    assert sorted(s for n in plan.nodes for s in n.services) == ["celery", "django", "postgres", "redis"]
    assert "starts 2 oct-ctl processes" in plan.changes[0]


# --- an existing cluster --------------------------------------------------------------------------


def test_existing_cluster_changes_roughly() -> None:
    existing = ExistingCluster(cluster="c-1234abcd", provider="aws", nodes=1, state_file="/x/state.json")
    plan = build(seed("\n[project.provider.aws]\nmin_nodes = 3\n"), existing)
    assert plan.existing == existing
    assert (
        "cluster c-1234abcd exists" in plan.changes[0]
        and "nothing listed is created again" in plan.changes[0]
    )
    assert len(plan.nodes) >= 3
    assert f"at most {len(plan.nodes) - 1} more nodes" in plan.changes[1]


def test_s3_state_is_not_read() -> None:
    text = HEADER.replace(
        '[project.state_backend.local]\npath = "state.json"',
        '[project.state_backend.s3]\nregion = "us-west-2"\nbucket = "b"\nkey = "k"',
    )
    config = load_config_text(text + SEED_SERVICES, {})
    plan = build(config, state_read=False)
    assert "the state is in S3" in plan.changes[0]


# --- library and CLI ------------------------------------------------------------------------------


def write_project(folder: Path, provider: str = "", services: str = SEED_SERVICES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "oct.toml").write_text(HEADER + provider + services)
    return folder


def test_api_plan_reads_the_state_file(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p")
    assert api.plan(project).existing is None
    record = {
        "cluster": "c-0000beef",
        "project": "seed",
        "provider": "aws",
        "token": "secret-token",
        "nodes": ["203.0.113.5:31888", "203.0.113.6:31888"],
        "root": str(project / ".oct"),
    }
    (project / "state.json").write_text(json.dumps(record))
    plan = api.plan(project)
    assert plan.existing == ExistingCluster(
        cluster="c-0000beef", provider="aws", nodes=2, state_file=str(project / "state.json")
    )
    assert "secret-token" not in plan.model_dump_json()


def test_api_plan_too_big_for_max_nodes_is_invalid_config(tmp_path: Path) -> None:
    project = write_project(
        tmp_path, '\n[project.provider.aws]\ninstance_type = "t4g.micro"\nmax_nodes = 1\nreserve_memory = 0\n'
    )
    with pytest.raises(InvalidConfig) as caught:
        api.plan(project)
    assert caught.value.exit_code == 2 and "at most 1 node" in str(caught.value)


def test_cli_plan(tmp_path: Path) -> None:
    project = write_project(tmp_path)
    result = runner.invoke(app, ["plan", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert "t4g.medium" in result.stdout and "ECS Fargate" in result.stdout
    assert "t4g.small" in result.stdout and "total: $47.29 a month" in result.stdout
    assert not (project / "state.json").exists() and not (project / ".oct").exists()  # touched nothing


def test_cli_plan_json(tmp_path: Path) -> None:
    project = write_project(tmp_path)
    result = runner.invoke(app, ["plan", "-c", str(project), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    plan = DeployPlan.model_validate(data)
    assert plan == api.plan(project)
    assert data["nodes"][0]["instance_type"] == "t4g.medium"
    assert data["fargate"]["monthly_usd"] > data["monthly_usd"] > 0


def test_cli_plan_needs_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail
    result = runner.invoke(app, ["plan", "-c", str(write_project(tmp_path / "p"))])
    assert result.exit_code == 0, result.output


def test_cli_plan_rejects_an_oversized_service(tmp_path: Path) -> None:
    big = '\n[[project.services]]\nname = "big"\nimage = "x"\ncpus = 200000\nmemory = 1024\n'
    project = write_project(tmp_path, services=big)
    result = runner.invoke(app, ["plan", "-c", str(project), "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "project.services[0].cpus: service 'big' needs 200000 millicores of CPU" in result.stderr
    lines = (project / "oct.toml").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, start=1) if text == "cpus = 200000")
    assert f"oct.toml:{line}: project.services[0].cpus" in result.stderr


def test_cli_plan_local_project(tmp_path: Path) -> None:
    project = write_project(tmp_path, "\n[project.provider.local]\nnodes = 2\n")
    result = runner.invoke(app, ["plan", "-c", str(project), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["provider"] == "local" and data["monthly_usd"] is None and len(data["nodes"]) == 2


def test_the_published_json_schema_is_the_plans() -> None:
    """docs/schemas/plan.schema.json is what `oct plan --json` prints (`make schemas` writes it)."""
    published = json.loads((Path(__file__).parents[2] / "docs" / "schemas" / "plan.schema.json").read_text())
    assert published == DeployPlan.model_json_schema(mode="serialization")
