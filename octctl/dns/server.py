"""An asyncio DNS server (UDP and TCP) answering for the cluster zone and forwarding the rest.

dnslib is used for the wire format only: its bundled server is thread-per-request and fell over
under TCP load (docs/architecture.md#service-discovery-dns). Answers inside the zone are built
synchronously on the event loop from a cached :class:`Zone`; only forwarding awaits the network.

Limits, so that a node's resolver cannot be turned against it or against others
(docs/operations.md#dns):

- **Not an open resolver.** Names outside the cluster's domain are forwarded only for clients in
  ``forward_for`` (loopback, the node's own address, and its containers' bridges); any other
  source gets the zone's answers and REFUSED for everything else, and nothing reaches an upstream.
- **No amplification.** A UDP answer, from the zone or forwarded, larger than the client's limit
  (512 bytes, or its EDNS0 size up to :data:`EDNS_LIMIT`) goes back as the question alone with TC.
- **Bounded descriptors.** At most ``max_forwards`` forwards are in flight (SERVFAIL beyond), each
  with a timeout and a socket closed whatever happens; at most ``max_tcp_clients`` TCP connections.
- **Malformed packets** get FORMERR (NOTIMP for an opcode other than QUERY) when their header can be
  read, and nothing otherwise; no packet makes the server raise. Log lines about clients and
  upstreams are rate-limited per kind (:class:`LogLimiter`), so no flood reaches the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from dnslib import QTYPE, RCODE, DNSHeader, DNSLabel, DNSRecord

from octctl.dns.zone import Answer, Zone
from octctl.logthrottle import LogLimiter

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UDP_LIMIT = 512  # without EDNS0 (RFC 1035)
#: The most we ever answer over UDP, whatever a client advertises (DNS Flag Day 2020: no IP
#: fragmentation, and at most ~40x a minimal query).
EDNS_LIMIT = 1232
#: The largest query we parse: a question, an OPT record and a signature fit many times over; a
#: bigger "query" is FORMERR unread (it would only buy CPU, e.g. long compression-pointer chains).
QUERY_LIMIT = 1232
CACHE_LIMIT = 4096  # packed answers kept per zone version; a flood of random names cannot grow it further
CLIENT_CACHE_LIMIT = 4096  # source addresses whose right to forwarding is remembered
MAX_FORWARDS = 256  # forwards in flight (each holds a socket); SERVFAIL beyond
MAX_TCP_CLIENTS = 128  # open TCP connections; a new one beyond is closed at once
TCP_IDLE = 10.0
CLIENTS_REFRESH = 30.0  # seconds between two lookups of the node's container networks
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
#: Bytes no label of a query may hold: control characters, DEL, and "." (a label is not a dotted name).
BAD_LABEL_BYTES = bytes(range(0x20)) + b"\x7f."

_QR, _OPCODE, _RD, _RA = 0x8000, 0x7800, 0x0100, 0x0080


@dataclass
class Stats:
    queries: int = 0
    answered: int = 0
    nxdomain: int = 0
    forwarded: int = 0
    servfail: int = 0
    truncated: int = 0
    malformed: int = 0
    refused: int = 0  # outside names asked by a client not in forward_for
    overloaded: int = 0  # forwards and TCP connections turned away at their cap


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
    #: More such clients, looked up at start and again (at most every :data:`CLIENTS_REFRESH` s)
    #: when an unknown source asks for an outside name: the node's container networks, which may
    #: appear after the server started (see :func:`docker_bridge_networks`).
    local_networks: Callable[[], Sequence[Network]] | None = None
    max_forwards: int = MAX_FORWARDS
    max_tcp_clients: int = MAX_TCP_CLIENTS
    stats: Stats = field(default_factory=Stats)
    _transport: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None
    _cache_zone: Zone | None = None
    _cache: dict[tuple[bool, bytes], bytes] = field(default_factory=dict)
    _networks: tuple[Network, ...] = ()
    _networks_at: float = float("-inf")
    _clients: dict[str, bool] = field(default_factory=dict)
    _forwarding: int = 0
    _tcp_clients: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _log: LogLimiter = field(default_factory=lambda: LogLimiter(log))

    def __post_init__(self) -> None:
        self._refresh_networks()

    async def start(self) -> None:
        self._refresh_networks()  # the container networks as they are now
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
            ", ".join(map(str, self._networks)),
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

    # -- who may have names forwarded ------------------------------------------------------------
    def _refresh_networks(self) -> None:
        if self.forward_for is not None:
            networks = list(self.forward_for)
        else:
            networks = list(LOOPBACK)
            with contextlib.suppress(ValueError):  # a host name, not an address: loopback only
                networks.append(ipaddress.ip_network(self.address))
        if self.local_networks is not None:
            try:
                networks.extend(self.local_networks())
            except Exception as e:
                self._log.log(logging.WARNING, "clients", "cannot list the node's container networks: %s", e)
        self._networks = tuple(dict.fromkeys(networks))
        self._networks_at = time.monotonic()
        self._clients.clear()

    def _listed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def may_forward(self, host: str) -> bool:
        """Whether names outside the domain are forwarded for ``host`` (a dict lookup once known)."""
        allowed = self._clients.get(host)
        if allowed is not None:
            return allowed
        allowed = self._listed(host)
        if (
            not allowed
            and self.local_networks is not None
            and time.monotonic() - self._networks_at >= CLIENTS_REFRESH
        ):
            self._refresh_networks()
            allowed = self._listed(host)
        if len(self._clients) >= CLIENT_CACHE_LIMIT:
            self._clients.clear()
        self._clients[host] = allowed
        return allowed

    # -- answering -----------------------------------------------------------------------------
    def cached(self, data: bytes, tcp: bool) -> bytes | None:
        """A packed answer for an identical query (same bytes after the id) to the same zone.

        Parsing and packing with dnslib costs ~50 us a query; the zone changes rarely and clients
        ask the same few names, so most answers are a dict lookup and a new id. The question is part
        of the key byte for byte, so its case (0x20 randomisation) comes back as it was sent. Only
        zone answers are cached: they are the same for every client.
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

    def parse(self, data: bytes, peer: str = "?") -> DNSRecord | bytes | None:
        """The query in ``data``; for a malformed one, what to send back instead: FORMERR (NOTIMP
        for another opcode) when its header can be read, None when it cannot or is a response
        (answering those could start a loop between two servers)."""
        if len(data) < 12:
            return self._malformed(peer, "no DNS header", None)
        if data[2] & 0x80:
            return self._malformed(peer, "a response, not a query", None)
        opcode = (data[2] >> 3) & 0x0F
        if opcode != 0:
            return self._malformed(peer, f"opcode {opcode}", data, RCODE.NOTIMP)
        qd, an, ns, ar = struct.unpack_from("!4H", data, 4)
        if qd != 1 or an or ns or ar > 2:
            return self._malformed(peer, f"section counts {qd}/{an}/{ns}/{ar}", data)
        if len(data) > QUERY_LIMIT:
            return self._malformed(peer, f"{len(data)} bytes", data)
        try:
            request = DNSRecord.parse(data)
        except Exception as e:  # dnslib raises DNSError, BufferError, ValueError, struct.error, ...
            return self._malformed(peer, type(e).__name__, data)
        problem = _name_problem(request.q.qname)
        if problem is not None:
            return self._malformed(peer, problem, data)
        self.stats.queries += 1
        return request

    def _malformed(self, peer: str, why: str, data: bytes | None, rcode: int = RCODE.FORMERR) -> bytes | None:
        self.stats.malformed += 1
        reply = None if data is None else _error_reply(data, rcode)
        self._log.log(
            logging.INFO,
            "malformed",
            "malformed DNS packet from %s (%s): %s",
            peer,
            why,
            "dropped" if reply is None else f"answered {RCODE.get(rcode)}",
        )
        return reply

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

    def answer_safely(self, request: DNSRecord, peer: str = "?") -> DNSRecord | None:
        """:meth:`local_answer`, but a question it cannot handle gets SERVFAIL instead of an
        exception in the transport's callback."""
        try:
            return self.local_answer(request)
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

    def failure(self, request: DNSRecord, rcode: int = RCODE.SERVFAIL) -> bytes:
        if rcode == RCODE.SERVFAIL:
            self.stats.servfail += 1
        reply = DNSRecord(DNSHeader(id=request.header.id, qr=1, ra=1, rd=request.header.rd, rcode=rcode))
        reply.add_question(request.q)
        return bytes(reply.pack())

    def fit_udp(self, request: DNSRecord, reply: DNSRecord | bytes) -> bytes:
        """Pack for UDP: over the client's limit, send the question alone with TC so it retries on
        TCP. ``reply`` is ours or an upstream's packed answer; both are held to the same limit."""
        packed = reply if isinstance(reply, bytes) else bytes(reply.pack())
        limit = UDP_LIMIT
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                limit = max(UDP_LIMIT, min(int(rr.rclass), EDNS_LIMIT))
        if len(packed) <= limit:
            return packed
        self.stats.truncated += 1
        header = DNSHeader(id=request.header.id, bitmap=(packed[2] << 8) | packed[3], tc=1)
        return bytes(DNSRecord(header, q=request.q).pack())

    def admit_forward(self, request: DNSRecord, peer: str) -> bytes | None:
        """None when ``request`` may be forwarded now (a slot is taken: release it with
        :meth:`forward_done`), else the reply: REFUSED for a client not in forward_for, SERVFAIL
        when ``max_forwards`` are in flight."""
        if not self.may_forward(peer):
            self.stats.refused += 1
            self._log.log(
                logging.INFO, "refused", "refused to forward for %s: not a client of this node", peer
            )
            return self.failure(request, RCODE.REFUSED)
        if self._forwarding >= self.max_forwards:
            self.stats.overloaded += 1
            self._log.log(
                logging.WARNING, "overload", "%d forwards in flight: answering SERVFAIL", self._forwarding
            )
            return self.failure(request)
        self._forwarding += 1
        return None

    def forward_done(self, _task: object = None) -> None:
        self._forwarding -= 1

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
        self._log.log(
            logging.WARNING,
            "upstream",
            "no upstream (%s) answered within %.1f s: SERVFAIL",
            ", ".join(f"{h}:{p}" for h, p in self.upstreams),
            self.forward_timeout,
        )
        return self.failure(request)

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
            self.remember(data, False, packed)
            return packed
        refusal = self.admit_forward(request, peer[0])
        if refusal is not None:
            return refusal
        task = asyncio.ensure_future(self._answer_udp(request, data, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self.forward_done)
        return None

    async def _answer_udp(self, request: DNSRecord, data: bytes, peer: tuple[str, int]) -> None:
        try:
            response = self.fit_udp(request, await self.forward(request, data, tcp=False))
        except Exception as e:
            self.internal_error(peer[0], e)
            response = _error_reply(data, RCODE.SERVFAIL)
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
            self.remember(data, True, response)
            return response, True
        refusal = self.admit_forward(request, peer)
        if refusal is not None:
            return refusal, True
        try:
            return await self.forward(request, data, tcp=True), True
        finally:
            self.forward_done()

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


def _error_reply(data: bytes, rcode: int) -> bytes:
    """A header-only reply to the query whose header starts ``data``: its id, opcode and RD kept."""
    flags = (data[2] << 8) | data[3]
    return data[:2] + struct.pack("!5H", _QR | (flags & (_OPCODE | _RD)) | _RA | rcode, 0, 0, 0, 0)


def _name_problem(name: DNSLabel) -> str | None:
    """Why ``name`` cannot be a question (RFC 1035 sizes, no control bytes or dots in a label), or None."""
    size = 1
    for label in name.label:
        if len(label) > 63:
            return "a label over 63 bytes"
        if len(label.translate(None, BAD_LABEL_BYTES)) != len(label):
            return "a control byte or dot in a label"
        size += 1 + len(label)
    return "a name over 255 bytes" if size > 255 else None


def _under(name: object, domain: str) -> bool:
    text = str(name).lower().rstrip(".")
    return text == domain or text.endswith("." + domain)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport, but has its methods.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self.server
        transport = self.transport
        if transport is None:
            return
        try:
            response = server.cached(data, tcp=False)
            if response is None:
                response = server.respond_udp(data, addr)
            if response is not None:
                transport.sendto(response, addr)
        except Exception as e:  # nothing a client sends may reach the loop's exception handler
            server.internal_error(str(addr[0]), e)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors for replies to clients that went away: nothing to do


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


def docker_bridge_networks(path: str = "/proc/net/route") -> list[Network]:
    """The subnets of this host's Docker bridges (``docker0``, and ``br-<id>`` of user-defined
    networks): where the node's containers ask from.

    Read from the kernel's routing table, so it costs no call to the Docker engine and works
    before (or without) one; a bridge created later is found by the server's next lookup.
    """
    found: list[Network] = []
    try:
        lines = Path(path).read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or not (fields[0] == "docker0" or fields[0].startswith("br-")):
            continue
        try:
            destination = ipaddress.IPv4Address(struct.pack("<I", int(fields[1], 16)))
            prefix = bin(int(fields[7], 16)).count("1")
        except ValueError:
            continue
        if prefix:  # not a default route through the bridge
            found.append(ipaddress.ip_network(f"{destination}/{prefix}", strict=False))
    return found
