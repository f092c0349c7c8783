"""Rendering what each node runs: templated endpoints, published ports, content hashes."""

from __future__ import annotations

from octctl.config import load_config_text
from octctl.specs import Rollout, demand, instance_specs
from octctl.state.model import NodeRecord

TEXT = """
[project]
name = "shop"
[project.state_backend.local]
path = "state.json"
[[project.services]]
name = "db"
image = "postgres:16"
internal_port = 5432
cpus = 500
memory = 512
[[project.services]]
name = "app"
image = "shop:1"
command = "serve --db {{ services.db.host }}:{{ services.db.port }}"
internal_port = 8000
external_port = 80
cpus = 250
memory = 256
depends_on = ["db"]
[project.services.envs]
DB = "postgres://{{ services.db.ip }}:{{ services.db.port }}/shop"
MODE = "{{ env.MODE }}"
[[project.services]]
name = "worker"
runtime = "process"
command = "python3 worker.py"
internal_port = 9000
cpus = 100
memory = 64
"""


def nodes() -> dict[str, NodeRecord]:
    def record(node_id: str, address: str) -> NodeRecord:
        return {
            "id": node_id,
            "address": address,
            "api_port": 31888,
            "raft_port": 31889,
            "cpus": 4000,
            "memory": 4096,
            "status": "ready",
            "joined_at": 0.0,
            "last_seen": 0.0,
        }

    return {"n1": record("n1", "127.0.0.2"), "n2": record("n2", "127.0.0.3")}


#: The instance ports the leader gave the proxied services (octctl/instance_ports.py): app is
#: public, db and worker are meshed (each the only one on its internal port).
APP_PORT, DB_PORT, WORKER_PORT = 20000, 20001, 20002
PORTS = {"app": APP_PORT, "db": DB_PORT, "worker": WORKER_PORT}


def specs(text: str = TEXT, placements: dict[str, str] | None = None) -> dict:
    config = load_config_text(text, {"MODE": "prod"})
    placements = placements or {"db": "n1", "app": "n2", "worker": "n1"}
    return instance_specs(config, placements, nodes(), Rollout("d1", "c1", "/src"), PORTS)


def test_references_to_a_meshed_service_render_to_the_callers_own_node() -> None:
    app = specs()["app"]  # on n2; db runs on n1, and every node's proxy serves db's port
    assert app.env == {"DB": "postgres://127.0.0.3:5432/shop", "MODE": "prod"}
    assert app.command == ["serve", "--db", "127.0.0.3:5432"]
    assert app.node == "n2" and app.cluster == "c1" and app.deployment == "d1"


#: Two internal-only services on 5432: neither is meshed (one node cannot serve both on one port).
NODE_BOUND = TEXT.replace(
    '[[project.services]]\nname = "app"',
    '[[project.services]]\nname = "db2"\nimage = "postgres:16"\ninternal_port = 5432\n'
    'cpus = 100\nmemory = 64\n[[project.services]]\nname = "app"',
)


def test_references_to_a_node_bound_service_render_to_its_node() -> None:
    placements = {"db": "n1", "db2": "n2", "app": "n2", "worker": "n1"}
    app = specs(NODE_BOUND, placements)["app"]
    assert app.env["DB"] == "postgres://127.0.0.2:5432/shop"


def test_ports_are_published_on_the_node_address() -> None:
    result = specs()
    # app is public: its instance listens on its instance port; port 80 is the ingress's, on every node.
    assert [(p.host_ip, p.host_port, p.container_port) for p in result["app"].ports] == [
        ("127.0.0.3", APP_PORT, 8000)
    ]
    # db is meshed: its instance port is published, 5432 is the proxies', on every node.
    assert [(p.host_ip, p.host_port, p.container_port) for p in result["db"].ports] == [
        ("127.0.0.2", DB_PORT, 5432)
    ]
    project = load_config_text(TEXT, {"MODE": "x"}).project
    assert [project.claimed_port(s) for s in project.services] == [None, None, None]
    # A port several services share is claimed on the node, which keeps them apart.
    bound = load_config_text(NODE_BOUND, {"MODE": "x"}).project
    assert bound.claimed_port(bound.services[0]) == 5432 and bound.proxy_port(bound.services[0]) is None
    assert demand(bound.services[0], "db", 5432).host_ports == frozenset({5432})
    node_bound = specs(NODE_BOUND, {"db": "n1", "db2": "n2", "app": "n2", "worker": "n1"})
    assert [(p.host_ip, p.host_port) for p in node_bound["db"].ports] == [("127.0.0.2", 5432)]


def test_process_services_get_host_port_and_workdir() -> None:
    worker = specs()["worker"]
    assert worker.workdir == "/src" and worker.ports == []
    assert worker.env["HOST"] == "127.0.0.2" and worker.env["PORT"] == str(WORKER_PORT)
    assert worker.env["OCT_SERVICE"] == "worker" and worker.env["OCT_PROJECT"] == "shop"
    assert worker.env["OCT_DNS"] == "127.0.0.2:53" and worker.env["OCT_DOMAIN"] == "shop.oct"


def test_hash_changes_only_for_the_service_that_changed() -> None:
    before = specs()
    after = specs(TEXT.replace('MODE = "{{ env.MODE }}"', 'MODE = "debug"'))
    assert after["app"].spec_hash != before["app"].spec_hash
    assert after["db"].spec_hash == before["db"].spec_hash
    assert after["worker"].spec_hash == before["worker"].spec_hash
    # The deployment id is not content: a new deployment of the same spec changes no hash.
    config = load_config_text(TEXT, {"MODE": "prod"})
    again = instance_specs(
        config,
        {"db": "n1", "app": "n2", "worker": "n1"},
        nodes(),
        Rollout("d2", "c1", "/src"),
        PORTS,
    )
    assert {k: v.spec_hash for k, v in again.items()} == {k: v.spec_hash for k, v in before.items()}


def test_moving_a_meshed_dependency_restarts_none_of_its_dependents() -> None:
    before = specs()
    moved = specs(placements={"db": "n2", "app": "n2", "worker": "n1"})
    assert moved["app"].spec_hash == before["app"].spec_hash


def test_moving_a_node_bound_dependency_changes_its_dependents() -> None:
    before = specs(NODE_BOUND, {"db": "n1", "db2": "n2", "app": "n2", "worker": "n1"})
    moved = specs(NODE_BOUND, {"db": "n2", "db2": "n1", "app": "n2", "worker": "n1"})
    assert moved["app"].env["DB"] == "postgres://127.0.0.3:5432/shop"
    assert moved["app"].spec_hash != before["app"].spec_hash


def test_a_service_waits_while_what_it_references_is_unplaced() -> None:
    result = specs(placements={"app": "n2", "worker": "n1"})
    assert "app" not in result and "worker" in result


def test_containers_find_each_other_by_name() -> None:
    # No provider section means AWS: real nodes, so containers use the node's DNS server.
    result = specs()
    assert result["app"].dns == ["127.0.0.3"] and result["app"].dns_search == ["shop.oct"]
    assert result["app"].network is None
    assert result["worker"].dns == [], "processes use the host's resolver"
    # On a local cluster, containers share the cluster's network and are known by their names there.
    local = specs(
        TEXT.replace('path = "state.json"', 'path = "state.json"\n[project.provider.local]\nnodes = 2')
    )
    assert local["db"].network == "oct-c1"
    assert local["db"].aliases == ["db", "db.shop.oct"]
    assert local["db"].dns == []


def test_containers_on_a_local_cluster_get_names_they_can_reach() -> None:
    text = TEXT.replace('path = "state.json"', 'path = "state.json"\n[project.provider.local]\nnodes = 2')
    local = specs(text)
    # app (a container) reaches db by its name on the cluster network, at the port db listens on.
    # .ip is the own node's address for containers (its 127.0.0.N is a container's own
    # loopback), where the node's proxy serves db.
    assert local["app"].env["DB"] == "postgres://198.18.0.3:5432/shop"
    assert local["app"].command == ["serve", "--db", "db.shop.oct:5432"]  # .host is the name
    # A process gets its own node's address, where the node's proxy serves db.
    worker_text = text.replace(
        'command = "python3 worker.py"', 'command = "python3 worker.py {{ services.db.host }}"'
    )
    placements = {"db": "n2", "app": "n2", "worker": "n1"}
    assert specs(worker_text, placements)["worker"].command == ["python3", "worker.py", "127.0.0.2"]


def test_a_proxied_service_waits_for_its_instance_port() -> None:
    config = load_config_text(TEXT, {"MODE": "prod"})
    placed = instance_specs(
        config,
        {"db": "n1", "app": "n2", "worker": "n1"},
        nodes(),
        Rollout("d1", "c1", "/src"),
        {"db": DB_PORT},
    )
    assert sorted(placed) == ["db"]
