"""``oct events`` on a real 3-node cluster: the trail of a deploy (its audit entry, who and
what, never a secret value), a node's death and return seen live by ``oct events -f``, and the
trail kept through a restart of every node, with the new leader's election noted."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from octctl.providers.local.provider import octctl_pids
from octctl.server.denials import BURST
from tests.e2e.harness import OCT, Project, https_client, state_record
from tests.wait import wait_until

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-never-in-the-trail"
CONFIG = f"""\
[project]
name = "events"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3

[[project.services]]
name = "web"
runtime = "process"
command = "sleep 3600"
cpus = 100
memory = 32

[project.services.envs]
TOKEN = "{SECRET}"
"""


def trail(project: Project) -> list[dict]:
    return [json.loads(line) for line in project.oct("events", "--json", "-n", "1000").stdout.splitlines()]


def kinds(events: list[dict]) -> list[str]:
    return [e["kind"] for e in events]


def test_the_trail_of_deploys_nodes_and_leaders(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("events", CONFIG)
    project.oct("deploy")
    first = wait_until(lambda: trail(project), until=lambda t: "deployment.succeeded" in kinds(t), timeout=30)
    assert kinds(first).count("node.joined") == 3 and "leader.elected" in kinds(first)
    (deploy,) = [e for e in first if e["kind"] == "deployment.started"]
    (audit,) = [e for e in first if e["kind"] == "audit"]
    assert audit["message"] == f"POST /v1/deploy: 202 deployment {deploy['subject']}"
    assert audit["subject"].startswith("api token from 127.0.0.1")
    assert any(e["kind"] == "instance.started" and e["subject"].startswith("web@") for e in first)
    assert [e["seq"] for e in first] == sorted(e["seq"] for e in first)
    assert SECRET not in project.oct("events", "--json", "-n", "1000").stdout

    # Live: a follower dies and comes back, and `oct events -f` shows it as it happens.
    status = project.status()
    follower = next(n["id"] for n in status["nodes"] if n["role"] == "follower")
    live = subprocess.Popen(
        [*OCT, "events", "-f", "--json", "-n", "0", "-c", str(project.config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: queue.Queue[dict] = queue.Queue()
    threading.Thread(
        target=lambda: [seen.put(json.loads(line)) for line in live.stdout or []], daemon=True
    ).start()

    def until(kind: str, subject: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            event = seen.get(timeout=max(0.1, deadline - time.monotonic()))
            if event["kind"] == kind and event["subject"] == subject:
                return

    try:
        time.sleep(1.5)  # (the follower has read the trail so far)
        os.kill(int((project.dir / ".oct" / "nodes" / follower / "oct-ctl.pid").read_text()), signal.SIGKILL)
        until("node.down", follower)
        project.oct("deploy")  # restarts it
        until("node.up", follower)
    finally:
        live.terminate()
        live.wait(timeout=10)

    # Every node killed and started again: the trail is still there, and the new term's leader noted.
    before = trail(project)
    for pid in octctl_pids(project.dir):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: octctl_pids(project.dir), until=lambda pids: not pids, timeout=10)
    project.oct("deploy")
    after = wait_until(
        lambda: trail(project),
        until=lambda t: kinds(t).count("leader.elected") > kinds(before).count("leader.elected"),
        timeout=30,
    )
    assert after[: len(before)] == before


FAILING = CONFIG.replace("nodes = 3", "nodes = 1").replace(
    'command = "sleep 3600"', "command = \"sh -c 'exit 3'\""
)


def test_a_failed_deploy_and_unauthorised_calls_are_in_the_trail(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("events", CONFIG.replace("nodes = 3", "nodes = 1"))
    project.oct("deploy")
    (project.dir / "oct.toml").write_text(FAILING)
    assert project.oct("deploy", check=False).returncode != 0
    failed = wait_until(lambda: trail(project), until=lambda t: "deployment.failed" in kinds(t), timeout=30)
    (failure,) = [e for e in failed if e["kind"] == "deployment.failed"]
    assert "web" in failure["message"]
    assert "deployment.progressed" in kinds(failed)
    # (the service's update rolls back on failure by default: the trail says so)
    wait_until(lambda: trail(project), until=lambda t: "deployment.rolled_back" in kinds(t), timeout=30)

    # Strangers: a wrong token on a write, none on a read, a flood of them; the trail notes a
    # bounded few, with the route's pattern and never what they sent.
    record = state_record(project.dir)
    base = f"https://{record['nodes'][0]}"
    with https_client(record["ca_cert"], timeout=10) as stranger:
        assert (
            stranger.post(
                f"{base}/v1/destroy", json={}, headers={"Authorization": "Bearer guess"}
            ).status_code
            == 401
        )
        assert stranger.get(f"{base}/v1/kv/secret%0Ainjected").status_code == 401
        for _ in range(20):
            stranger.get(f"{base}/v1/status")
    denied = wait_until(
        lambda: [e for e in trail(project) if e["kind"] == "audit" and "denied" in e["message"]],
        until=lambda found: len(found) >= 2,
        timeout=10,
    )
    assert denied[0]["subject"] == "unauthenticated caller from 127.0.0.1"
    assert denied[0]["message"] == "POST /v1/destroy: 401 denied"
    assert denied[1]["message"] == "GET /v1/kv/{key}: 401 denied"  # the pattern, not the path
    assert len(denied) <= BURST and "guess" not in json.dumps(trail(project))
    assert "deployment.destroying" not in kinds(trail(project))  # the stranger's destroy did nothing
    assert project.status()["project"] == "events"
