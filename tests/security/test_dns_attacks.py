"""Attacks on a node's DNS server, each performed with real DNS packets.

The first tests attack a :class:`DnsServer` running in this process on 127.0.0.1 from other loopback
addresses; ``test_real_node_*`` attack a real ``oct-ctl`` process started by the local provider,
watching its descriptors in ``/proc/<pid>/fd`` and its log file. The resolver behind the server is
a fake one (``FakeUpstream``, on 127.0.0.53) that counts every packet reaching it and answers each
query with ~3.8 KB of TXT records, or never answers.

What each attack did before the fix: an outside name was forwarded for anyone (open resolver); a
3.8 KB upstream answer was relayed whole to a 29-byte UDP query (amplification); every forward held
a socket, without a cap (descriptor exhaustion); a malformed name raised in the server's callbacks
(a traceback per packet, into a log that was never rotated).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, TXT, A, DNSRecord

from octctl.dns.server import DnsServer
from octctl.dns.zone import Zone, build_zone
from octctl.node_settings import Secrets
from octctl.providers.local.provider import (
    free_address,
    local_node_settings,
    node_pid,
    octctl_pids,
    pid_alive,
    start_node,
    stop_node,
)
from tests.dns.servers import dns_servers
from tests.dns.test_zone import state
from tests.wait import wait_until, wait_until_async

pytestmark = [pytest.mark.security]

SERVER_HOST = "127.0.0.1"
STRANGER = "127.0.0.66"  # a loopback address the tests leave out of the server's forward_for
UPSTREAM_HOST = "127.0.0.53"
UPSTREAM_RECORDS = 60  # TXT records of 50 bytes: a 3.8 KB answer
LOG_LINES_PER_KIND = 10  # the server's bound: this many lines a minute per kind, then one "suppressed" line
FD_SLACK = 64  # descriptors the server (and this process) may open besides the capped forwards
MAX_FORWARDS = 256


def query(name: str, qtype: str = "A", edns: int | None = None, ident: int | None = None) -> bytes:
    record = DNSRecord.question(name, qtype)
    if ident is not None:
        record.header.id = ident
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns))
    return bytes(record.pack())


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class FakeUpstream:
    """A resolver on 127.0.0.53, UDP and TCP, in a thread: counts every query that reaches it and
    answers it with ``UPSTREAM_RECORDS`` TXT records, or (``silent``) never answers."""

    def __init__(self, host: str = UPSTREAM_HOST) -> None:
        for _ in range(5):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((host, 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(udp.getsockname())
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:
            raise AssertionError("no port free for UDP and TCP on the fake upstream")
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        tcp.listen(64)
        self.udp, self.tcp = udp, tcp
        self.address: tuple[str, int] = udp.getsockname()
        self.received = 0
        self.silent = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()

    def answer(self, data: bytes) -> bytes | None:
        if self.silent:
            return None
        try:
            request = DNSRecord.parse(data)
            reply = request.reply()
            for _ in range(UPSTREAM_RECORDS):
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT("x" * 50), ttl=60))
            return bytes(reply.pack())
        except Exception:  # whatever reached us unparsed is counted, not answered
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.05)
            for sock in ready:
                if sock is self.udp:
                    data, peer = self.udp.recvfrom(65535)
                    self.received += 1
                    answer = self.answer(data)
                    if answer is not None:
                        self.udp.sendto(answer, peer)
                    continue
                conn, _ = self.tcp.accept()
                with conn, contextlib.suppress(OSError, struct.error):
                    conn.settimeout(2)
                    size = struct.unpack("!H", _recv_exactly(conn, 2))[0]
                    data = _recv_exactly(conn, size)
                    self.received += 1
                    answer = self.answer(data)
                    if answer is not None:
                        conn.sendall(struct.pack("!H", len(answer)) + answer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


def shop_zone(extra_a_records: int = 0) -> Zone:
    zone = build_zone(state())
    assert zone is not None
    if not extra_a_records:
        return zone
    addresses = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(extra_a_records)]
    many = [RR("big.shop.oct", QTYPE.A, rdata=A(address)) for address in addresses]
    return Zone(origin=zone.origin, soa=zone.soa, records={**zone.records, "big.shop.oct.": {QTYPE.A: many}})


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., DnsServer]]:
    async with dns_servers(SERVER_HOST) as start:
        yield start  # type: ignore[misc]


async def udp_exchange(
    host: str, port: int, payload: bytes, source: str = "127.0.0.1", timeout: float = 3.0
) -> bytes | None:
    """One query from ``source``; the raw reply, or None when none came within ``timeout``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await loop.sock_sendto(sock, payload, (host, port))
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
    except TimeoutError:
        return None
    finally:
        sock.close()


async def tcp_exchange(host: str, port: int, payload: bytes, source: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        writer.write(struct.pack("!H", len(payload)) + payload)
        await writer.drain()
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
        return await asyncio.wait_for(reader.readexactly(size), 5)
    finally:
        writer.close()


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- 1. open forwarder ----------------------------------------------------------------------------


async def test_a_stranger_gets_refused_for_outside_names_and_nothing_reaches_the_upstream(
    serve, upstream: FakeUpstream
) -> None:  # type: ignore[no-untyped-def]
    server = await serve(
        shop_zone(), upstreams=[upstream.address], forward_for=[ipaddress.ip_network("127.0.0.1/32")]
    )
    outside = query("www.example.com")
    udp = await udp_exchange(SERVER_HOST, server.port, outside, source=STRANGER)
    assert udp is not None, "no answer at all to the stranger"
    assert DNSRecord.parse(udp).header.rcode == RCODE.REFUSED
    tcp = await tcp_exchange(SERVER_HOST, server.port, outside, source=STRANGER)
    assert DNSRecord.parse(tcp).header.rcode == RCODE.REFUSED
    assert upstream.received == 0, "the stranger's question reached the upstream"
    # The stranger still gets the cluster's own names.
    zone_answer = await udp_exchange(SERVER_HOST, server.port, query("web.shop.oct"), source=STRANGER)
    assert zone_answer is not None
    assert [str(rr.rdata) for rr in DNSRecord.parse(zone_answer).rr] == ["127.0.0.3"]
    # A client in forward_for is served as before.
    mine = await udp_exchange(SERVER_HOST, server.port, query("www.example.com", edns=4096))
    assert mine is not None and DNSRecord.parse(mine).header.rcode == RCODE.NOERROR
    assert upstream.received == 1


# -- 2. amplification ----------------------------------------------------------------------------


async def test_udp_answers_never_exceed_the_clients_limit(serve, upstream: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    server = await serve(shop_zone(extra_a_records=250), upstreams=[upstream.address])
    plain = query("big.example.com")
    assert len(plain) == 33  # (the audit's 29 bytes were a shorter name)
    for name in ("big.example.com", "big.shop.oct"):  # a forwarded answer, then a zone answer
        for edns, limit in ((None, 512), (1232, 1232), (4096, 1232), (65000, 1232)):
            qtype = "A" if name.endswith(".oct") else "TXT"
            data = await udp_exchange(SERVER_HOST, server.port, query(name, qtype, edns))
            assert data is not None
            assert len(data) <= limit, f"{name} (EDNS {edns}): {len(data)} bytes for {len(plain)} asked"
            reply = DNSRecord.parse(data)
            assert reply.header.tc == 1 and str(reply.q.qname) == f"{name}."
    # The whole answer is there over TCP, where the client's handshake proves its address.
    whole = DNSRecord.parse(await tcp_exchange(SERVER_HOST, server.port, query("big.example.com", "TXT")))
    assert whole.header.tc == 0 and len(whole.rr) == UPSTREAM_RECORDS
    assert len(DNSRecord.parse(await tcp_exchange(SERVER_HOST, server.port, query("big.shop.oct"))).rr) == 250


# -- 3. descriptor exhaustion ----------------------------------------------------------------------


async def flood(
    host: str, port: int, count: int, sample: Callable[[], int], name: str = "q{i}.example.com"
) -> int:
    """``count`` queries for distinct outside names from 127.0.0.1; the peak of ``sample()`` meanwhile."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    peak = sample()
    try:
        for i in range(count):
            await loop.sock_sendto(sock, query(name.format(i=i)), (host, port))
            if i % 100 == 99:
                await asyncio.sleep(0.01)
                peak = max(peak, sample())
        for _ in range(20):
            await asyncio.sleep(0.01)
            peak = max(peak, sample())
    finally:
        sock.close()
    return peak


async def test_a_flood_of_forwards_to_a_silent_upstream_keeps_descriptors_bounded(
    serve, upstream: FakeUpstream
) -> None:  # type: ignore[no-untyped-def]
    upstream.silent = True
    server = await serve(shop_zone(), upstreams=[upstream.address], forward_timeout=1.0)
    baseline = fd_count()
    peak = await flood(SERVER_HOST, server.port, 2000, fd_count)
    assert peak - baseline <= MAX_FORWARDS + FD_SLACK, f"{peak - baseline} descriptors opened by 2000 queries"
    started = time.monotonic()
    answer = await udp_exchange(SERVER_HOST, server.port, query("web.shop.oct"), timeout=1)
    assert answer is not None and time.monotonic() - started < 0.5, "the flood left the server unresponsive"
    assert [str(rr.rdata) for rr in DNSRecord.parse(answer).rr] == ["127.0.0.3"]
    # Every forward times out and closes its socket.
    await wait_until_async(
        fd_count,
        until=lambda count: count <= baseline + 2,
        timeout=5,
        interval=0.1,
        message=f"the descriptors to fall back to {baseline} + 2",
    )


async def test_a_flood_of_tcp_connections_keeps_descriptors_bounded(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(shop_zone())
    baseline = fd_count()
    conns: list[socket.socket] = []
    loop = asyncio.get_running_loop()
    try:
        for _ in range(600):  # idle connections, each held open by the client
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, (SERVER_HOST, server.port))
            conns.append(sock)
        # Every connection is taken or turned away once the server has refused all those over its cap
        # (it holds the others until their idle timeout): the count below is final, not "so far".
        await wait_until_async(
            lambda: server.stats.overloaded,
            until=lambda refused: refused >= len(conns) - server.max_tcp_clients,
            message=f"the server to turn away the connections over its {server.max_tcp_clients}",
        )
        opened = fd_count() - baseline - len(conns)  # the server's side of them
        assert opened <= 128 + FD_SLACK, f"{opened} descriptors held by 600 idle TCP connections"
        answer = await udp_exchange(SERVER_HOST, server.port, query("web.shop.oct"), timeout=1)
        assert answer is not None
    finally:
        for sock in conns:
            sock.close()
    # Until the server sees those closes, a new connection may still be over the cap.
    whole = await wait_until_async(
        lambda: tcp_exchange(SERVER_HOST, server.port, query("web.shop.oct")),
        ignore=(ConnectionError, asyncio.IncompleteReadError),
        message="a new TCP client to be served once the others closed",
    )
    assert [str(rr.rdata) for rr in DNSRecord.parse(whole).rr] == ["127.0.0.3"]


# -- 4. malformed packets --------------------------------------------------------------------------


def header(ident: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def wire(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def in_a(name: bytes) -> bytes:
    return name + struct.pack("!HH", QTYPE.A, 1)


def pointer_chain(ident: int, links: int = 1500) -> bytes:
    """A question, then an RR whose rdata is a chain of compression pointers (each to the one before,
    the first to the question's name) and an RR whose name points at the chain's end: following it
    recurses ``links`` deep."""
    question = in_a(wire(b"web", b"shop", b"oct"))
    start = 12 + len(question) + 1 + 10  # the rdata of the first RR: after its root name and fixed fields
    chain = struct.pack("!H", 0xC000 | 12) + b"".join(
        struct.pack("!H", 0xC000 | (start + 2 * k)) for k in range(links - 1)
    )
    first = b"\0" + struct.pack("!HHIH", 65280, 1, 0, len(chain)) + chain
    last = struct.pack("!H", 0xC000 | (start + 2 * (links - 1))) + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4)
    return header(ident, ar=2) + question + first + last


#: Packets with a readable header: each must get FORMERR (or NOTIMP), with its id, and nothing else.
MALFORMED: dict[str, Callable[[int], bytes]] = {
    "a label over 63 bytes": lambda i: header(i) + in_a(b"\x40" + b"a" * 64 + wire(b"shop", b"oct")),
    "a name over 255 bytes, in the zone": lambda i: header(i) + in_a(wire(*[b"a" * 63] * 4, b"shop", b"oct")),
    "a name over 255 bytes, outside": lambda i: header(i) + in_a(wire(*[b"b" * 63] * 5)),
    "control bytes in a label": lambda i: header(i) + in_a(wire(b"we\x00b\x07", b"shop", b"oct")),
    "a dot inside a label": lambda i: header(i) + in_a(wire(b"web.shop", b"oct")),
    "bytes that are no UTF-8": lambda i: header(i) + in_a(wire(b"\xff\xfe", b"shop", b"oct")),
    "a compression loop": lambda i: header(i) + b"\xc0\x0c" + struct.pack("!HH", 1, 1),
    "a pointer forward": lambda i: header(i) + b"\xc0\xff" + struct.pack("!HH", 1, 1),
    "a deep pointer chain": pointer_chain,
    "a name cut short": lambda i: header(i) + b"\x05ab",
    "a question cut short": lambda i: header(i) + wire(b"web", b"shop", b"oct") + b"\x00",
    "no question": lambda i: header(i, qd=0),
    "two questions": lambda i: header(i, qd=2) + in_a(wire(b"web", b"shop", b"oct")) * 2,
    "answers in a query": lambda i: header(i, an=3) + in_a(wire(b"web", b"shop", b"oct")),
}
#: Packets to drop without a word: no header to answer, or a response (answering those could loop).
SILENT: dict[str, Callable[[int], bytes]] = {
    "shorter than a header": lambda i: struct.pack("!H", i) + b"\x01",
    "a response": lambda i: header(i, flags=0x8180) + b"\xc0\x0c" + struct.pack("!HH", 1, 1),
}


#: The id of the good query that follows each kind of packet to drop (the attack's are 1000 on).
PROBE_ID = 7


async def malformed_attack(host: str, port: int, per_kind: int = 30) -> dict[str, str]:
    """Send ``per_kind`` packets of every kind; what went wrong with the replies, by kind.

    A kind that must be dropped is followed by a good query from the same socket. The server reads
    a socket's packets in order and deals with each (reply, log line) before reading the next, so
    that query's answer proves every packet before it was handled: a reply to one would have come
    first. After the attack, every packet sent has been dealt with.
    """
    loop = asyncio.get_running_loop()
    problems: dict[str, str] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    try:
        for kinds, expect_reply in ((MALFORMED, True), (SILENT, False)):
            for kind, make in kinds.items():
                ids = {1000 + n for n in range(per_kind)}
                for ident in ids:
                    await loop.sock_sendto(sock, make(ident), (host, port))
                if not expect_reply:
                    await loop.sock_sendto(sock, query("probe.oct", ident=PROBE_ID), (host, port))
                    unwanted = await replies_until_probe(sock)
                    if unwanted is None:
                        problems[kind] = "no answer to a good query sent after them"
                    elif unwanted:
                        problems[kind] = f"{len(unwanted)} replies to packets that must be dropped"
                    continue
                replies: list[bytes] = []
                deadline = loop.time() + 1.0
                while len(replies) < len(ids) and loop.time() < deadline:
                    with contextlib.suppress(TimeoutError):
                        left = deadline - loop.time()
                        replies.append(await asyncio.wait_for(loop.sock_recv(sock, 65535), left))
                got = {struct.unpack("!H", r[:2])[0]: r for r in replies}
                rcodes = {r[3] & 0x0F for r in replies}
                if set(got) != ids:
                    problems[kind] = f"{len(ids - set(got))} of {len(ids)} got no reply"
                elif not rcodes <= {RCODE.FORMERR, RCODE.NOTIMP} or any(not r[2] & 0x80 for r in replies):
                    problems[kind] = f"rcodes {sorted(rcodes)}, not FORMERR"
                elif any(len(r) > 512 for r in replies):
                    problems[kind] = "a reply longer than the query deserves"
    finally:
        sock.close()
    return problems


async def replies_until_probe(sock: socket.socket, timeout: float = 5.0) -> list[bytes] | None:
    """The replies ``sock`` got before the answer to the query with :data:`PROBE_ID`, or None
    when that answer did not come within ``timeout``."""
    loop = asyncio.get_running_loop()
    probe = struct.pack("!H", PROBE_ID)
    replies: list[bytes] = []
    try:
        while True:
            reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
            if reply[:2] == probe:
                return replies
            replies.append(reply)
    except TimeoutError:
        return None


async def test_malformed_packets_get_formerr_or_nothing_and_never_a_traceback(
    serve, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    server = await serve(shop_zone(), upstreams=[upstream.address], forward_timeout=0.5)
    caplog.clear()
    problems = await malformed_attack(SERVER_HOST, server.port)
    # Every packet has been dealt with (see malformed_attack), and the count of malformed ones
    # below proves none reached a forward, the only step that could fail later, in a task.
    gc.collect()  # "Task exception was never retrieved" is logged when the task is collected
    records = list(caplog.records)
    assert not [r for r in records if r.exc_info or "Traceback" in r.getMessage()], caplog.text[:3000]
    assert "Traceback" not in caplog.text
    assert len(records) <= LOG_LINES_PER_KIND + 1, f"{len(records)} log lines:\n{caplog.text[:3000]}"
    assert problems == {}
    assert upstream.received == 0, "a malformed name was forwarded"
    reply = await udp_exchange(SERVER_HOST, server.port, query("web.shop.oct"))
    assert reply is not None and [str(rr.rdata) for rr in DNSRecord.parse(reply).rr] == ["127.0.0.3"]
    sent = 30 * (len(MALFORMED) + len(SILENT))
    assert server.stats.malformed == sent


# -- 5. the node's log is rotated ------------------------------------------------------------------


def test_the_node_log_rotates_and_keeps_late_crash_output(tmp_path: Path) -> None:
    """The daemon's logging set up as oct-ctl does it, in a child process writing 10x its limit."""
    log_file = tmp_path / "oct-ctl.log"
    script = textwrap.dedent(
        """
        import logging, sys
        from pathlib import Path
        from octctl.daemon import setup_logging

        setup_logging("INFO", Path(sys.argv[1]), max_bytes=4096, backups=2)
        log = logging.getLogger("octctl.dns.server")
        for i in range(400):
            log.warning("line %04d %s", i, "x" * 60)
        print("printed after the rotations", flush=True)
        sys.exit("oct-ctl: a crash message after the rotations")
        """
    )
    with log_file.open("ab") as out:  # as the local provider starts a node: stdout and stderr to the log
        proc = subprocess.run(
            [sys.executable, "-c", script, str(log_file)], stdout=out, stderr=subprocess.STDOUT, timeout=60
        )
    assert proc.returncode == 1
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["oct-ctl.log", "oct-ctl.log.1", "oct-ctl.log.2"], files
    for name in files:  # the current file may also hold what was printed after its last log line
        limit = 4096 + (200 if name == "oct-ctl.log" else 0)
        assert (tmp_path / name).stat().st_size <= limit, f"{name}: {(tmp_path / name).stat().st_size} bytes"
    current = log_file.read_text()
    assert "line 0399" in current, "the newest lines are in oct-ctl.log"
    assert "printed after the rotations" in current and "a crash message after the rotations" in current


# -- the same attacks against a real oct-ctl -------------------------------------------------------


class RealNode:
    def __init__(self, root: Path, address: str, dns_port: int, pid: int, log: Path) -> None:
        self.root, self.address, self.dns_port, self.pid, self.log = root, address, dns_port, pid, log


def stranger_address() -> str | None:
    """An address of this host outside loopback and Docker's bridges: what a remote client looks like."""
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, timeout=10
        ).stdout
    except OSError:
        return None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and not (parts[1] == "docker0" or parts[1].startswith(("br-", "veth"))):
            return parts[3].split("/")[0]
    return None


@pytest.fixture(scope="module")
def real_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def real_node(tmp_path_factory: pytest.TempPathFactory, real_upstream: FakeUpstream) -> Iterator[RealNode]:
    root = tmp_path_factory.mktemp("dns-attacks") / ".oct"
    address = free_address(root)
    settings = local_node_settings(root, address, "c-dnsattack", 2000, 2048, []).model_copy(
        update={"dns_upstreams": ["{}:{}".format(*real_upstream.address)]}
    )
    start_node(root, settings, Secrets.mint())
    pid = node_pid(root, settings.node)
    assert pid is not None
    node = RealNode(root, address, settings.dns_port, pid, root / "nodes" / settings.node / "oct-ctl.log")
    try:

        def answering() -> bool:
            assert pid_alive(pid), f"oct-ctl exited:\n{node.log.read_text(errors='replace')[-3000:]}"
            probe = DNSRecord.question("probe.oct").send(address, settings.dns_port, timeout=0.5)
            return DNSRecord.parse(probe).header.rcode == RCODE.NXDOMAIN

        wait_until(
            answering, timeout=30, interval=0.2, ignore=(OSError,), message="the node's DNS server to answer"
        )
        yield node
    finally:
        stop_node(root, settings.node)
        for stray in octctl_pids(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray, signal.SIGKILL)


async def test_real_node_refuses_outside_names_to_a_remote_client(
    real_node: RealNode, real_upstream: FakeUpstream
) -> None:
    stranger = stranger_address()
    if stranger is None:
        pytest.skip("this host has no address outside loopback and Docker's bridges to attack from")
    real_upstream.silent = False
    before = real_upstream.received
    outside = query("www.example.com")
    reply = await udp_exchange(real_node.address, real_node.dns_port, outside, source=stranger)
    assert reply is not None and DNSRecord.parse(reply).header.rcode == RCODE.REFUSED
    assert real_upstream.received == before, "the node forwarded a remote client's question"
    zone = await udp_exchange(real_node.address, real_node.dns_port, query("probe.oct"), source=stranger)
    assert zone is not None and DNSRecord.parse(zone).header.rcode == RCODE.NXDOMAIN


async def test_real_node_truncates_forwarded_answers_over_udp(
    real_node: RealNode, real_upstream: FakeUpstream
) -> None:
    real_upstream.silent = False
    data = await udp_exchange(real_node.address, real_node.dns_port, query("big.example.com", "TXT"))
    assert data is not None and len(data) <= 512, f"{len(data or b'')} bytes answered a 33-byte query"
    assert DNSRecord.parse(data).header.tc == 1
    whole = await tcp_exchange(real_node.address, real_node.dns_port, query("big.example.com", "TXT"))
    assert len(DNSRecord.parse(whole).rr) == UPSTREAM_RECORDS


async def test_real_node_keeps_descriptors_bounded_under_a_flood_of_forwards(
    real_node: RealNode, real_upstream: FakeUpstream
) -> None:
    real_upstream.silent = True
    try:
        baseline = fd_count(real_node.pid)
        peak = await flood(real_node.address, real_node.dns_port, 2000, lambda: fd_count(real_node.pid))
        assert peak - baseline <= MAX_FORWARDS + FD_SLACK, f"the node opened {peak - baseline} descriptors"
        started = time.monotonic()
        answer = await udp_exchange(real_node.address, real_node.dns_port, query("probe.oct"), timeout=1)
        assert answer is not None and time.monotonic() - started < 0.5
        await wait_until_async(
            lambda: fd_count(real_node.pid),
            until=lambda count: count <= baseline + 8,
            timeout=10,
            interval=0.2,
            message=f"the node's descriptors to fall back to {baseline} + 8",
        )
    finally:
        real_upstream.silent = False


async def test_real_node_logs_malformed_packets_without_tracebacks(real_node: RealNode) -> None:
    offset = real_node.log.stat().st_size
    problems = await malformed_attack(real_node.address, real_node.dns_port)
    # Every packet has been dealt with (see malformed_attack): its log lines are in the file.
    answer = await udp_exchange(real_node.address, real_node.dns_port, query("probe.oct"), timeout=1)
    assert answer is not None and DNSRecord.parse(answer).header.rcode == RCODE.NXDOMAIN
    with real_node.log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    assert "Traceback" not in text, text[:3000]
    dns_lines = [line for line in text.splitlines() if "octctl.dns" in line or "asyncio" in line]
    assert len(dns_lines) <= LOG_LINES_PER_KIND + 1, "\n".join(dns_lines[:40])
    assert problems == {}


def test_real_node_rotates_its_own_log(real_node: RealNode) -> None:
    """The local provider has oct-ctl write (and rotate) its log, stderr included."""
    cmdline = Path(f"/proc/{real_node.pid}/cmdline").read_bytes().split(b"\0")
    assert b"--log-file" in cmdline and str(real_node.log).encode() in cmdline
    assert os.readlink(f"/proc/{real_node.pid}/fd/2") == str(real_node.log)
