"""What a node's ingress serves, following the node's own replica (like its DNS zone), so every
node serves every public service, leader or not, and keeps serving what it last knew while the
cluster has no leader. Beside :mod:`octctl.ingress`, not in it: that package knows HAProxy and
nothing of the cluster state, so a local provider can clean up a dead node's proxy with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from octctl.addresses import MESH_PORT
from octctl.config import Service
from octctl.config.models import Project
from octctl.ingress.haproxy import Haproxy, IngressError
from octctl.ingress.routes import Inbound, IngressRoutes, Mesh, Mode, Route, Site, Upstream, Web
from octctl.instance_ports import partner
from octctl.instances import PlacedInstances, instances_of, serving
from octctl.logthrottle import LogLimiter
from octctl.mesh import MeshIdentity, server_name, service_name
from octctl.sites import Site as SiteNames
from octctl.sites import sites
from octctl.state.desired import desired_project
from octctl.state.model import ClusterState, acme_of, drain_key, draining_of

log = logging.getLogger(__name__)

#: After a failed apply (a port taken, HAProxy missing), try again this often even without a change.
RETRY_SECONDS = 5.0
#: How often the access log's size is checked (it may outgrow its bound by this much traffic).
ROTATE_CHECK_SECONDS = 1.0


def routes_from_state(
    view: ClusterState, address: str, also: str | None = None, mesh_port: int | None = None
) -> IngressRoutes:
    """What the node at ``address`` serves: each placed proxied service at its ``proxy_port``
    (``Project.proxy_port``: a public ``external_port``, or a meshed internal port; see
    :func:`_route`); and, when the project is served over HTTPS, its sites on 80 and 443 (see
    :func:`web_from_state`). With a ``mesh_port``, an instance on another node is reached through
    that node's proxy over mutual TLS (:mod:`octctl.mesh`), and this node takes such hops for its
    own instances (:func:`_mesh`)."""
    config = desired_project(view)
    also_at = (also,) if also else ()
    if config is None:
        return IngressRoutes(address, also=also_at)
    routes: list[Route] = []
    for service in config.project.services:
        route = _route(view, config.project, service, address, mesh_port)
        if route is not None and not any(r.port == route.port for r in routes):
            routes.append(route)  # (two sharers on one node, between a deploy and its placements: the first)
    mesh = _mesh(view, config.project, address, mesh_port) if mesh_port is not None else None
    found = sites(config)
    if not found:
        return IngressRoutes(address, tuple(routes), also=also_at, mesh=mesh)
    on_80 = next((r for r in routes if r.port == 80), None)
    web = web_from_state(view, found, routes, on_80)
    return IngressRoutes(address, tuple(r for r in routes if r is not on_80), web, also_at, mesh)


def _route(
    view: ClusterState, project: Project, service: Service, address: str, mesh_port: int | None
) -> Route | None:
    """``service``'s route on the node at ``address``, forwarded at layer 4 (any protocol; HTTP for
    one with an HTTP health check) to the ports its instances serve at (not those being drained),
    or None when the node does not serve it.

    A meshed internal service prefers its instances on this node (the others are backups); a
    public one is balanced over all of them. A host-bound port (claimed by several services,
    placed on distinct nodes) is served only by the node running one of them, for that one."""
    served_at = project.proxy_port(service)
    if served_at is None:
        return None
    meshed = project.meshed(service)
    ports = view.get("instance_ports", {})
    draining = draining_of(view)
    upstreams, placed = [], False
    for instance, node_id in PlacedInstances(view["placements"]).placed(service):
        node = view["nodes"].get(node_id)
        port = ports.get(instance)
        if node is None or port is None or (not meshed and node["address"] != address):
            continue
        placed = True  # served even while every instance drains: clients wait, not refused
        if drain_key(instance, node_id) in draining:
            continue
        at = _serving_port(view["instances"].get(node_id, {}).get(instance), port)
        if at is None:
            continue
        here = node["address"] == address
        via = None if here or mesh_port is None else server_name(project.name, service.name, at)
        upstreams.append(Upstream(node["address"], at, via))
    if not placed:
        return None
    if service.public_port is None and any(u.address == address for u in upstreams):
        upstreams = [replace(u, backup=u.address != address) for u in upstreams]
    allowed = _callers(view, service, address) if meshed and service.allow is not None else None
    return Route(service.name, served_at, _mode(service), tuple(upstreams), allowed)


def _mesh(view: ClusterState, project: Project, address: str, mesh_port: int) -> Mesh:
    """This node's end of the mesh: each of its meshed instances, at either port of its pair (a
    start-first update's new version is on the other), and the services its certificate names."""
    ports = view.get("instance_ports", {})
    placed_of = PlacedInstances(view["placements"])
    names: set[str] = set()
    inbound: set[Inbound] = set()
    for service in project.services:
        if not project.meshed(service):
            continue
        for instance, node_id in placed_of.placed(service):
            node = view["nodes"].get(node_id)
            port = ports.get(instance)
            if node is None or port is None or node["address"] != address:
                continue
            names.add(service_name(project.name, service.name))
            inbound.update(
                Inbound(server_name(project.name, service.name, p), p) for p in (port, partner(port))
            )
    return Mesh(mesh_port, tuple(names), tuple(inbound))


def web_from_state(
    view: ClusterState, found: list[SiteNames], routes: list[Route], on_80: Route | None
) -> Web:
    """Ports 80 and 443: each site to the instances of its service (the ones its ``external_port``
    route reaches), with its certificate once the leader has one, and the challenges under way.
    A service whose ``external_port`` is 80 keeps port 80 for every other request, over HTTP."""
    acme = acme_of(view)
    upstreams = {route.service: route.upstreams for route in routes}
    web_sites = []
    for site in found:
        record = acme["certificates"].get(site.service)
        certificate = None
        if record is not None and tuple(record["names"]) == site.names:
            certificate = record["fullchain"].rstrip("\n") + "\n" + record["key"]
        web_sites.append(Site(site.service, site.names, upstreams.get(site.service, ()), certificate))
    fallback = Route(on_80.service, 80, "http", on_80.upstreams) if on_80 is not None else None
    return Web(tuple(web_sites), tuple(acme["challenges"].items()), fallback)


def _callers(view: ClusterState, callee: Service, address: str) -> tuple[str, ...]:
    """Where calls from the services ``callee`` allows come from, on the node at ``address``: each
    of their containers' own addresses, and the node's address for a process (a process calls
    from the node's address; so every process on a node that runs an allowed one passes)."""
    config = desired_project(view)
    if config is None:
        return ()
    node_id = next((n["id"] for n in view["nodes"].values() if n["address"] == address), None)
    here = view["instances"].get(node_id or "", {})
    allowed = set(callee.allow or ())
    sources: set[str] = set()
    for instance, caller in instances_of(config):
        seen = here.get(instance)
        if caller.name not in allowed or seen is None:
            continue
        if caller.runtime == "process":
            sources.add(address)
        sources.update(a for a in seen.get("addresses") or () if _is_address(a))
    return tuple(sorted(sources))


def _is_address(value: object) -> bool:
    """A record that says something else (a damaged or foreign report) names no caller, rather
    than stopping the node's proxy from following the state."""
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def _mode(service: Service) -> Mode:
    """HTTP for a service whose health check is an HTTP request (it says it speaks HTTP there): a
    request an instance took and never answered can then be sent to another one. Any other
    service is carried connection by connection, whatever its protocol."""
    check = service.healthcheck
    return "http" if check is not None and check.kind == "http" else "tcp"


def _serving_port(seen: dict[str, Any] | None, port: int) -> int | None:
    """Where the ingress reaches an instance: the port it runs on, or its previous generation's
    while a start-first update brings the new one up beside it; None while it is unhealthy."""
    if seen is None:
        return port
    if serving(seen):
        return int(seen.get("port") or port)
    if seen.get("previous_port"):
        return int(seen["previous_port"])
    return int(seen.get("port") or port) if _healthy(seen) else None


def _healthy(seen: dict[str, object]) -> bool:
    """Not known to be unhealthy or still starting its checks. Unlike DNS, the ingress keeps an
    instance that is not observed yet or restarting: HAProxy's own connection checks and retries
    cover those, and a route must not lose every server while the leader is only polling."""
    return seen.get("health", "none") in ("healthy", "none")


class FollowedIngress:
    """Applies the routes of each new state version to the node's HAProxy, from a task of its own
    (never inside a Raft tick: a reload waits for HAProxy). ``changed`` is called by the node on
    every committed command; a failure is logged a few times a minute and retried."""

    def __init__(
        self,
        proxy: Haproxy,
        view: Callable[[], ClusterState],
        address: str,
        also: str | None = None,
        mesh: MeshIdentity | None = None,
        mesh_port: int = MESH_PORT,
    ) -> None:
        self.proxy = proxy
        self.view = view
        self.address = address
        #: The node's second address, for containers (local clusters): served like ``address``.
        self.also = also
        #: Issues the node's mesh certificate; None: no mesh (instances on other nodes are
        #: reached at their own ports, in clear).
        self.mesh = mesh
        self.mesh_port = mesh_port
        self._changed = asyncio.Event()
        self._limiter = LogLimiter(log)
        #: ``address:port`` of every instance the proxy may send traffic to, as last applied
        #: (None until an apply succeeds): the leader ends a drain early once no node lists it.
        self.routed: frozenset[str] | None = None

    def changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        rotation = asyncio.create_task(self._keep_access_log_small())
        try:
            await self._follow()
        finally:
            rotation.cancel()

    async def _keep_access_log_small(self) -> None:
        """The access log's size is checked every :data:`ROTATE_CHECK_SECONDS` (see
        :mod:`octctl.ingress.access_log`)."""
        while True:
            await asyncio.sleep(ROTATE_CHECK_SECONDS)
            try:
                await asyncio.to_thread(self.proxy.rotate_access_log)
            except OSError as e:
                self._limiter.log(logging.ERROR, "rotate", "ingress: cannot rotate the access log: %s", e)

    async def _follow(self) -> None:
        served: IngressRoutes | None = None
        while True:
            routes = IngressRoutes(self.address)
            try:
                routes = self._routes()
                if routes != served:
                    self.routed = None  # (until HAProxy confirms: a failed reload keeps the old)
                    await self.proxy.apply(routes)
                    served = routes
                    self.routed = frozenset(f"{u.address}:{u.port}" for u in routes.upstreams)
            except FileNotFoundError:
                message = (
                    "haproxy is not installed (apt-get install haproxy): public ports and the mesh "
                    "(calls between services) are not served"
                )
                self._limiter.log(logging.ERROR, "missing", message)
            except (IngressError, OSError) as e:
                self._limiter.log(logging.ERROR, "failed", "ingress: %s", e)
            except Exception:  # a bug here must not end the task: the node would stop following
                log.exception("ingress: unexpected error; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RETRY_SECONDS if routes != served else None)
            self._changed.clear()

    def _routes(self) -> IngressRoutes:
        mesh_port = self.mesh_port if self.mesh is not None else None
        routes = routes_from_state(self.view(), self.address, self.also, mesh_port)
        if self.mesh is None or routes.mesh is None:
            return routes
        credentials = self.mesh.credentials(routes.mesh.names)
        return replace(routes, mesh=replace(routes.mesh, credentials=credentials, ca=self.mesh.ca_cert))

    async def stop(self) -> None:
        await self.proxy.stop()
