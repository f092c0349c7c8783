"""The Raft port's guard (``octctl/state/raft_guard.py``) in one process: strangers' frames are
capped before they are buffered, connections that do not authenticate are few and short-lived,
and authenticated peers still exchange large messages. The attack on real processes is in
``tests/security/test_raft_port.py``."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import struct
from pathlib import Path

import pytest

from octctl.logthrottle import LogLimiter
from octctl.state import raft_guard
from octctl.state.kv import kv_command
from octctl.state.machine import RaftNode, RaftUnavailable
from octctl.state.raft_guard import PendingConnections
from tests.integration.test_raft_wire import free_addresses
from tests.wait import wait_until_async


def open_nodes(tmp_path: Path, count: int) -> list[RaftNode]:
    loop = asyncio.get_running_loop()
    addresses = free_addresses(count)
    nodes = []
    for i, address in enumerate(addresses):
        (tmp_path / str(i)).mkdir()
        nodes.append(RaftNode(address, addresses, tmp_path / str(i), "s3cret", loop))
    return nodes


async def push(address: str, data: bytes, timeout: float = 5.0) -> tuple[int, bool]:
    """Send ``data`` to ``address`` as a stranger; the bytes the kernel took and whether the node
    closed the connection."""
    loop = asyncio.get_running_loop()
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    sock.setblocking(False)
    sent = 0
    try:
        await loop.sock_connect(sock, (host, int(port)))
        deadline = loop.time() + timeout
        while sent < len(data) and loop.time() < deadline:
            try:
                sent += sock.send(data[sent : sent + 65536])
            except BlockingIOError:
                await asyncio.sleep(0.001)
            except OSError:
                return sent, True
        while loop.time() < deadline:
            try:
                if sock.recv(1) == b"":
                    return sent, True
            except BlockingIOError:
                await asyncio.sleep(0.01)
            except OSError:
                return sent, True
        return sent, False
    finally:
        sock.close()


@pytest.fixture(autouse=True)
def every_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_guard, "_warnings", LogLimiter(raft_guard.log, burst=10**6))


async def test_a_stranger_claiming_a_2gib_frame_is_closed_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="octctl.state.raft_guard")
    (node,) = open_nodes(tmp_path, 1)
    try:
        await wait_until_async(node.is_leader, message="a leader")
        junk = struct.pack("i", 2**31 - 64) + os.urandom(20 * 1024 * 1024)
        sent, closed = await push(node.self_address, junk)
        assert closed and sent < 8 * 1024 * 1024, sent
        assert "frame of 2147483584 bytes, over the 65536-byte limit before authentication" in caplog.text
        assert "Traceback" not in caplog.text
        await node.execute(kv_command("kv_put", key="k", value="still serving"))
    finally:
        node.close()


async def test_a_small_frame_that_does_not_authenticate_is_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="octctl.state.raft_guard")
    (node,) = open_nodes(tmp_path, 1)
    try:
        await wait_until_async(node.is_leader, message="a leader")
        for length in (100, -5, 0):
            _, closed = await push(node.self_address, struct.pack("i", length) + b"x" * 100)
            assert closed, length
        assert "its frame did not authenticate (InvalidTag)" in caplog.text
        assert "frame of -5 bytes" in caplog.text
        assert len(node.sync.transport.pending) == 0
    finally:
        node.close()


async def stranger(address: str, source: str) -> socket.socket:
    loop = asyncio.get_running_loop()
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await loop.sock_connect(sock, (host, int(port)))
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def test_one_address_gets_a_few_unauthenticated_connections_and_the_port_stays_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused at once, right after the accept: the node must stop watching a socket before it
    is closed (asyncio cannot change a closed descriptor's events; PySyncObj's server then
    unbinds on the error and the node stops accepting anyone)."""
    (node,) = open_nodes(tmp_path, 1)
    socks: list[socket.socket] = []
    try:
        await wait_until_async(node.is_leader, message="a leader")
        for _ in range(raft_guard.MAX_PENDING_PER_IP + 4):
            socks.append(await stranger(node.self_address, "127.0.0.77"))
        # The node has judged a connection once it holds it as pending or has closed it (both in
        # the same callback of this loop); once it has judged them all, only the authentication
        # timeout can close one it kept, so the count below is final, not "so far".
        pending, closed = await wait_until_async(
            lambda: (len(node.sync.transport.pending), sum(closed_by_peer(s) for s in socks)),
            until=lambda seen: sum(seen) == len(socks),
            message="the node to keep or close every connection",
        )
        assert (pending, closed) == (raft_guard.MAX_PENDING_PER_IP, 4)
        assert "from that address have not authenticated" in caplog.text
        assert "Traceback" not in caplog.text
        socks.append(await stranger(node.self_address, "127.0.0.78"))  # the port still accepts
        await wait_until_async(
            lambda: (
                len(node.sync.transport.pending) > raft_guard.MAX_PENDING_PER_IP or closed_by_peer(socks[-1])
            ),
            message="the node to keep or close the other address's connection",
        )
        assert not closed_by_peer(socks[-1])
        assert len(node.sync.transport.pending) == raft_guard.MAX_PENDING_PER_IP + 1
    finally:
        for s in socks:
            s.close()
        node.close()


class FakeConnection:
    def __init__(self, ip: str) -> None:
        self.peer, self.peer_ip = f"{ip}:1", ip
        self.pending: PendingConnections | None = None
        self.closed = False

    def disconnect(self) -> None:
        self.closed = True
        if self.pending is not None:
            self.pending.release(self)  # type: ignore[arg-type]


def test_unauthenticated_connections_are_capped_per_address_and_in_total_and_expire() -> None:
    pending = PendingConnections(per_ip=2, total=3, timeout=5.0)
    a1, a2, a3 = (FakeConnection("10.0.0.1") for _ in range(3))
    assert pending.admit(a1) and pending.admit(a2)  # type: ignore[arg-type]
    assert not pending.admit(a3)  # type: ignore[arg-type]  # that address is at its cap
    b1, c1 = FakeConnection("10.0.0.2"), FakeConnection("10.0.0.3")
    assert pending.admit(b1)  # type: ignore[arg-type]
    assert pending.admit(c1)  # type: ignore[arg-type]  # full: the oldest one goes
    assert a1.closed and not a2.closed and len(pending) == 3
    pending.release(b1)  # type: ignore[arg-type]  # authenticated
    assert b1.pending is None and len(pending) == 2
    assert pending.admit(a3)  # type: ignore[arg-type]  # a1 freed a slot of its address
    pending._since[a2] -= 1.0  # type: ignore[index]  # the oldest by a second
    pending.expire(pending._since[c1] + 4.5)  # type: ignore[index]
    assert a2.closed and not c1.closed and not a3.closed and len(pending) == 2
    pending.expire(1e12)
    assert c1.closed and a3.closed and len(pending) == 0 and not pending._by_ip


def test_refusals_are_logged_once_per_interval_and_the_rest_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="octctl.state.raft_guard")
    now = [0.0]
    throttled = LogLimiter(raft_guard.log, burst=1, window=raft_guard.WARN_EVERY, clock=lambda: now[0])
    throttled.log(logging.WARNING, "refused", "refused %s", "a")
    throttled.log(logging.WARNING, "refused", "refused %s", "b")
    now[0] = raft_guard.WARN_EVERY
    throttled.log(logging.WARNING, "refused", "refused %s", "c")
    assert [r.getMessage() for r in caplog.records] == [
        "refused a",
        f"suppressed 1 similar messages (refused) in {raft_guard.WARN_EVERY:.0f} s",
        "refused c",
    ]


async def test_peers_still_exchange_messages_larger_than_the_stranger_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A follower's write is forwarded to the leader whole (PySyncObj's ``apply_command``): a 3 MiB
    one is one authenticated frame of ~3 MiB, read over several events, then replicated."""
    caplog.set_level(logging.WARNING, logger="octctl.state.raft_guard")
    nodes = open_nodes(tmp_path, 3)
    try:
        await wait_until_async(lambda: any(n.is_leader() for n in nodes), message="a leader")
        leader = next(n for n in nodes if n.is_leader())
        follower = next(n for n in nodes if n is not leader)
        await leader.execute(kv_command("kv_put", key="k", value="v"))
        pad = base64.b64encode(os.urandom(3 * 1024 * 1024 * 3 // 4)).decode()  # deflates little
        await follower.execute({"op": "noop", "args": {"pad": pad}}, timeout=20)
        await follower.execute(kv_command("kv_put", key="after", value="big"), timeout=20)
        await wait_until_async(
            lambda: all(n.machine.kv_get("after") is not None for n in nodes), message="every replica"
        )
        assert {n.machine.state_hash() for n in nodes} == {leader.machine.state_hash()}
        assert "raft:" not in caplog.text  # no connection was refused
    finally:
        for n in nodes:
            n.close()


async def test_an_entry_over_the_cap_is_refused_when_proposed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raft_guard, "MAX_ENTRY", 100_000)
    (node,) = open_nodes(tmp_path, 1)
    try:
        await wait_until_async(node.is_leader, message="a leader")
        with pytest.raises(RaftUnavailable, match="reason 6"):
            await node.execute({"op": "noop", "args": {"pad": "x" * 200_000}})
        await node.execute(kv_command("kv_put", key="k", value="small"))
        assert node.machine.kv_get("k") is not None
    finally:
        node.close()
