"""Which port each public service's instance listens on, on its node.

A service with an ``external_port`` is served on that port of every node by the ingress
(:mod:`octctl.ingress`), so its instance cannot listen there itself: it gets an *instance port*
from a range of its own, which the ingress forwards to. The leader assigns them with the
placements and Raft keeps them (``ClusterState["instance_ports"]``): a port is kept while its
service stays on its node, so placing another service never changes an instance's spec (and never
restarts it). Pure functions over the placements.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from octctl.addresses import INSTANCE_PORTS


def assign_instance_ports(
    public: Set[str],
    placements: Mapping[str, str],
    published: Mapping[str, int],
    before: Mapping[str, int],
    placed_before: Mapping[str, str],
    reserved: Set[int] = frozenset(),
) -> dict[str, int]:
    """The instance port of every placed service in ``public``.

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
    for service in sorted(public & placements.keys()):
        node, kept = placements[service], before.get(service)
        if kept is not None and placed_before.get(service) == node and kept not in taken.get(node, set()):
            ports[service] = kept
            taken.setdefault(node, set()).add(kept)
    for service in sorted(public & placements.keys() - ports.keys()):
        used = taken.setdefault(placements[service], set())
        free = next((p for p in INSTANCE_PORTS if p not in used), None)
        if free is None:
            continue  # 10,000 public services on one node: the rest wait unserved
        ports[service] = free
        used.add(free)
    return ports
