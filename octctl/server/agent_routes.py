"""Routes only the leader calls, on every node's agent: list, apply and remove instances, read logs.

They need a node certificate besides the token (see ``http.auth_middleware``), and the commands
carry the leader's Raft term: a node obeys no leader older than one it already obeyed.
"""

from __future__ import annotations

from aiohttp import web

from octctl.api.models import TERM_HEADER
from octctl.fencing import StaleTerm, UnknownTerm, parse_term
from octctl.names import check_instance, check_name
from octctl.runtime.base import InstanceSpec
from octctl.server.http import error, int_query, node_of, ok, read_model


def project_and_service(request: web.Request) -> tuple[str, str]:
    """The ``project`` query parameter and the ``{service}`` path part, both checked names
    (they become file and container names on this node): 400 otherwise."""
    project = request.query.get("project")
    if not project:
        raise web.HTTPBadRequest(reason="query parameter 'project' is required")
    return check_name("project", project), check_instance(request.match_info["service"])


async def agent_instances(request: web.Request) -> web.Response:
    project = request.query.get("project")
    if project is not None:
        check_name("project", project)
    node = node_of(request)
    found = await node.agent.list(project)
    ingress = getattr(node, "ingress", None)  # (made when the node starts)
    routed = ingress.routed if ingress is not None else None
    return web.json_response(
        {
            "instances": [i.model_dump(mode="json") for i in found],
            # What this node's ingress may send traffic to (see ``octctl.leader.converge``).
            "ingress": sorted(routed) if routed is not None else None,
        }
    )


def fence(request: web.Request) -> None:
    """Refuse agent commands without a term, from a leader older than one already obeyed, or with
    a term this node's Raft replica has not seen (nothing is remembered then). Call it only once
    the request is known to be a valid command: an accepted term is written down."""
    try:
        term = parse_term(request.headers.get(TERM_HEADER))
    except ValueError:
        raise web.HTTPBadRequest(
            reason=f"header {TERM_HEADER} (the leader's Raft term: digits 0-9) is required"
        ) from None
    node = node_of(request)
    try:
        node.fence.admit(term, known=node.raft.term())
    except StaleTerm as e:
        raise web.HTTPConflict(reason=str(e)) from None
    except UnknownTerm as e:
        raise web.HTTPServiceUnavailable(reason=str(e)) from None


async def agent_apply(request: web.Request) -> web.Response:
    spec = await read_model(request, InstanceSpec)  # checks the project and service names too
    if spec.service != request.match_info["service"]:
        return error(400, "service in the path and in the body differ")
    fence(request)
    return ok(await node_of(request).agent.apply(spec))


async def agent_remove(request: web.Request) -> web.Response:
    project, service = project_and_service(request)
    fence(request)
    await node_of(request).agent.remove(project, service)
    return web.json_response({"removed": service})


async def agent_logs(request: web.Request) -> web.Response:
    project, service = project_and_service(request)
    lines = await node_of(request).agent.logs(project, service, int_query(request, "tail", 50))
    return web.json_response({"lines": lines})
