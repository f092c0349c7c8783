"""What instances use (``oct top``): each node's agent reads its own, the node the CLI asks
gathers them from every node of the cluster at once."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from octctl.api.models import NodeUsage, UsageResponse
from octctl.node import Node
from octctl.peers import PeerError
from octctl.server.http import node_of, ok
from octctl.state.model import NodeRecord, api_address

__all__ = ["agent_usage", "usage"]


async def agent_usage(request: web.Request) -> web.Response:
    found = await node_of(request).agent.usage()
    return web.json_response({"instances": [u.model_dump(mode="json") for u in found]})


async def _of(node: Node, record: NodeRecord) -> NodeUsage:
    try:
        if record["id"] == node.settings.node:
            found = await node.agent.usage()
        else:
            found = await node.peers.usage(api_address(record))
    except PeerError as e:
        return NodeUsage(node=record["id"], error=str(e))
    return NodeUsage(node=record["id"], instances=found)


async def usage(request: web.Request) -> web.Response:
    """Every node that is not being retired, asked at once; one that does not answer says why."""
    node = node_of(request)
    records = [r for r in node.raft.view()["nodes"].values() if r["status"] != "retiring"]
    nodes = await asyncio.gather(*(_of(node, r) for r in sorted(records, key=lambda r: r["id"])))
    return ok(UsageResponse(at=time.time(), nodes=list(nodes)))
