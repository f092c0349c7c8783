"""The cluster's key-value API on a real 3-node cluster: any node serves it, reads after a commit
barrier see every acknowledged write, concurrent writes share Raft entries, and replicas converge."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from octctl.tls import client_context
from tests.e2e.harness import Project, https_client, state_record
from tests.wait import wait_until

pytestmark = pytest.mark.e2e


def node_apis(project: Project) -> tuple[list[str], str]:
    """Every node's API base URL and the cluster token, from the nodes' own files."""
    bases, token = [], ""
    for folder in sorted((project.dir / ".oct").glob("nodes/*")):
        settings = json.loads((folder / "node.json").read_text())
        token = json.loads((folder / "secrets.json").read_text())["token"]
        bases.append(f"https://{settings['address']}:{settings['api_port']}")
    return bases, token


def replicas(http: httpx.Client, bases: list[str], headers: dict[str, str]) -> list[dict]:
    return [http.get(f"{b}/v1/cluster/replica", headers=headers, timeout=5).json() for b in bases]


async def put_many(ca: str, bases: list[str], headers: dict[str, str], count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(
        headers=headers, timeout=20, verify=client_context(ca), trust_env=False
    ) as client:
        return await asyncio.gather(
            *(
                client.put(f"{bases[i % len(bases)]}/v1/kv/load/{i}", json={"value": f"v{i}"})
                for i in range(count)
            )
        )


def test_kv_reads_writes_and_group_commit(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.oct("deploy")
    bases, token = node_apis(project)
    assert len(bases) == 3
    headers = {"Authorization": f"Bearer {token}"}
    ca = state_record(project.dir)["ca_cert"]
    http = https_client(ca)
    assert http.put(f"{bases[0]}/v1/kv/x", json={"value": "1"}).status_code == 401

    # Written through one node, read linearizably through every node (followers forward).
    written = http.put(f"{bases[1]}/v1/kv/app/flag", json={"value": "on"}, headers=headers, timeout=10)
    assert written.status_code == 200, written.text
    revision = written.json()["revision"]
    for base in bases:
        got = http.get(f"{base}/v1/kv/app/flag", headers=headers, timeout=10).json()
        assert got == {"key": "app/flag", "value": "on", "revision": revision, "stale": False}

    # Local reads say they may be stale, and every replica has the write soon after.
    for base in bases:
        got = wait_until(
            lambda b=base: http.get(f"{b}/v1/kv/app/flag?stale=true", headers=headers, timeout=5),
            until=lambda answer: answer.status_code == 200,
            timeout=5,
            message=f"{base} to see the write",
        )
        assert got.json()["stale"] is True and got.json()["value"] == "on"

    # Bad input gets a reason, not a crash.
    assert http.get(f"{bases[0]}/v1/kv/no/such", headers=headers).status_code == 404
    assert http.get(f"{bases[0]}/v1/kv/bad%20key", headers=headers).status_code == 400
    bad = http.put(f"{bases[0]}/v1/kv/k", content=b"{nope", headers=headers)
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    assert http.put(f"{bases[0]}/v1/kv/k", json={"value": 3}, headers=headers).status_code == 400

    # Many concurrent writes: all acknowledged with distinct revisions, sharing Raft entries.
    before = max(r["commit_index"] for r in replicas(http, bases, headers))
    count = 200
    answers = asyncio.run(put_many(ca, bases, headers, count))
    assert [a.status_code for a in answers] == [200] * count
    revisions = {a.json()["revision"] for a in answers}
    assert len(revisions) == count
    leader_commit = max(r["commit_index"] for r in replicas(http, bases, headers))
    assert leader_commit - before < count, "every write took its own Raft entry: no group commit"
    for i in (0, count // 2, count - 1):
        got = http.get(f"{bases[2]}/v1/kv/load/{i}", headers=headers, timeout=10).json()
        assert got["value"] == f"v{i}"

    # Delete, then the key is gone everywhere.
    assert http.delete(f"{bases[2]}/v1/kv/app/flag", headers=headers, timeout=10).status_code == 200
    assert http.delete(f"{bases[0]}/v1/kv/app/flag", headers=headers, timeout=10).status_code == 404
    assert http.get(f"{bases[1]}/v1/kv/app/flag", headers=headers, timeout=10).status_code == 404

    # Every replica converges to the same state, and they agree on the leader.
    seen = wait_until(
        lambda: replicas(http, bases, headers),
        until=lambda seen: len({r["state_hash"] for r in seen}) == 1,
        timeout=10,
        interval=0.1,
        message="the replicas to converge",
    )
    assert sum(r["is_leader"] for r in seen) == 1
    assert len({r["leader"] for r in seen}) == 1
    log_text = project.node_logs()
    assert "became leader term=" in log_text
