"""The web dashboard (``/ui``): HTML pages for people, rendered from this node's replica.

A browser gets in only with a session cookie from a one-time login link (``oct ui``; see
``octctl/ui/login.py``); ``auth_middleware`` checks it before any handler here runs, except for
the login itself and the two static files. Every page reads; nothing here changes the cluster,
so a forged request from another site has nothing to do (and the cookie is SameSite=Strict).

Every full page is whole without JavaScript; htmx (vendored: ``octctl/ui/static``) only swaps in
fresh copies of its sections every few seconds.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from aiohttp import web

from octctl.api.models import UiLink
from octctl.fleet_cost import billed_types, fleet_cost, volumes_gb
from octctl.names import check_name
from octctl.server.http import node_of, ok
from octctl.server.log_streams import tail_of
from octctl.server.views import history_views, leader_id, recent_events, status_view
from octctl.state.desired import desired_project
from octctl.state.model import ClusterState
from octctl.ui.board import DEPLOYMENTS, EVENTS, Board
from octctl.ui.login import COOKIE, LINK_SECONDS, SESSION_SECONDS
from octctl.ui.render import PAGE_HEADERS, STATIC, html, message, render

__all__ = ["PARTS", "board", "ui_home", "ui_link", "ui_login", "ui_logs", "ui_part", "ui_static"]

#: The sections a page refreshes on its own (``/ui/part/<name>``).
PARTS = frozenset({"summary", "nodes", "services", "deployments", "events"})
#: Lines of each instance on a service's log page.
LOG_TAIL = 200


async def ui_link(request: web.Request) -> web.Response:
    """A login link for this node (the API token's holder asks; the link does not contain it)."""
    code = node_of(request).logins.link_code()
    return ok(UiLink(path=f"/ui/login?code={code}", expires_in=LINK_SECONDS))


async def ui_login(request: web.Request) -> web.Response:
    session = node_of(request).logins.redeem(request.query.get("code"))
    if session is None:
        return message(
            403,
            "This login link does not work",
            "It was used already, has expired (a link lasts a minute) or was made for another node.",
        )
    response = web.Response(status=303, headers={**PAGE_HEADERS, "Location": "/ui"})
    response.set_cookie(
        COOKIE, session, max_age=SESSION_SECONDS, path="/ui", secure=True, httponly=True, samesite="Strict"
    )
    return response


def board(state: ClusterState, node: str, leader: str | None, kind: str, instance_type: str | None) -> Board:
    """The cluster as ``node`` sees it (pure); ``kind`` and ``instance_type`` price its machines."""
    status = status_view(state, node, leader)
    billed = billed_types(state["nodes"].values(), instance_type)
    return Board(
        status=status,
        deployments=history_views(state)[:DEPLOYMENTS],
        events=recent_events(state, EVENTS),
        cost=fleet_cost(kind, billed, volumes_gb(desired_project(state))),
        at=time.time(),
    )


def _board(request: web.Request) -> Board:
    node = node_of(request)
    view = node.raft.view()
    provider = node.settings.provider
    leader = leader_id(view, node.raft.leader_address())
    return board(view, node.settings.node, leader, provider.kind, getattr(provider, "instance_type", None))


async def ui_home(request: web.Request) -> web.Response:
    return html(render("page.html.j2", board=_board(request)))


async def ui_part(request: web.Request) -> web.Response:
    part = request.match_info["part"]
    if part not in PARTS:
        return message(404, "No such section", f"The dashboard has no section {part!r}.")
    return html(render(f"parts/{part}.html.j2", board=_board(request)))


async def ui_logs(request: web.Request) -> web.Response:
    node = node_of(request)
    service = check_name("service", request.match_info["service"])
    config = desired_project(node.raft.view())
    if config is None or service not in {s.name for s in config.project.services}:
        return message(404, "No such service", f"No service {service!r} is deployed.")
    lines = await tail_of(node, config.project.name, service, LOG_TAIL)
    template = "parts/log_lines.html.j2" if request.query.get("part") == "lines" else "logs.html.j2"
    return html(render(template, service=service, lines=lines, tail=LOG_TAIL))


async def ui_static(request: web.Request) -> web.StreamResponse:
    found = STATIC.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound(reason="no such file")
    content_type, path = found
    return web.Response(
        body=_static_bytes(path),
        headers={**PAGE_HEADERS, "Content-Type": content_type, "Cache-Control": "public, max-age=3600"},
    )


@functools.cache
def _static_bytes(path: Path) -> bytes:
    """Read once per node: the files ship with oct and do not change while it runs."""
    return path.read_bytes()
