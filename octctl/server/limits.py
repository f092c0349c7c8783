"""Bounds on what one API client can hold of a node: connections, idle time, time to send a body.

aiohttp closes a connection that has not delivered a whole request head within its keep-alive
timeout (also at the start of a connection), so a client that trickles header bytes, or connects
and says nothing, is dropped after the node's ``api_idle_timeout`` (:data:`IDLE_TIMEOUT` unless
set). A body must arrive within :data:`BODY_TIMEOUT` once its head has (``read_model`` answers 408
otherwise). And no one address may hold more than :data:`CONNECTIONS_PER_CLIENT` connections at
once: the one over it is closed as soon as it is made, so a single host cannot use up the node's
descriptors while the CLI and the other nodes keep their way in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from aiohttp import web

from octctl.logthrottle import LogLimiter
from octctl.node_settings import DEFAULT_API_IDLE_TIMEOUT

__all__ = ["BODY_TIMEOUT", "CONNECTIONS_PER_CLIENT", "HANDSHAKE_TIMEOUT", "IDLE_TIMEOUT", "limit_connections"]

log = logging.getLogger(__name__)

#: Seconds a connection may stay without a complete request head (idle or trickling), unless the
#: node's ``api_idle_timeout`` says otherwise. Longer than the keep-alive of the clients that talk
#: to nodes (aiohttp's 15 s between nodes, httpx's 5 s in the CLI), so a client always drops an idle
#: pooled connection before the node does: no request is ever sent on a connection the node is
#: closing.
IDLE_TIMEOUT = DEFAULT_API_IDLE_TIMEOUT
#: Seconds a new connection may take to complete its TLS handshake (asyncio's default is 60).
HANDSHAKE_TIMEOUT = 10.0
#: Seconds a request body may take to arrive once its head is in.
BODY_TIMEOUT = 10.0
#: Connections one address may have open at once: the CLI uses one, nodes a handful, a load test
#: or a busy client pool up to ~100 (wrk -c 64 in bench/raft_write.py, httpx's default pool of 100).
CONNECTIONS_PER_CLIENT = 128


def limit_connections(server: web.Server, per_client: int = CONNECTIONS_PER_CLIENT) -> None:
    """Make ``server`` (an ``AppRunner``'s, after ``setup()``) close connections over the cap.

    aiohttp's ``Server`` is told of every connection a request handler makes and loses; counting
    there sees each connection once, after TLS and before any byte of HTTP is parsed.
    """
    open_by_client: Counter[str] = Counter()
    warnings = LogLimiter(log)
    counted: dict[Any, str] = {}
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if open_by_client[client] >= per_client:
            warnings.log(
                logging.WARNING, client, "API: %s holds %d connections; closing more", client, per_client
            )
            transport.abort()
            return
        open_by_client[client] += 1
        counted[handler] = client

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        client = counted.pop(handler, None)
        if client is not None:
            open_by_client[client] -= 1
            if open_by_client[client] <= 0:
                del open_by_client[client]
        lost(handler, exc)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]
