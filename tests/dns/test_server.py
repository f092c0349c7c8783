"""The DNS server over real UDP and TCP packets on loopback: answers, forwarding, truncation, junk."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from octctl.dns.server import DnsServer
from octctl.dns.zone import Zone, build_zone
from tests.dns.servers import dns_servers
from tests.dns.test_zone import state


async def ask(
    port: int, name: str, qtype: str = "A", tcp: bool = False, payload: bytes | None = None
) -> DNSRecord:
    data = payload if payload is not None else bytes(DNSRecord.question(name, qtype).pack())
    loop = asyncio.get_running_loop()
    if tcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
        answer = await reader.readexactly(size)
        writer.close()
        return DNSRecord.parse(answer)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        answer = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
    finally:
        sock.close()
    return DNSRecord.parse(answer)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., DnsServer]]:
    async with dns_servers("127.0.0.1") as start:
        yield start  # type: ignore[misc]


async def test_answers_over_udp_and_tcp(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(build_zone(state()))
    for tcp in (False, True):
        reply = await ask(server.port, "web.shop.oct", tcp=tcp)
        assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.3"]
    srv = await ask(server.port, "_web._tcp.shop.oct", "SRV")
    assert [str(rr.rdata) for rr in srv.rr] == ["0 0 8080 node-3.node.shop.oct."]
    assert [str(rr.rdata) for rr in srv.ar] == ["127.0.0.3"]
    missing = await ask(server.port, "nope.shop.oct")
    assert missing.header.rcode == RCODE.NXDOMAIN and missing.auth[0].rtype == QTYPE.SOA


async def test_forwards_outside_names_to_an_upstream(serve) -> None:  # type: ignore[no-untyped-def]
    upstream_zone = Zone(
        origin="example.test.",
        soa=build_zone(state()).soa,  # type: ignore[union-attr]
        records={"www.example.test.": {QTYPE.A: [RR("www.example.test", QTYPE.A, rdata=A("127.9.9.9"))]}},
    )
    upstream = await serve(upstream_zone)
    server = await serve(build_zone(state()), upstreams=[("127.0.0.1", upstream.port)])
    for tcp in (False, True):
        reply = await ask(server.port, "www.example.test", tcp=tcp)
        assert [str(rr.rdata) for rr in reply.rr] == ["127.9.9.9"]
    assert server.stats.forwarded == 2


async def test_an_upstream_that_never_answers_gives_servfail(serve) -> None:  # type: ignore[no-untyped-def]
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        server = await serve(None, upstreams=[silent.getsockname()], forward_timeout=0.3)
        reply = await ask(server.port, "www.example.test")
        assert reply.header.rcode == RCODE.SERVFAIL
        no_upstream = await serve(None)
        assert (await ask(no_upstream.port, "www.example.test")).header.rcode == RCODE.REFUSED
        # Our own domain never leaves the node, even with nothing deployed.
        assert (await ask(server.port, "web.other.oct")).header.rcode == RCODE.NXDOMAIN
        assert server.stats.forwarded == 0
    finally:
        silent.close()


async def test_large_answers_set_tc_over_udp_and_come_whole_over_tcp(serve) -> None:  # type: ignore[no-untyped-def]
    zone = build_zone(state())
    assert zone is not None
    many = [RR("big.shop.oct", QTYPE.A, rdata=A(f"127.1.0.{i}"), ttl=5) for i in range(1, 60)]
    big = Zone(origin=zone.origin, soa=zone.soa, records={**zone.records, "big.shop.oct.": {QTYPE.A: many}})
    server = await serve(big)
    udp = await ask(server.port, "big.shop.oct")
    assert udp.header.tc == 1 and udp.rr == [] and str(udp.q.qname) == "big.shop.oct."
    tcp = await ask(server.port, "big.shop.oct", tcp=True)
    assert tcp.header.tc == 0 and len(tcp.rr) == 59
    assert server.stats.truncated == 1


async def test_junk_is_dropped_and_counted_and_the_server_carries_on(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(build_zone(state()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for junk in (b"", b"\x00", b"\xff" * 11, b"hello world, not dns", bytes(range(256))):
            sock.sendto(junk, ("127.0.0.1", server.port))
        response = DNSRecord.question("web.shop.oct").reply()  # a response, not a query
        sock.sendto(bytes(response.pack()), ("127.0.0.1", server.port))
    finally:
        sock.close()
    reply = await ask(server.port, "web.shop.oct")
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.3"]
    assert server.stats.malformed == 6
    # Garbage on TCP closes that connection only.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(struct.pack("!H", 5) + b"junk!")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert [str(rr.rdata) for rr in (await ask(server.port, "web.shop.oct", tcp=True)).rr] == ["127.0.0.3"]


async def test_repeated_questions_come_from_the_cache_until_the_zone_changes(serve) -> None:  # type: ignore[no-untyped-def]
    zones = {"current": build_zone(state())}
    server = await serve(None)
    server.zone = lambda: zones["current"]
    first = await ask(server.port, "web.shop.oct")
    for _ in range(3):
        query = DNSRecord.question("web.shop.oct")
        again = await ask(server.port, "", payload=bytes(query.pack()))
        assert again.header.id == query.header.id  # the cached answer carries this query's id
        assert [str(rr.rdata) for rr in again.rr] == [str(rr.rdata) for rr in first.rr] == ["127.0.0.3"]
    assert len(server.answers._cache) == 1 and server.stats.answered == 4
    mixed = await ask(server.port, "WeB.sHoP.oCt")
    assert str(mixed.q.qname) == "WeB.sHoP.oCt."  # the question comes back as it was asked
    # The service moves: the next answer follows at once.
    moved = state()
    moved["placements"]["web"] = "node-2"
    moved["instances"]["node-2"]["web"] = {"state": "running"}
    zones["current"] = build_zone(moved)
    assert [str(rr.rdata) for rr in (await ask(server.port, "web.shop.oct")).rr] == ["127.0.0.2"]
    assert [str(rr.rdata) for rr in (await ask(server.port, "web.shop.oct", tcp=True)).rr] == ["127.0.0.2"]


async def test_a_fuzzed_stream_of_queries_never_breaks_the_server(serve) -> None:  # type: ignore[no-untyped-def]
    import random

    from dnslib import EDNS0, DNSHeader, DNSQuestion

    server = await serve(build_zone(state()))
    loop = asyncio.get_running_loop()
    crashes: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: crashes.append(context))
    rng = random.Random(7)
    names = [
        "web.shop.oct",
        "WEB.shop.oct",
        "x.shop.oct",
        "_web._tcp.shop.oct",
        "shop.oct",
        "a" * 63 + ".shop.oct",
    ]
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        for i in range(2000):
            header = DNSHeader(id=rng.randrange(65536), rd=rng.randrange(2))
            query = DNSRecord(
                header, q=DNSQuestion(rng.choice(names), rng.choice([1, 6, 12, 16, 28, 33, 255]))
            )
            if rng.random() < 0.3:
                query.add_ar(EDNS0(udp_len=rng.choice([512, 1232, 4096, 65535])))
            data = bytearray(query.pack())
            if rng.random() < 0.3:  # flip a few bytes anywhere
                for _ in range(rng.randrange(1, 4)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            await loop.sock_sendto(sock, bytes(data), ("127.0.0.1", server.port))
            if i % 50 == 0:
                await asyncio.sleep(0.005)
    finally:
        sock.close()
    reply = await ask(server.port, "web.shop.oct")
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.3"]
    assert server.stats.queries + server.stats.malformed >= 1900  # nearly all arrived, each accounted for
    assert crashes == [], "a query raised inside the server's callbacks"


def test_log_lines_are_limited_per_kind_and_the_rest_counted() -> None:
    import logging

    from octctl.logthrottle import LogLimiter

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("tests.dns.limiter")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    now = [0.0]
    limiter = LogLimiter(logger, burst=3, window=60.0, clock=lambda: now[0])
    for i in range(10):
        limiter.log(logging.WARNING, "malformed", "bad packet %d", i)
        limiter.log(logging.WARNING, "overload", "busy %d", i)
    assert records == ["bad packet 0", "busy 0", "bad packet 1", "busy 1", "bad packet 2", "busy 2"]
    now[0] = 61.0  # the next window: what was held back is counted in one line, then lines flow again
    limiter.log(logging.WARNING, "malformed", "bad packet %d", 10)
    assert records[6:] == ["suppressed 7 similar messages (malformed) in 60 s", "bad packet 10"]
    limiter.flush()
    assert records[8:] == ["suppressed 7 similar messages (overload) in 60 s"]
    limiter.flush()
    assert len(records) == 9


def test_forwarding_is_for_loopback_the_node_and_its_container_bridges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import ipaddress

    from octctl.dns.forwarding import docker_bridge_networks

    routes = tmp_path / "route"
    routes.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "br-0123456789ab\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    )
    bridges = docker_bridge_networks(str(routes))
    assert bridges == [ipaddress.ip_network("172.17.0.0/16"), ipaddress.ip_network("172.18.0.0/16")]
    assert docker_bridge_networks(str(tmp_path / "missing")) == []

    found: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    server = DnsServer("10.1.2.3", 53, lambda: None, local_networks=lambda: list(found))
    for host in ("10.1.2.3", "127.0.0.1", "127.0.0.9", "::1", "::ffff:10.1.2.3"):
        assert server.clients.may_forward(host), host
    for host in ("10.1.2.4", "192.0.2.2", "172.17.0.2", "not-an-address"):
        assert not server.clients.may_forward(host), host
    # A bridge that appears later is found by the next lookup (at most every 30 s).
    found.extend(bridges)
    assert not server.clients.may_forward("172.17.0.3")
    server.clients.refreshed_at -= 31
    assert server.clients.may_forward("172.17.0.4") and server.clients.may_forward("172.17.0.2")
    assert not server.clients.may_forward("192.0.2.2")
