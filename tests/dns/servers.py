"""Real DNS servers on a free loopback port, for the DNS and DNS-attack tests."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from octctl.dns.server import DnsServer
from octctl.dns.zone import Zone


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def dns_servers(host: str) -> AsyncIterator[Callable[..., Awaitable[DnsServer]]]:
    """A starter of servers on ``host`` answering from ``zone``; every one is closed at the end."""
    started: list[DnsServer] = []

    async def start(zone: Zone | None, **kwargs: object) -> DnsServer:
        # The port is free for UDP when picked; an outgoing TCP connection of some other test's
        # process may still take it before the server listens on TCP: then pick another.
        for _ in range(5):
            server = DnsServer(host, free_port(host), lambda: zone, **kwargs)  # type: ignore[arg-type]
            try:
                await server.start()
            except OSError as e:
                await server.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                continue
            started.append(server)
            return server
        raise AssertionError("no free port for the DNS server after 5 tries")

    try:
        yield start
    finally:
        for server in started:
            await server.close()
