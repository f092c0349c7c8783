"""Deployment history and rollback on a real local cluster: every deploy is recorded with what it
did per service and how it ended; `oct rollback` deploys the previous project again (the file
still holds the change being undone); the history survives every node being killed."""

from __future__ import annotations

import json

import pytest

from tests.e2e.harness import Project, http_get, services_by_name
from tests.e2e.test_process_flow import kill_every_node
from tests.wait import wait_until

pytestmark = pytest.mark.e2e


def history(project: Project) -> list[dict]:
    return json.loads(project.oct("history", "--json").stdout)["deployments"]


def greeting(project: Project) -> str:
    return http_get(services_by_name(project.status())["web"]["endpoint"])


def test_deploys_are_recorded_rolled_back_and_remembered_after_a_full_restart(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("examples/quickstart")
    project.oct("deploy")
    project.edit('GREETING = "Hello"', 'GREETING = "Howdy"')
    project.oct("deploy")
    assert "Howdy from oct" in greeting(project)

    second, first = history(project)
    assert first["changes"] == {"store": "started", "api": "started", "web": "started"}
    assert second["changes"] == {"store": "unchanged", "api": "unchanged", "web": "replaced"}
    assert (first["state"], second["state"], second["current"]) == ("succeeded", "succeeded", True)
    assert "project" not in second, "the recorded project (envs: secrets) is not shown"
    table = project.oct("history").stdout
    assert first["id"] in table and "web replaced" in table

    rolled = project.oct("rollback")
    assert "rolled back" in rolled.stdout and "~ web    replaced" in rolled.stdout
    assert "Hello from oct" in greeting(project), "the first project runs again, whatever the file says"
    newest = history(project)[0]
    assert (newest["rollback_of"], newest["state"], newest["current"]) == (first["id"], "succeeded", True)

    # Nothing earlier than the first deployment succeeded: naming an unknown one is refused.
    refused = project.oct("rollback", "d-nothere", check=False)
    assert refused.returncode != 0 and "no deployment d-nothere" in refused.stderr

    kill_every_node(project)
    project.oct("deploy")  # restarts the nodes from their journals (the file's change is deployed)
    wait_until(
        lambda: history(project),
        until=lambda entries: len(entries) == 4 and entries[0]["state"] == "succeeded",
        timeout=60,
        message="the history after a full restart",
    )
    assert [e["id"] for e in history(project)[1:]] == [newest["id"], second["id"], first["id"]]
