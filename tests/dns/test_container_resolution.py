"""A container on a VM node finds another service by name through its node's DNS server.

On a VM (AWS) there is no shared cluster network: a container gets the node's address as its only
resolver and ``<project>.oct`` as search domain, and the node answers from its replica. Here the
"VM" is this machine as seen from containers: the Docker bridge's gateway address, which every
container on the default bridge can reach, plays the node's address. Everything on the path is
real: the specs the leader renders for an AWS project, the Docker runtime that starts them, the
resolver settings Docker writes into the container, a DNS packet from the container's libc to
oct's DNS server on port 53, the zone built from a replica's state, and an HTTP fetch to the
address it answered: the node's own proxy (HAProxy, as the node configures it from the same
state), which serves the meshed service's port and carries the request to its instance port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from octctl.config import parse_config_data
from octctl.dns.server import DnsServer
from octctl.dns.zone import build_zone
from octctl.ingress.haproxy import Haproxy
from octctl.instance_ports import instance_ports
from octctl.runtime.docker import DockerRuntime
from octctl.served_routes import routes_from_state
from octctl.specs import Rollout, instance_specs
from octctl.state.model import NodeRecord, empty_state
from tests.wait import wait_until_async

pytestmark = pytest.mark.docker

IMAGE = "oct-test/busybox:latest"


def bridge_gateway(client: docker.DockerClient) -> str:
    """The default bridge's gateway: the host as its containers see it.

    A freshly started dockerd (Debian's 20.10) records only the bridge's ``Subnet`` in its IPAM
    config; the gateway is then the subnet's first host address, which dockerd gives the bridge.
    """
    config = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def runtime(docker_client: docker.DockerClient) -> Iterator[DockerRuntime]:
    rt = DockerRuntime(node="node-vm")
    yield rt
    rt.close()


def aws_project(name: str, port: int) -> dict[str, Any]:
    serve = f"mkdir -p /srv && echo api-ok > /srv/index.html && exec httpd -f -p {port} -h /srv"
    # busybox's own resolver and nc (the image's busybox is linked statically with glibc, and its
    # wget crashes on the default bridge): the short name through the search domain,
    # then the full name, then an HTTP request to the address the full name resolved to.
    lookup = 'busybox nslookup api.{name}.oct | sed -n "/^Name/,\\$ s/^Address:* *//p" | head -1'
    fetch = (
        f"while true; do busybox nslookup api; a=$({lookup.format(name=name)}); "
        f'echo resolved=$a; printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc $a {port}; sleep 0.5; done'
    )
    return {
        "project": {
            "name": name,
            "state_backend": {"local": {"path": "state.json"}},
            "provider": {"aws": {"region": "us-east-1"}},
            "services": [
                {
                    "name": "api",
                    "image": IMAGE,
                    "command": f"sh -c '{serve}'",
                    "internal_port": port,
                    "cpus": 100,
                    "memory": 32,
                },
                {"name": "front", "image": IMAGE, "command": f"sh -c '{fetch}'", "cpus": 100, "memory": 32},
            ],
        }
    }


async def test_a_container_on_a_vm_finds_a_service_through_the_node_dns(
    docker_client: docker.DockerClient, runtime: DockerRuntime, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test binds oct's DNS server to port 53, as on a VM: run it as root (CI does)")
    node_address = bridge_gateway(docker_client)
    name = f"t{uuid.uuid4().hex[:8]}"
    port = free_port(node_address)
    data = aws_project(name, port)
    config = parse_config_data(data)
    node: NodeRecord = {
        "id": "node-vm",
        "address": node_address,
        "api_port": 31888,
        "raft_port": 31889,
        "cpus": 2000,
        "memory": 2048,
        "status": "ready",
        "joined_at": 0.0,
        "last_seen": 0.0,
    }
    placements = {"api": "node-vm", "front": "node-vm"}
    state = empty_state()
    state["project"] = config.model_dump(mode="json")
    state["nodes"] = {"node-vm": node}
    state["placements"] = placements
    state["instance_ports"] = instance_ports(config, placements, state)
    state["instances"] = {"node-vm": {"api": {"state": "running"}, "front": {"state": "running"}}}
    specs = instance_specs(
        config, placements, {"node-vm": node}, Rollout("d1", "c-vm"), state["instance_ports"]
    )
    assert specs["front"].dns == [node_address] and specs["front"].dns_search == [f"{name}.oct"]
    assert [p.host_port for p in specs["api"].ports] == [state["instance_ports"]["api"]]

    zone = build_zone(state, here="node-vm")
    server = DnsServer(address=node_address, port=53, zone=lambda: zone)
    proxy = Haproxy(tmp_path / "ingress")
    await server.start()
    try:
        await proxy.apply(routes_from_state(state, node_address))
        for service in ("api", "front"):
            status = await asyncio.to_thread(runtime.apply, specs[service])
            assert status.state == "running", status
        lines = await wait_until_async(
            lambda: asyncio.to_thread(runtime.logs, name, "front", 40),
            until=lambda lines: "api-ok" in lines,
            timeout=20,
            interval=0.2,
            message=lambda: f"front to fetch api by name (DNS stats: {server.stats}); its log",
        )
        assert f"resolved={node_address}" in lines
        assert any(line.split() == ["Name:", f"api.{name}.oct"] for line in lines), "the short name, searched"
        assert server.stats.answered > 0, "the answers came from oct's DNS server"
    finally:
        await proxy.stop()
        await server.close()
        for service in ("front", "api"):
            await asyncio.to_thread(runtime.remove, name, service)
