"""Attacks on a node's DNS server running in this process, each performed with real DNS packets.

A :class:`DnsServer` on 127.0.0.1 is attacked from other loopback addresses; the resolver behind
it is a fake one (``FakeUpstream``, on 127.0.0.53) that counts every packet reaching it and answers
each query with ~3.8 KB of TXT records, or never answers. The same attacks against a real
``oct-ctl`` process are in ``test_dns_attacks_real_node.py``.

What each attack did before the fix: an outside name was forwarded for anyone (open resolver); a
3.8 KB upstream answer was relayed whole to a 29-byte UDP query (amplification); every forward held
a socket, without a cap (descriptor exhaustion); a malformed name raised in the server's callbacks
(a traceback per packet, into a log that was never rotated).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from octctl.dns.server import DnsServer
from octctl.dns.zone import Zone, build_zone
from tests.dns.servers import dns_servers
from tests.dns.test_zone import state
from tests.security.dns_attacks import (
    FD_SLACK,
    LOG_LINES_PER_KIND,
    MALFORMED,
    MAX_FORWARDS,
    SILENT,
    fd_count,
    flood,
    malformed_attack,
    query,
    tcp_exchange,
    udp_exchange,
)
from tests.security.fake_upstream import UPSTREAM_RECORDS, FakeUpstream
from tests.wait import wait_until_async

pytestmark = [pytest.mark.security]


SERVER_HOST = "127.0.0.1"


STRANGER = "127.0.0.66"  # a loopback address the tests leave out of the server's forward_for


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


# -- 1. open forwarder -----------------------------------------------------------------------------


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


# -- 2. amplification ------------------------------------------------------------------------------


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
