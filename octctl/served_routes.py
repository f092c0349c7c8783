"""What a node's ingress serves, following the node's own replica (like its DNS zone), so every
node serves every public service, leader or not, and keeps serving what it last knew while the
cluster has no leader. Beside :mod:`octctl.ingress`, not in it: that package knows HAProxy and
nothing of the cluster state, so a local provider can clean up a dead node's proxy with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from octctl.ingress.haproxy import Haproxy, IngressError
from octctl.ingress.routes import IngressRoutes, Route, Upstream
from octctl.logthrottle import LogLimiter
from octctl.state.desired import desired_project
from octctl.state.model import ClusterState

log = logging.getLogger(__name__)

#: After a failed apply (a port taken, HAProxy missing), try again this often even without a change.
RETRY_SECONDS = 5.0


def routes_from_state(view: ClusterState, address: str) -> IngressRoutes:
    """What the node at ``address`` serves: each placed public service's ``external_port``, forwarded
    at layer 4 (any protocol) to the instance port of the node that runs it. A host-bound port
    (claimed by several services, placed on distinct nodes) is served only by the node running one
    of them, for that one: the others do not serve it."""
    config = desired_project(view)
    if config is None:
        return IngressRoutes(address)
    ports = view.get("instance_ports", {})
    host_bound = config.project.host_bound_ports
    routes: list[Route] = []
    for service in config.project.services:
        node = view["nodes"].get(view["placements"].get(service.name, ""))
        port = ports.get(service.name)
        if service.public_port is None or node is None or port is None:
            continue
        if service.public_port in host_bound and node["address"] != address:
            continue
        if any(route.port == service.public_port for route in routes):
            continue  # two sharers on one node, between a deploy and its placements: the first serves
        routes.append(Route(service.name, service.public_port, "tcp", (Upstream(node["address"], port),)))
    return IngressRoutes(address, tuple(routes))


class FollowedIngress:
    """Applies the routes of each new state version to the node's HAProxy, from a task of its own
    (never inside a Raft tick: a reload waits for HAProxy). ``changed`` is called by the node on
    every committed command; a failure is logged a few times a minute and retried."""

    def __init__(self, proxy: Haproxy, view: Callable[[], ClusterState], address: str) -> None:
        self.proxy = proxy
        self.view = view
        self.address = address
        self._changed = asyncio.Event()
        self._limiter = LogLimiter(log)

    def changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        served: IngressRoutes | None = None
        while True:
            routes = IngressRoutes(self.address)
            try:
                routes = routes_from_state(self.view(), self.address)
                if routes != served:
                    await self.proxy.apply(routes)
                    served = routes
            except FileNotFoundError:
                message = "haproxy is not installed (apt-get install haproxy): public ports are not served"
                self._limiter.log(logging.ERROR, "missing", message)
            except (IngressError, OSError) as e:
                self._limiter.log(logging.ERROR, "failed", "ingress: %s", e)
            except Exception:  # a bug here must not end the task: the node would stop following
                log.exception("ingress: unexpected error; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RETRY_SECONDS if routes != served else None)
            self._changed.clear()

    async def stop(self) -> None:
        await self.proxy.stop()
