"""Slow, silent and greedy clients against a real node's API: each is cut off, the node answers others.

Before, a client could hold any number of connections, trickle header bytes for an hour (aiohttp's
default keep-alive is 3,630 s) or send a body one byte at a time for as long as it liked.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from octctl.server.limits import BODY_TIMEOUT, CONNECTIONS_PER_CLIENT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT
from octctl.tls import client_context
from tests.e2e.test_api import Cluster, cluster, running_cluster
from tests.wait import wait_until

__all__ = ["cluster"]  # the real single-node cluster fixture of the API tests

pytestmark = [pytest.mark.security, pytest.mark.e2e]


def connect_tcp(c: Cluster, source: str) -> socket.socket:
    return socket.create_connection(
        (c.settings.address, c.settings.api_port), timeout=5, source_address=(source, 0)
    )


def connect(c: Cluster, source: str) -> socket.socket:
    """A connection from ``source`` past the TLS handshake (the API is HTTPS), trusting the cluster CA."""
    return client_context(c.secrets.ca_cert).wrap_socket(connect_tcp(c, source))


def closed_by_peer(s: socket.socket, wait: float) -> bool:
    """True when the node closed (or reset) the connection within ``wait`` seconds."""
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True


@pytest.fixture
def sockets() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_one_address_gets_a_bounded_number_of_connections(cluster: Cluster, sockets: ExitStack) -> None:
    greedy = [
        sockets.enter_context(connect(cluster, "127.0.0.201")) for _ in range(CONNECTIONS_PER_CLIENT + 8)
    ]

    closed: list[socket.socket] = []

    def closed_so_far() -> list[socket.socket]:
        # Readable means closed, or a TLS session ticket (read here, so it is not seen twice).
        open_ones = [s for s in greedy if s not in closed]
        readable, _, _ = select.select(open_ones, [], [], 0)
        closed.extend(s for s in readable if closed_by_peer(s, 0.01))
        return closed

    wait_until(
        closed_so_far,
        until=lambda closed: len(closed) >= 8,
        timeout=IDLE_TIMEOUT / 2,  # well inside the idle timeout: only the cap can close any
        message=f"the node to close the connections over the cap of {CONNECTIONS_PER_CLIENT}",
    )
    # Each other connection answering a request proves the node counted it and let it through,
    # so the number closed is final, not "so far".
    for s in greedy:
        if s not in closed:
            s.settimeout(5)
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: node\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), "a connection under the cap was not served"
    assert len(closed) == 8, f"{len(closed)} of {len(greedy)} connections closed"
    # Another client still gets in and is answered.
    other = sockets.enter_context(connect(cluster, "127.0.0.202"))
    other.sendall(b"GET /v1/health HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
    assert other.recv(4096).startswith(b"HTTP/1.1 200")


#: The trickling test's node drops a connection without a whole request head after this (the
#: default, IDLE_TIMEOUT, is 20 s); still longer than the 5 s keep-alive of this test's clients.
SHORT_IDLE_TIMEOUT = 6.0


@pytest.fixture
def short_idle_cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path, api_idle_timeout=SHORT_IDLE_TIMEOUT)


def test_a_client_trickling_its_request_head_is_dropped(
    short_idle_cluster: Cluster, sockets: ExitStack
) -> None:
    cluster = short_idle_cluster
    idle_timeout = cluster.settings.api_idle_timeout
    slow = sockets.enter_context(connect(cluster, "127.0.0.203"))
    slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: node\r\n")
    started = time.monotonic()

    def dropped() -> bool:
        """One more header line, then up to a second for the node to hang up."""
        try:
            slow.sendall(b"X-Slow: 1\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return True
        return closed_by_peer(slow, 1.0)

    wait_until(
        dropped,
        timeout=idle_timeout + 5,
        interval=0,
        message="the node to drop a connection trickling its headers",
    )
    assert time.monotonic() - started >= idle_timeout - 1, "closed before the idle timeout: a false alarm?"


def test_a_body_that_never_finishes_gets_408(cluster: Cluster, sockets: ExitStack) -> None:
    slow = sockets.enter_context(connect(cluster, "127.0.0.204"))
    head = (
        "PUT /v1/kv/slow HTTP/1.1\r\nHost: node\r\n"
        f"Authorization: Bearer {cluster.secrets.token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    slow.sendall(head.encode() + b'{"value": "')
    slow.settimeout(BODY_TIMEOUT + 5)
    answer = slow.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert cluster.client.get("/v1/health").json()["ok"] is True


def test_a_connection_that_never_starts_tls_is_dropped(cluster: Cluster, sockets: ExitStack) -> None:
    """Before HTTP's own timeouts apply, the TLS handshake must finish within HANDSHAKE_TIMEOUT."""
    silent = sockets.enter_context(connect_tcp(cluster, "127.0.0.205"))
    started = time.monotonic()
    assert closed_by_peer(silent, HANDSHAKE_TIMEOUT + 5), "a silent connection outlived the handshake timeout"
    assert time.monotonic() - started >= HANDSHAKE_TIMEOUT - 1
    assert cluster.client.get("/v1/health").json()["ok"] is True
