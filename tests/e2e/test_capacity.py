"""The leader asks the provider for nodes when services do not fit; driven through the Python library."""

from __future__ import annotations

import pytest

import octcli
from tests.e2e.harness import octctl_pids

pytestmark = pytest.mark.e2e

SERVICE = """
[[project.services]]
name = "{name}"
runtime = "process"
command = "python3 -c 'import time; time.sleep(600)'"
cpus = 600
memory = 64
"""


def test_services_that_do_not_fit_make_the_leader_add_nodes(make_project) -> None:  # type: ignore[no-untyped-def]
    text = """
[project]
name = "grow"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 1
cpus = 1000
memory = 1024
""" + "".join(SERVICE.format(name=f"svc{i}") for i in range(3))
    project = make_project("grow", text)
    seen: list[str] = []

    status = octcli.deploy(
        project.config, on_progress=lambda s: seen.append(s.deployment.state if s.deployment else "-")
    )
    assert status.deployment is not None and status.deployment.state == "succeeded"
    assert seen, "on_progress was never called while waiting"
    # 3 x 600 millicores on nodes of 1000: one per node, so two nodes were added to the first.
    assert len(status.nodes) == 3
    assert sorted(n.cpus_used for n in status.nodes) == [600, 600, 600]
    assert len({s.node for s in status.services}) == 3

    assert octcli.status(project.config).deployment.id == status.deployment.id  # type: ignore[union-attr]
    octcli.destroy(project.config, approve=True)
    assert octctl_pids(project.dir) == []
    octcli.destroy(project.config, approve=True)  # idempotent
