"""Which port each proxied service's instance listens on, on its node.

A service with an ``external_port``, or a meshed internal one, is served on that port of every
node by the node's proxy (:mod:`octctl.ingress`, ``Project.proxy_port``), so its instance cannot
listen there itself: it gets an *instance port*
from a range of its own, which the ingress forwards to. The leader assigns them with the
placements and Raft keeps them (``ClusterState["instance_ports"]``): a port is kept while its
service stays on its node, so placing another service never changes an instance's spec (and never
restarts it). Pure functions over the placements.

Each port has a *partner* 5,000 above it, kept free with it: a start-first update starts the new
version of a container on the partner while the old one still serves on the port, and the next
update goes back (:func:`octctl.specs.replaced_beside`). So ports are given from the lower half
of the range, and only where the partner is free too.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from octctl.addresses import INSTANCE_PORTS
from octctl.config import Config
from octctl.instances import instances_of
from octctl.state.shape import ClusterState

#: The distance from a port to its partner: half the range.
PARTNER_OFFSET = len(INSTANCE_PORTS) // 2
#: The ports given out; their partners are the upper half.
GIVEN_PORTS = range(INSTANCE_PORTS.start, INSTANCE_PORTS.start + PARTNER_OFFSET)


def partner(port: int) -> int:
    """The other port of ``port``'s pair (a port of the upper half, kept by an older oct, pairs
    with the lower one)."""
    return port + PARTNER_OFFSET if port in GIVEN_PORTS else port - PARTNER_OFFSET


def assign_instance_ports(
    proxied: Set[str],
    placements: Mapping[str, str],
    published: Mapping[str, int],
    before: Mapping[str, int],
    placed_before: Mapping[str, str],
    reserved: Set[int] = frozenset(),
) -> dict[str, int]:
    """The instance port of every placed service in ``proxied``.

    ``published`` is the port each other service publishes on its node's address (an internal-only
    port), which an instance port must not take; nor may it take a ``reserved`` one (the external
    ports, which the ingress binds on every node). A service keeps ``before[service]`` while it stays
    on the node ``placed_before`` says; the others get the lowest free port of their node, in name
    order, so the same inputs always give the same ports.
    """
    taken: dict[str, set[int]] = {node: set(reserved) for node in placements.values()}
    for service, port in published.items():
        if service in placements:
            taken.setdefault(placements[service], set()).add(port)
    ports: dict[str, int] = {}
    for service in sorted(proxied & placements.keys()):
        node, kept = placements[service], before.get(service)
        used = taken.setdefault(node, set())
        if kept is not None and placed_before.get(service) == node and not {kept, partner(kept)} & used:
            ports[service] = kept
            used.update((kept, partner(kept)))
    for service in sorted(proxied & placements.keys() - ports.keys()):
        used = taken.setdefault(placements[service], set())
        free = next((p for p in GIVEN_PORTS if p not in used and partner(p) not in used), None)
        if free is None:
            continue  # 5,000 public services on one node: the rest wait unserved
        ports[service] = free
        used.update((free, partner(free)))
    return ports


def instance_ports(config: Config, placements: Mapping[str, str], view: ClusterState) -> dict[str, int]:
    """The instance port of each placed instance of a proxied service (see :mod:`octctl.instance_ports`)."""
    project = config.project
    instances = list(instances_of(config))
    return assign_instance_ports(
        proxied={name for name, s in instances if project.proxy_port(s) is not None},
        placements=placements,
        published={name: port for name, s in instances if (port := project.claimed_port(s)) is not None},
        before=view.get("instance_ports", {}),
        placed_before=view["placements"],
        reserved={port for s in project.services if (port := project.proxy_port(s)) is not None},
    )
