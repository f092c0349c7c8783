"""The ingress's access log of a service: every node serves every public service, so each holds
part of it. Any node answers the user's request by asking every ready node (itself included) for
its lines, and merges them by time, each marked with the node that served the request."""

from __future__ import annotations

import asyncio

from aiohttp import web

from octctl.ingress.access_log import read_access
from octctl.names import check_name
from octctl.peers import PeerError
from octctl.server.http import error, int_query, node_of
from octctl.state.desired import desired_project
from octctl.state.model import NodeRecord, api_address


async def agent_access(request: web.Request) -> web.Response:
    """This node's lines for one service (the route other nodes call)."""
    node = node_of(request)
    service = check_name("service", request.match_info["service"])
    tail = int_query(request, "tail", 50)
    lines = await asyncio.to_thread(read_access, node.data_dir / "ingress" / "access.log", service, tail)
    return web.json_response({"lines": [{"when": line.when, "text": line.text} for line in lines]})


async def service_access(request: web.Request) -> web.Response:
    node = node_of(request)
    service = check_name("service", request.match_info["service"])
    tail = int_query(request, "tail", 50)
    view = node.raft.view()
    config = desired_project(view)
    if config is None or service not in {s.name for s in config.project.services}:
        return error(404, f"service {service!r} is not deployed")
    if config.service(service).public_port is None:
        return error(404, f"service {service!r} has no external_port: the ingress does not serve it")
    nodes = sorted((n for n in view["nodes"].values() if n["status"] == "ready"), key=lambda n: n["id"])

    own = node.data_dir / "ingress" / "access.log"

    async def lines_of(other: NodeRecord) -> list[tuple[float, str]]:
        if other["id"] == node.settings.node:
            found = await asyncio.to_thread(read_access, own, service, tail)
            return [(line.when, f"{other['id']} {line.text}") for line in found]
        try:
            data = await node.peers.access(api_address(other), service, tail)
        except PeerError as e:
            return [(0.0, f"{other['id']} (its access log is out of reach: {e})")]
        return [(float(line["when"]), f"{other['id']} {line['text']}") for line in data]

    gathered = await asyncio.gather(*(lines_of(n) for n in nodes))
    merged = sorted((entry for lines in gathered for entry in lines), key=lambda entry: entry[0])
    return web.json_response({"lines": [text for _, text in merged[-tail:]]})
