"""Deployment history, rollback and the event trail: any node shows the history and the events
from its replica; a rollback is a deploy (on the leader) of a recorded project, so it rolls out
like any other deploy."""

from __future__ import annotations

import time

from aiohttp import web

from octctl.api.models import (
    EventsResponse,
    EventView,
    HistoryResponse,
    RollbackRequest,
    RollbackResponse,
)
from octctl.names import new_id
from octctl.server.http import error, int_query, leader_only, node_of, ok, read_model
from octctl.server.views import history_views
from octctl.state.events import EVENTS_SIZE, events_after
from octctl.state.history import rollback_target
from octctl.state.model import history_of, rollback_command
from octctl.state.shape import events_of


async def events(request: web.Request) -> web.Response:
    """The trail after ``after`` (a sequence number; default 0: all kept), at most ``limit``."""
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise web.HTTPBadRequest(reason="after must be an integer (an event's seq)") from None
    limit = int_query(request, "limit", EVENTS_SIZE)
    view = node_of(request).raft.view()
    found = events_after(view, after, limit)
    trail = events_of(view)
    return ok(
        EventsResponse(
            events=[EventView.model_validate(e) for e in found], last=trail[-1]["seq"] if trail else 0
        )
    )


async def history(request: web.Request) -> web.Response:
    return ok(HistoryResponse(deployments=history_views(node_of(request).raft.view())))


@leader_only
async def rollback(request: web.Request) -> web.Response:
    node = node_of(request)
    body = await read_model(request, RollbackRequest)
    view = node.raft.view()
    current = view["deployment"]["id"] if view["deployment"] else None
    target = rollback_target(history_of(view), current, body.deployment)
    if target is None:
        if body.deployment is not None:
            return error(404, f"no deployment {body.deployment} in the history (oct history lists them)")
        return error(409, "no earlier deployment succeeded: there is nothing to roll back to")
    if target["id"] == current:
        return error(409, f"deployment {current} is the current one")
    result = await node.raft.execute(rollback_command(target, new_id("d"), time.time()))
    node.leader.wake()
    return ok(RollbackResponse.model_validate({**result, "rollback_of": target["id"]}), status=202)
