"""``oct plan`` against a running 3-node cluster (the quickstart): nothing to do right after a
deploy; then one env var changed, a service added and one removed, replicas raised and a node
more, each shown per service on the cluster's real nodes, the env value never; the exit codes of
``--detailed-exitcode``; the ``--json`` output against its published schema; and the deploy that
follows puts the instances where the plan said. ``oct deploy`` on a terminal shows the same
summary first."""

from __future__ import annotations

import json
import os
import subprocess

import jsonschema
import pytest

from octcli.plan import DeployPlan
from tests.e2e.harness import OCT, REPO, Project, services_by_name

pytestmark = pytest.mark.e2e

SCHEMA = json.loads((REPO / "docs" / "schemas" / "plan.schema.json").read_text())
SECRET = "a-new-secret-greeting"
CACHE = """
[[project.services]]
name = "cache"
runtime = "process"
command = "sleep 3600"
cpus = 100
memory = 32
"""


def plan(project: Project) -> tuple[int, dict]:
    done = project.oct("plan", "--json", "--detailed-exitcode", check=False)
    assert done.returncode in (0, 2), done.stderr
    found = json.loads(done.stdout)
    jsonschema.validate(found, SCHEMA)
    return done.returncode, found


def by_name(found: dict) -> dict[str, dict]:
    return {s["name"]: s for s in found["diff"]["services"]}


def test_plan_is_a_diff_against_the_running_cluster(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("examples/quickstart")
    first = project.oct("plan", "--detailed-exitcode", check=False)
    assert first.returncode == 2 and "node-1" in first.stdout  # nothing runs: a first deploy's plan
    project.oct("deploy")
    nodes = {n["id"] for n in project.status()["nodes"]}

    code, found = plan(project)
    assert code == 0 and found["changed"] is False and found["diff"]["changed"] is False
    assert {s["change"] for s in found["diff"]["services"]} == {"unchanged"}
    assert found["diff"]["deployment"] == project.status()["deployment"]["id"]

    # One env var: web is replaced, and its value is shown to nobody.
    project.edit('GREETING = "Hello"', f'GREETING = "{SECRET}"')
    code, found = plan(project)
    web = by_name(found)["web"]
    assert code == 2 and web["change"] == "replace"
    assert web["fields"] == [
        {"field": "envs.GREETING", "before": "(sensitive value)", "after": "(sensitive value)"}
    ]
    assert by_name(found)["api"]["change"] == "unchanged"
    text = project.oct("plan").stdout
    assert SECRET not in text and SECRET not in json.dumps(found) and "-/+ replace web" in text

    # A service added, one removed, replicas raised, a fourth node: each where it would really go.
    config = project.config.read_text()
    web_block = config[config.index('[[project.services]]\nname = "web"') :]
    project.config.write_text(
        config.replace(web_block, "")
        .replace("nodes = 3", "nodes = 4")
        .replace('name = "store"\nruntime = "process"', 'name = "store"\nruntime = "process"\nreplicas = 2')
        + CACHE
    )
    code, found = plan(project)
    services = by_name(found)
    assert code == 2
    assert services["web"]["change"] == "remove" and services["web"]["instances"][0]["node"] is None
    assert services["web"]["instances"][0]["was"] in nodes
    assert services["cache"]["change"] == "create" and services["cache"]["instances"][0]["node"] in nodes | {
        "new-1"
    }
    store = services["store"]
    assert store["change"] == "update" and store["fields"] == [{"field": "replicas", "before": 1, "after": 2}]
    placed = {i["name"]: i["node"] for i in store["instances"]}
    assert placed["store"] == store["instances"][0]["was"] and placed["store.2"] not in (
        None,
        placed["store"],
    )
    assert found["diff"]["launch"] == ["new-1"] and found["diff"]["nodes_after"] == 4
    shown = project.oct("plan").stdout
    for line in (
        "- remove  web",
        "+ create  cache",
        "~ update  store",
        "replicas: 1 -> 2",
        "nodes: 3 -> 4 (launch new-1)",
    ):
        assert line in shown, shown

    # The deploy that follows: the instances on existing nodes go where the plan said.
    planned = {i["name"]: i["node"] for s in found["diff"]["services"] for i in s["instances"] if i["node"]}
    project.oct("deploy")
    status = project.status()
    running = {i["name"]: i["node"] for s in status["services"] for i in s["instances"]}
    for instance, node in planned.items():
        if not node.startswith("new-"):
            assert running[instance] == node, (instance, running, planned)
    assert len(status["nodes"]) == 4 and set(services_by_name(status)) == {"store", "api", "cache"}
    assert plan(project)[0] == 0


def test_deploy_on_a_terminal_shows_the_plan_first(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("examples/quickstart")
    project.oct("deploy")
    project.edit('GREETING = "Hello"', 'GREETING = "Hi"')
    on_terminal = {**os.environ, "FORCE_COLOR": "1", "NO_COLOR": "", "COLUMNS": "120"}
    done = subprocess.run(
        [*OCT, "deploy", "-c", str(project.config)],
        capture_output=True,
        text=True,
        timeout=300,
        env=on_terminal,
    )
    assert done.returncode == 0, done.stderr
    head = done.stderr[: done.stderr.index("replace")]
    assert "against deployment" in head and "submitting" not in head  # shown before it acts
    assert DeployPlan.model_validate_json(project.oct("plan", "--json").stdout).changed is False
