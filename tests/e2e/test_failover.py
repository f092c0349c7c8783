"""Leader failover on a real 3-node cluster, seen from the CLI's library: the leader is killed right
after it accepted a deployment; a new leader is elected, finishes the rollout, and the library finds
it by itself (no restart of the dead node in between)."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

import octcli
from tests.e2e.harness import http_get, https_client, state_record
from tests.e2e.test_events import CONFIG as EVENTS_CONFIG
from tests.wait import wait_until

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


def test_a_write_through_a_follower_does_not_wait_on_a_paused_leader(make_project) -> None:  # type: ignore[no-untyped-def]
    """SIGSTOP of the leader: a write sent to a follower at that moment is forwarded to it, and
    answered with a 503 to retry (not held until the old 60 s forward timeout, past any client's
    patience); retried, it lands once another node leads, and the paused node follows again."""
    project = make_project("paused", EVENTS_CONFIG.replace('name = "events"', 'name = "paused"'))
    project.oct("deploy")
    status = project.status()
    leader = next(n for n in status["nodes"] if n["role"] == "leader")
    follower = next(n for n in status["nodes"] if n["role"] == "follower")
    record = state_record(project.dir)
    headers = {"Authorization": f"Bearer {record['token']}"}
    url = f"https://{follower['address']}:{follower['api_port']}/v1/kv/paused"
    pid = int((project.dir / ".oct" / "nodes" / leader["id"] / "oct-ctl.pid").read_text())
    with https_client(record["ca_cert"], timeout=20) as http:
        # (A 503 here says "retry" by contract: a busy machine may leave the forward unanswered.)
        before = wait_until(
            lambda: http.put(url, json={"value": "before"}, headers=headers),
            until=lambda response: response.status_code != 503,
            timeout=30,
            interval=1.0,
        )
        assert before.status_code == 200, before.text
        os.kill(pid, signal.SIGSTOP)
        try:
            first = http.put(url, json={"value": "during"}, headers=headers)  # (timeout: 20 s)
            assert first.status_code in (200, 503), first.text
            if first.status_code == 503:
                assert first.headers["retry-after"] == "1" and "retry" in first.json()["error"]
            landed = wait_until(
                lambda: http.put(url, json={"value": "during"}, headers=headers).status_code,
                until=lambda code: code == 200,
                timeout=30,
                interval=1.0,
                ignore=(httpx.HTTPError,),
            )
            assert landed == 200
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = f"https://{leader['address']}:{leader['api_port']}/v1/kv/paused"
        seen = wait_until(
            lambda: http.get(resumed, headers=headers).json(),
            until=lambda body: body.get("value") == "during",
            timeout=30,
            ignore=(httpx.HTTPError, ValueError),
        )
        assert seen["value"] == "during"
