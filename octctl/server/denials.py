"""Calls the API refused (no token, a wrong one, no node certificate) noted in the audit trail.

The callers are unknown, so what they can make a node write is bounded twice: each entry holds
only what the node chose (the caller's address, the method, the route's pattern and the status;
never the raw path, a header or a body), and at most :data:`BURST` entries a minute are written;
the calls over the limit are counted and the next entry says how many. Only the leader writes
the trail: a follower's refusals are in its log and in ``oct_api_request_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web

from octctl.node import Node
from octctl.state.machine import NotLeader, RaftUnavailable
from octctl.state.model import command

__all__ = ["BURST", "WINDOW", "Denials"]

log = logging.getLogger(__name__)

BURST = 10
WINDOW = 60.0


class Denials:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._window_start = 0.0
        self._noted = 0
        self._unnoted = 0
        self._writing: set[asyncio.Task[None]] = set()

    def denied(self, request: web.Request, status: int) -> None:
        """Note a refused call (without delaying the refusal); over the limit, count it."""
        if not self.node.raft.is_leader():
            return
        now = time.monotonic()
        if now - self._window_start >= WINDOW:
            self._window_start, self._noted = now, 0
        if self._noted >= BURST:
            self._unnoted += 1
            return
        self._noted += 1
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "(no such route)"
        peer = request.transport.get_extra_info("peername") if request.transport else None
        more, self._unnoted = self._unnoted, 0
        result = f"{status} denied" + (f" (and {more} more denied calls not noted)" if more else "")
        task = asyncio.create_task(self._write(f"unauthenticated caller from {peer[0] if peer else '?'}",
                                               f"{request.method} {route}", result))  # fmt: skip
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, who: str, action: str, result: str) -> None:
        with contextlib.suppress(NotLeader, RaftUnavailable):
            await self.node.raft.execute(
                command("audit", who=who, action=action, result=result, at=time.time())
            )
