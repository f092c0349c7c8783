"""A container knocks on the control ports of its own node and of another node (Raft, API, mesh).

On AWS a container's packets reach this node through the bridge gateway and reach other nodes
masqueraded as this node, which the security group admits to the Raft and API ports. A node that
guards containers (every VM) drops that traffic; DNS stays reachable. Here the node is a real
``oct-ctl`` serving on the Docker bridge's gateway address (what a VM's address is to its
containers), and "another node" is a listener in a network namespace routed through this host.
Needs root (iptables, netns), like CI: nothing here may skip itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from octctl.addresses import MESH_PORT
from octctl.node_settings import NodeSettings, Secrets, write_node_files
from octctl.providers.local.provider import (
    free_address,
    local_dns_port,
    local_node_settings,
    node_pid,
    nodes_dir,
    octctl_pids,
    pid_alive,
    start_node,
    stop_node,
)
from octctl.runtime import firewall
from tests.dns.test_container_resolution import bridge_gateway, free_port
from tests.wait import wait_until

pytestmark = [pytest.mark.security, pytest.mark.e2e, pytest.mark.docker]

IMAGE = "oct-test/busybox:latest"
#: The "other node": a namespace behind a veth pair, on a subnet no test or engine uses.
OTHER_NS = f"oct-reach-{uuid.uuid4().hex[:6]}"
HOST_SIDE, OTHER_SIDE = "10.253.77.1", "10.253.77.2"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this attack test must run as root (CI does): iptables and namespaces need it")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@dataclass
class Target:
    address: str
    raft_port: int
    api_port: int
    dns_port: int


@pytest.fixture(scope="module")
def guarded_node(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[Target]:
    """A real oct-ctl on the bridge gateway with ``guard_containers`` on, as on a VM."""
    require_root()
    firewall.unguard()  # nothing from an earlier, interrupted run
    gateway = bridge_gateway(docker_client)
    root = tmp_path_factory.mktemp("container-reach") / ".oct"
    dns_port = local_dns_port(gateway)
    assert dns_port is not None, f"no DNS port free on {gateway}"
    settings: NodeSettings = local_node_settings(root, gateway, "c-reach", 2000, 2048, []).model_copy(
        update={
            "api_port": free_port(gateway),
            "raft_port": free_port(gateway),
            "dns_port": dns_port,
            "dns_upstreams": [],
            "guard_containers": True,
        }
    )
    (nodes_dir(root) / settings.node).mkdir(parents=True, mode=0o700)
    start_node(root, settings, Secrets.mint("c-reach"))
    pid = node_pid(root, settings.node)
    assert pid is not None
    log = nodes_dir(root) / settings.node / "oct-ctl.log"
    try:

        def serving() -> bool:
            assert pid_alive(pid), f"oct-ctl exited:\n{log.read_text(errors='replace')[-3000:]}"
            return listening(gateway, settings.api_port)

        wait_until(serving, timeout=30, interval=0.2, message="the node to serve its API")
        yield Target(gateway, settings.raft_port, settings.api_port, dns_port)
    finally:
        stop_node(root, settings.node)
        for stray in octctl_pids(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray, signal.SIGKILL)
        firewall.unguard()


def listening(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
        return True
    return False


@pytest.fixture(scope="module")
def other_node(guarded_node: Target) -> Iterator[str]:
    """Another node's address, routed through this host (FORWARD, like a peer VM in the VPC), with
    listeners on the cluster's Raft and API ports and on an unrelated port."""
    sh("ip", "netns", "add", OTHER_NS)
    try:
        sh("ip", "link", "add", f"{OTHER_NS[-6:]}h", "type", "veth", "peer", "name", f"{OTHER_NS[-6:]}o")
        sh("ip", "link", "set", f"{OTHER_NS[-6:]}o", "netns", OTHER_NS)
        sh("ip", "addr", "add", f"{HOST_SIDE}/30", "dev", f"{OTHER_NS[-6:]}h")
        sh("ip", "link", "set", f"{OTHER_NS[-6:]}h", "up")
        inside = ("ip", "netns", "exec", OTHER_NS)
        sh(*inside, "ip", "addr", "add", f"{OTHER_SIDE}/30", "dev", f"{OTHER_NS[-6:]}o")
        sh(*inside, "ip", "link", "set", f"{OTHER_NS[-6:]}o", "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "route", "add", "default", "via", HOST_SIDE)
        ports = [guarded_node.raft_port, guarded_node.api_port, MESH_PORT, guarded_node.api_port + 1]
        # busybox nc as a listener inside the namespace: one per port, restarted after each connection
        loops = " & ".join(f"while true; do busybox nc -l -p {p} </dev/null; done" for p in ports)
        server = subprocess.Popen(
            [*inside, "sh", "-c", loops + " & wait"], start_new_session=True, stdout=subprocess.DEVNULL
        )
        try:
            wait_until(
                lambda: all(listening(OTHER_SIDE, p) for p in ports),
                timeout=10,
                interval=0.1,
                message="the other node's listeners to come up",
            )
            yield OTHER_SIDE
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    finally:
        subprocess.run(["ip", "link", "del", f"{OTHER_NS[-6:]}h"], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", OTHER_NS], capture_output=True, timeout=30)


def knock(
    client: docker.DockerClient, targets: list[tuple[str, int]], network: str = "bridge"
) -> dict[str, str]:
    """From a fresh container, try a TCP connection to each ``(address, port)``: OPEN or CLOSED."""
    script = "; ".join(
        f"if busybox nc -w 2 {a} {p} </dev/null >/dev/null 2>&1; then echo {a}:{p}=OPEN; "
        f"else echo {a}:{p}=CLOSED; fi"
        for a, p in targets
    )
    out = client.containers.run(IMAGE, ["sh", "-c", script], network=network, remove=True)
    return dict(line.split("=", 1) for line in out.decode().split())


def addr(address: str, port: int) -> str:
    return f"{address}:{port}"


def test_containers_cannot_reach_the_control_ports_of_their_node_or_another(
    docker_client: docker.DockerClient, guarded_node: Target, other_node: str
) -> None:
    node = guarded_node
    targets = [
        (node.address, node.raft_port),
        (node.address, node.api_port),
        (node.address, node.dns_port),  # DNS over TCP: containers still resolve through the node
        (other_node, node.raft_port),
        (other_node, node.api_port),
        (other_node, MESH_PORT),  # another node's mesh port: only its peers' proxies may call it
        (other_node, node.api_port + 1),  # anything else on another node stays reachable
    ]
    seen = knock(docker_client, targets)
    assert seen == {
        addr(node.address, node.raft_port): "CLOSED",
        addr(node.address, node.api_port): "CLOSED",
        addr(node.address, node.dns_port): "OPEN",
        addr(other_node, node.raft_port): "CLOSED",
        addr(other_node, node.api_port): "CLOSED",
        addr(other_node, MESH_PORT): "CLOSED",
        addr(other_node, node.api_port + 1): "OPEN",
    }

    # The same from a user-defined network (br-*), the kind oct creates for a project.
    network = docker_client.networks.create(f"oct-reach-{uuid.uuid4().hex[:6]}", driver="bridge")
    try:
        seen = knock(docker_client, targets[:2] + targets[3:6], network=network.name)
        assert set(seen.values()) == {"CLOSED"}, seen
    finally:
        network.remove()

    # Proof that the guard is what stops them: without it the same knocks get in.
    firewall.unguard()
    try:
        seen = knock(docker_client, [targets[0], targets[3]])
        assert set(seen.values()) == {"OPEN"}, seen
    finally:
        firewall.guard([node.raft_port, node.api_port, MESH_PORT])


def test_guard_is_idempotent_and_unguard_leaves_nothing(guarded_node: Target) -> None:
    firewall.guard([guarded_node.raft_port, guarded_node.api_port])
    firewall.guard([guarded_node.raft_port, guarded_node.api_port])  # a restarting daemon
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
    jumps = [line for line in rules.splitlines() if f"-j {firewall.CHAIN}" in line]
    assert len(jumps) == len(firewall.HOOKS) * len(firewall.BRIDGES), jumps
    firewall.unguard()
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
    assert firewall.CHAIN not in rules
    firewall.guard([guarded_node.raft_port, guarded_node.api_port, MESH_PORT])


def test_a_node_that_cannot_guard_refuses_to_start(tmp_path: Path) -> None:
    """No iptables on its PATH: the daemon says so and exits, rather than run unguarded."""
    root = tmp_path / ".oct"
    address = free_address(root)
    settings = local_node_settings(root, address, "c-noguard", 2000, 2048, []).model_copy(
        update={"guard_containers": True}
    )
    data_dir = nodes_dir(root) / settings.node
    write_node_files(data_dir, settings, Secrets.mint("c-noguard"))
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "octctl", "--data-dir", str(data_dir)],
        env={**os.environ, "PATH": str(empty)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "iptables is not installed" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
