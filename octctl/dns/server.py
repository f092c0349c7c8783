"""An asyncio DNS server (UDP and TCP) answering for the cluster zone and forwarding the rest.

dnslib is used for the wire format only: its bundled server is thread-per-request and fell over
under TCP load (docs/architecture.md#service-discovery-dns). This module holds the transports and
their bounds; it hands each query to the rooms that know the rules:

- :mod:`octctl.dns.wire`: which packets are queries (FORMERR, NOTIMP or nothing for the rest) and
  how large a UDP answer may be (no amplification);
- :mod:`octctl.dns.answers`: answers inside the zone, built synchronously on the event loop from
  a cached :class:`Zone` and kept packed;
- :mod:`octctl.dns.forwarding`: names outside the domain, forwarded only for this node's clients
  and at most ``max_forwards`` at a time (not an open resolver); only forwarding awaits the network.

Bounds of the transports themselves (docs/operations.md#dns): at most ``max_tcp_clients`` TCP
connections, each closed after :data:`TCP_IDLE` s without a query, or at once after a malformed
one; no packet makes the server raise, and log lines about clients and upstreams are rate-limited
per kind (:class:`LogLimiter`), so no flood reaches the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from dnslib import RCODE, DNSHeader, DNSRecord

from octctl.dns.answers import ZoneAnswers
from octctl.dns.forwarding import MAX_FORWARDS, ForwardClients, Forwarder, Network
from octctl.dns.stats import Stats
from octctl.dns.wire import Malformed, error_reply, read_query, truncated, udp_limit
from octctl.dns.zone import Zone
from octctl.logthrottle import LogLimiter

log = logging.getLogger(__name__)

MAX_TCP_CLIENTS = 128  # open TCP connections; a new one beyond is closed at once
TCP_IDLE = 10.0


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
    #: Clients whose names outside the domain are forwarded; None: loopback and ``address``.
    forward_for: Sequence[Network] | None = None
    #: More such clients, found again while the server runs: see :class:`ForwardClients`.
    local_networks: Callable[[], Sequence[Network]] | None = None
    max_forwards: int = MAX_FORWARDS
    max_tcp_clients: int = MAX_TCP_CLIENTS
    stats: Stats = field(default_factory=Stats)
    #: Told the seconds each forwarded query took upstream (metrics); None: nobody asks.
    on_forward: Callable[[float], None] | None = None
    #: Told how long one UDP query in :data:`ANSWER_SAMPLE` took from receipt to its reply, when
    #: answered at once (the zone or the cache; metrics). Sampled: timing every one would cost a
    #: fifth of a node's DNS throughput.
    on_answer: Callable[[float], None] | None = None
    clients: ForwardClients = field(init=False)
    answers: ZoneAnswers = field(init=False)
    forwarder: Forwarder = field(init=False)
    _transport: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None
    _tcp_clients: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _log: LogLimiter = field(default_factory=lambda: LogLimiter(log))

    def __post_init__(self) -> None:
        self.clients = ForwardClients(self.address, self.forward_for, self.local_networks, self._log)
        self.answers = ZoneAnswers(self.domain, self.stats)
        self.forwarder = Forwarder(
            self.upstreams, self.forward_timeout, self.max_forwards, self.clients, self.stats, self._log
        )

    async def start(self) -> None:
        self.clients.refresh()  # the container networks as they are now
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.address, self.port), reuse_port=False
        )
        self._transport = transport
        self._tcp = await asyncio.start_server(self._serve_tcp, self.address, self.port, reuse_address=True)
        log.info(
            "DNS on %s:%d (udp+tcp), forwarding to %s for %s",
            self.address,
            self.port,
            self.upstreams or "nobody",
            ", ".join(map(str, self.clients.networks)),
        )

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._log.flush()

    # -- one query, whatever the transport -------------------------------------------------------
    def cached(self, data: bytes, tcp: bool) -> bytes | None:
        """The packed zone answer to an identical earlier query, if the zone has not changed."""
        found = self.answers.cached(self.zone(), data, tcp)
        if found is not None:
            self.stats.cached += 1
        return found

    async def _forward(self, request: DNSRecord, data: bytes, tcp: bool) -> bytes:
        started = time.perf_counter()
        try:
            return await self.forwarder.forward(request, data, tcp=tcp)
        finally:
            if self.on_forward is not None:
                self.on_forward(time.perf_counter() - started)

    def parse(self, data: bytes, peer: str = "?") -> DNSRecord | bytes | None:
        """The query in ``data``; for a malformed one, what to send back instead (see
        :func:`read_query`), counted and logged (rate-limited)."""
        request = read_query(data)
        if isinstance(request, Malformed):
            self.stats.malformed += 1
            self._log.log(
                logging.INFO,
                "malformed",
                "malformed DNS packet from %s (%s): %s",
                peer,
                request.why,
                "dropped" if request.reply is None else f"answered {RCODE.get(request.rcode)}",
            )
            return request.reply
        self.stats.queries += 1
        return request

    def answer_safely(self, request: DNSRecord, peer: str = "?") -> DNSRecord | None:
        """The zone's reply (None: not ours, forward it), but a question it cannot handle gets
        SERVFAIL instead of an exception in the transport's callback."""
        try:
            return self.answers.answer(self.zone(), request)
        except Exception as e:
            self.internal_error(peer, e)
            return DNSRecord(DNSHeader(id=request.header.id, qr=1, ra=1, rcode=RCODE.SERVFAIL))

    def internal_error(self, peer: str, error: Exception) -> None:
        """A bug met while answering ``peer``: one rate-limited line (where, not a traceback)."""
        self.stats.servfail += 1
        frames = traceback.extract_tb(error.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        self._log.log(
            logging.ERROR,
            "internal",
            "cannot answer a DNS query from %s: %s%s",
            peer,
            type(error).__name__,
            where,
        )

    def fit_udp(self, request: DNSRecord, reply: DNSRecord | bytes) -> bytes:
        """Pack for UDP: over the client's limit, send the question alone with TC so it retries on
        TCP. ``reply`` is ours or an upstream's packed answer; both are held to the same limit."""
        packed = reply if isinstance(reply, bytes) else bytes(reply.pack())
        if len(packed) <= udp_limit(request):
            return packed
        self.stats.truncated += 1
        return truncated(request, packed)

    # -- transports ----------------------------------------------------------------------------
    def respond_udp(self, data: bytes, peer: tuple[str, int]) -> bytes | None:
        """The reply to a UDP query that missed the cache; None when there is none to send now
        (dropped, or forwarded: the forward sends its answer itself)."""
        request = self.parse(data, peer[0])
        if not isinstance(request, DNSRecord):
            return request
        reply = self.answer_safely(request, peer[0])
        if reply is not None:
            packed = self.fit_udp(request, reply)
            self.answers.remember(data, False, packed)
            return packed
        refusal = self.forwarder.admit(request, peer[0])
        if refusal is not None:
            return refusal
        task = asyncio.ensure_future(self._answer_udp(request, data, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self.forwarder.done)
        return None

    async def _answer_udp(self, request: DNSRecord, data: bytes, peer: tuple[str, int]) -> None:
        try:
            response = self.fit_udp(request, await self._forward(request, data, tcp=False))
        except Exception as e:
            self.internal_error(peer[0], e)
            response = error_reply(data, RCODE.SERVFAIL)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(response, peer)

    async def respond_tcp(self, data: bytes, peer: str) -> tuple[bytes | None, bool]:
        """The reply to a TCP query that missed the cache, and whether to keep the connection."""
        request = self.parse(data, peer)
        if not isinstance(request, DNSRecord):
            return request, False  # FORMERR (or nothing), then close: not a client worth following
        reply = self.answer_safely(request, peer)
        if reply is not None:
            response = bytes(reply.pack())
            self.answers.remember(data, True, response)
            return response, True
        refusal = self.forwarder.admit(request, peer)
        if refusal is not None:
            return refusal, True
        try:
            return await self._forward(request, data, tcp=True), True
        finally:
            self.forwarder.done()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else "?"
        if self._tcp_clients >= self.max_tcp_clients:
            self.stats.overloaded += 1
            self._log.log(
                logging.WARNING,
                "tcp",
                "%d TCP clients already: closing a connection from %s",
                self._tcp_clients,
                peer,
            )
            writer.transport.abort()
            return
        self._tcp_clients += 1
        try:
            keep = True
            while keep:
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))[0]
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
                response = self.cached(data, tcp=True)
                if response is None:
                    response, keep = await self.respond_tcp(data, peer)
                if response is not None:
                    writer.write(struct.pack("!H", len(response)) + response)
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as e:
            self.internal_error(peer, e)
        finally:
            self._tcp_clients -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


#: One UDP query in this many is timed for ``on_answer``.
ANSWER_SAMPLE = 64


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport, but has its methods.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self.server
        transport = self.transport
        if transport is None:
            return
        self.received += 1
        timed = server.on_answer is not None and self.received % ANSWER_SAMPLE == 0
        started = time.perf_counter() if timed else 0.0
        try:
            response = server.cached(data, tcp=False)
            if response is None:
                response = server.respond_udp(data, addr)
            if response is not None:
                transport.sendto(response, addr)
                if timed and server.on_answer is not None:
                    server.on_answer(time.perf_counter() - started)
        except Exception as e:  # nothing a client sends may reach the loop's exception handler
            server.internal_error(str(addr[0]), e)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors for replies to clients that went away: nothing to do
