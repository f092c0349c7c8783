"""What every handler of the API shares: the node behind the app, JSON answers and errors, reading
a body into a model, the token check, and passing writes on to the leader.

Whatever a request carries, the answer is JSON and the daemon keeps running: bad bodies get a 4xx
with a reason, internal faults a 500 that is logged without the request body (it may hold secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ValidationError

from octctl.api.models import ErrorBody
from octctl.names import InvalidName
from octctl.node import Node
from octctl.server.limits import BODY_TIMEOUT
from octctl.server.openapi import PUBLIC_PATHS
from octctl.state.machine import NotLeader, RaftUnavailable
from octctl.state.model import api_address, command, raft_address
from octctl.tls import peer_is_node
from octctl.ui.login import COOKIE, Logins
from octctl.ui.render import message

log = logging.getLogger(__name__)

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
    """A body that is not what the route takes: 400, or ``status`` (422: a valid model whose
    content is refused), with every problem in ``details``."""

    def __init__(self, message: str, details: list[str], status: int = 400) -> None:
        super().__init__(message)
        self.details = details
        self.status = status


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadBody as e:
        return error(e.status, str(e), e.details)
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


#: The one route the read-only scrape token opens (``Secrets.scrape_token``).
METRICS_PATH = "/v1/metrics"


#: The dashboard's pages: a session cookie instead of the token (``octctl/server/ui_routes.py``).
UI_PREFIX = "/ui"
#: What a browser reaches before it has a session: the login link itself and two static files.
UI_PUBLIC = frozenset({"/ui/login", "/ui/static/{name}"})


def _ui_route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    return canonical if canonical == UI_PREFIX or canonical.startswith(UI_PREFIX + "/") else None


def auth_middleware(
    token: str,
    scrape_token: str | None = None,
    logins: Logins | None = None,
    denied: Callable[[web.Request, int], None] | None = None,
) -> Middleware:
    """The bearer token for the API (or the scrape token for metrics), a node certificate too for
    agent routes, and a dashboard session for ``/ui`` pages; no token opens the dashboard and no
    session cookie opens the API. API calls refused are reported to ``denied`` (the audit trail)."""
    expected = f"Bearer {token}".encode()
    scraper = f"Bearer {scrape_token}".encode() if scrape_token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        page = _ui_route(request)
        if page is not None:
            if page in UI_PUBLIC or (logins is not None and logins.session_ok(request.cookies.get(COOKIE))):
                return await handler(request)
            return message(401, "Log in first", "The dashboard opens with a login link from the CLI.")
        if request.path not in PUBLIC_PATHS:
            given = request.headers.get("Authorization", "").encode()
            scraping = (
                scraper is not None and request.path == METRICS_PATH and hmac.compare_digest(given, scraper)
            )
            if not scraping and not hmac.compare_digest(given, expected):
                if denied is not None:
                    denied(request, 401)
                return error(401, "missing or wrong bearer token")
            if _agent_route(request) and not peer_is_node(request.transport):
                if denied is not None:
                    denied(request, 403)
                return error(403, "agent routes are for the cluster's nodes: no node certificate presented")
        return await handler(request)

    return check


def metrics_middleware(node: Node) -> Middleware:
    """Time every request by the route it matched (its pattern: never the raw path, which a client
    could make endlessly new labels of) and its status."""

    @web.middleware
    async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            node.metrics.api_request(request.method, route, status, time.monotonic() - started)

    return timed


#: Calls that change something: one audit entry each (``octctl/state/events.py``).
MUTATING = frozenset({"POST", "PUT", "DELETE"})
#: Not audited: the leader's own commands to agents, a node joining (an event of its own), and the
#: KV store's writes (the application's data, as many as it makes: its revisions are their record,
#: and they would push everything else out of the bounded trail).
UNAUDITED = (AGENT_PREFIX, "/v1/kv/")
JOIN_PATH = "/v1/cluster/join"


def audit_middleware(node: Node) -> Middleware:
    """Note every mutating API call the leader serves in the replicated trail (but
    :data:`UNAUDITED`): who (the API token is one identity: its caller's address, and whether a
    follower forwarded it), what (method, route and the names in the path, never a body: it may
    hold secrets), the result. A forwarded call is noted once, where the leader serves it; one a
    follower serves itself (a restore) is not noted."""

    @web.middleware
    async def audited(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else ""
        if request.method not in MUTATING or route.startswith(UNAUDITED) or route in ("", JOIN_PATH):
            return await handler(request)
        status, made = 500, ""
        try:
            response = await handler(request)
            status, made = response.status, _made(response)
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        except BadBody as e:
            status = e.status
            raise
        except InvalidName:
            status = 400
            raise
        finally:
            if node.raft.is_leader():
                await _audit(node, request, route, f"{status}{made}")

    return audited


async def _audit(node: Node, request: web.Request, route: str, result: str) -> None:
    names = " ".join(f"{k}={v}" for k, v in sorted(request.match_info.items()))
    peer = request.transport.get_extra_info("peername") if request.transport else None
    who = f"api token from {peer[0] if peer else '?'}" + (
        " (forwarded)" if request.headers.get(FORWARDED) else ""
    )
    action = f"{request.method} {route} {names}".strip()
    with contextlib.suppress(NotLeader, RaftUnavailable):  # (the call itself is done)
        await node.raft.execute(command("audit", who=who, action=action, result=result, at=time.time()))


def _made(response: web.StreamResponse) -> str:
    """The id a call made (a deployment), from its JSON answer."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes) or len(body) > 4096:
        return ""
    with contextlib.suppress(ValueError):
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("deployment"), str):
            return f" deployment {data['deployment']}"
    return ""


def node_of(request: web.Request) -> Node:
    return request.app[NODE_KEY]


#: How long a follower waits on the leader it passes a write to: the leader's own limit on a
#: commit (``RaftNode.execute``) and a second for the trip. A leader that stops answering (paused,
#: cut off) is not waited on longer: the caller gets a 503 to retry, by which time a new leader
#: is usually elected.
FORWARD_TIMEOUT = 6.0


def leader_only(handler: Handler) -> Handler:
    """Serve on the leader; elsewhere pass the request on to the leader, once."""
    return leader_only_within(FORWARD_TIMEOUT)(handler)


def leader_only_within(seconds: float) -> Callable[[Handler], Handler]:
    """:func:`leader_only` for a route whose work on the leader may take up to ``seconds``."""

    def wrap(handler: Handler) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            node = node_of(request)
            if node.raft.is_leader():
                return await handler(request)
            if request.headers.get(FORWARDED):
                return error(503, "leadership is changing; retry")
            address = _leader_api(node)
            if address is None:
                return error(503, "no leader elected yet; retry")
            return await forward(node, request, address, seconds)

        return wrapper

    return wrap


def _leader_api(node: Node) -> str | None:
    leader = node.raft.leader_address()
    target = next((n for n in node.raft.view()["nodes"].values() if raft_address(n) == leader), None)
    return api_address(target) if target is not None else None


#: How often a forwarding follower looks whether another node leads by now.
LEADER_POLL = 0.05


async def forward(
    node: Node, request: web.Request, address: str, seconds: float = FORWARD_TIMEOUT
) -> web.Response:
    """Pass the request to the leader at ``address``. One that cannot be reached (nothing was
    sent) is looked up again and, if another node leads by now, tried once more. One that does not
    answer in ``seconds``, or while another node is elected (it was paused or cut off), gets the
    caller a 503 with ``Retry-After`` at once: the old leader may yet have committed the write, so
    only the caller can tell whether sending it again is safe."""
    headers = {"Authorization": request.headers.get("Authorization", ""), FORWARDED: node.settings.node}
    body = await request.read()
    for attempt in (1, 2):
        # (Raft's own leader address is compared while waiting: cheap, unlike the state's view,
        # which a write on its way would make the node copy anew for every forwarded call.)
        leader = node.raft.leader_address()
        sending = asyncio.ensure_future(_send(node, request, address, headers, body, seconds))
        try:
            while not sending.done():
                await asyncio.wait({sending}, timeout=LEADER_POLL)
                now = node.raft.leader_address()
                if not sending.done() and now is not None and now != leader:
                    return _retry(f"leader at {address} did not answer before {now} was elected; retry")
            return sending.result()
        except aiohttp.ClientConnectorError as e:
            again = _leader_api(node)
            if attempt == 2 or again is None or again == address:
                return _retry(f"leader at {address} cannot be reached: {type(e).__name__}")
            address = again
        except (aiohttp.ClientError, TimeoutError) as e:
            why = f"did not answer within {seconds:g} s" if isinstance(e, TimeoutError) else type(e).__name__
            return _retry(f"leader at {address} {why}; retry (a new leader may be elected)")
        finally:
            sending.cancel()
    raise AssertionError("unreachable")  # pragma: no cover


async def _send(
    node: Node, request: web.Request, address: str, headers: dict[str, str], body: bytes, seconds: float
) -> web.Response:
    async with node.session.request(
        request.method,
        f"https://{address}{request.path_qs}",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=seconds),
    ) as resp:
        return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")


def _retry(message: str) -> web.Response:
    response = error(503, message)
    response.headers["Retry-After"] = "1"
    return response


def int_query(request: web.Request, key: str, default: int) -> int:
    try:
        return max(1, min(10_000, int(request.query.get(key, default))))
    except ValueError as e:
        raise web.HTTPBadRequest(reason=f"{key} must be an integer") from e
