"""What HTTPS needs from oct.toml: a domain for ``apex`` and ``[project.acme]``, one apex service,
an https directory, port 443 left to the ingress; each mistake named at its line. And which
names each public service is served at."""

from __future__ import annotations

from octctl.config import load_config_text
from octctl.sites import Site, sites
from tests.unit.config_texts import HEADER, line_of, only_problem, problems_of, service_block

WEB = "internal_port = 80\nexternal_port = 8080\n"
ACME = '\n[project.acme]\ndirectory = "https://ca.example.net/acme/directory"\n'


def with_domain(body: str, domain: str = "shop.example.com") -> str:
    return HEADER.replace('name = "demo"\n', f'name = "demo"\ndomain = "{domain}"\n') + body


def test_apex_without_a_domain_is_refused_at_its_line() -> None:
    text = HEADER + service_block("web", WEB + "apex = true\n")
    problem = only_problem(text)
    assert (problem.path, problem.line) == ("project.services[0].apex", line_of(text, "apex = true"))
    assert "set project.domain" in problem.message


def test_apex_needs_a_public_service_and_only_one_service_has_it() -> None:
    text = with_domain(
        service_block("web", WEB + "apex = true\n")
        + service_block("shop", "internal_port = 81\nexternal_port = 8081\napex = true\n")
        + service_block("db", "internal_port = 5432\napex = true\n")
    )
    problems = {p.path: p.message for p in problems_of(text)}
    assert problems == {
        "project.services[1].apex": "only one service can have the bare domain: 'web' has it",
        "project.services[2].apex": "apex needs a public service: give it an external_port",
    }


def test_acme_settings_need_a_domain_and_an_https_directory() -> None:
    text = HEADER + '\n[project.acme]\ndirectory = "http://ca.example.net/dir"\n' + service_block("web", WEB)
    problems = {p.path: p.message for p in problems_of(text)}
    assert problems["project.acme"].startswith("certificates are for project.domain")
    assert "expected https://" in problems["project.acme.directory"]


def test_port_443_is_the_ingress_when_the_domain_is_served_over_https() -> None:
    text = with_domain(service_block("web", "internal_port = 80\nexternal_port = 443\n"))
    problem = only_problem(text)
    assert problem.path == "project.services[0].external_port" and "HTTPS port" in problem.message
    # Without a domain 443 is a port like any other.
    load_config_text(HEADER + service_block("web", "internal_port = 80\nexternal_port = 443\n"), {})


def test_sites_name_each_public_service_under_the_domain_and_the_apex() -> None:
    text = with_domain(
        service_block("web", WEB + "apex = true\n")
        + service_block("app_1", "internal_port = 81\nexternal_port = 8081\n")  # '_': no certificate
        + service_block("db", "internal_port = 5432\n")  # not public
        + ACME,
        domain="Shop.Example.com.",
    )
    config = load_config_text(text, {})
    assert sites(config) == [Site("web", ("web.shop.example.com", "shop.example.com"))]


def test_a_local_cluster_has_no_sites_without_an_acme_section() -> None:
    local = "\n[project.provider.local]\nnodes = 1\n"
    plain = load_config_text(with_domain(local + service_block("web", WEB)), {})
    assert sites(plain) == []
    served = load_config_text(with_domain(local + ACME + service_block("web", WEB)), {})
    assert [s.names for s in sites(served)] == [("web.shop.example.com",)]
    assert served.project.https is not None and served.project.https.directory.startswith("https://ca.")
