"""Leader failover on a real 3-node cluster, seen from the CLI's library: the leader is killed right
after it accepted a deployment; a new leader is elected, finishes the rollout, and the library finds
it by itself (no restart of the dead node in between)."""

from __future__ import annotations

import os
import signal

import pytest

import octcli
from tests.e2e.harness import http_get

pytestmark = pytest.mark.e2e


def test_the_new_leader_finishes_a_deployment_the_old_one_accepted(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.oct("deploy")
    before = octcli.status(project.config)
    old = next(n for n in before.nodes if n.role == "leader")
    pid_file = project.dir / ".oct" / "nodes" / old.id / "oct-ctl.pid"
    killed: list[str] = []

    def on_phase(message: str) -> None:
        if "accepted" in message and not killed:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # mid-rollout: nothing is pushed yet
            killed.append(message)

    project.edit('GREETING = "Hello"', 'GREETING = "Hello after failover"')
    after = octcli.deploy(project.config, on_phase=on_phase, timeout=120)

    assert killed, "the leader was killed after accepting the deployment"
    assert after.deployment is not None and after.deployment.state == "succeeded"
    new = next(n for n in after.nodes if n.role == "leader")
    assert new.id != old.id
    assert {s.name: s.state for s in after.services} == {
        "store": "running",
        "api": "running",
        "web": "running",
    }
    assert all(s.node != old.id for s in after.services), "nothing is left on the dead node"
    web = next(s for s in after.services if s.name == "web")
    assert "Hello after failover from oct" in http_get(web.endpoint or "")
