"""Membership on a real 3-node cluster: a node dead for longer than the project allows is taken out
of Raft and replaced by a new one, and the cluster keeps its quorum and its services throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from octctl.node_settings import read_node_files
from octctl.providers.local.provider import pid_alive, start_node
from tests.e2e.harness import http_get, https_client, services_by_name, state_record
from tests.wait import wait_until

pytestmark = pytest.mark.e2e

#: oct.toml text that makes the leader replace a node silent for 5 s (instead of 120 s).
FAST_REPLACEMENT = "[project.cluster]\nreplace_dead_after = 5\n\n[project.provider.local]"


def members(http: httpx.Client, leader_api: str, token: str) -> list[str]:
    answer = http.get(
        f"https://{leader_api}/v1/cluster/members", headers={"Authorization": f"Bearer {token}"}
    )
    return list(answer.json()["members"])


def test_a_dead_follower_is_replaced_without_losing_quorum(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.edit("[project.provider.local]", FAST_REPLACEMENT)
    project.oct("deploy")
    http = https_client(state_record(project.dir)["ca_cert"])
    before = project.status()
    leader = next(n for n in before["nodes"] if n["role"] == "leader")
    victim = next(n for n in before["nodes"] if n["role"] == "follower")
    folder = project.dir / ".oct" / "nodes" / victim["id"]
    token = json.loads((folder / "secrets.json").read_text())["token"]
    children = [json.loads(p.read_text())["pid"] for p in folder.glob("processes/*.json")]
    os.kill(int((folder / "oct-ctl.pid").read_text()), signal.SIGKILL)

    leader_api = f"{leader['address']}:{leader['api_port']}"

    def replaced_and_running(seen: tuple[dict, str, list[str]]) -> bool:
        status, logs, current = seen
        gone = f"node {victim['id']} unreachable for"
        # The replacement may reuse the freed address (and so the node name): what proves it is a
        # new machine is the leader provisioning one after it gave up on the victim. A node reports
        # ready as soon as it answers; its admission to Raft is committed a moment later.
        return (
            gone in logs
            and "provisioned node" in logs[logs.index(gone) :]
            and len(status["nodes"]) == 3
            and all(n["status"] == "ready" for n in status["nodes"])
            and all(s["state"] == "running" for s in status["services"])
            and sorted(current) == sorted(f"{n['address']}:31889" for n in status["nodes"])
        )

    status, _logs, _members = wait_until(
        lambda: (project.status(), project.node_logs(), members(http, leader_api, token)),
        until=replaced_and_running,
        timeout=90,
        interval=0.5,
        message="the leader to provision a replacement, admit it to Raft and run every service",
    )
    services = services_by_name(status)

    assert not any(pid_alive(pid) for pid in children), "what the dead node ran must not linger"
    assert "Hello from oct" in http_get(services["web"]["endpoint"])
    assert f"node {victim['id']} unreachable for" in project.node_logs()
    trail = [json.loads(line) for line in project.oct("events", "--json", "-n", "1000").stdout.splitlines()]
    noted = [(e["kind"], e["subject"]) for e in trail]
    assert (
        "node.replaced",
        victim["id"],
    ) in noted  # and then a new node was launched (it may reuse the name)
    assert any(kind == "node.launching" for kind, _ in noted[noted.index(("node.replaced", victim["id"])) :])
    # The cluster still commits: a deploy of a change goes through.
    project.edit('GREETING = "Hello"', 'GREETING = "Hello again"')
    project.oct("deploy")
    assert "Hello again from oct" in http_get(services_by_name(project.status())["web"]["endpoint"])


def test_a_node_with_a_damaged_journal_says_so_and_rejoins_after_reset(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.oct("deploy")
    http = https_client(state_record(project.dir)["ca_cert"])
    status = project.status()
    victim = next(n for n in status["nodes"] if n["role"] == "follower")
    root = project.dir / ".oct"
    folder = root / "nodes" / victim["id"]
    settings, secrets = read_node_files(folder)
    headers = {"Authorization": f"Bearer {secrets.token}"}
    leader = next(n for n in status["nodes"] if n["role"] == "leader")
    leader_api = f"https://{leader['address']}:{leader['api_port']}"
    assert http.put(f"{leader_api}/v1/kv/before", json={"value": "kept"}, headers=headers).status_code == 200

    pid = int((folder / "oct-ctl.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    journal = folder / "raft.journal"
    journal.write_bytes(journal.read_bytes()[:1000])  # a torn write at the worst moment

    # It refuses to start, saying which file and what to do; it does not hang half-alive.
    pid = start_node(root, settings, secrets)
    wait_until(
        lambda: not pid_alive(pid),
        timeout=30,
        interval=0.1,
        message="the node with a damaged journal to exit (not hang)",
    )
    log = (folder / "oct-ctl.log").read_text()
    assert f"Raft journal {journal}" in log and f"oct-ctl reset-raft --data-dir {folder}" in log
    assert secrets.token not in log and secrets.raft_password not in log

    reset = subprocess.run(
        [sys.executable, "-m", "octctl", "reset-raft", "--data-dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert reset.returncode == 0 and "moved the Raft files" in reset.stdout, reset.stderr
    assert not journal.exists() and list(folder.glob("raft-aside-*/raft.journal"))

    # Started again, it catches up from the leader: the same state, including older writes.
    start_node(root, settings, secrets)
    base = f"https://{settings.address}:{settings.api_port}"

    def caught_up() -> bool:
        mine = http.get(f"{base}/v1/cluster/replica", headers=headers, timeout=2).json()
        theirs = http.get(f"{leader_api}/v1/cluster/replica", headers=headers, timeout=2).json()
        return bool(mine["state_hash"] == theirs["state_hash"] and mine["leader"] == leader["id"])

    wait_until(
        caught_up,
        timeout=60,
        interval=0.3,
        ignore=(httpx.HTTPError,),
        message=lambda: f"the reset node to catch up\n{project.node_logs()}",
    )
    got = http.get(f"{base}/v1/kv/before?stale=true", headers=headers, timeout=5).json()
    assert got["value"] == "kept"


def test_beyond_five_nodes_the_rest_follow_as_non_voters(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.edit("nodes = 3", "nodes = 6")
    project.edit("[project.provider.local]", FAST_REPLACEMENT)
    project.oct("deploy")
    http = https_client(state_record(project.dir)["ca_cert"])
    status = project.status()
    roles = sorted(n["role"] for n in status["nodes"])
    assert roles == ["follower"] * 4 + ["leader", "non-voter"], status["nodes"]
    leader = next(n for n in status["nodes"] if n["role"] == "leader")
    replica = next(n for n in status["nodes"] if n["role"] == "non-voter")
    token = json.loads((project.dir / ".oct" / "nodes" / leader["id"] / "secrets.json").read_text())["token"]
    headers = {"Authorization": f"Bearer {token}"}
    leader_api = f"{leader['address']}:{leader['api_port']}"
    assert sorted(members(http, leader_api, token)) == sorted(
        f"{n['address']}:31889" for n in status["nodes"] if n["role"] != "non-voter"
    )

    # The non-voter serves the API (writes forwarded, reads through the leader) and keeps a replica.
    replica_api = f"https://{replica['address']}:{replica['api_port']}"
    put = http.put(f"{replica_api}/v1/kv/via-replica", json={"value": "yes"}, headers=headers, timeout=10)
    assert put.status_code == 200, put.text
    assert http.get(f"{replica_api}/v1/kv/via-replica", headers=headers, timeout=10).json()["value"] == "yes"

    # A voter dies: the non-voter is promoted and the replacement joins as a non-voter.
    victim = next(n for n in status["nodes"] if n["role"] == "follower")
    os.kill(int((project.dir / ".oct" / "nodes" / victim["id"] / "oct-ctl.pid").read_text()), signal.SIGKILL)

    def promoted_and_replaced(status: dict) -> bool:
        nodes = {n["id"]: n for n in status["nodes"]}
        return (
            f"node {victim['id']} unreachable for" in project.node_logs()
            and nodes.get(replica["id"], {}).get("role") == "follower"
            and sorted(n["role"] for n in status["nodes"]) == ["follower"] * 4 + ["leader", "non-voter"]
            and all(n["status"] == "ready" for n in nodes.values())
        )

    status = wait_until(
        project.status,
        until=promoted_and_replaced,
        timeout=120,
        interval=0.5,
        message=lambda: f"the non-voter promoted and a replacement\n{project.node_logs()}",
    )
    nodes = {n["id"]: n for n in status["nodes"]}
    # (the state names the promoted node a voter a moment before Raft has added it: it asks itself)
    current = wait_until(
        lambda: members(http, leader_api, token),
        until=lambda found: len(found) == 5,
        timeout=30,
        interval=0.3,
        message=lambda: f"the promoted node to become a Raft member\n{project.node_logs()}",
    )
    assert f"{replica['address']}:31889" in current

    # Every node, voter or not, converges to the same state.
    apis = [f"https://{n['address']}:{n['api_port']}" for n in nodes.values()]
    wait_until(
        lambda: {
            http.get(f"{api}/v1/cluster/replica", headers=headers, timeout=5).json()["state_hash"]
            for api in apis
        },
        until=lambda hashes: len(hashes) == 1,
        timeout=30,
        interval=0.2,
        message="the replicas to converge",
    )
