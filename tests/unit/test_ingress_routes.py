"""What a node's ingress serves, from its replica: every placed public service, on every node, to
the instance port of the node that runs it; nothing for a service that publishes nothing."""

from __future__ import annotations

from octctl.ingress.routes import IngressRoutes, Route, Upstream
from octctl.served_routes import routes_from_state
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
