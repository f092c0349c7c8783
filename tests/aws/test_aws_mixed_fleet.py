"""A fleet of two instance types, bought as ``oct plan`` priced it, end to end against moto_server.

Two services that no single type holds cheaply: ``big`` needs a t3.medium's memory, ``small`` fits
on a t3.micro. Genesis launches the fleet's first node (the medium) and lets the node role launch
every x86 type; the leader buys the micro on the first deploy for ``small``, and the containers
run where the plan said, on the real Docker engine. The running cluster prices itself node by node.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

import octcli
from octcli import api
from octctl.providers.aws.pricing import candidates, lookup, node_extras_monthly
from tests.aws.hypervisor import Hypervisor
from tests.aws.test_aws_flow import aws_project, leftovers
from tests.conftest import IMAGE
from tests.e2e.harness import http_get

pytestmark = [pytest.mark.aws, pytest.mark.e2e, pytest.mark.docker]


def oct_toml(project: str, ami: str) -> str:
    services = "".join(
        f"""
[[project.services]]
name = "{name}"
image = "{IMAGE}"
command = "sh -c 'echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www'"
internal_port = 8080
external_port = {port}
cpus = 1500
memory = {memory}
"""
        for name, port, memory in (("big", 9321, 3000), ("small", 9322, 256))
    )
    return f"""
[project]
name = "{project}"

[project.state_backend.local]
path = "state.json"

[project.provider.aws]
region = "us-east-1"
arch = "x86_64"
ami = "{ami}"
api_allowed_cidrs = ["127.0.0.1/32"]
max_nodes = 3
{services}"""


def test_the_first_deploy_buys_the_planned_mix_of_types(
    cloud: Hypervisor, tmp_path: Path, docker_client
) -> None:  # type: ignore[no-untyped-def]
    clients, ami, config = aws_project(tmp_path)
    config.write_text(oct_toml(cloud.project, ami))
    planned = api.plan(config)
    assert [(n.instance_type, n.services) for n in planned.nodes] == [
        ("t3.medium", ["big"]),
        ("t3.micro", ["small"]),
    ]

    status = octcli.deploy(config, approve=True, timeout=180)
    assert sorted(s.state for s in status.services) == ["running", "running"]
    found = clients.ec2.describe_instances(
        Filters=[
            {"Name": "tag:oct:project", "Values": [cloud.project]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    roles = {
        next(t["Value"] for t in i["Tags"] if t["Key"] == "oct:role"): i["InstanceType"]
        for r in found
        for i in r["Instances"]
    }
    assert roles == {"leader": "t3.medium", "follower": "t3.micro"}
    nodes = {n.id: n for n in status.nodes}
    where = {s.name: (nodes[s.node or ""].role, nodes[s.node or ""].instance_type) for s in status.services}
    assert where == {"big": ("leader", "t3.medium"), "small": ("follower", "t3.micro")}, (
        "on the node bought for it"
    )
    for service in status.services:
        assert http_get(service.endpoint or "").strip() == service.name

    # The node role may launch every priced x86 type: the leader buys the cheapest for what comes.
    ledger = json.loads((config.parent / "state.json").read_text())["aws"]
    assert ledger["instance_types"] == sorted(t.name for t in candidates("x86_64"))

    # Against the running cluster the plan changes nothing, and prices each node at its own type.
    again = api.plan(config)
    assert again.diff is not None and not again.diff.changed
    medium, micro = lookup("t3.medium"), lookup("t3.micro")
    assert medium is not None and micro is not None
    monthly = medium.monthly + micro.monthly + 2 * node_extras_monthly()
    assert again.diff.monthly_usd_before == float(monthly.quantize(Decimal("0.01")))

    octcli.destroy(config, approve=True)
    assert leftovers(clients, cloud.project) == {}
