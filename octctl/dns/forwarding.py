"""Names outside the cluster's domain: who may have them forwarded, and relaying them upstream.

So that a node's resolver cannot be turned against it or against others
(docs/operations.md#dns):

- **Not an open resolver.** Names outside the cluster's domain are forwarded only for clients in
  ``forward_for`` (loopback, the node's own address, and its containers' bridges); any other
  source gets REFUSED, and nothing reaches an upstream.
- **Bounded descriptors.** At most ``max_forwards`` forwards are in flight (SERVFAIL beyond), each
  with a timeout and a socket closed whatever happens.

Where the upstreams and the container networks come from on a real node (the host's
``/etc/resolv.conf`` and routing table) is here too, read without calling anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dnslib import RCODE, DNSRecord

from octctl.dns.stats import Stats
from octctl.dns.wire import failure_reply
from octctl.logthrottle import LogLimiter

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CLIENT_CACHE_LIMIT = 4096  # source addresses whose right to forwarding is remembered
MAX_FORWARDS = 256  # forwards in flight (each holds a socket); SERVFAIL beyond
CLIENTS_REFRESH = 30.0  # seconds between two lookups of the node's container networks
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass
class ForwardClients:
    """The sources whose names outside the domain are forwarded, remembered per address."""

    #: The node's own address: a client by default (unless it is a host name, not an address).
    address: str
    #: Clients whose names outside the domain are forwarded; None: loopback and ``address``.
    forward_for: Sequence[Network] | None
    #: More such clients, looked up at start and again (at most every :data:`CLIENTS_REFRESH` s)
    #: when an unknown source asks for an outside name: the node's container networks, which may
    #: appear after the server started (see :func:`docker_bridge_networks`).
    local_networks: Callable[[], Sequence[Network]] | None
    log: LogLimiter
    networks: tuple[Network, ...] = ()
    refreshed_at: float = float("-inf")
    _known: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
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
                self.log.log(logging.WARNING, "clients", "cannot list the node's container networks: %s", e)
        self.networks = tuple(dict.fromkeys(networks))
        self.refreshed_at = time.monotonic()
        self._known.clear()

    def _listed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def may_forward(self, host: str) -> bool:
        """Whether names outside the domain are forwarded for ``host`` (a dict lookup once known)."""
        allowed = self._known.get(host)
        if allowed is not None:
            return allowed
        allowed = self._listed(host)
        if (
            not allowed
            and self.local_networks is not None
            and time.monotonic() - self.refreshed_at >= CLIENTS_REFRESH
        ):
            self.refresh()
            allowed = self._listed(host)
        if len(self._known) >= CLIENT_CACHE_LIMIT:
            self._known.clear()
        self._known[host] = allowed
        return allowed


@dataclass
class Forwarder:
    """Relays the queries of ``clients`` to ``upstreams``, at most ``max_forwards`` at a time."""

    upstreams: list[tuple[str, int]]
    timeout: float
    max_forwards: int
    clients: ForwardClients
    stats: Stats
    log: LogLimiter
    in_flight: int = 0

    def failure(self, request: DNSRecord, rcode: int = RCODE.SERVFAIL) -> bytes:
        if rcode == RCODE.SERVFAIL:
            self.stats.servfail += 1
        return failure_reply(request, rcode)

    def admit(self, request: DNSRecord, peer: str) -> bytes | None:
        """None when ``request`` may be forwarded now (a slot is taken: release it with
        :meth:`done`), else the reply: REFUSED for a client not in forward_for, SERVFAIL
        when ``max_forwards`` are in flight."""
        if not self.clients.may_forward(peer):
            self.stats.refused += 1
            self.log.log(
                logging.INFO, "refused", "refused to forward for %s: not a client of this node", peer
            )
            return self.failure(request, RCODE.REFUSED)
        if self.in_flight >= self.max_forwards:
            self.stats.overloaded += 1
            self.log.log(
                logging.WARNING, "overload", "%d forwards in flight: answering SERVFAIL", self.in_flight
            )
            return self.failure(request)
        self.in_flight += 1
        return None

    def done(self, _task: object = None) -> None:
        self.in_flight -= 1

    async def forward(self, request: DNSRecord, data: bytes, tcp: bool) -> bytes:
        """Relay to the upstream resolvers in turn; SERVFAIL when none answers in time."""
        if not self.upstreams:
            return self.failure(request, RCODE.REFUSED)
        for host, port in self.upstreams:
            try:
                if tcp:
                    answer = await asyncio.wait_for(_query_tcp(host, port, data), self.timeout)
                else:
                    answer = await asyncio.wait_for(_query_udp(host, port, data), self.timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                continue
            self.stats.forwarded += 1
            return answer
        self.log.log(
            logging.WARNING,
            "upstream",
            "no upstream (%s) answered within %.1f s: SERVFAIL",
            ", ".join(f"{h}:{p}" for h, p in self.upstreams),
            self.timeout,
        )
        return self.failure(request)


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
