"""The cluster's DNS zone, computed from one replica's state (pure: state in, records out).

Names (zone ``<project>.<domain>.``, ``oct`` by default):

- ``<service>.<zone>``: A records of the nodes where the service runs; for a meshed service, the
  answering node's own address, where its proxy serves it (see :func:`build_zone`).
- ``_<service>._tcp.<zone>``: SRV records (port = the service's host port, target = the node name),
  with the node's A record as additional data.
- ``<node>.node.<zone>``: the node's A record.

Every node builds the same zone from its own replica, so discovery keeps answering while the
leader changes; the answer may lag the leader by the replication delay (milliseconds).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RR, SOA, SRV, A, DNSLabel

from octctl.instances import PlacedInstances, serving
from octctl.state.desired import desired_project
from octctl.state.model import ClusterState, drain_key, draining_of

DEFAULT_DOMAIN = "oct"
DEFAULT_TTL = 5


def _key(name: DNSLabel | str) -> str:
    """Lower-cased dotted name, straight from the wire labels (re-encoding them through IDNA
    fails on labels a hostile packet can carry)."""
    label = name if isinstance(name, DNSLabel) else DNSLabel(name)
    return b".".join(label.label).decode("utf-8", "backslashreplace").lower() + "."


@dataclass(frozen=True)
class Answer:
    """What the zone says about one question. ``authoritative`` is false outside the zone."""

    authoritative: bool
    exists: bool = False
    answers: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)


@dataclass(frozen=True)
class Zone:
    origin: str  # "shop.oct."
    soa: RR
    records: dict[str, dict[int, list[RR]]]

    def contains(self, name: DNSLabel | str) -> bool:
        key = _key(name)
        return key == self.origin or key.endswith("." + self.origin)

    def lookup(self, name: DNSLabel | str, qtype: int) -> Answer:
        if not self.contains(name):
            return Answer(authoritative=False)
        key = _key(name)
        if key == self.origin and qtype in (QTYPE.SOA, QTYPE.ANY):
            return Answer(authoritative=True, exists=True, answers=[self.soa])
        by_type = self.records.get(key)
        if by_type is None:
            # NXDOMAIN, unless the name is an empty non-terminal (e.g. "node.<zone>").
            exists = key == self.origin or any(k.endswith("." + key) for k in self.records)
            return Answer(authoritative=True, exists=exists, authority=[self.soa])
        wanted = [rr for t, rrs in by_type.items() if qtype in (t, QTYPE.ANY) for rr in rrs]
        if not wanted:
            return Answer(authoritative=True, exists=True, authority=[self.soa])  # NODATA
        additional = [
            rr
            for srv in wanted
            if srv.rtype == QTYPE.SRV
            for rr in self.records.get(_key(srv.rdata.target), {}).get(QTYPE.A, [])
        ]
        return Answer(authoritative=True, exists=True, answers=wanted, additional=additional)


def zone_origin(project: str, domain: str = DEFAULT_DOMAIN) -> str:
    return _key(f"{project}.{domain}")


def build_zone(
    state: ClusterState, domain: str = DEFAULT_DOMAIN, ttl: int = DEFAULT_TTL, here: str | None = None
) -> Zone | None:
    """The zone of the deployed project, or None when nothing is deployed. ``here`` is the id of
    the node that answers from it: a meshed service (``Project.meshed``) is named there, at its
    proxy, whichever nodes run the instances; without it, every service is named where it runs."""
    config = desired_project(state)
    if config is None:
        return None
    origin = zone_origin(config.project.name, domain)
    records: defaultdict[str, dict[int, list[RR]]] = defaultdict(dict)

    def add(name: str, rtype: int, rdata: Any) -> None:
        rr = RR(name, rtype, rdata=rdata, ttl=ttl)
        records[_key(name)].setdefault(rtype, []).append(rr)

    nodes = state["nodes"]
    placed_of = PlacedInstances(state["placements"])
    draining = draining_of(state)
    for node in sorted(nodes.values(), key=lambda n: n["id"]):
        add(f"{node['id']}.node.{origin}", QTYPE.A, A(node["address"]))
    for service in config.project.services:
        name = service.name
        answered: set[str] = set()
        mesh_node = nodes.get(here) if here is not None and config.project.meshed(service) else None
        for instance, node_id in placed_of.placed(service):
            placed = nodes.get(node_id)
            seen = state["instances"].get(node_id, {}).get(instance)
            if placed is None or not serving(seen) or node_id in answered:
                continue  # only instances that run healthy are worth an address; a node is named once
            if drain_key(instance, node_id) in draining:
                continue  # leaving: new clients go to the others
            if mesh_node is not None:
                placed = mesh_node  # (named once: every answer is this node's proxy)
                if answered:
                    continue
            answered.add(node_id)
            add(f"{name}.{origin}", QTYPE.A, A(placed["address"]))
            port = service.host_port
            if port:
                add(f"_{name}._tcp.{origin}", QTYPE.SRV, SRV(0, 0, port, f"{placed['id']}.node.{origin}"))
    soa = RR(
        origin,
        QTYPE.SOA,
        rdata=SOA(f"ns.{origin}", f"hostmaster.{origin}", (state["generation"], 60, 30, 86400, ttl)),
        ttl=ttl,
    )
    return Zone(origin=origin, soa=soa, records=dict(records))
