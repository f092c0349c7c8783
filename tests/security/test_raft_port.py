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
import urllib.error
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
#: Source of the last connection of an attack, whose closing shows the node judged all before it.
LAST_ATTACKER = "127.0.0.224"
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

    def kv(self, node: Node, key: str, value: str | None = None) -> str | None:
        """Write ``key`` through ``node`` (with ``value``), or read it from ``node``'s own replica."""
        request = urllib.request.Request(
            f"{node.api}/v1/kv/{key}" + ("" if value is not None else "?stale=true"),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            data=None if value is None else json.dumps({"value": value}).encode(),
            method="GET" if value is None else "PUT",
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.tls) as resp:
                return str(json.loads(resp.read()).get("value"))
        except urllib.error.HTTPError as e:
            if e.code == 404 and value is None:
                return None
            raise

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


def leadership_after(cluster: Cluster, leader: Node) -> dict[str, dict]:
    """Every replica's view once each has applied a write the leader took after the attack.

    A follower the attack cut off from the leader's heartbeats starts an election when its timer
    runs out, which is before any message sent after the attack reaches it; the write is such a
    message. So once every replica holds the write, any election the attack caused shows in the
    terms read next.
    """
    try:
        cluster.kv(leader, "after-attack", "written")
    except OSError as e:
        raise AssertionError(
            f"the leader refused a write after the attack ({e}): {cluster.replicas()}"
        ) from e
    wait_until(
        lambda: [cluster.kv(n, "after-attack") for n in cluster.nodes],
        until=lambda values: values == ["written"] * len(cluster.nodes),
        timeout=10,
        interval=0.1,
        message="every replica to apply the write made after the attack",
    )
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
        # These two sleeps are the probe's windows before and after the attack (what it measures
        # is how fast health answers over time), not waits for something to happen.
        time.sleep(0.5)
        attack = flood(leader.address, leader.raft_port)
        time.sleep(1.0)
    after = leadership_after(cluster, leader)

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
        # Another address still gets its own share while the first one is at its cap.
        other = connect_from(OTHER_ATTACKER, leader.address, leader.raft_port)
        # The node accepts connections in the order they were made, keeping or closing each as it
        # accepts it; it closes one whose whole frame does not authenticate once it has read it.
        # So when it closes this last one, it has judged every one before: the counts are final
        # (the ones kept stay open until AUTH_TIMEOUT), not "so far".
        last = connect_from(LAST_ATTACKER, leader.address, leader.raft_port)
        last.sendall(struct.pack("<i", 100) + b"x" * 100)
        judged = closed_soon(last, AUTH_TIMEOUT / 2)
        closed = [closed_soon(s, 0.0) for s in socks]
        kept = closed.count(False)
        other_refused = closed_soon(other, 0.0)
        # None of them ever authenticates: the node closes them all after AUTH_TIMEOUT.
        unauthenticated = [s for s, c in zip(socks, closed, strict=True) if not c] + [other]
        wait_until(
            lambda: [s for s in unauthenticated if not closed_soon(s, 0.0)],
            until=lambda still_open: not still_open,
            timeout=AUTH_TIMEOUT + 3.0,
            interval=0.2,
            message="the node to close every connection that never authenticated",
        )
        for sock in [*socks, other, last]:
            sock.close()
    after = leadership_after(cluster, leader)

    print(
        f"connected 32 in {connecting:.2f}s, kept {kept}; other address refused: {other_refused}; "
        f"slowest health {max(probe.latencies):.3f}s; "
        f"leader {leader.id} term {term} before, after: "
        f"{ {k: (v['is_leader'], v['term']) for k, v in after.items()} }"
    )
    assert judged, "the node kept a connection open after a whole frame that does not authenticate"
    assert 1 <= kept <= PENDING_PER_ADDRESS, f"{kept} unauthenticated connections kept from one address"
    assert not other_refused, "another address was refused while the first one was at its cap"
    assert not probe.failures, probe.failures
    assert max(probe.latencies) <= HEALTH_WITHIN, max(probe.latencies)
    assert_same_leadership(after, leader, term)
