"""Health checks on a real 3-node local cluster (the quickstart, process runtime): the node that runs
an instance probes it and reports the verdict on its agent route, which the leader polls; a check
that fails gets the instance restarted by its node."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Project, node_files_client, services_by_name
from tests.wait import wait_until

pytestmark = pytest.mark.e2e

WEB_CHECK = """GREETING = "Hello"

[project.services.healthcheck]
http = "/"
interval = 0.5
timeout = 0.4
start_period = 5
"""


def web_instance(project: Project, node: str) -> dict | None:
    """What the agent of ``node`` reports about web (the route the leader polls)."""
    with node_files_client(project.dir / ".oct" / "nodes" / node) as client:
        response = client.get("/v1/agent/instances", params={"project": "quickstart"})
        response.raise_for_status()
    return next((i for i in response.json()["instances"] if i["service"] == "web"), None)


def test_an_http_check_makes_the_instance_healthy_and_a_failing_one_restarts_it(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.edit('GREETING = "Hello"\n', WEB_CHECK)
    project.oct("deploy")
    node = services_by_name(project.status())["web"]["node"]

    web = wait_until(
        lambda: web_instance(project, node),
        until=lambda i: i is not None and i["health"] == "healthy",
        message=project.node_logs,
    )
    assert web is not None
    assert web["health_output"].startswith("HTTP 200 from GET /: <h1>Hello from oct</h1>")
    assert web["health_changed_at"] is not None and web["restarts"] == 0
    store = services_by_name(project.status())["store"]["node"]
    with node_files_client(project.dir / ".oct" / "nodes" / store) as client:
        others = client.get("/v1/agent/instances", params={"project": "quickstart"}).json()["instances"]
    assert {i["service"]: i["health"] for i in others}["store"] == "none"  # no check: running is what counts

    # A check that can never pass: the node restarts web (a deploy may or may not see it settle).
    # No automatic rollback here: it would put the passing version back before we look. A check
    # that never passes needs no grace (no start period, one failure is enough): the deploy ends
    # only once web was restarted a few times, and 5 s + 3 probes per restart made it ~30 s.
    project.edit('http = "/"\n', 'command = "false"\n')
    project.edit("start_period = 5\n", "start_period = 0\nretries = 1\n")
    project.config.write_text(
        project.config.read_text() + "\n[project.services.update]\nauto_rollback = false\n"
    )
    project.oct("deploy", check=False)
    node = services_by_name(project.status())["web"]["node"]
    web = wait_until(
        lambda: web_instance(project, node),
        until=lambda i: i is not None and i["restarts"] >= 1 and i["health_output"] == "exit 1",
        timeout=60,
        message=project.node_logs,
    )
    assert web is not None and web["health"] in ("starting", "unhealthy")
