"""`oct logs SERVICE --access` on a real local cluster: every node serves the quickstart's web, so
each holds part of its access log; the command gathers them, by time, each line marked with the
node that served the request; a service the ingress does not serve is refused with the reason."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Project, http_get, services_by_name
from tests.wait import wait_until

pytestmark = pytest.mark.e2e


def test_the_access_log_of_a_service_comes_from_every_node_that_served_it(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("examples/quickstart")
    project.oct("deploy")
    status = project.status()
    web = services_by_name(status)["web"]
    others = [n for n in status["nodes"] if n["id"] != web["node"]][:2]
    for node in others:
        assert "Hello from oct" in http_get(f"http://{node['address']}:9100/?token=secret")

    lines = wait_until(
        lambda: project.oct("logs", "web", "--access").stdout.splitlines(),
        until=lambda found: {line.split()[0] for line in found} >= {n["id"] for n in others},
        timeout=20,
        message="both nodes' lines",
    )
    assert all(" tcp " in line for line in lines), lines  # web's external_port is forwarded at layer 4
    assert "secret" not in "\n".join(lines)

    refused = project.oct("logs", "store", "--access", check=False)
    assert refused.returncode != 0 and "no external_port" in refused.stderr
    missing = project.oct("logs", "nothere", "--access", check=False)
    assert missing.returncode != 0 and "not deployed" in missing.stderr
