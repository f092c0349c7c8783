"""What a node's ingress serves, from its replica: every placed public service, on every node, to
the instance port of the node that runs it; nothing for a service that publishes nothing; a port
several services share only on each sharer's node, for that sharer; with a domain served over
HTTPS, its sites on 80 and 443 with their certificates and challenges."""

from __future__ import annotations

import copy

import pytest

from octctl.ingress.haproxy import render
from octctl.ingress.routes import IngressRoutes, Route, Site, Upstream, Web
from octctl.served_routes import routes_from_state
from octctl.state.model import ClusterState, apply_command, command
from tests.dns.test_zone import node
from tests.unit.test_desired import state


def test_every_node_serves_each_public_service_at_its_instance() -> None:
    current = state()  # web (public, 8081) and lonely (external_port without internal_port) on node-2
    current["nodes"]["node-3"] = node(3)
    current["instance_ports"] = {"web": 20000}
    current["project"]["project"]["domain"] = None  # type: ignore[index]
    web = Route("web", 8081, "tcp", (Upstream("127.0.0.2", 20000),))
    assert routes_from_state(current, "127.0.0.2") == IngressRoutes("127.0.0.2", (web,))
    assert routes_from_state(current, "127.0.0.3") == IngressRoutes("127.0.0.3", (web,))  # not its node


def test_a_service_with_an_http_check_is_proxied_request_by_request() -> None:
    """Its check says it speaks HTTP there, so a request a dying instance took can be sent again."""
    current = state()
    current["instance_ports"] = {"web": 20000}
    current["project"]["project"]["domain"] = None  # type: ignore[index]
    for check, mode in (({"http": "/up"}, "http"), ({"tcp": True}, "tcp")):
        project = copy.deepcopy(current["project"])
        project["project"]["services"][1]["healthcheck"] = check  # type: ignore[index]
        current["project"] = project  # (a new object: the parsed project is cached by identity)
        assert [r.mode for r in routes_from_state(current, "127.0.0.2").routes] == [mode]


def test_nothing_is_served_before_a_port_is_assigned_or_after_destroy() -> None:
    current = state()
    assert routes_from_state(current, "127.0.0.2").routes == ()  # placed, no instance port yet
    current["instance_ports"] = {"web": 20000}
    current["project"] = None
    assert routes_from_state(current, "127.0.0.2").routes == ()


NAME = "web.shop.example.com"
TOKEN = "t" * 32
ANSWER = f"{TOKEN}.{'k' * 43}"


def https_state(**acme: object) -> ClusterState:
    current = state()  # domain shop.example.com, on AWS (no provider section): HTTPS by default
    current["instance_ports"] = {"web": 20000}
    project = current["project"]["project"]  # type: ignore[index]
    if acme:
        project["acme"] = acme
    return current


def test_a_domain_on_aws_serves_each_public_service_as_a_site_over_plain_http_until_its_certificate() -> None:
    current = https_state()
    upstream = Upstream("127.0.0.2", 20000)
    routes = routes_from_state(current, "127.0.0.3")
    assert routes.web == Web((Site("web", (NAME,), (upstream,)),))
    assert routes.routes == (Route("web", 8081, "tcp", (upstream,)),), "its external_port is still served"

    apply_command(current, command("acme_challenges", add={TOKEN: ANSWER}, remove=[]))
    record = {"names": [NAME], "fullchain": "CHAIN\n", "key": "KEY\n", "not_before": 0.0, "not_after": 1.0}
    apply_command(current, command("certificate", service="web", certificate=record))
    web = routes_from_state(current, "127.0.0.3").web
    assert web is not None and web.challenges == ((TOKEN, ANSWER),)
    assert web.secure == (Site("web", (NAME,), (upstream,), "CHAIN\nKEY\n"),)

    config = render(routes_from_state(current, "127.0.0.3"), certificates=None)
    assert f'string "{ANSWER}" if {{ path /.well-known/acme-challenge/{TOKEN} }}' in config
    assert (
        "bind 127.0.0.3:443 ssl crt None/" in config
        and "redirect scheme https code 301 if site_web" in config
    )


def test_a_certificate_for_other_names_is_not_served() -> None:
    current = https_state()
    current["project"]["project"]["services"][1]["apex"] = True  # type: ignore[index]
    record = {"names": [NAME], "fullchain": "C", "key": "K", "not_before": 0.0, "not_after": 1.0}
    apply_command(current, command("certificate", service="web", certificate=record))
    web = routes_from_state(current, "127.0.0.2").web
    assert web is not None and web.sites[0].names == (NAME, "shop.example.com") and web.secure == ()


def test_a_local_cluster_serves_https_only_with_an_acme_section() -> None:
    for acme, served in [({}, False), ({"directory": "https://ca.test/directory"}, True)]:
        current = https_state(**acme)
        current["project"]["project"]["provider"] = {"local": {}}  # type: ignore[index]
        assert (routes_from_state(current, "127.0.0.2").web is not None) is served


def test_the_service_on_port_80_answers_every_other_name_there_over_http() -> None:
    current = https_state()
    current["project"]["project"]["services"][1]["external_port"] = 80  # type: ignore[index]
    routes = routes_from_state(current, "127.0.0.2")
    assert routes.routes == ()
    assert routes.web is not None and routes.web.fallback == Route(
        "web", 80, "http", (Upstream("127.0.0.2", 20000),)
    )


@pytest.mark.parametrize(
    "challenge",
    [("short", ANSWER), (TOKEN, 'x" if TRUE\n    server evil 10.0.0.1:80'), (TOKEN + "\n", ANSWER)],
)
def test_a_challenge_that_is_not_base64url_never_reaches_the_configuration(
    challenge: tuple[str, str],
) -> None:
    with pytest.raises(ValueError, match="base64url"):
        Web(challenges=(challenge,))


def test_a_site_name_that_is_no_host_name_is_refused() -> None:
    with pytest.raises(ValueError, match="host names"):
        Site("web", ("web.example.com\n    server evil 10.0.0.1:80",))


def shared_port_state() -> ClusterState:
    """Three services sharing external_port 80 (host-bound), one per node, and a public one alone."""
    current = state()
    current["project"]["project"]["domain"] = None  # type: ignore[index]
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
