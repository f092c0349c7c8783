"""oct-ctl's HTTP API: the CLI's entry point, the leader's channel to agents, and joining.

Served over TLS only, with the node's certificate from the cluster CA (``octctl/tls.py``). Every
route but ``/v1/health`` and the OpenAPI document needs the cluster's bearer token; the agent routes
also need the caller to be a node (a client certificate from the cluster CA, mutual TLS). Writes
are served by the leader; a follower forwards them, so a client may call any node. Whatever a
request carries, the answer is JSON and the daemon keeps running: bad bodies get a 4xx with a
reason, internal faults a 500 that is logged without the request body (it may hold secrets).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ValidationError

from octctl import __version__
from octctl.api.limits import BODY_TIMEOUT
from octctl.api.models import (
    TERM_HEADER,
    DeployRequest,
    DeployResponse,
    DestroyResponse,
    ErrorBody,
    Health,
    JoinRequest,
    KvEntryView,
    KvPut,
    MembersResponse,
    ReplicaView,
)
from octctl.api.openapi import OPENAPI_PATH, PUBLIC_PATHS, serve_openapi
from octctl.api.views import leader_id, status_view
from octctl.config import ConfigError, parse_config_data
from octctl.distribution import installed_artifact_sha256
from octctl.fencing import StaleTerm, UnknownTerm, parse_term
from octctl.names import InvalidName, check_name
from octctl.node import Node
from octctl.runtime.base import InstanceSpec
from octctl.state.desired import desired_project
from octctl.state.kv import KEY_PATTERN, kv_command
from octctl.state.machine import NotLeader, RaftUnavailable
from octctl.state.model import MAX_VOTERS, NodeRecord, api_address, command, pending_voters
from octctl.tls import peer_is_node

log = logging.getLogger(__name__)


def new_id(prefix: str) -> str:
    """A deployment's id (``d-…`` for a deploy, ``x-…`` for a destroy), chosen by the node that
    proposes it, so every replica applies the same one."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


MAX_BODY = 1024 * 1024
FORWARDED = "X-Oct-Forwarded"
NODE_KEY = web.AppKey("node", Node)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, details: list[str] | None = None) -> web.Response:
    body = ErrorBody(error=message, details=details or [])
    return web.json_response(body.model_dump(), status=status)


def ok(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


def pydantic_details(e: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()]


M = TypeVar("M", bound=BaseModel)


async def read_model(request: web.Request, model: type[M]) -> M:
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason=f"the body did not arrive within {BODY_TIMEOUT:g} s") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise web.HTTPBadRequest(reason=f"body is not valid JSON: {e}") from e
    except RecursionError:  # [[[[...]]]] deeper than the parser's stack: junk, not a server fault
        raise web.HTTPBadRequest(reason="body is not valid JSON: nested too deeply") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise BadBody(f"invalid {model.__name__}", pydantic_details(e)) from e


class BadBody(Exception):
    def __init__(self, message: str, details: list[str]) -> None:
        super().__init__(message)
        self.details = details


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadBody as e:
        return error(400, str(e), e.details)
    except InvalidName as e:  # a project or service name that could be a path: never a 500
        return error(400, str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error(e.status, e.reason)
    except (NotLeader, RaftUnavailable) as e:
        return error(503, str(e))
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error; see the node's log")


#: Routes only the leader calls, on other nodes: they need the token *and* a node certificate (mTLS).
AGENT_PREFIX = "/v1/agent/"


def _agent_route(request: web.Request) -> bool:
    """By the route that matched, not the raw path, so no spelling of the path slips past."""
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.startswith(AGENT_PREFIX)


def auth_middleware(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in PUBLIC_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error(401, "missing or wrong bearer token")
            if _agent_route(request) and not peer_is_node(request.transport):
                return error(403, "agent routes are for the cluster's nodes: no node certificate presented")
        return await handler(request)

    return check


def node_of(request: web.Request) -> Node:
    return request.app[NODE_KEY]


def leader_only(handler: Handler) -> Handler:
    """Serve on the leader; elsewhere pass the request on to the leader, once."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        node = node_of(request)
        if node.raft.is_leader():
            return await handler(request)
        if request.headers.get(FORWARDED):
            return error(503, "leadership is changing; retry")
        leader = node.raft.leader_address()
        target = next(
            (n for n in node.raft.view()["nodes"].values() if f"{n['address']}:{n['raft_port']}" == leader),
            None,
        )
        if target is None:
            return error(503, "no leader elected yet; retry")
        return await forward(node, request, api_address(target))

    return wrapper


async def forward(node: Node, request: web.Request, address: str) -> web.Response:
    headers = {"Authorization": request.headers.get("Authorization", ""), FORWARDED: node.settings.node}
    body = await request.read()
    try:
        async with node.session.request(
            request.method,
            f"https://{address}{request.path_qs}",
            data=body,
            headers={**headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as resp:
            return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")
    except (aiohttp.ClientError, TimeoutError) as e:
        return error(503, f"leader at {address} did not answer: {type(e).__name__}")


# -- cluster-level routes ------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    node = node_of(request)
    view = node.raft.view()
    return ok(
        Health(
            ok=True,
            cluster=node.settings.cluster,
            node=node.settings.node,
            version=__version__,
            leader=leader_id(view, node.raft.leader_address()),
            artifact=installed_artifact_sha256(),
        )
    )


async def status(request: web.Request) -> web.Response:
    node = node_of(request)
    view = node.raft.view()
    return ok(status_view(view, node.settings.node, leader_id(view, node.raft.leader_address())))


@leader_only
async def deploy(request: web.Request) -> web.Response:
    node = node_of(request)
    body = await read_model(request, DeployRequest)
    try:
        config = parse_config_data(body.config)
    except ConfigError as e:
        return error(422, "invalid configuration", [str(p) for p in e.problems])
    result = await node.raft.execute(
        command(
            "deploy",
            project=config.model_dump(mode="json"),
            source_dir=body.source_dir,
            public_zone=body.public_zone,
            deployment=new_id("d"),
            at=time.time(),
        )
    )
    node.leader.wake()
    return ok(DeployResponse.model_validate(result), status=202)


@leader_only
async def destroy(request: web.Request) -> web.Response:
    node = node_of(request)
    result = await node.raft.execute(command("destroy", deployment=new_id("x"), at=time.time()))
    node.leader.wake()
    return ok(DestroyResponse.model_validate(result), status=202)


def members_response(node: Node) -> MembersResponse:
    current = node.raft.members()
    taken = len(current) + len(pending_voters(node.raft.view(), current))
    return MembersResponse(members=current, voter_slots=max(0, MAX_VOTERS - taken))


async def members(request: web.Request) -> web.Response:
    return ok(members_response(node_of(request)))


@leader_only
async def join(request: web.Request) -> web.Response:
    node = node_of(request)
    body = await read_model(request, JoinRequest)
    expected = node.secrets.raft_proof(node.settings.cluster, body.node, body.address, body.raft_port)
    if not hmac.compare_digest(body.proof, expected):
        log.warning(
            "refused node %s at %s: it does not hold this cluster's Raft secret", body.node, body.address
        )
        return error(
            403,
            f"node {body.node} does not hold the Raft secret of cluster {node.settings.cluster} "
            "(or belongs to another cluster); check its secrets.json",
        )
    async with node.admission:  # one admission at a time, or two joiners could both take the last seat
        raft_address = f"{body.address}:{body.raft_port}"
        view = node.raft.view()
        voters = node.raft.members()
        known = view["nodes"].get(body.node)
        if body.voter and raft_address not in voters:
            promoted = body.node in pending_voters(view, voters)
            if not promoted and len(voters) + len(pending_voters(view, voters)) >= MAX_VOTERS:
                return error(
                    409,
                    f"cluster {node.settings.cluster} has {MAX_VOTERS} voters; join as a non-voting replica",
                )
            await node.raft.add_member(raft_address)
        elif known is not None and known.get("voter", True) == body.voter:
            return ok(members_response(node))  # a restarted member: nothing to change
        record: NodeRecord = {
            "id": body.node,
            "address": body.address,
            "api_port": body.api_port,
            "raft_port": body.raft_port,
            "dns_port": body.dns_port,
            "cpus": body.cpus,
            "memory": body.memory,
            "status": "joining",
            "voter": body.voter,
            "joined_at": time.time(),
            "last_seen": None,
        }
        await node.raft.execute(command("node_joined", node=record))
    log.info("node %s joined at %s as a %s", body.node, raft_address, "voter" if body.voter else "non-voter")
    node.leader.wake()
    return ok(members_response(node))


async def service_logs(request: web.Request) -> web.Response:
    node = node_of(request)
    name = check_name("service", request.match_info["service"])
    tail = _int_query(request, "tail", 50)
    view = node.raft.view()
    placed = view["placements"].get(name)
    config = desired_project(view)
    project = config.project.name if config else None
    if placed is None or project is None or placed not in view["nodes"]:
        return error(404, f"service {name!r} is not placed on any node")
    if placed == node.settings.node:
        lines = await node.agent.logs(project, name, tail)
    else:
        lines = await node.peers.logs(api_address(view["nodes"][placed]), project, name, tail)
    return web.json_response({"lines": lines})


# -- key-value store ------------------------------------------------------------------------------
def kv_key(request: web.Request) -> str:
    key = request.match_info["key"]
    if not KEY_PATTERN.match(key):
        raise web.HTTPBadRequest(reason="a key is 1-256 characters of letters, digits and _ . - /")
    return key


@leader_only
async def kv_put(request: web.Request) -> web.Response:
    key = kv_key(request)
    body = await read_model(request, KvPut)
    result = await node_of(request).raft.execute(kv_command("kv_put", key=key, value=body.value))
    return ok(KvEntryView.model_validate(result))


@leader_only
async def kv_delete(request: web.Request) -> web.Response:
    key = kv_key(request)
    result = await node_of(request).raft.execute(kv_command("kv_delete", key=key))
    return web.json_response(result, status=200 if result["deleted"] else 404)


async def kv_get(request: web.Request) -> web.StreamResponse:
    """Linearizable by default (the leader answers after a commit barrier); ``?stale=true`` lets
    any node answer at once from its replica, which may lag the leader by a few milliseconds."""
    key = kv_key(request)
    node = node_of(request)
    stale = request.query.get("stale", "").lower() in ("1", "true", "yes")
    if not stale:
        return await _kv_get_linearizable(request)
    return _kv_answer(node, key, stale=True)


@leader_only
async def _kv_get_linearizable(request: web.Request) -> web.Response:
    node = node_of(request)
    await node.raft.barrier()
    return _kv_answer(node, kv_key(request), stale=False)


def _kv_answer(node: Node, key: str, stale: bool) -> web.Response:
    entry = node.raft.machine.kv_get(key)
    if entry is None:
        return error(404, f"no key {key!r}")
    return ok(KvEntryView(key=key, value=entry["value"], revision=entry["revision"], stale=stale))


async def replica(request: web.Request) -> web.Response:
    node = node_of(request)
    raft = node.raft
    return ok(
        ReplicaView(
            node=node.settings.node,
            term=raft.term(),
            leader=leader_id(raft.view(), raft.leader_address()),
            is_leader=raft.is_leader(),
            version=raft.machine.version,
            commit_index=raft.commit_index(),
            kv_revision=raft.machine.kv_revision(),
            state_hash=raft.machine.state_hash(),
        )
    )


# -- agent routes (called by the leader) --------------------------------------------------------
def _int_query(request: web.Request, key: str, default: int) -> int:
    try:
        return max(1, min(10_000, int(request.query.get(key, default))))
    except ValueError as e:
        raise web.HTTPBadRequest(reason=f"{key} must be an integer") from e


def _names(request: web.Request) -> tuple[str, str]:
    """The ``project`` query parameter and the ``{service}`` path part, both checked names
    (they become file and container names on this node): 400 otherwise."""
    project = request.query.get("project")
    if not project:
        raise web.HTTPBadRequest(reason="query parameter 'project' is required")
    return check_name("project", project), check_name("service", request.match_info["service"])


async def agent_instances(request: web.Request) -> web.Response:
    project = request.query.get("project")
    if project is not None:
        check_name("project", project)
    found = await node_of(request).agent.list(project)
    return web.json_response({"instances": [i.model_dump(mode="json") for i in found]})


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
    project, service = _names(request)
    fence(request)
    await node_of(request).agent.remove(project, service)
    return web.json_response({"removed": service})


async def agent_logs(request: web.Request) -> web.Response:
    project, service = _names(request)
    lines = await node_of(request).agent.logs(project, service, _int_query(request, "tail", 50))
    return web.json_response({"lines": lines})


def build_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware(node.secrets.token)], client_max_size=MAX_BODY
    )
    app[NODE_KEY] = node
    app.router.add_get("/v1/health", health)
    app.router.add_get(OPENAPI_PATH, serve_openapi)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/deploy", deploy)
    app.router.add_post("/v1/destroy", destroy)
    app.router.add_get("/v1/cluster/members", members)
    app.router.add_post("/v1/cluster/join", join)
    app.router.add_get("/v1/cluster/replica", replica)
    # [\s\S]: a key with a newline must reach kv_key (a 400 with the rule), not miss the route (404)
    app.router.add_get(r"/v1/kv/{key:[\s\S]+}", kv_get)
    app.router.add_put(r"/v1/kv/{key:[\s\S]+}", kv_put)
    app.router.add_delete(r"/v1/kv/{key:[\s\S]+}", kv_delete)
    app.router.add_get("/v1/services/{service}/logs", service_logs)
    app.router.add_get("/v1/agent/instances", agent_instances)
    app.router.add_put("/v1/agent/instances/{service}", agent_apply)
    app.router.add_delete("/v1/agent/instances/{service}", agent_remove)
    app.router.add_get("/v1/agent/instances/{service}/logs", agent_logs)
    return app
