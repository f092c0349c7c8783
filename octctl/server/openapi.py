"""The OpenAPI 3.1 description of oct-ctl's HTTP API, built from the route table below and the
pydantic models the handlers read and answer with (so the document cannot drift from the models).

:data:`ROUTES` lists every route ``build_app`` registers (a unit test checks the two agree);
:func:`openapi_document` turns it into a plain ``dict``. A node serves it, without a token, at
``GET /v1/openapi.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from octctl import __version__
from octctl.api.models import (
    TERM_HEADER,
    DeployRequest,
    DeployResponse,
    DestroyResponse,
    ErrorBody,
    EventsResponse,
    Health,
    HistoryResponse,
    JoinRequest,
    KvEntryView,
    KvPut,
    MembersResponse,
    PlanResponse,
    ReplicaView,
    RollbackRequest,
    RollbackResponse,
    SnapshotRestoreRequest,
    StatusResponse,
    UiLink,
    UsageResponse,
)
from octctl.fencing import MAX_TERM_DIGITS
from octctl.names import INSTANCE_PATTERN, NAME_PATTERN, NAME_RULE
from octctl.runtime.base import InstanceSpec, InstanceStatus, Usage
from octctl.state.kv import KEY_PATTERN

OPENAPI_PATH = "/v1/openapi.json"
#: Routes a client may call without the bearer token.
PUBLIC_PATHS = frozenset({"/v1/health", OPENAPI_PATH})
# (The dashboard's pages under /ui are HTML for browsers, not the API: they are not in this document.)
REF = "#/components/schemas/{model}"


# -- answers that handlers build as plain dicts ---------------------------------------------------
class LogLines(BaseModel):
    lines: list[str]


class AccessLine(BaseModel):
    when: float
    text: str


class AccessLines(BaseModel):
    lines: list[AccessLine]


class InstanceList(BaseModel):
    instances: list[InstanceStatus]


class UsageList(BaseModel):
    instances: list[Usage]


class Removed(BaseModel):
    removed: str


class LogEntry(BaseModel):
    """One line of ``oct logs`` (a line of the NDJSON stream)."""

    instance: str
    node: str
    text: str


class Restored(BaseModel):
    restored: list[str]


class KvDeleted(BaseModel):
    """``deleted`` is false (and the status 404) when there was no such key."""

    key: str
    deleted: bool
    revision: int


class OpenApiDocument(BaseModel):
    """This document (OpenAPI 3.1); described loosely, it is not checked against itself."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


# -- the route table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    schema: dict[str, Any]
    description: str
    required: bool = True


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as registered with aiohttp, e.g. "/v1/kv/{key:[\s\S]+}"
    summary: str
    answer: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    body_required: bool = True
    params: tuple[Param, ...] = ()
    #: Error statuses besides 401 (every route with a token) and 500 (any route); all are ErrorBody
    #: unless ``error_models`` says otherwise.
    errors: tuple[int, ...] = ()
    error_models: dict[int, type[BaseModel]] = field(default_factory=dict)
    #: The answer (``archive_answer``) or the body (``archive_body``) is a gzipped tarball of a
    #: service's volumes (``oct backup``, ``oct restore``), not JSON.
    archive_answer: bool = False
    archive_body: bool = False
    #: The answer is a stream of this media type (lines of text or of JSON), not one JSON document.
    stream_answer: str | None = None

    @property
    def public(self) -> bool:
        return self.path in PUBLIC_PATHS

    @property
    def openapi_path(self) -> str:
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)


def _pattern(regex: re.Pattern[str]) -> str:
    return regex.pattern


KEY = Param(
    "key",
    "path",
    {"type": "string", "pattern": _pattern(KEY_PATTERN)},
    "1-256 characters of letters, digits and _ . - /",
)
SERVICE = Param("service", "path", {"type": "string", "pattern": _pattern(NAME_PATTERN)}, NAME_RULE)
#: The agent's routes name an instance: the service's name, or ``<service>.<n>`` for the n-th.
INSTANCE = Param(
    "service", "path", {"type": "string", "pattern": _pattern(INSTANCE_PATTERN)}, "<service> or <service>.<n>"
)
PROJECT = Param("project", "query", {"type": "string", "pattern": _pattern(NAME_PATTERN)}, NAME_RULE)
TAIL = Param(
    "tail",
    "query",
    {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 50},
    "how many of the last log lines",
    required=False,
)
TERM = Param(
    TERM_HEADER,
    "header",
    {"type": "string", "pattern": f"^[0-9]{{1,{MAX_TERM_DIGITS}}}$"},
    "the sending leader's Raft term; 409 if older than one this node obeyed, 503 if newer than its replica's",
)
STALE = Param(
    "stale",
    "query",
    {"type": "boolean", "default": False},
    "true: this node answers from its own replica at once (may lag the leader)",
    required=False,
)
AFTER = Param(
    "after", "query", {"type": "integer", "default": 0}, "only entries with a greater seq", required=False
)
NODE = Param("node", "path", {"type": "string", "pattern": _pattern(NAME_PATTERN)}, "a node id (oct status)")
FOLLOW = Param(
    "follow",
    "query",
    {"type": "string", "enum": ["true", "false"], "default": "false"},
    "true: go on sending lines as they are written, until the client hangs up",
    required=False,
)
SINCE = Param(
    "since",
    "query",
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1e11},
    "only lines written after this Unix time (docker services; a process's output has no times)",
    required=False,
)
LEADER = (503,)  # served by the leader: no leader, leadership changing, Raft could not commit

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", "Liveness, cluster and leader (no token)", Health),
    Route("GET", OPENAPI_PATH, "This OpenAPI document (no token)", OpenApiDocument),
    Route("GET", "/v1/status", "The cluster as this node's replica sees it", StatusResponse),
    Route(
        "POST",
        "/v1/deploy",
        "Deploy a project (the oct.toml model as JSON)",
        DeployResponse,
        status=202,
        body=DeployRequest,
        errors=(400, 408, 413, 422, *LEADER),
    ),
    Route(
        "POST",
        "/v1/plan",
        "What deploying a project would change (per service, per instance, nodes, cost); changes nothing",
        PlanResponse,
        body=DeployRequest,
        errors=(400, 408, 413, 422, *LEADER),
    ),
    Route(
        "POST",
        "/v1/destroy",
        "Stop every service and node of the project (the body is ignored)",
        DestroyResponse,
        status=202,
        body_required=False,
        errors=LEADER,
    ),
    Route(
        "GET", "/v1/history", "The last deployments, newest first, from this node's replica", HistoryResponse
    ),
    Route(
        "POST",
        "/v1/rollback",
        "Deploy a recorded deployment's project again (default: the last success before the current)",
        RollbackResponse,
        status=202,
        body=RollbackRequest,
        errors=(400, 404, 408, 409, 413, *LEADER),
    ),
    Route("GET", "/v1/cluster/members", "The voting members' Raft addresses", MembersResponse),
    Route(
        "POST",
        "/v1/cluster/join",
        "Admit a node that proves it holds the Raft secret",
        MembersResponse,
        body=JoinRequest,
        errors=(400, 403, 408, 409, 413, *LEADER),
    ),
    Route("GET", "/v1/cluster/replica", "This node's own replica, unforwarded", ReplicaView),
    Route(
        "GET",
        "/v1/events",
        "The cluster's event and audit trail after a sequence number, oldest first",
        EventsResponse,
        params=(AFTER, replace(TAIL, name="limit", description="at most this many")),
        errors=(400,),
    ),
    Route(
        "GET",
        "/v1/metrics",
        "This node's Prometheus metrics (text format); the read-only scrape token is enough",
        LogLines,
        stream_answer="text/plain; version=0.0.4; charset=utf-8",
    ),
    Route(
        "GET", "/v1/usage", "CPU time and memory of every instance, from every node (oct top)", UsageResponse
    ),
    Route(
        "GET",
        "/v1/agent/usage",
        "CPU time and memory of this node's instances (nodes only)",
        UsageList,
        errors=(403,),
    ),
    Route(
        "POST",
        "/v1/ui/link",
        "A one-time dashboard login link for this node (the body is ignored)",
        UiLink,
        body_required=False,
    ),
    Route(
        "GET",
        r"/v1/kv/{key:[\s\S]+}",
        "Read a key (linearizable unless stale=true)",
        KvEntryView,
        params=(KEY, STALE),
        errors=(400, 404, *LEADER),
    ),
    Route(
        "PUT",
        r"/v1/kv/{key:[\s\S]+}",
        "Write a key",
        KvEntryView,
        body=KvPut,
        params=(KEY,),
        errors=(400, 408, 413, *LEADER),
    ),
    Route(
        "DELETE",
        r"/v1/kv/{key:[\s\S]+}",
        "Delete a key",
        KvDeleted,
        params=(KEY,),
        errors=(400, 404, *LEADER),
        error_models={404: KvDeleted},
    ),
    Route(
        "GET",
        "/v1/services/{service}/logs",
        "The last log lines of a placed service, from the node running it",
        LogLines,
        params=(SERVICE, TAIL),
        errors=(400, 404, 502, 503),
    ),
    Route(
        "GET",
        "/v1/services/{service}/logs/stream",
        "Every instance's log lines, from every node, one JSON object (instance, node, text) a line",
        LogEntry,
        params=(SERVICE, TAIL, SINCE, FOLLOW),
        errors=(400, 404),
        stream_answer="application/x-ndjson",
    ),
    Route(
        "GET",
        "/v1/nodes/{node}/logs",
        "A node's own log, from that node, one JSON object (node, text) a line",
        LogLines,
        params=(NODE, TAIL, FOLLOW),
        errors=(400, 404),
        stream_answer="application/x-ndjson",
    ),
    Route(
        "GET",
        "/v1/agent/node/logs",
        "This node's own log as plain text, one a line",
        LogLines,
        params=(TAIL, FOLLOW),
        errors=(400, 403),
        stream_answer="text/plain; charset=utf-8",
    ),
    Route(
        "GET",
        "/v1/services/{service}/backup",
        "A gzipped tarball of the service's volumes, packed by the node running it (oct backup)",
        Restored,
        params=(SERVICE,),
        errors=(400, 404, 409, 502),
        archive_answer=True,
    ),
    Route(
        "PUT",
        "/v1/services/{service}/restore",
        "Stop the service, replace its volumes' content with the tarball's, start it again (oct restore)",
        Restored,
        params=(SERVICE,),
        errors=(400, 404, 408, 409, 413, 422, 502),
        archive_body=True,
    ),
    Route(
        "PUT",
        "/v1/services/{service}/restore-snapshots",
        "Stop the service, fill its volumes from EBS snapshots (aws backups), start it again (oct restore)",
        Restored,
        body=SnapshotRestoreRequest,
        params=(SERVICE,),
        errors=(400, 404, 408, 409, 413, 422, 502),
    ),
    Route(
        "GET",
        "/v1/services/{service}/access",
        "The ingress's access log lines of a public service, from every node, by time",
        LogLines,
        params=(SERVICE, TAIL),
        errors=(400, 404),
    ),
    Route(
        "GET",
        "/v1/agent/access/{service}",
        "This node's ingress access log lines of a service (called by other nodes)",
        AccessLines,
        params=(SERVICE, TAIL),
        errors=(400, 403),
    ),
    Route(
        "GET",
        "/v1/agent/instances",
        "The instances this node runs",
        InstanceList,
        params=(replace(PROJECT, required=False),),
        errors=(400, 403),
    ),
    Route(
        "PUT",
        "/v1/agent/instances/{service}",
        "Make this node's instance of a service match the spec (sent by the leader)",
        InstanceStatus,
        body=InstanceSpec,
        params=(INSTANCE, TERM),
        errors=(400, 403, 408, 409, 413, 503),
    ),
    Route(
        "DELETE",
        "/v1/agent/instances/{service}",
        "Remove this node's instance of a service (sent by the leader)",
        Removed,
        params=(INSTANCE, PROJECT, TERM),
        errors=(400, 403, 409, 503),
    ),
    Route(
        "GET",
        "/v1/agent/instances/{service}/logs",
        "The last log lines of this node's instance of a service",
        LogLines,
        params=(INSTANCE, PROJECT, TAIL),
        errors=(400, 403),
    ),
    Route(
        "GET",
        "/v1/agent/instances/{service}/logs/stream",
        "This node's instance's log lines as plain text, one a line",
        LogLines,
        params=(INSTANCE, PROJECT, TAIL, SINCE, FOLLOW),
        errors=(400, 403),
        stream_answer="text/plain; charset=utf-8",
    ),
    Route(
        "GET",
        "/v1/agent/instances/{service}/backup",
        "A gzipped tarball of the volumes of this node's instance of a service",
        Restored,
        params=(INSTANCE, PROJECT),
        errors=(400, 403, 409),
        archive_answer=True,
    ),
    Route(
        "PUT",
        "/v1/agent/instances/{service}/restore",
        "Restore the volumes of this node's instance of a service from a tarball",
        Restored,
        params=(INSTANCE, PROJECT),
        errors=(400, 403, 408, 409, 413, 422),
        archive_body=True,
    ),
    Route(
        "PUT",
        "/v1/agent/instances/{service}/restore-snapshots",
        "Restore the volumes of this node's instance of a service from EBS snapshots",
        Restored,
        body=SnapshotRestoreRequest,
        params=(INSTANCE, PROJECT),
        errors=(400, 403, 408, 409, 413, 422),
    ),
)

REASONS = {
    200: "OK",
    202: "accepted",
    400: "bad body, query, header, key or name",
    401: "missing or wrong bearer token",
    403: "a joining node without the Raft secret; an agent route called without a node certificate",
    404: "not found",
    409: "conflict (a deposed leader's term; a sixth voter)",
    408: "the body did not arrive within 10 s of the request head",
    413: "body over 1 MiB",
    422: "invalid configuration, with every problem in details",
    500: "internal error; see the node's log",
    502: "the node running the service answered badly",
    503: "no leader, leadership changing, or Raft could not commit; retry",
}


# -- building the document ------------------------------------------------------------------------
def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """A ``$ref`` to ``model``, adding it and the models it uses to ``components``."""
    schema = model.model_json_schema(ref_template=REF)
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components.setdefault(model.__name__, schema)
    return {"$ref": REF.format(model=model.__name__)}


ARCHIVE_CONTENT = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{route.method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', route.openapi_path)}",
        "summary": route.summary,
    }
    if route.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in route.params
        ]
    if route.archive_body:
        op["requestBody"] = {"required": True, "content": ARCHIVE_CONTENT}
    elif route.body is not None:
        op["requestBody"] = {
            "required": route.body_required,
            "content": _json(_schema(route.body, components)),
        }
    elif not route.body_required:
        op["requestBody"] = {"required": False, "content": _json({"type": "object"})}
    answer = ARCHIVE_CONTENT if route.archive_answer else _json(_schema(route.answer, components))
    if route.stream_answer is not None:
        answer = {route.stream_answer: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(route.status): {"description": REASONS[route.status], "content": answer}}
    errors = sorted({*route.errors, 500, *(() if route.public else (401,))})
    for status in errors:
        model = route.error_models.get(status, ErrorBody)
        responses[str(status)] = {
            "description": REASONS[status],
            "content": _json(_schema(model, components)),
        }
    op["responses"] = responses
    if route.public:
        op["security"] = []
    return op


def openapi_document(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = _operation(route, components)
    # checked by a validator, which JSON Schema does not show
    for name, pattern in (("project", NAME_PATTERN), ("service", INSTANCE_PATTERN)):
        props = components.get("InstanceSpec", {}).get("properties", {})
        if name in props:
            props[name].setdefault("pattern", _pattern(pattern))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "oct-ctl",
            "version": __version__,
            "description": "The HTTP API of an oct node (docs/operations.md, 'HTTP API').",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


@cache
def _cached() -> dict[str, Any]:
    return openapi_document()


async def serve_openapi(request: web.Request) -> web.Response:
    return web.json_response(_cached())
