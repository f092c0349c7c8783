"""An asyncio DNS server (UDP and TCP) answering for the cluster zone and forwarding the rest.

dnslib is used for the wire format only: its bundled server is thread-per-request and fell over
under TCP load (machine-notes.md). Answers inside the zone are built synchronously on the event
loop from a cached :class:`Zone`; only forwarding awaits the network. A packet that does not parse
is counted and dropped: nothing a client sends can stop the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from dnslib import QTYPE, RCODE, DNSError, DNSHeader, DNSRecord

from octctl.dns.zone import Answer, Zone

log = logging.getLogger(__name__)

UDP_LIMIT = 512  # without EDNS0 (RFC 1035)
CACHE_LIMIT = 4096  # packed answers kept per zone version; a flood of random names cannot grow it further
EDNS_LIMIT = 4096  # the most we ever answer over UDP, whatever a client advertises
TCP_IDLE = 10.0


@dataclass
class Stats:
    queries: int = 0
    answered: int = 0
    nxdomain: int = 0
    forwarded: int = 0
    servfail: int = 0
    truncated: int = 0
    malformed: int = 0


@dataclass
class DnsServer:
    """Serves ``zone()`` (called per query; the caller caches it) on ``address:port``."""

    address: str
    port: int
    zone: Callable[[], Zone | None]
    upstreams: list[tuple[str, int]] = field(default_factory=list)
    forward_timeout: float = 2.0
    #: Names under this domain are ours even when nothing is deployed: never sent upstream.
    domain: str = "oct"
    stats: Stats = field(default_factory=Stats)
    _transport: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None
    _cache_zone: Zone | None = None
    _cache: dict[tuple[bool, bytes], bytes] = field(default_factory=dict)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.address, self.port), reuse_port=False
        )
        self._transport = transport
        self._tcp = await asyncio.start_server(self._serve_tcp, self.address, self.port, reuse_address=True)
        log.info(
            "DNS on %s:%d (udp+tcp), forwarding to %s", self.address, self.port, self.upstreams or "nobody"
        )

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    # -- answering -----------------------------------------------------------------------------
    def cached(self, data: bytes, tcp: bool) -> bytes | None:
        """A packed answer for an identical query (same bytes after the id) to the same zone.

        Parsing and packing with dnslib costs ~50 us a query; the zone changes rarely and clients
        ask the same few names, so most answers are a dict lookup and a new id. The question is part
        of the key byte for byte, so its case (0x20 randomisation) comes back as it was sent.
        """
        zone = self.zone()
        if zone is not self._cache_zone:
            self._cache_zone = zone
            self._cache.clear()
            return None
        packed = self._cache.get((tcp, data[2:]))
        if packed is None:
            return None
        self.stats.queries += 1
        self.stats.answered += 1
        return data[:2] + packed

    def remember(self, data: bytes, tcp: bool, packed: bytes) -> None:
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[(tcp, data[2:])] = packed[2:]

    def parse(self, data: bytes) -> DNSRecord | None:
        try:
            request = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, struct.error, UnicodeDecodeError):
            self.stats.malformed += 1
            return None
        if request.header.qr or len(request.questions) != 1:
            self.stats.malformed += 1  # a response, or a query shape nobody sends
            return None
        self.stats.queries += 1
        return request

    def local_answer(self, request: DNSRecord) -> DNSRecord | None:
        """The reply when the question is ours to answer, else None (forward it)."""
        zone = self.zone()
        question = request.q
        if zone is None or not zone.contains(question.qname):
            if not _under(question.qname, self.domain):
                return None
            found = Answer(authoritative=True)  # our domain, another (or no) project: NXDOMAIN
        else:
            found = zone.lookup(question.qname, question.qtype)
        reply = DNSRecord(DNSHeader(id=request.header.id, qr=1, aa=1, ra=1, rd=request.header.rd), q=question)
        for rr in found.answers:
            reply.add_answer(rr)
        for rr in found.authority:
            reply.add_auth(rr)
        for rr in found.additional:
            reply.add_ar(rr)
        if not found.exists:
            reply.header.rcode = RCODE.NXDOMAIN
            self.stats.nxdomain += 1
        self.stats.answered += 1
        return reply

    def answer_safely(self, request: DNSRecord) -> DNSRecord | None:
        """:meth:`local_answer`, but a question it cannot handle gets SERVFAIL instead of an
        exception in the transport's callback."""
        try:
            return self.local_answer(request)
        except Exception:
            log.debug("cannot answer %r", request.q, exc_info=True)
            self.stats.malformed += 1
            self.stats.servfail += 1
            return DNSRecord(DNSHeader(id=request.header.id, qr=1, ra=1, rcode=RCODE.SERVFAIL))

    def failure(self, request: DNSRecord, rcode: int = RCODE.SERVFAIL) -> bytes:
        self.stats.servfail += 1
        reply = DNSRecord(DNSHeader(id=request.header.id, qr=1, ra=1, rd=request.header.rd, rcode=rcode))
        reply.add_question(request.q)
        return bytes(reply.pack())

    def fit_udp(self, request: DNSRecord, reply: DNSRecord) -> bytes:
        """Pack for UDP: over the client's limit, send the question alone with TC so it retries on TCP."""
        packed = bytes(reply.pack())
        limit = UDP_LIMIT
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                limit = max(UDP_LIMIT, min(int(rr.rclass), EDNS_LIMIT))
        if len(packed) <= limit:
            return packed
        self.stats.truncated += 1
        header = DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, tc=1)
        return bytes(DNSRecord(header, q=reply.q).pack())

    async def forward(self, request: DNSRecord, data: bytes, tcp: bool) -> bytes:
        """Relay to the upstream resolvers in turn; SERVFAIL when none answers in time."""
        if not self.upstreams:
            return self.failure(request, RCODE.REFUSED)
        for host, port in self.upstreams:
            try:
                if tcp:
                    answer = await asyncio.wait_for(_query_tcp(host, port, data), self.forward_timeout)
                else:
                    answer = await asyncio.wait_for(_query_udp(host, port, data), self.forward_timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                continue
            self.stats.forwarded += 1
            return answer
        return self.failure(request)

    # -- transports ----------------------------------------------------------------------------
    async def _answer_udp(self, request: DNSRecord, data: bytes, peer: tuple[str, int]) -> None:
        response = await self.forward(request, data, tcp=False)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(response, peer)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))[0]
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
                response = self.cached(data, tcp=True)
                if response is None:
                    request = self.parse(data)
                    if request is None:
                        break  # a stream we cannot follow: drop the connection
                    reply = self.answer_safely(request)
                    if reply is not None:
                        response = bytes(reply.pack())
                        self.remember(data, True, response)
                    else:
                        response = await self.forward(request, data, tcp=True)
                writer.write(struct.pack("!H", len(response)) + response)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _under(name: object, domain: str) -> bool:
    text = str(name).lower().rstrip(".")
    return text == domain or text.endswith("." + domain)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport, but has its methods.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self.server
        if self.transport is None:
            return
        response = server.cached(data, tcp=False)
        if response is not None:
            self.transport.sendto(response, addr)
            return
        request = server.parse(data)
        if request is None:
            return
        reply = server.answer_safely(request)
        if reply is not None:
            packed = server.fit_udp(request, reply)
            server.remember(data, False, packed)
            self.transport.sendto(packed, addr)
            return
        task = asyncio.ensure_future(server._answer_udp(request, data, addr))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


class _OneShot(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _query_udp(host: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_OneShot, remote_addr=(host, port))
    try:
        transport.sendto(data)
        return await protocol.answer
    finally:
        transport.close()


async def _query_tcp(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()


def resolv_conf_upstreams(
    path: str = "/etc/resolv.conf", exclude: set[str] | None = None
) -> list[tuple[str, int]]:
    """The host's resolvers, minus our own addresses (forwarding to ourselves would loop)."""
    found: list[tuple[str, int]] = []
    try:
        lines = open(path).read().splitlines()  # noqa: SIM115 - tiny file
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in (exclude or set()):
            found.append((parts[1], 53))
    return found
