"""The service mesh on a real 3-node local cluster: every node's proxy serves each internal
service at its port; a call to an instance on another node crosses over mutual TLS between the
nodes' proxies (seen on the wire, not read from a configuration); a node without a certificate of
the cluster CA gets nothing from a mesh port; a caller keeps its address when the callee moves,
and loses no request while the callee is rolled."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from octctl.tls import issue_node_certificate, new_ca
from tests.e2e.harness import Project, services_by_name, state_record
from tests.e2e.test_replicas import HEALTHCHECK, SERVE, Load, kill_node
from tests.wait import wait_until

pytestmark = pytest.mark.e2e

ECHO_PORT, WEB_PORT, MESH_PORT = 9400, 9401, 31890

CONFIG = (
    f"""\
[project]
name = "mesh"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3

[[project.services]]
name = "echo"
runtime = "process"
command = "python3 echo.py"
internal_port = {ECHO_PORT}
cpus = 100
memory = 64

[[project.services]]
name = "web"
runtime = "process"
command = "python3 web.py"
internal_port = {WEB_PORT}
replicas = 2
cpus = 100
memory = 64

[project.services.envs]
VERSION = "one"
"""
    + HEALTHCHECK
)

#: A TCP service, as Postgres or Redis would be: each line comes back with the node's name.
ECHO = """\
import os, socketserver

class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(os.environ["OCT_NODE"].encode() + b" " + line)

socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((os.environ["HOST"], int(os.environ["PORT"])), Echo).serve_forever()
"""


def mesh_project(make_project) -> Project:  # type: ignore[no-untyped-def]
    project: Project = make_project("mesh", CONFIG)
    for name, text in (("echo.py", ECHO), ("web.py", SERVE)):  # (web: replicas' HTTP server)
        (project.dir / name).write_text(text)
        os.chmod(project.dir / name, 0o644)  # (services run as another user)
    os.chmod(project.dir, 0o755)
    return project


def echo(address: str, line: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection((address, ECHO_PORT), timeout=timeout) as conn:
        conn.sendall(line + b"\n")
        return conn.makefile("rb").readline()


class Capture:
    """Every TCP segment on the loopback interface while it runs, as ``(source port, destination
    port, payload)``: a packet socket (root, as in CI), so what crossed is read from the wire."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        self.segments: list[tuple[int, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(65535)
            except TimeoutError:
                continue
            ip = frame[14:]  # (lo's frames carry an Ethernet header of zeros)
            if len(ip) < 20 or ip[9] != 6:
                continue
            tcp = ip[(ip[0] & 0x0F) * 4 :]
            source, destination = struct.unpack("!HH", tcp[:4])
            self.segments.append((source, destination, tcp[(tcp[12] >> 4) * 4 :]))

    def __enter__(self) -> Capture:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.3)  # (the last segments of the exchange)
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def payloads(self, port: int) -> list[bytes]:
        return [data for source, destination, data in self.segments if port in (source, destination) and data]


@pytest.fixture
def deployed(make_project) -> Iterator[Project]:  # type: ignore[no-untyped-def]
    project = mesh_project(make_project)
    project.oct("deploy")
    yield project


def test_calls_cross_nodes_over_mutual_tls_and_a_node_without_a_cluster_certificate_gets_nothing(
    deployed: Project, tmp_path: Path
) -> None:
    status = deployed.status()
    echo_node = services_by_name(status)["echo"]["node"]
    # Every node serves echo at its port, wherever it runs: the stable in-cluster address.
    for node in status["nodes"]:
        assert echo(node["address"], b"hi") == f"{echo_node} hi\n".encode()

    caller = next(n for n in status["nodes"] if n["id"] != echo_node)
    marker = f"secret-{uuid.uuid4().hex}".encode()
    with Capture() as wire:
        assert echo(caller["address"], marker) == f"{echo_node} ".encode() + marker + b"\n"
    hops = wire.payloads(MESH_PORT)
    assert hops, "the call crossed to echo's node through its mesh port"
    assert not any(marker in data for data in hops), "the mesh hop carried the payload in clear"
    hello = [data for data in hops if data[:1] == b"\x16" and b".echo.mesh.mesh" in data]
    assert hello, "a TLS ClientHello asking for an echo instance by name (SNI)"
    assert any(marker in data for data in wire.payloads(ECHO_PORT)), "the capture saw the caller's plaintext"

    # The answering node logged the hop with the caller node's certificate name.
    access = deployed.dir / ".oct" / "nodes" / echo_node / "ingress" / "access.log"
    wait_until(
        lambda: access.read_text(),
        until=lambda text: any(
            line.startswith("mesh.echo_") and f" mesh {caller['id']} " in line for line in text.splitlines()
        ),
        timeout=10,
        message="the mesh hop in the answering node's access log",
    )

    # Attacks on the mesh port of echo's node: without a client certificate, and with one of another CA.
    echo_address = next(n["address"] for n in status["nodes"] if n["id"] == echo_node)
    ca_pem = state_record(deployed.dir)["ca_cert"]
    names = sorted({_sni(data) for data in hello} - {None})
    assert names, "a server name in the ClientHello"
    stranger_key, stranger_ca = new_ca("another-cluster")
    stranger = issue_node_certificate(stranger_key, stranger_ca, caller["id"], [caller["address"]])
    for present in (None, stranger):
        context = ssl.create_default_context(cadata=ca_pem)
        context.check_hostname = False
        if present is not None:
            chain = tmp_path / "stranger.pem"
            chain.write_text(present[1] + present[0])
            context.load_cert_chain(chain)
        assert _mesh_answer(context, echo_address, names[0], marker) == b"", "a mesh port answered a stranger"


def _sni(client_hello: bytes) -> str | None:
    """The server name of a TLS ClientHello record (RFC 8446 §4.1.2, RFC 6066 §3)."""
    with contextlib.suppress(IndexError, struct.error, UnicodeDecodeError):
        at = 5 + 4 + 2 + 32  # record header, handshake header, version, random
        at += 1 + client_hello[at]  # session id
        at += 2 + struct.unpack("!H", client_hello[at : at + 2])[0]  # cipher suites
        at += 1 + client_hello[at]  # compression methods
        end = at + 2 + struct.unpack("!H", client_hello[at : at + 2])[0]
        at += 2
        while at < end:
            kind, size = struct.unpack("!HH", client_hello[at : at + 4])
            if kind == 0:  # server_name: list length, type, name length, name
                length = struct.unpack("!H", client_hello[at + 7 : at + 9])[0]
                return client_hello[at + 9 : at + 9 + length].decode()
            at += 4 + size
    return None


def _mesh_answer(context: ssl.SSLContext, address: str, name: str, line: bytes) -> bytes:
    """What a mesh port sends back to ``line`` over TLS made with ``context`` (empty: nothing)."""
    try:
        raw = socket.create_connection((address, MESH_PORT), timeout=5)
        with raw, context.wrap_socket(raw, server_hostname=name) as conn:
            conn.sendall(line + b"\n")
            return conn.recv(1024)
    except (ssl.SSLError, ConnectionError, TimeoutError):
        return b""


def test_a_caller_keeps_its_address_when_the_callee_moves_and_loses_nothing_while_it_rolls(
    deployed: Project,
) -> None:
    status = deployed.status()
    web_nodes = {i["node"] for i in services_by_name(status)["web"]["instances"]}
    # HTTP through a node without a web instance: every request crosses the mesh.
    outside = next(n for n in status["nodes"] if n["id"] not in web_nodes)
    with Load(f"http://{outside['address']}:{WEB_PORT}/") as load:
        deployed.edit('VERSION = "one"', 'VERSION = "two"')
        deployed.oct("deploy")

        def versions() -> set[str]:
            load.answers.clear()
            wait_until(lambda: sum(load.answers.values()) >= 20, timeout=10, message="20 answers")
            return {answer.split()[0] for answer in load.answers}

        wait_until(versions, until=lambda seen: seen == {"two"}, timeout=20, message="only the new version")
    assert load.failures == [], f"requests lost while web rolled: {load.failures}"

    # echo's node dies: echo runs elsewhere, and the callers' address does not change.
    echo_node = services_by_name(deployed.status())["echo"]["node"]
    survivors = [n["address"] for n in status["nodes"] if n["id"] != echo_node]
    kill_node(deployed, echo_node)

    def moved(status: dict) -> bool:
        return services_by_name(status)["echo"]["node"] not in (echo_node, None)

    now = wait_until(deployed.status, until=moved, timeout=60, interval=0.5, message="echo to move")
    new_node = services_by_name(now)["echo"]["node"]
    for address in survivors:
        wait_until(
            lambda address=address: echo(address, b"again"),  # type: ignore[misc]
            until=lambda answer: answer == f"{new_node} again\n".encode(),
            timeout=20,
            interval=0.3,
            ignore=(OSError,),
            message=f"echo at {address}:{ECHO_PORT} from its new node",
        )


def test_a_tcp_caller_loses_only_the_connections_open_on_a_node_that_dies(make_project) -> None:  # type: ignore[no-untyped-def]
    project = mesh_project(make_project)
    project.edit(f"internal_port = {ECHO_PORT}\n", f"internal_port = {ECHO_PORT}\nreplicas = 2\n")
    project.oct("deploy")
    status = project.status()
    echo_nodes = {i["node"] for i in services_by_name(status)["echo"]["instances"]}
    caller = next(n for n in status["nodes"] if n["id"] not in echo_nodes)

    # One open connection to each instance, through the caller's node.
    open_on: dict[str, tuple[socket.socket, Any]] = {}
    spare: list[socket.socket] = []
    while len(open_on) < 2:
        conn = socket.create_connection((caller["address"], ECHO_PORT), timeout=5)
        conn.sendall(b"which\n")
        lines = conn.makefile("rb")
        node = lines.readline().split()[0].decode()
        if node in open_on:
            spare.append(conn)
        else:
            open_on[node] = (conn, lines)
        assert len(spare) < 20, "the caller's proxy balances new connections over both instances"
    victim, survivor = sorted(open_on)
    kill_node(project, victim)

    conn, lines = open_on[survivor]
    conn.sendall(b"still\n")
    assert lines.readline() == f"{survivor} still\n".encode(), "a connection to a live instance lives on"
    conn, lines = open_on[victim]
    with contextlib.suppress(OSError):
        conn.sendall(b"gone\n")
    assert lines.readline() == b"", "the connection open on the dead node ends"
    # Every new connection gets an instance that lives, at once (the survivor, or the dead node's
    # instance once the leader has moved it).
    answers = [echo(caller["address"], b"new").decode() for _ in range(20)]
    assert all(a.endswith(" new\n") and not a.startswith(f"{victim} ") for a in answers), answers
    for leftover in [*spare, *(c for c, _ in open_on.values())]:
        leftover.close()
