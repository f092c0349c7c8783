"""Instance ports: stable while a service stays on its node, never shared on a node, never a port
another service publishes there."""

from __future__ import annotations

from octctl.addresses import INSTANCE_PORTS
from octctl.instance_ports import assign_instance_ports

FIRST = INSTANCE_PORTS.start


def test_each_node_hands_out_its_lowest_free_ports_in_name_order() -> None:
    placements = {"web": "n1", "api": "n1", "admin": "n2", "db": "n1"}
    ports = assign_instance_ports({"web", "api", "admin"}, placements, {"db": 5432}, {}, {})
    assert ports == {"api": FIRST, "web": FIRST + 1, "admin": FIRST}


def test_a_port_is_kept_while_its_service_stays_and_freed_when_it_moves() -> None:
    before = {"web": FIRST + 7, "api": FIRST}
    placed_before = {"web": "n1", "api": "n1"}
    # A new public service on the same node must not shift the others.
    ports = assign_instance_ports(
        {"web", "api", "new"}, {"web": "n1", "api": "n1", "new": "n1"}, {}, before, placed_before
    )
    assert ports == {"web": FIRST + 7, "api": FIRST, "new": FIRST + 1}
    moved = assign_instance_ports({"web", "api"}, {"web": "n2", "api": "n1"}, {}, before, placed_before)
    assert moved == {"api": FIRST, "web": FIRST}


def test_unplaced_and_private_services_get_no_port_and_published_ports_are_avoided() -> None:
    ports = assign_instance_ports(
        {"web"}, {"web": "n1", "odd": "n1"}, {"odd": FIRST}, {"web": FIRST}, {"web": "n1"}
    )
    assert ports == {"web": FIRST + 1}  # its old port is now published by another service there
    assert assign_instance_ports({"web"}, {}, {}, {}, {}) == {}


def test_external_ports_are_never_instance_ports() -> None:
    ports = assign_instance_ports({"web"}, {"web": "n1"}, {}, {}, {}, reserved={FIRST, FIRST + 1})
    assert ports == {"web": FIRST + 2}
