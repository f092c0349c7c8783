"""Attacks on the Raft port of real `oct-ctl` processes, by a stranger who does not hold the
cluster's Raft secret (loopback only).

PySyncObj reads a 4-byte frame length and buffers the frame until it is complete, before anything
is authenticated. A stranger who claims ~2 GiB and streams junk made the node buffer it all,
copying the whole buffer on every read, on the event loop thread, until the node lost its
leadership or froze (docs/operations.md#security). The node must close such a connection at
once, stay leader, and keep answering; and one address must not hold more than a few connections
that have not authenticated (``octctl/state/raft_guard.py``).
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import struct
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

from octctl.tls import client_context
from tests.e2e.conftest import make_project  # noqa: F401  (the fixture, for this folder too)
from tests.e2e.harness import Project, state_record
from tests.wait import wait_until

pytestmark = [pytest.mark.security, pytest.mark.e2e]

#: What the attacker tries to push: a frame header claiming ~2 GiB, then junk.
ATTACK_BYTES = 50 * 1024 * 1024
CLAIMED_LENGTH = 2**31 - 64  # PySyncObj reads a signed native 32-bit length
ATTACK_SECONDS = 20.0
#: "Well before 50 MB": the node's cap before authentication is 64 KiB; the rest is what the two
#: kernels buffer on loopback (the attacker's send buffer autotunes up to 4 MiB).
ACCEPTED_AT_MOST = 8 * 1024 * 1024
HEALTH_EVERY = 0.1
HEALTH_WITHIN = 1.0
#: Source addresses of the attacker: loopback addresses no node of the test claims, so the cap per
#: address does not involve the nodes' own connections (they come from 127.0.0.1).
ATTACKER = "127.0.0.222"
OTHER_ATTACKER = "127.0.0.223"
PENDING_PER_ADDRESS = 8  # raft_guard.MAX_PENDING_PER_IP
AUTH_TIMEOUT = 5.0  # raft_guard.AUTH_TIMEOUT


@dataclass
class Node:
    id: str
    address: str
    api: str
    raft_port: int


@dataclass
class Cluster:
    nodes: list[Node]
    token: str
    tls: ssl.SSLContext

    def replica(self, node: Node) -> dict:
        request = urllib.request.Request(
            f"{node.api}/v1/cluster/replica", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5, context=self.tls) as resp:
            return json.loads(resp.read())

    def replicas(self) -> dict[str, dict]:
        return {n.id: self.replica(n) for n in self.nodes}

    def settled_leader(self, timeout: float = 30.0) -> tuple[Node, int]:
        """The leader and its term once every node agrees on both."""

        def settled(seen: dict[str, dict]) -> bool:
            agreed = (
                len({r["term"] for r in seen.values()}) == 1
                and len({r["leader"] for r in seen.values()}) == 1
            )
            return agreed and sum(bool(r["is_leader"]) for r in seen.values()) == 1

        seen = wait_until(
            self.replicas, until=settled, timeout=timeout, interval=0.2, message="a settled leader"
        )
        (leader,) = [n for n in self.nodes if seen[n.id]["is_leader"]]
        return leader, next(iter(seen.values()))["term"]


def start_cluster(project: Project) -> Cluster:
    project.oct("deploy")
    record = state_record(project.dir)
    nodes = []
    for folder in sorted((project.dir / ".oct").glob("nodes/*")):
        settings = json.loads((folder / "node.json").read_text())
        nodes.append(
            Node(
                id=folder.name,
                address=settings["address"],
                api=f"https://{settings['address']}:{settings['api_port']}",
                raft_port=int(settings["raft_port"]),
            )
        )
    assert len(nodes) == 3
    return Cluster(nodes, record["token"], client_context(record["ca_cert"]))


@dataclass
class HealthProbe:
    """Polls ``GET /v1/health`` every 100 ms on a thread; records how long each answer took."""

    url: str
    tls: ssl.SSLContext
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthProbe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5, context=self.tls) as resp:
                    if not json.loads(resp.read()).get("ok"):
                        self.failures.append("not ok")
            except OSError as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            took = time.monotonic() - started
            self.latencies.append(took)
            self._stop.wait(max(0.0, HEALTH_EVERY - took))


@dataclass
class Flood:
    sent: int = 0
    closed_by_node: bool = False
    seconds: float = 0.0
    error: str = ""


def flood(address: str, port: int) -> Flood:
    """Claim a ~2 GiB frame and stream junk as fast as the socket takes it, up to ATTACK_BYTES or
    ATTACK_SECONDS, or until the node closes the connection."""
    result = Flood()
    junk = bytes(range(256)) * 256  # 64 KiB
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ATTACKER, 0))
        sock.connect((address, port))
        sock.settimeout(0.5)
        pending = memoryview(struct.pack("<i", CLAIMED_LENGTH) + junk)
        while result.sent < ATTACK_BYTES and time.monotonic() - started < ATTACK_SECONDS:
            try:
                n = sock.send(pending)
            except TimeoutError:
                continue  # the node is not reading (or not yet): keep pushing until the deadline
            except OSError as e:  # ECONNRESET / EPIPE: the node closed it
                result.closed_by_node, result.error = True, f"{type(e).__name__}: {e}"
                break
            result.sent += n
            pending = pending[n:] if n < len(pending) else memoryview(junk)
        if not result.closed_by_node:
            result.closed_by_node = closed_soon(sock, 0.0)
    result.seconds = time.monotonic() - started
    return result


def closed_soon(sock: socket.socket, within: float) -> bool:
    """Whether the peer closed ``sock`` (EOF or reset) within ``within`` seconds."""
    readable, _, _ = select.select([sock], [], [], within)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except OSError:
        return True


def connect_from(source: str, address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect((address, port))
    return sock


def leadership_after(cluster: Cluster) -> dict[str, dict]:
    time.sleep(1.0)  # an election the attack caused would have started by now (timeouts 0.4-1.4 s)
    return cluster.replicas()


def assert_same_leadership(after: dict[str, dict], leader: Node, term: int) -> None:
    assert after[leader.id]["is_leader"], f"{leader.id} lost the leadership: {after}"
    assert {r["term"] for r in after.values()} == {term}, f"a new election happened: {after}"
    assert len({r["leader"] for r in after.values()}) == 1, after


def test_a_stranger_streaming_a_2gib_frame_is_cut_off_and_the_leader_keeps_leading(
    make_project,  # noqa: F811
) -> None:
    cluster = start_cluster(make_project("examples/quickstart"))
    leader, term = cluster.settled_leader()

    with HealthProbe(f"{leader.api}/v1/health", cluster.tls) as probe:
        time.sleep(0.5)
        attack = flood(leader.address, leader.raft_port)
        time.sleep(1.0)
    after = leadership_after(cluster)

    print(
        f"attack: {attack.sent / 2**20:.1f} MiB accepted in {attack.seconds:.2f}s, "
        f"closed by node: {attack.closed_by_node} ({attack.error}); health: {len(probe.latencies)} "
        f"answers, slowest {max(probe.latencies):.3f}s, failures {probe.failures[:3]}; "
        f"leader {leader.id} term {term} before, after: "
        f"{ {k: (v['is_leader'], v['term']) for k, v in after.items()} }"
    )
    assert attack.closed_by_node, f"the node kept the connection open after {attack.sent} bytes"
    assert attack.sent < ACCEPTED_AT_MOST, f"the node took {attack.sent / 2**20:.1f} MiB first"
    assert not probe.failures, probe.failures
    assert len(probe.latencies) >= 10
    slow = [round(t, 3) for t in probe.latencies if t > HEALTH_WITHIN]
    assert not slow, f"health answers slower than {HEALTH_WITHIN}s: {slow}"
    assert_same_leadership(after, leader, term)


def test_connections_that_never_authenticate_are_capped_per_address_and_time_out(
    make_project,  # noqa: F811
) -> None:
    cluster = start_cluster(make_project("examples/quickstart"))
    leader, term = cluster.settled_leader()

    with HealthProbe(f"{leader.api}/v1/health", cluster.tls) as probe:
        # Many connections from one address that send nothing (or a frame that never completes),
        # a few ms apart so that PySyncObj's listen backlog of 5 does not overflow (the client's
        # retries would spread them over seconds, past the auth timeout of the first ones).
        started = time.monotonic()
        socks = []
        for _ in range(32):
            socks.append(connect_from(ATTACKER, leader.address, leader.raft_port))
            time.sleep(0.005)
        connecting = time.monotonic() - started
        for sock in socks[::2]:
            sock.sendall(struct.pack("<i", 100) + b"x" * 10)
        time.sleep(1.0)
        closed = [closed_soon(s, 0.0) for s in socks]
        kept = closed.count(False)
        # Another address still gets its own share while the first one is at its cap.
        other = connect_from(OTHER_ATTACKER, leader.address, leader.raft_port)
        other_refused = closed_soon(other, 1.0)
        # None of them ever authenticates: the node closes them all after AUTH_TIMEOUT.
        deadline = time.monotonic() + AUTH_TIMEOUT + 3.0
        still_open = [s for s, c in zip(socks, closed, strict=True) if not c] + [other]
        while still_open and time.monotonic() < deadline:
            still_open = [s for s in still_open if not closed_soon(s, 0.2)]
        for sock in [*socks, other]:
            sock.close()
    after = leadership_after(cluster)

    print(
        f"connected 32 in {connecting:.2f}s, kept {kept}; other address refused: {other_refused}; "
        f"still open after the auth timeout: {len(still_open)}; "
        f"slowest health {max(probe.latencies):.3f}s; "
        f"leader {leader.id} term {term} before, after: "
        f"{ {k: (v['is_leader'], v['term']) for k, v in after.items()} }"
    )
    assert 1 <= kept <= PENDING_PER_ADDRESS, f"{kept} unauthenticated connections kept from one address"
    assert not other_refused, "another address was refused while the first one was at its cap"
    assert not still_open, f"{len(still_open)} connections never authenticated and were kept"
    assert not probe.failures, probe.failures
    assert max(probe.latencies) <= HEALTH_WITHIN, max(probe.latencies)
    assert_same_leadership(after, leader, term)
