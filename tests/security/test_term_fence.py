"""Attacks on the agents' term fence (``X-Oct-Term``), against a real `oct-ctl` process.

An agent remembers the highest leader term it has obeyed (``term.json``) and refuses older ones.
It used to remember *any* term a request carried, before even reading the body: one authenticated
request with ``X-Oct-Term: 1000000000000000000`` and a garbage body made the node refuse its real
leader (term 2 or so) forever, across restarts, so no deploy could ever start a service there
again. The node must accept only terms its own Raft replica has seen, only for a valid command,
and parse the header strictly.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from octctl.providers.local.provider import pid_alive
from tests.e2e.conftest import make_project  # noqa: F401  (the fixture, for this folder too)
from tests.e2e.harness import Project, services_by_name
from tests.security.one_node import one_sleeper, the_node
from tests.wait import wait_until

pytestmark = [pytest.mark.security, pytest.mark.e2e]

PROJECT = "fence"
HUGE = str(10**18)
TOML = one_sleeper(PROJECT)


def spec(service: str) -> dict:
    return {
        "project": PROJECT,
        "service": service,
        "deployment": "d-attack",
        "spec_hash": "h-attack",
        "runtime": "process",
        "command": ["python3", "-c", "import time; time.sleep(600)"],
        "cpus": 10,
        "memory": 10,
    }


def deployed(project: Project, command_marker: str) -> None:
    """``oct deploy`` finishes, and the service runs the command that holds ``command_marker``."""
    project.oct("deploy", "--timeout", "60")
    status = project.status()
    assert status["deployment"]["state"] == "succeeded", status["deployment"]
    sleeper = services_by_name(status)["sleeper"]
    assert sleeper["state"] == "running", sleeper
    record = json.loads(next((project.dir / ".oct").glob("nodes/*/processes/fence-sleeper.json")).read_text())
    assert command_marker in " ".join(record["spec"]["command"]), record["spec"]["command"]


def test_a_forged_huge_term_does_not_wedge_the_node(make_project) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    project = make_project(PROJECT, TOML)
    project.oct("deploy")
    node = the_node(project)

    # The attack: a term no leader of this cluster will reach, with a body that is not a command.
    for method, path in [("PUT", "/v1/agent/instances/sleeper"), ("PUT", "/v1/agent/instances/x")]:
        resp = node.client.request(method, path, content=b"\x00garbage{", headers={"X-Oct-Term": HUGE})
        assert 400 <= resp.status_code < 500 and resp.json()["error"], resp.text

    # The real leader still drives the node: a changed service is replaced...
    project.edit("time.sleep(600)", "time.sleep(601)")
    deployed(project, "time.sleep(601)")
    # ...and again after the node process restarts (from its files, as `oct deploy` does).
    pid = int((node.folder / "oct-ctl.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=10, message="the node to die")
    project.edit("time.sleep(601)", "time.sleep(602)")
    deployed(project, "time.sleep(602)")
    assert HUGE not in node.fence_file()
    node.client.close()


def test_only_terms_the_replica_knows_are_obeyed(make_project) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    project = make_project(PROJECT, TOML)
    project.oct("deploy")
    node = the_node(project)
    term = node.term()
    assert 0 < term < 1000

    # A valid command from a term this node's replica has never seen: refused, not remembered.
    for forged in [HUGE, str(term + 1), str(2**63 - 1)]:
        put = node.client.put(
            "/v1/agent/instances/intruder", json=spec("intruder"), headers={"X-Oct-Term": forged}
        )
        assert put.status_code in (409, 503) and "term" in put.json()["error"], put.text
        gone = node.client.delete(
            "/v1/agent/instances/sleeper", params={"project": PROJECT}, headers={"X-Oct-Term": forged}
        )
        assert gone.status_code in (409, 503) and "term" in gone.json()["error"], gone.text
    assert str(term + 1) not in node.fence_file() and HUGE not in node.fence_file()

    # Junk in the header: 400, never a term.
    # (Leading and trailing blanks are not part of a header's value in HTTP, so they are not tried.)
    junk_values = ["", "1e18", "-1", "+5", "0x10", "1_000", "\u0663", "1\u0663", "5" * 40, "five", "2.0"]
    for junk in junk_values:
        resp = node.client.put(
            "/v1/agent/instances/intruder", json=spec("intruder"), headers={"X-Oct-Term": junk.encode()}
        )
        assert resp.status_code == 400 and "X-Oct-Term" in resp.json()["error"], (junk, resp.text)

    listed = node.client.get("/v1/agent/instances").json()["instances"]
    assert [(i["service"], i["state"]) for i in listed] == [("sleeper", "running")]
    # The term the replica knows still works, and an older one is a deposed leader's.
    assert node.client.get("/v1/agent/instances/sleeper/logs", params={"project": PROJECT}).status_code == 200
    ok = node.client.put(
        "/v1/agent/instances/intruder", json=spec("intruder"), headers={"X-Oct-Term": str(term)}
    )
    assert ok.status_code == 200, ok.text
    stale = node.client.put(
        "/v1/agent/instances/intruder", json=spec("intruder"), headers={"X-Oct-Term": str(term - 1)}
    )
    assert stale.status_code == 409 and "deposed leader" in stale.json()["error"], stale.text
    node.client.close()
