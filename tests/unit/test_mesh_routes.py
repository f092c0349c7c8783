"""The mesh as each node computes it from its replica (``routes_from_state`` with a mesh port): a
meshed internal service served on every node at its port; an instance on another node reached
through that node's mesh port by server name, a backup while one runs here; this node's own
instances as the mesh's inbound side; the node certificate naming what it serves; DNS naming the
asking node."""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE

from octctl.dns.zone import build_zone
from octctl.ingress.haproxy import MeshFiles, render
from octctl.ingress.routes import Inbound, Route, Upstream
from octctl.mesh import MeshIdentity
from octctl.served_routes import routes_from_state
from octctl.state.model import ClusterState, empty_state
from octctl.tls import certificate_names, new_ca
from tests.dns.test_zone import node

MESH = 31890


def service(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "cpus": 1, "memory": 1, **extra}


def mesh_state(*services: dict[str, Any], placements: dict[str, str], ports: dict[str, int]) -> ClusterState:
    s = empty_state()
    s["nodes"] = {f"node-{n}": node(n) for n in (2, 3, 4)}
    s["project"] = {
        "project": {
            "name": "shop",
            "state_backend": {"local": {"path": "state.json"}},
            "services": list(services),
        }
    }
    s["placements"] = placements
    s["instance_ports"] = ports
    s["instances"] = {}
    for instance, at in placements.items():
        s["instances"].setdefault(at, {})[instance] = {"state": "running"}
    return s


def test_an_internal_service_is_served_on_every_node_and_crosses_nodes_by_server_name() -> None:
    current = mesh_state(service("db", internal_port=5432), placements={"db": "node-2"}, ports={"db": 20000})
    here = routes_from_state(current, "127.0.0.2", mesh_port=MESH)
    there = routes_from_state(current, "127.0.0.3", mesh_port=MESH)
    assert here.routes == (Route("db", 5432, "tcp", (Upstream("127.0.0.2", 20000),)),)
    assert there.routes == (Route("db", 5432, "tcp", (Upstream("127.0.0.2", 20000, "20000.db.shop.mesh"),)),)
    # db's node takes hops for its instance (at either port of its pair), and is certified for db.
    assert here.mesh is not None and here.mesh.names == ("db.shop.mesh",)
    assert here.mesh.inbound == (Inbound("20000.db.shop.mesh", 20000), Inbound("25000.db.shop.mesh", 25000))
    assert there.mesh is not None and there.mesh.inbound == () and there.mesh.names == ()
    # Without a mesh port (no certificates), another node's instance is reached at its own port.
    assert routes_from_state(current, "127.0.0.3").routes[0].upstreams == (Upstream("127.0.0.2", 20000),)


def test_an_internal_service_prefers_its_instance_on_the_callers_node_and_a_public_one_does_not() -> None:
    placements = {"db": "node-2", "db.2": "node-3", "web": "node-2", "web.2": "node-3"}
    ports = {"db": 20000, "db.2": 20000, "web": 20001, "web.2": 20001}
    current = mesh_state(
        service("db", internal_port=5432, replicas=2),
        service("web", internal_port=80, external_port=8080, replicas=2),
        placements=placements,
        ports=ports,
    )
    db, web = routes_from_state(current, "127.0.0.2", mesh_port=MESH).routes
    assert db.upstreams == (
        Upstream("127.0.0.2", 20000),
        Upstream("127.0.0.3", 20000, "20000.db.shop.mesh", backup=True),
    )
    assert web.upstreams == (
        Upstream("127.0.0.2", 20001),
        Upstream("127.0.0.3", 20001, "20001.web.shop.mesh"),
    )
    # From a node running neither, both are reached through the mesh, neither as a backup.
    db, _ = routes_from_state(current, "127.0.0.4", mesh_port=MESH).routes
    assert {u.backup for u in db.upstreams} == {False} and all(u.via for u in db.upstreams)


def test_an_internal_port_two_services_claim_is_node_bound_and_not_meshed() -> None:
    current = mesh_state(
        service("a", internal_port=8000),
        service("b", internal_port=8000),
        placements={"a": "node-2", "b": "node-3"},
        ports={},
    )
    routes = routes_from_state(current, "127.0.0.2", mesh_port=MESH)
    assert routes.routes == () and routes.empty


def test_the_configuration_requires_certificates_of_the_cluster_ca_both_ways() -> None:
    current = mesh_state(
        service("db", internal_port=5432, replicas=2),
        placements={"db": "node-2", "db.2": "node-3"},
        ports={"db": 20000, "db.2": 20000},
    )
    routes = routes_from_state(current, "127.0.0.2", mesh_port=MESH)
    files = MeshFiles(credentials="/m/node.pem", ca="/m/ca.pem")  # type: ignore[arg-type]
    config = render(routes, mesh_files=files)
    assert "bind 127.0.0.2:31890 ssl crt /m/node.pem ca-file /m/ca.pem verify required" in config
    assert (
        "server 127.0.0.3_20000 127.0.0.3:31890 ssl crt /m/node.pem ca-file /m/ca.pem verify required"
        " verifyhost 20000.db.shop.mesh sni str(20000.db.shop.mesh) check backup"
    ) in config
    assert "use_backend mesh.db_20000 if { ssl_fc_sni -m str 20000.db.shop.mesh }" in config
    assert (
        "tcp-request content reject unless { ssl_fc_sni -m str 20000.db.shop.mesh 25000.db.shop.mesh }"
        in config
    )


def test_a_node_certificate_names_the_services_it_serves_and_is_kept_while_they_stay() -> None:
    ca_key, ca_cert = new_ca("c-test")
    identity = MeshIdentity("node-2", "127.0.0.2", ca_key, ca_cert)
    first = identity.credentials(("db.shop.mesh",))
    assert identity.credentials(("db.shop.mesh",)) is first
    common, names = certificate_names(first)
    assert common == "node-2" and names == ["127.0.0.2", "*.db.shop.mesh", "node-2"]
    again = identity.credentials(("db.shop.mesh", "web.shop.mesh"))
    assert certificate_names(again)[1] == ["127.0.0.2", "*.db.shop.mesh", "*.web.shop.mesh", "node-2"]


def test_dns_names_the_asking_node_for_a_meshed_service_and_the_running_node_otherwise() -> None:
    current = mesh_state(
        service("db", internal_port=5432, replicas=2),
        service("a", internal_port=8000),
        service("b", internal_port=8000),
        placements={"db": "node-2", "db.2": "node-3", "a": "node-2", "b": "node-3"},
        ports={"db": 20000, "db.2": 20000},
    )
    zone = build_zone(current, here="node-4")
    assert zone is not None

    def addresses(name: str) -> list[str]:
        return [str(rr.rdata) for rr in zone.lookup(f"{name}.shop.oct.", QTYPE.A).answers]

    assert addresses("db") == ["127.0.0.4"], "its proxy serves db, wherever db runs"
    srv = zone.lookup("_db._tcp.shop.oct.", QTYPE.SRV).answers
    assert [(rr.rdata.port, str(rr.rdata.target)) for rr in srv] == [(5432, "node-4.node.shop.oct.")]
    assert addresses("a") == ["127.0.0.2"] and addresses("b") == ["127.0.0.3"], "node-bound: where it runs"
    # No instance serving: no address, not even the asking node's.
    current["instances"] = {"node-2": {"db": {"state": "exited"}}, "node-3": {"db.2": {"state": "exited"}}}
    gone = build_zone(current, here="node-4")
    assert gone is not None and not gone.lookup("db.shop.oct.", QTYPE.A).answers


def test_allow_admits_only_the_named_services_instances_on_this_node() -> None:
    current = mesh_state(
        service("db", internal_port=5432, allow=["api", "worker"]),
        service("api", internal_port=8000, replicas=2),
        service("other", internal_port=8001),
        service("worker", runtime="process", command="python3 w.py"),
        placements={
            "db": "node-2",
            "api": "node-3",
            "api.2": "node-4",
            "other": "node-3",
            "worker": "node-4",
        },
        ports={"db": 20000, "api": 20000, "api.2": 20000, "other": 20001},
    )
    current["instances"]["node-3"]["api"]["addresses"] = ["172.18.0.5", "not an address"]
    current["instances"]["node-3"]["other"]["addresses"] = ["172.18.0.6"]
    current["instances"]["node-4"]["api.2"]["addresses"] = ["172.18.0.7"]

    def allowed(address: str) -> tuple[str, ...] | None:
        return next(
            r for r in routes_from_state(current, address, mesh_port=MESH).routes if r.service == "db"
        ).allowed

    assert allowed("127.0.0.3") == ("172.18.0.5",), "api's container here; not other's"
    # A process calls from its node's address: the node's processes pass with the allowed one.
    assert allowed("127.0.0.4") == ("127.0.0.4", "172.18.0.7")
    assert allowed("127.0.0.2") == (), "no allowed caller here: everyone is refused"
    api = next(
        r for r in routes_from_state(current, "127.0.0.3", mesh_port=MESH).routes if r.service == "api"
    )
    assert api.allowed is None, "no allow: every service may call it"

    files = MeshFiles(credentials="/m/node.pem", ca="/m/ca.pem")  # type: ignore[arg-type]
    assert "tcp-request content reject unless { src 172.18.0.5 }" in render(
        routes_from_state(current, "127.0.0.3", mesh_port=MESH), mesh_files=files
    )
    nobody = render(routes_from_state(current, "127.0.0.2", mesh_port=MESH), mesh_files=files)
    assert "    tcp-request content reject\n" in nobody
