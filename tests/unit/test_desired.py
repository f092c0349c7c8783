"""One rule per fact: every reader of the desired project agrees on what a service publishes.

A docker service with ``external_port`` but no ``internal_port`` publishes nothing (as in the
reference: there is no container port to map). ``oct status`` used to show an endpoint for it
from its own reading of the raw JSON; the zone, the specs and public DNS each had a rule of their
own. Now they all read the typed model, parsed once per state version.
"""

from __future__ import annotations

from dnslib import QTYPE

from octctl.dns.zone import build_zone
from octctl.server.views import status_view
from octctl.specs import demand, endpoints, public_names, serving_nodes
from octctl.state.desired import desired_project
from octctl.state.model import ClusterState, empty_state, snapshot
from tests.dns.test_zone import node


def state() -> ClusterState:
    s = empty_state()
    s["nodes"] = {"node-2": node(2)}
    s["project"] = {
        "project": {
            "name": "shop",
            "domain": "shop.example.com",
            "state_backend": {"local": {"path": "state.json"}},
            "services": [
                # external_port without internal_port: nothing to publish
                {"name": "lonely", "image": "busybox", "external_port": 8080, "cpus": 1, "memory": 1},
                {
                    "name": "web",
                    "image": "busybox",
                    "internal_port": 80,
                    "external_port": 8081,
                    "cpus": 1,
                    "memory": 1,
                },
            ],
        }
    }
    s["placements"] = {"lonely": "node-2", "web": "node-2"}
    s["instances"] = {"node-2": {"lonely": {"state": "running"}, "web": {"state": "running"}}}
    return s


def test_a_docker_service_without_internal_port_publishes_nothing_anywhere() -> None:
    current = state()
    config = desired_project(current)
    assert config is not None
    lonely, web = config.project.services

    status = {s.name: s for s in status_view(current, "node-2", "node-2").services}
    assert status["lonely"].endpoint is None, "oct status shows no endpoint for it"
    assert status["web"].endpoint == "http://127.0.0.2:8081"

    zone = build_zone(current)
    assert zone is not None
    assert zone.lookup("lonely.shop.oct.", QTYPE.A).answers, "it runs: it has an address"
    assert not zone.lookup("_lonely._tcp.shop.oct.", QTYPE.SRV).answers, "but no port"
    assert zone.lookup("_web._tcp.shop.oct.", QTYPE.SRV).answers

    serving = serving_nodes(config, current["placements"], ["node-2"])
    assert serving == {"web": ("node-2",)}, "lonely publishes nothing: nobody serves it"
    assert public_names(config, serving) == {"web.shop.example.com": ("node-2",)}
    # Neither claims a port of its node: web's external port is the ingress's, on every node.
    assert demand(lonely).host_ports == frozenset() and demand(web).host_ports == frozenset()
    found = endpoints(config, current["placements"], current["nodes"])
    assert found["lonely"]["port"] == "" and found["web"]["port"] == 8081


def test_the_project_is_parsed_once_per_state_version() -> None:
    current = state()
    first = desired_project(current)
    assert desired_project(current) is first, "the same view: not parsed again"
    assert desired_project(snapshot(current)) is first, "an equal copy: not parsed again"
    changed = snapshot(current)
    changed["project"]["project"]["services"][1]["external_port"] = 9090  # type: ignore[index]
    second = desired_project(changed)
    assert second is not first and second is not None
    assert second.project.services[1].external_port == 9090
    assert desired_project(empty_state()) is None
