"""What a node's ingress serves, from its replica: every placed public service, on every node, to
the instance port of the node that runs it; nothing for a service that publishes nothing; a port
several services share only on each sharer's node, for that sharer."""

from __future__ import annotations

from octctl.ingress.routes import IngressRoutes, Route, Upstream
from octctl.served_routes import routes_from_state
from octctl.state.model import ClusterState
from tests.dns.test_zone import node
from tests.unit.test_desired import state


def test_every_node_serves_each_public_service_at_its_instance() -> None:
    current = state()  # web (public, 8081) and lonely (external_port without internal_port) on node-2
    current["nodes"]["node-3"] = node(3)
    current["instance_ports"] = {"web": 20000}
    web = Route("web", 8081, "tcp", (Upstream("127.0.0.2", 20000),))
    assert routes_from_state(current, "127.0.0.2") == IngressRoutes("127.0.0.2", (web,))
    assert routes_from_state(current, "127.0.0.3") == IngressRoutes("127.0.0.3", (web,))  # not its node


def test_nothing_is_served_before_a_port_is_assigned_or_after_destroy() -> None:
    current = state()
    assert routes_from_state(current, "127.0.0.2").routes == ()  # placed, no instance port yet
    current["instance_ports"] = {"web": 20000}
    current["project"] = None
    assert routes_from_state(current, "127.0.0.2").routes == ()


def shared_port_state() -> ClusterState:
    """Three services sharing external_port 80 (host-bound), one per node, and a public one alone."""
    current = state()
    current["nodes"] = {f"node-{i}": node(i) for i in (2, 3, 4)}
    services = [
        {"name": name, "image": "i", "internal_port": 8000, "external_port": 80, "cpus": 1, "memory": 1}
        for name in ("app_1", "app_2", "nginx")
    ]
    services.append(
        {"name": "api", "image": "i", "internal_port": 80, "external_port": 81, "cpus": 1, "memory": 1}
    )
    current["project"]["project"]["services"] = services  # type: ignore[index]
    current["placements"] = {"app_1": "node-2", "app_2": "node-3", "nginx": "node-4", "api": "node-2"}
    current["instance_ports"] = {"app_1": 20000, "app_2": 20000, "nginx": 20000, "api": 20001}
    return current


def test_a_shared_external_port_is_served_only_by_each_sharer_s_node_for_it() -> None:
    current = shared_port_state()
    api = Route("api", 81, "tcp", (Upstream("127.0.0.2", 20001),))
    for n, service in ((2, "app_1"), (3, "app_2"), (4, "nginx")):
        address = f"127.0.0.{n}"
        own = Route(service, 80, "tcp", (Upstream(address, 20000),))
        assert routes_from_state(current, address) == IngressRoutes(address, (own, api))
    # A node running none of them does not serve the port at all; the mesh port it still serves.
    assert routes_from_state(current, "127.0.0.5") == IngressRoutes("127.0.0.5", (api,))


def test_two_sharers_on_one_node_before_the_leader_separates_them_serve_the_first() -> None:
    current = shared_port_state()  # a deploy made the port shared; the placements are not redone yet
    current["placements"]["app_2"] = "node-2"
    routes = routes_from_state(current, "127.0.0.2")
    assert [(r.service, r.port) for r in routes.routes] == [("app_1", 80), ("api", 81)]
