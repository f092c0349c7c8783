"""HTTPS on a real local cluster: a user adds a domain and an ACME CA (a real one: Caddy's
``acme_server``) to the quickstart; the leader orders the certificate, the CA checks the challenge
on a node that does not run the service, and every node then serves ``https://web.<domain>``
with it (verified against that CA's root), redirecting plain HTTP. No key in any log line.
Needs root (ports 80 and 443 of each node) and caddy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.acme_ca import AcmeCa, acme_ca
from tests.e2e.harness import Project, services_by_name
from tests.integration.http_instances import fetch_from
from tests.wait import wait_until

pytestmark = pytest.mark.e2e

DOMAIN = "example.test"
NAME = f"web.{DOMAIN}"


def test_a_domain_is_served_over_https_by_every_node_with_a_certificate_issued_over_acme(
    make_project, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("examples/quickstart")
    with acme_ca(tmp_path / "ca") as ca:
        _run(project, ca)


def _run(project: Project, ca: AcmeCa) -> None:
    project.oct("deploy")
    status = project.status()
    web = services_by_name(status)["web"]
    others = [n["address"] for n in status["nodes"] if n["id"] != web["node"]]
    # The CA reaches the name at a node that does not run web: any node answers its challenge.
    ca.point(NAME, others[0])

    (project.dir / "ca.pem").write_text(ca.root.read_text())
    acme = f'[project.acme]\ndirectory = "{ca.directory}"\nca_file = "ca.pem"\n'
    project.edit('name = "quickstart"\n', f'name = "quickstart"\ndomain = "{DOMAIN}"\n\n{acme}')
    project.oct("deploy")
    wait_until(
        lambda: services_by_name(project.status())["web"]["urls"],
        until=lambda urls: f"https://{NAME}/" in urls,
        timeout=60,
        message="the certificate of web to be issued",
    )
    trust = ca.ssl_context()
    for node in status["nodes"]:
        address = node["address"]
        # The state holds the certificate; each node's proxy takes it on its next reload, a moment later.
        wait_until(
            lambda: asyncio.run(fetch_from(address, 443, NAME, tls=trust))[2],  # noqa: B023 (called at once)
            until=lambda body: "Hello from oct" in body,
            ignore=(ConnectionRefusedError,),
            timeout=30,
            message=f"{address} to serve https://{NAME}/",
        )
        assert asyncio.run(fetch_from(address, 80, NAME, "/x")) == (301, f"https://{NAME}/x", "")
    assert "PRIVATE KEY" not in project.node_logs(), "a key in a log line"

    project.oct("destroy", "--yes")
    assert not list(project.dir.glob(".oct/**/certificates-*")), "destroy leaves no key behind"
