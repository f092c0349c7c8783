"""``oct logs SERVICE [-f]``: every instance's lines, from whichever nodes run them, in one stream.

The node the CLI asks fans in one reader per instance (the node's own agent, or the agent of the
node that runs it, over mutual TLS) and writes each line as one JSON object (``instance``,
``node``, ``text``) as it comes. When following, a reader that ends (a replaced container, an
instance moved to another node) starts again where the instance now runs, from the moment it
ended, and instances that appear (more replicas, a start-first surge) get a reader of their own;
so one ``oct logs -f`` outlives rollouts and restarts. Every queue between a log and the client
is short: a slow client slows the readers, it never grows a node's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from aiohttp import web

from octctl.instances import running_names
from octctl.log_pump import lines_of
from octctl.names import check_name
from octctl.node import Node
from octctl.node_logs import node_log_stream
from octctl.peers import PeerError
from octctl.server.agent_routes import project_and_service
from octctl.server.http import int_query, node_of
from octctl.state.desired import desired_project
from octctl.state.model import api_address

__all__ = ["agent_log_stream", "agent_node_log", "node_log", "service_log_stream", "tail_of"]

#: Lines waiting between the instances' readers and the client.
QUEUE = 256
#: How often a following stream looks for moved, new and gone instances.
RESOLVE = 0.5
#: Lines a reader that starts again after its instance was replaced may catch up on.
CATCH_UP = 10_000


def _since(request: web.Request) -> float | None:
    raw = request.query.get("since")
    if raw is None:
        return None
    try:
        since = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(reason="query parameter 'since' must be a Unix time in seconds") from None
    if not 0 < since < 1e11:
        raise web.HTTPBadRequest(reason="query parameter 'since' must be a Unix time in seconds")
    return since


def _follow(request: web.Request) -> bool:
    raw = request.query.get("follow", "false")
    if raw not in ("true", "false"):
        raise web.HTTPBadRequest(reason="query parameter 'follow' must be true or false")
    return raw == "true"


async def agent_log_stream(request: web.Request) -> web.StreamResponse:
    """This node's instance: its lines as plain text, one per line."""
    project, service = project_and_service(request)
    tail, since, follow = int_query(request, "tail", 50), _since(request), _follow(request)
    lines = node_of(request).agent.log_stream(project, service, tail, since, follow)
    return await _send(request, "text/plain; charset=utf-8", _as_text(lines))


async def _as_text(lines: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for line in lines:
        yield line.replace("\n", " ").encode() + b"\n"


async def _send(request: web.Request, content_type: str, chunks: AsyncIterator[bytes]) -> web.StreamResponse:
    """Stream ``chunks`` as they come. A client that hangs up (Ctrl-C on ``oct logs -f``) ends it
    quietly: that is how a followed log normally ends."""
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response


def _lines(
    node: Node, placed: str, project: str, instance: str, tail: int, since: float | None, follow: bool
) -> AsyncIterator[str]:
    if placed == node.settings.node:
        return node.agent.log_stream(project, instance, tail, since, follow)
    address = api_address(node.raft.view()["nodes"][placed])
    return node.peers.log_stream(address, project, instance, tail, since, follow)


class _FanIn:
    """The readers of one ``oct logs`` request, writing into one queue."""

    def __init__(self, node: Node, project: str, tail: int, since: float | None, follow: bool) -> None:
        self.node, self.project, self.tail, self.since, self.follow = node, project, tail, since, follow
        self.queue: asyncio.Queue[dict[str, str] | None] = asyncio.Queue(maxsize=QUEUE)
        self.readers: dict[str, asyncio.Task[None]] = {}

    def _where(self, instance: str) -> str | None:
        view = self.node.raft.view()
        placed = view["placements"].get(instance)
        return placed if placed in view["nodes"] else None

    async def _read_once(self, instance: str, placed: str, tail: int, since: float | None) -> None:
        async for text in _lines(self.node, placed, self.project, instance, tail, since, self.follow):
            await self.queue.put({"instance": instance, "node": placed, "text": text})

    async def read(self, instance: str) -> None:
        """One instance: its lines, and (following) again wherever and whenever it runs next."""
        tail, since = self.tail, self.since
        while True:
            placed = self._where(instance)
            if placed is not None:
                reading = asyncio.create_task(self._read_once(instance, placed, tail, since))
                # (following, a move to another node ends this reader: the next one reads there)
                while not reading.done() and (not self.follow or self._where(instance) == placed):
                    await asyncio.wait({reading}, timeout=RESOLVE)
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, PeerError):
                    await reading
                # The stream ended as its container stopped or the instance moved: what runs next
                # writes after this moment.
                tail, since = CATCH_UP, time.time()
            if not self.follow:
                return
            await asyncio.sleep(RESOLVE)

    def start_readers(self, service: str) -> None:
        view = self.node.raft.view()
        config = desired_project(view)
        if config is None or service not in {s.name for s in config.project.services}:
            return
        for instance in running_names(config.service(service), view["placements"]):
            if instance not in self.readers:
                self.readers[instance] = asyncio.create_task(self.read(instance))

    async def run(self, service: str) -> None:
        """Start the readers, and while following, new ones for new instances; None when done."""
        try:
            self.start_readers(service)
            while self.follow:
                await asyncio.sleep(RESOLVE)
                self.start_readers(service)
            await asyncio.gather(*self.readers.values(), return_exceptions=True)
        finally:
            await self.queue.put(None)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.cancel()


async def service_log_stream(request: web.Request) -> web.StreamResponse:
    """Every instance of a service: one JSON object per line (``instance``, ``node``, ``text``)."""
    node = node_of(request)
    service = check_name("service", request.match_info["service"])
    tail, since, follow = int_query(request, "tail", 50), _since(request), _follow(request)
    config = desired_project(node.raft.view())
    if config is None or service not in {s.name for s in config.project.services}:
        raise web.HTTPNotFound(reason=f"no service {service!r} is deployed")
    fan_in = _FanIn(node, config.project.name, tail, since, follow)
    running = asyncio.create_task(fan_in.run(service))

    async def entries() -> AsyncIterator[bytes]:
        while (entry := await fan_in.queue.get()) is not None:
            yield json.dumps(entry).encode() + b"\n"

    try:
        return await _send(request, "application/x-ndjson", entries())
    finally:
        fan_in.close()
        running.cancel()


async def agent_node_log(request: web.Request) -> web.StreamResponse:
    """This node's own log (``octctl/node_logs.py``) as plain text, one line a line."""
    node = node_of(request)
    tail, follow = int_query(request, "tail", 50), _follow(request)
    stream = await asyncio.to_thread(node_log_stream, node.log_file, tail, follow)
    return await _send(request, "text/plain; charset=utf-8", _as_text(lines_of(stream, "node")))


async def node_log(request: web.Request) -> web.StreamResponse:
    """A node's own log, from that node: one JSON object (``node``, ``text``) a line."""
    node = node_of(request)
    wanted = request.match_info["node"]
    tail, follow = int_query(request, "tail", 50), _follow(request)
    record = node.raft.view()["nodes"].get(wanted)
    if record is None:
        raise web.HTTPNotFound(reason=f"no node {wanted!r} in the cluster (see `oct status`)")
    if wanted == node.settings.node:
        stream = await asyncio.to_thread(node_log_stream, node.log_file, tail, follow)
        lines = lines_of(stream, "node")
    else:
        lines = node.peers.node_log(api_address(record), tail, follow)

    async def entries() -> AsyncIterator[bytes]:
        try:
            async for text in lines:
                yield json.dumps({"node": wanted, "text": text}).encode() + b"\n"
        except PeerError as e:
            yield json.dumps({"node": wanted, "text": f"(the log broke off: {e})"}).encode() + b"\n"

    return await _send(request, "application/x-ndjson", entries())


#: How long a one-off tail (the dashboard's) waits for slow nodes before showing what came.
TAIL_WAIT = 10.0


async def tail_of(node: Node, project: str, service: str, tail: int) -> list[dict[str, str]]:
    """The last ``tail`` lines of each instance of ``service``, as ``oct logs -n`` gets them."""
    fan_in = _FanIn(node, project, tail, None, follow=False)
    running = asyncio.create_task(fan_in.run(service))
    found: list[dict[str, str]] = []
    try:
        async with asyncio.timeout(TAIL_WAIT):
            while (entry := await fan_in.queue.get()) is not None:
                found.append(entry)
    except TimeoutError:
        found.append({"instance": service, "node": "?", "text": f"(no more within {TAIL_WAIT:g} s)"})
    finally:
        fan_in.close()
        running.cancel()
    return found
