"""Membership on a real 3-node cluster: a node dead for longer than the project allows is taken out
of Raft and replaced by a new one, and the cluster keeps its quorum and its services throughout."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from octctl.providers.local import pid_alive
from tests.e2e.harness import http_get, services_by_name

pytestmark = pytest.mark.e2e


def members(leader_api: str, token: str) -> list[str]:
    answer = httpx.get(
        f"http://{leader_api}/v1/cluster/members", headers={"Authorization": f"Bearer {token}"}
    )
    return list(answer.json()["members"])


def test_a_dead_follower_is_replaced_without_losing_quorum(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.edit(
        "[project.provider.local]", "[project.cluster]\nreplace_dead_after = 5\n\n[project.provider.local]"
    )
    project.oct("deploy")
    before = project.status()
    leader = next(n for n in before["nodes"] if n["role"] == "leader")
    victim = next(n for n in before["nodes"] if n["role"] == "follower")
    folder = project.dir / ".oct" / "nodes" / victim["id"]
    token = json.loads((folder / "secrets.json").read_text())["token"]
    children = [json.loads(p.read_text())["pid"] for p in folder.glob("processes/*.json")]
    os.kill(int((folder / "oct-ctl.pid").read_text()), signal.SIGKILL)

    leader_api = f"{leader['address']}:{leader['api_port']}"
    deadline = time.monotonic() + 90
    while True:
        status = project.status()
        nodes = {n["id"]: n for n in status["nodes"]}
        services = services_by_name(status)
        logs = project.node_logs()
        if (
            f"node {victim['id']} unreachable for" in logs
            and len(nodes) == 3
            and all(n["status"] == "ready" for n in nodes.values())
            and all(s["state"] == "running" for s in services.values())
        ):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"nodes: {status['nodes']}\nservices: {status['services']}\n{logs}")
        time.sleep(0.5)

    # The replacement may reuse the freed address (and so the node name): it is a new process.
    replaced = logs[logs.index(f"node {victim['id']} unreachable for") :]
    assert "provisioned node" in replaced
    current = members(leader_api, token)
    assert sorted(current) == sorted(f"{n['address']}:31889" for n in nodes.values())
    assert not any(pid_alive(pid) for pid in children), "what the dead node ran must not linger"
    assert "Hello from oct" in http_get(services["web"]["endpoint"])
    assert f"node {victim['id']} unreachable for" in project.node_logs()
    # The cluster still commits: a deploy of a change goes through.
    project.edit('GREETING = "Hello"', 'GREETING = "Hello again"')
    project.oct("deploy")
    assert "Hello again from oct" in http_get(services_by_name(project.status())["web"]["endpoint"])
