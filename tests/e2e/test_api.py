"""The daemon's HTTP API against a real single-node cluster: auth, bad input, and that it survives."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from octctl.node_settings import NodeSettings, Secrets
from octctl.providers.local.provider import free_address, node_name, nodes_dir, start_node, stop_node
from octctl.server.openapi import PUBLIC_PATHS, ROUTES
from octctl.state.raft_wire import RaftCipher
from tests.e2e.harness import https_client, kill_leftovers, node_client
from tests.wait import wait_until

pytestmark = pytest.mark.e2e


class Cluster:
    def __init__(self, root: Path, settings: NodeSettings, secrets: Secrets) -> None:
        self.root = root
        self.settings = settings
        self.secrets = secrets
        self.base = f"https://{settings.api_address}"
        #: As the leader calls it: the token, the pinned cluster CA and a node certificate.
        self.client = node_client(settings, secrets, timeout=10)
        #: A stranger who only knows the CA (no token, no node certificate).
        self.http = https_client(secrets.ca_cert, timeout=10)

    def log(self) -> str:
        return (nodes_dir(self.root) / self.settings.node / "oct-ctl.log").read_text(errors="replace")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path)


def running_cluster(tmp_path: Path, **settings_given: Any) -> Iterator[Cluster]:
    """A real single-node cluster under ``tmp_path`` (``settings_given``: more node.json keys),
    once it elected itself; stopped, and anything left killed, when resumed."""
    root = tmp_path / ".oct"
    secrets = Secrets.mint()
    address = free_address(root)
    settings = NodeSettings(
        node=node_name(address),
        cluster="c-apitest",
        address=address,
        cpus=2000,
        memory=2048,
        provider_root=str(root),
        **settings_given,
    )
    start_node(root, settings, secrets)
    c = Cluster(root, settings, secrets)
    wait_until(
        lambda: c.http.get(f"{c.base}/v1/health", timeout=1).json().get("leader"),
        timeout=30,
        interval=0.1,
        ignore=(httpx.HTTPError,),
        message=lambda: f"the node to elect itself:\n{c.log()}",
    )
    yield c
    c.client.close()
    c.http.close()
    stop_node(root, settings.node)
    kill_leftovers(tmp_path)


def config(**service: object) -> dict:
    svc = {
        "name": "sleeper",
        "runtime": "process",
        "command": "python3 -c 'import time; time.sleep(600)'",
        "cpus": 100,
        "memory": 32,
        **service,
    }
    return {
        "project": {
            "name": "apitest",
            "state_backend": {"local": {"path": "./state.json"}},
            "provider": {"local": {"nodes": 1}},
            "services": [svc],
        }
    }


def wait_deployed(c: Cluster, deployment: str) -> dict:
    return wait_until(
        lambda: c.client.get("/v1/status").json(),
        until=lambda status: (
            status["deployment"]["id"] == deployment
            and status["deployment"]["state"] in ("succeeded", "failed")
        ),
        timeout=30,
        interval=0.1,
        message=lambda: f"deployment {deployment} to finish:\n{c.log()}",
    )


def test_health_is_open_and_names_the_cluster(cluster: Cluster) -> None:
    health = cluster.http.get(f"{cluster.base}/v1/health").json()
    assert health == {
        "ok": True,
        "cluster": "c-apitest",
        "node": cluster.settings.node,
        "version": health["version"],
        "leader": cluster.settings.node,
        "artifact": None,  # run from a checkout: no installed wheel (AWS nodes report its sha256)
    }


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
def test_every_other_route_needs_the_token(cluster: Cluster, headers: dict[str, str]) -> None:
    """Every route of the API's table (a new one is covered by being added there), but health
    and the OpenAPI document."""
    protected = [r for r in ROUTES if r.path not in PUBLIC_PATHS]
    assert len(protected) >= 20
    for route in protected:
        method, path = route.method, re.sub(r"\{(\w+)(:[^}]*)?\}", "x", route.path) + "?project=p"
        resp = cluster.http.request(method, cluster.base + path, headers=headers, json={})
        assert resp.status_code == 401, (method, path)
        assert "token" in resp.json()["error"]
    assert cluster.http.get(f"{cluster.base}/v1/health").status_code == 200


def test_bad_bodies_get_4xx_with_a_reason(cluster: Cluster) -> None:
    c = cluster.client
    resp = c.post("/v1/deploy", content=b"{not json")
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]
    resp = c.post("/v1/deploy", json=[1, 2])
    assert resp.status_code == 400 and resp.json()["details"]
    resp = c.post("/v1/deploy", json={"config": config(cpus=-5)})
    assert resp.status_code == 422
    assert resp.json()["details"] == ["project.services[0].cpus: expected an integer greater than 0, got -5"]
    resp = c.post("/v1/deploy", json={"config": config(depends_on=["ghost"])})
    assert resp.status_code == 422 and "ghost" in resp.json()["details"][0]
    resp = c.post("/v1/deploy", content=b"x" * (2 * 1024 * 1024))
    assert resp.status_code == 413
    resp = c.put("/v1/agent/instances/a", json={"service": "a"}, headers={"X-Oct-Term": "0"})
    assert resp.status_code == 400 and resp.json()["details"]
    resp = c.get("/v1/services/nothing/logs")
    assert resp.status_code == 404
    # Nothing of that reached the cluster state.
    assert c.get("/v1/status").json()["deployment"] is None


def test_random_garbage_never_kills_the_daemon(cluster: Cluster) -> None:
    rng = random.Random(1234)
    routes = [
        ("POST", "/v1/deploy"),
        ("POST", "/v1/cluster/join"),
        ("PUT", "/v1/agent/instances/svc"),
        ("GET", "/v1/agent/instances/svc/logs?project=p&tail=abc"),
        ("DELETE", "/v1/agent/instances/svc"),
    ]
    for _ in range(200):
        method, path = rng.choice(routes)
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        if rng.random() < 0.5:
            body = json.dumps({"config": {"project": rng.choice([None, 1, "x", {"name": []}])}}).encode()
        resp = cluster.client.request(method, path, content=body)
        assert 400 <= resp.status_code < 500, (method, path, resp.status_code, resp.text)
    # Bytes from a stranger on the Raft port are dropped without harm.
    host, port = cluster.settings.raft_address.split(":")
    for _ in range(5):
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(bytes(rng.randrange(256) for _ in range(512)))
    assert cluster.client.get("/v1/status").status_code == 200


def test_deploy_then_secrets_stay_out_of_the_log(cluster: Cluster) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    resp = cluster.client.post("/v1/deploy", json={"config": config(envs={"TOKEN": secret})})
    assert resp.status_code == 202
    status = wait_deployed(cluster, resp.json()["deployment"])
    assert status["deployment"]["state"] == "succeeded", status
    assert status["services"][0]["state"] == "running"
    again = cluster.client.post("/v1/deploy", json={"config": config(envs={"TOKEN": secret})}).json()
    assert again == {
        "deployment": resp.json()["deployment"],
        "changed": False,
        "changes": {"sleeper": "unchanged"},
    }
    destroy = cluster.client.post("/v1/destroy").json()["deployment"]
    wait_until(
        lambda: cluster.client.get("/v1/status").json()["deployment"],
        until=lambda deployment: deployment["state"] == "destroyed",
        timeout=30,
        interval=0.1,
        message="the project to be destroyed",
    )
    assert cluster.client.get("/v1/status").json()["deployment"]["id"] == destroy
    log = cluster.log()
    assert "applied apitest/sleeper" in log
    assert secret not in log and cluster.secrets.token not in log and cluster.secrets.raft_password not in log


def test_agents_refuse_commands_from_a_deposed_leader(cluster: Cluster) -> None:
    spec = {
        "project": "fence",
        "service": "x",
        "deployment": "d1",
        "spec_hash": "h",
        "runtime": "process",
        "command": ["python3", "-c", "import time; time.sleep(600)"],
        "cpus": 10,
        "memory": 10,
    }
    c = cluster.client
    missing = c.put("/v1/agent/instances/x", json=spec)
    assert missing.status_code == 400 and "X-Oct-Term" in missing.json()["error"]
    # Terms only go as high as this node's Raft replica has seen (tests/security/test_term_fence.py).
    term = c.get("/v1/cluster/replica").json()["term"]
    assert term >= 1
    unknown = c.put("/v1/agent/instances/x", json=spec, headers={"X-Oct-Term": str(term + 1)})
    assert unknown.status_code == 503 and "unknown term" in unknown.json()["error"]
    assert c.put("/v1/agent/instances/x", json=spec, headers={"X-Oct-Term": str(term)}).status_code == 200
    stale = c.put("/v1/agent/instances/x", json=spec, headers={"X-Oct-Term": str(term - 1)})
    assert stale.status_code == 409 and "deposed leader" in stale.json()["error"]
    deposed = c.delete("/v1/agent/instances/x?project=fence", headers={"X-Oct-Term": str(term - 1)})
    assert deposed.status_code == 409 and "deposed leader" in deposed.json()["error"]
    # (The node's own leader removes "x", which no deployment wants, on one of its next ticks: the
    # fence refuses before the agent is called, so whether "x" is still listed here proves nothing.)
    removed = c.delete("/v1/agent/instances/x?project=fence", headers={"X-Oct-Term": str(term)})
    assert removed.status_code == 200
    assert c.get("/v1/agent/instances?project=fence").json()["instances"] == []


def test_a_node_with_the_wrong_raft_secret_never_joins_and_says_why(cluster: Cluster) -> None:
    stranger = cluster.secrets.model_copy(update={"raft_password": "not-the-cluster-password"})
    address = free_address(cluster.root)
    settings = NodeSettings(
        node=node_name(address),
        cluster="c-apitest",
        address=address,
        cpus=1000,
        memory=1024,
        join=[cluster.settings.api_address],
        provider_root=str(cluster.root),
    )
    start_node(cluster.root, settings, stranger)
    log = nodes_dir(cluster.root) / settings.node / "oct-ctl.log"
    try:
        wait_until(
            lambda: log.read_text() if log.exists() else "no log",
            until=lambda text: "cannot join cluster c-apitest" in text,
            timeout=30,
            interval=0.1,
            message="the stranger to log that it cannot join",
        )
        assert "does not hold the Raft secret" in log.read_text()
        assert cluster.client.get("/v1/cluster/members").json()["members"] == [cluster.settings.raft_address]
        assert [n["id"] for n in cluster.client.get("/v1/status").json()["nodes"]] == [cluster.settings.node]
        assert "refused node" in cluster.log()
        # The cluster still commits writes: it was never made to wait for the stranger.
        assert cluster.client.post("/v1/destroy").status_code == 202
    finally:
        stop_node(cluster.root, settings.node)


class _Exploit:
    """Unpickling this runs a shell command: what a stranger would send to a pickle-speaking port."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_bytes_from_a_stranger_on_the_raft_port_are_never_unpickled(cluster: Cluster, tmp_path: Path) -> None:
    """PySyncObj speaks pickle; with the cluster password every message must first decrypt, so a
    payload from someone without the secret is dropped before pickle sees it."""
    marker = tmp_path / "exploited"
    exploit = pickle.dumps(_Exploit(marker))
    payloads = [
        zlib.compress(exploit, 3),  # as PySyncObj frames it
        exploit,  # as oct frames small messages, before sealing
        RaftCipher("not the cluster secret").encrypt_at_time(exploit, 0),  # sealed with a wrong key
        pickle.dumps("readonly"),
    ]
    framed = [struct.pack("i", len(p)) + p for p in payloads]
    kept_open = []
    for message in (*framed, b"\x00" * 64, os.urandom(4096)):
        with socket.create_connection((cluster.settings.address, cluster.settings.raft_port), timeout=5) as s:
            s.sendall(message)
            s.settimeout(10)
            # The node hanging up is the proof it has read and judged the message: only then does
            # the marker's absence mean the payload was not unpickled (rather than not yet).
            try:
                if s.recv(4096) != b"":
                    kept_open.append(message[:16])
            except ConnectionError:
                pass
            except TimeoutError:
                kept_open.append(message[:16])
    assert kept_open == [], f"the node did not hang up on {kept_open}"
    assert not marker.exists(), "a stranger's pickle was executed by the node"
    # The node is unharmed: it still commits.
    put = cluster.client.put("/v1/kv/after-stranger", json={"value": "ok"})
    assert put.status_code == 200, put.text
