"""The zone computed from a replica's state: which names exist and what they answer."""

from __future__ import annotations

from dnslib import QTYPE

from octctl.dns.zone import build_zone
from octctl.state.model import ClusterState, NodeRecord, empty_state


def node(n: int) -> NodeRecord:
    return {
        "id": f"node-{n}",
        "address": f"127.0.0.{n}",
        "api_port": 31888,
        "raft_port": 31889,
        "cpus": 1000,
        "memory": 1024,
        "status": "ready",
        "joined_at": 0.0,
        "last_seen": 0.0,
    }


def state() -> ClusterState:
    s = empty_state()
    s["nodes"] = {"node-2": node(2), "node-3": node(3)}
    s["project"] = {
        "project": {
            "name": "shop",
            "state_backend": {"local": {"path": "state.json"}},
            "services": [
                {"name": "app_1", "runtime": "docker", "internal_port": 8000, "cpus": 1, "memory": 1},
                {
                    "name": "web",
                    "runtime": "docker",
                    "internal_port": 80,
                    "external_port": 8080,
                    "cpus": 1,
                    "memory": 1,
                },
                {"name": "worker", "runtime": "docker", "cpus": 1, "memory": 1},
                {"name": "starting", "runtime": "process", "internal_port": 9000, "cpus": 1, "memory": 1},
            ],
        }
    }
    s["placements"] = {"app_1": "node-2", "web": "node-3", "worker": "node-3", "starting": "node-2"}
    s["instances"] = {
        "node-2": {"app_1": {"state": "running"}, "starting": {"state": "starting"}},
        "node-3": {"web": {"state": "running"}, "worker": {"state": "running"}},
    }
    return s


def texts(rrs: list) -> list[str]:  # type: ignore[type-arg]
    return [str(rr.rdata) for rr in rrs]


def test_services_resolve_to_the_node_running_them() -> None:
    zone = build_zone(state())
    assert zone is not None and zone.origin == "shop.oct."
    assert texts(zone.lookup("app_1.shop.oct", QTYPE.A).answers) == ["127.0.0.2"]
    assert texts(zone.lookup("WEB.Shop.OCT.", QTYPE.A).answers) == ["127.0.0.3"]  # case-insensitive
    assert texts(zone.lookup("worker.shop.oct", QTYPE.A).answers) == ["127.0.0.3"]


def test_srv_gives_the_port_and_the_node_with_its_address() -> None:
    zone = build_zone(state())
    assert zone is not None
    found = zone.lookup("_web._tcp.shop.oct", QTYPE.SRV)
    assert texts(found.answers) == ["0 0 8080 node-3.node.shop.oct."]
    assert texts(found.additional) == ["127.0.0.3"]
    assert texts(zone.lookup("_app_1._tcp.shop.oct", QTYPE.SRV).answers) == ["0 0 8000 node-2.node.shop.oct."]
    # A service without a port has an address but no SRV.
    assert zone.lookup("_worker._tcp.shop.oct", QTYPE.SRV).exists is False


def test_nodes_have_names() -> None:
    zone = build_zone(state())
    assert zone is not None
    assert texts(zone.lookup("node-3.node.shop.oct", QTYPE.A).answers) == ["127.0.0.3"]


def test_unknown_names_are_nxdomain_with_soa_and_known_ones_nodata() -> None:
    zone = build_zone(state())
    assert zone is not None
    missing = zone.lookup("nope.shop.oct", QTYPE.A)
    assert missing.authoritative and not missing.exists and missing.authority == [zone.soa]
    not_running = zone.lookup("starting.shop.oct", QTYPE.A)
    assert not not_running.exists, "an instance that does not run has no address"
    nodata = zone.lookup("web.shop.oct", QTYPE.AAAA)
    assert nodata.exists and nodata.answers == [] and nodata.authority == [zone.soa]
    assert zone.lookup("node.shop.oct", QTYPE.A).exists  # empty non-terminal
    assert texts(zone.lookup("shop.oct", QTYPE.SOA).answers)[0].startswith("ns.shop.oct.")


def test_outside_the_zone_is_not_ours() -> None:
    zone = build_zone(state(), domain="internal", ttl=30)
    assert zone is not None and zone.origin == "shop.internal."
    assert not zone.lookup("example.com", QTYPE.A).authoritative
    assert not zone.lookup("shop.oct", QTYPE.A).authoritative
    assert zone.lookup("web.shop.internal", QTYPE.A).answers[0].ttl == 30


def test_nothing_deployed_means_no_zone() -> None:
    assert build_zone(empty_state()) is None
