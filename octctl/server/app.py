"""oct-ctl's HTTP API: the CLI's entry point, the leader's channel to agents, and joining.

Served over TLS only, with the node's certificate from the cluster CA (``octctl/tls.py``). Every
route but ``/v1/health`` and the OpenAPI document needs the cluster's bearer token; the agent routes
also need the caller to be a node (a client certificate from the cluster CA, mutual TLS). Writes
are served by the leader; a follower forwards them, so a client may call any node. This module
holds the cluster-level routes and the route table; ``http`` what the handlers share.
"""

from __future__ import annotations

import time

from aiohttp import web

from octctl import __version__
from octctl.api.models import (
    DeployRequest,
    DeployResponse,
    DestroyResponse,
    Health,
    JoinRequest,
    ReplicaView,
)
from octctl.config import Config, ConfigError, parse_config_data
from octctl.distribution import installed_artifact_sha256
from octctl.dry_run import NodeFacts, dry_run
from octctl.membership import NoVoterSeat, WrongSecret
from octctl.metrics import CONTENT_TYPE
from octctl.names import check_name, new_id
from octctl.node import Node
from octctl.scheduler import NodeCapacity
from octctl.server.access_routes import agent_access, service_access
from octctl.server.agent_routes import agent_apply, agent_instances, agent_logs, agent_remove
from octctl.server.backup_routes import (
    agent_backup,
    agent_restore,
    agent_restore_snapshots,
    service_backup,
    service_restore,
    service_restore_snapshots,
)
from octctl.server.denials import Denials
from octctl.server.history_routes import events, history, rollback
from octctl.server.http import (
    MAX_BODY,
    METRICS_PATH,
    NODE_KEY,
    BadBody,
    audit_middleware,
    auth_middleware,
    error,
    errors_middleware,
    int_query,
    leader_only,
    leader_only_within,
    metrics_middleware,
    node_of,
    ok,
    read_model,
)
from octctl.server.kv_routes import kv_delete, kv_get, kv_put
from octctl.server.log_streams import agent_log_stream, agent_node_log, node_log, service_log_stream
from octctl.server.openapi import OPENAPI_PATH, serve_openapi
from octctl.server.ui_routes import ui_home, ui_link, ui_login, ui_logs, ui_part, ui_static
from octctl.server.usage_routes import agent_usage, usage
from octctl.server.views import leader_id, status_view
from octctl.state.desired import desired_project
from octctl.state.model import api_address, command


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


async def read_project(request: web.Request) -> tuple[DeployRequest, Config]:
    """The body of a deploy or a plan, and the project in it (422 with every problem)."""
    body = await read_model(request, DeployRequest)
    try:
        return body, parse_config_data(body.config)
    except ConfigError as e:
        raise BadBody("invalid configuration", [str(p) for p in e.problems], status=422) from e


@leader_only
async def deploy(request: web.Request) -> web.Response:
    node = node_of(request)
    body, config = await read_project(request)
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
async def plan(request: web.Request) -> web.Response:
    """What a deploy of the body would do (``octctl/dry_run.py``); nothing changes. On the leader,
    so the plan is against the newest state."""
    node = node_of(request)
    body, config = await read_project(request)
    s = node.settings
    facts = NodeFacts(
        own=NodeCapacity(node=s.node, cpus=s.cpus, memory=s.memory),
        leader=s.node,
        kind=s.provider.kind,
        instance_type=s.instance_type,
        domain=s.dns_domain,
        instance_types=node.provider.instance_types if node.provider is not None else (),
    )
    return ok(dry_run(node.raft.view(), config, body.source_dir, facts))


@leader_only
async def destroy(request: web.Request) -> web.Response:
    node = node_of(request)
    result = await node.raft.execute(command("destroy", deployment=new_id("x"), at=time.time()))
    node.leader.wake()
    return ok(DestroyResponse.model_validate(result), status=202)


async def members(request: web.Request) -> web.Response:
    return ok(node_of(request).membership.members())


@leader_only_within(25.0)  # (a membership change waits up to 15 s for its commit, then a write)
async def join(request: web.Request) -> web.Response:
    node = node_of(request)
    body = await read_model(request, JoinRequest)
    try:
        changed = await node.membership.admit(body)
    except WrongSecret as e:
        return error(403, str(e))
    except NoVoterSeat as e:
        return error(409, str(e))
    if changed:
        node.leader.wake()
    return ok(node.membership.members())


async def service_logs(request: web.Request) -> web.Response:
    node = node_of(request)
    name = check_name("service", request.match_info["service"])
    tail = int_query(request, "tail", 50)
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


async def metrics(request: web.Request) -> web.Response:
    """Prometheus' text format; the read-only scrape token is enough (``auth_middleware``)."""
    body = await node_of(request).scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


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


def build_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[
            metrics_middleware(node),
            errors_middleware,
            auth_middleware(node.secrets.token, node.secrets.scrape_token, node.logins, Denials(node).denied),
            audit_middleware(node),
        ],
        client_max_size=MAX_BODY,
    )
    app[NODE_KEY] = node
    app.router.add_get("/v1/health", health)
    app.router.add_get(OPENAPI_PATH, serve_openapi)
    app.router.add_get("/v1/status", status)
    app.router.add_get(METRICS_PATH, metrics)
    app.router.add_post("/v1/deploy", deploy)
    app.router.add_post("/v1/plan", plan)
    app.router.add_post("/v1/destroy", destroy)
    app.router.add_get("/v1/history", history)
    app.router.add_get("/v1/events", events)
    app.router.add_post("/v1/rollback", rollback)
    app.router.add_get("/v1/cluster/members", members)
    app.router.add_post("/v1/cluster/join", join)
    app.router.add_get("/v1/cluster/replica", replica)
    # [\s\S]: a key with a newline must reach kv_key (a 400 with the rule), not miss the route (404)
    app.router.add_get(r"/v1/kv/{key:[\s\S]+}", kv_get)
    app.router.add_put(r"/v1/kv/{key:[\s\S]+}", kv_put)
    app.router.add_delete(r"/v1/kv/{key:[\s\S]+}", kv_delete)
    app.router.add_get("/v1/services/{service}/logs", service_logs)
    app.router.add_get("/v1/services/{service}/logs/stream", service_log_stream)
    app.router.add_get("/v1/services/{service}/access", service_access)
    app.router.add_get("/v1/services/{service}/backup", service_backup)
    app.router.add_put("/v1/services/{service}/restore", service_restore)
    app.router.add_put("/v1/services/{service}/restore-snapshots", service_restore_snapshots)
    app.router.add_get("/v1/agent/access/{service}", agent_access)
    app.router.add_get("/v1/nodes/{node}/logs", node_log)
    app.router.add_get("/v1/agent/node/logs", agent_node_log)
    app.router.add_get("/v1/agent/instances", agent_instances)
    app.router.add_put("/v1/agent/instances/{service}", agent_apply)
    app.router.add_delete("/v1/agent/instances/{service}", agent_remove)
    app.router.add_get("/v1/agent/instances/{service}/logs", agent_logs)
    app.router.add_get("/v1/agent/instances/{service}/logs/stream", agent_log_stream)
    app.router.add_get("/v1/agent/instances/{service}/backup", agent_backup)
    app.router.add_put("/v1/agent/instances/{service}/restore", agent_restore)
    app.router.add_put("/v1/agent/instances/{service}/restore-snapshots", agent_restore_snapshots)
    app.router.add_get("/v1/usage", usage)
    app.router.add_get("/v1/agent/usage", agent_usage)
    app.router.add_post("/v1/ui/link", ui_link)
    app.router.add_get("/ui", ui_home)
    app.router.add_get("/ui/login", ui_login)
    app.router.add_get("/ui/part/{part}", ui_part)
    app.router.add_get("/ui/services/{service}/logs", ui_logs)
    app.router.add_get("/ui/static/{name}", ui_static)
    return app
