"""Fault injection against real ``oct-ctl`` nodes in network namespaces (needs root).

``OCT_CHAOS_SEEDS`` picks the seeds (``"1,2,10-20"``); the default is a small fixed set that keeps
this file to a few minutes. ``make chaos SEEDS=100`` runs many more with a summary (``run.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos import linearizability
from tests.chaos.netns import Cluster, HarnessError, namespaces, remove_stale, require_privileges, sh
from tests.chaos.scenario import logs_tail, parse_seeds, run_seed
from tests.chaos.workload import Record
from tests.wait import wait_until

pytestmark = pytest.mark.chaos

DEFAULT_SEEDS = "1,4"  # seed 4 runs five nodes; `make chaos` runs more (CI time)


def _seeds() -> list[int]:
    raw = os.environ.get("OCT_CHAOS_SEEDS") or DEFAULT_SEEDS
    try:
        return parse_seeds(raw)
    except ValueError as e:
        raise pytest.UsageError(f"OCT_CHAOS_SEEDS: {e}") from None


@pytest.fixture(autouse=True)
def _privileged() -> None:
    try:
        require_privileges()
    except HarnessError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(work_dir=tmp_path / "cluster", size=3) as c:
        yield c


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", _seeds())
def test_seed(seed: int, tmp_path: Path) -> None:
    report = run_seed(seed, tmp_path / f"seed-{seed}")
    print(report.summary())
    if not report.ok:
        pytest.fail(f"{report.summary()}\n{logs_tail(report.work_dir)}", pytrace=False)


def _put(c: Cluster, node: str, key: str, value: str) -> httpx.Response:
    return httpx.put(
        f"{c.node(node).api}/v1/kv/{key}", json={"value": value}, headers=c.headers, timeout=8, verify=c.tls
    )


def _read(c: Cluster, node: str, key: str, stale: bool, t: float) -> Record:
    query = "?stale=true" if stale else ""
    r = httpx.get(f"{c.node(node).api}/v1/kv/{key}{query}", headers=c.headers, timeout=8, verify=c.tls)
    assert r.status_code == 200, r.text
    return Record(9, "read", key, None, node, t, time.monotonic(), 200, r.json()["value"])


def test_partitioned_follower_is_cut_off_and_its_stale_read_is_caught(cluster: Cluster) -> None:
    """The harness's partition really cuts a node off, and the checker flags what a cut-off replica
    says; the linearizable read of the same moment passes. Guards the suite against a partition
    that does nothing or a checker that accepts anything."""
    leader = cluster.leader()
    assert leader is not None
    follower = next(n.name for n in cluster.nodes if n.name != leader)
    t = time.monotonic()
    assert _put(cluster, leader, "p", "old").status_code == 200
    history = [Record(9, "write", "p", "old", leader, t, time.monotonic(), 200)]
    wait_until(
        lambda: cluster.get(follower, "/v1/kv/p?stale=true") is not None,
        timeout=10,
        interval=0.2,
        message="replication",
    )

    cluster.isolate(follower)
    t = time.monotonic()
    assert _put(cluster, leader, "p", "new").status_code == 200, "a majority remains: the write commits"
    history.append(Record(9, "write", "p", "new", leader, t, time.monotonic(), 200))
    stale = _read(cluster, follower, "p", stale=True, t=time.monotonic())
    fresh = _read(cluster, leader, "p", stale=False, t=time.monotonic())
    assert stale.output == "old", "the isolated follower must not have received the new write"

    def verdict(reads: list[Record]) -> linearizability.Outcome:
        ops = [op for r in [*history, *reads] if (op := r.to_op()) is not None]
        return linearizability.check(ops).outcome

    assert verdict([fresh]) is linearizability.Outcome.OK
    assert verdict([fresh, stale]) is linearizability.Outcome.VIOLATION

    cluster.heal_network()
    wait_until(
        lambda: (cluster.get(follower, "/v1/kv/p?stale=true") or {}).get("value") == "new",
        timeout=20,
        interval=0.2,
        message="heal",
    )


def test_an_isolated_leader_stops_acting_and_a_majority_carries_on(cluster: Cluster) -> None:
    """Cut off from the majority, the old leader must step down by itself (leaderFallbackTimeout
    is 3 s) and never acknowledge a write, while the majority elects a leader of a newer term
    that does; after healing, the old leader follows it."""
    old = cluster.leader()
    assert old is not None
    old_term = (cluster.get(old, "/v1/cluster/replica") or {})["term"]
    cluster.isolate(old)
    acknowledged = []

    def still_leads() -> bool:
        """Whether the isolated leader still thinks it leads; while it does, try a write on it."""
        leads = bool((cluster.get(old, "/v1/cluster/replica") or {}).get("is_leader", True))
        if leads:
            with contextlib.suppress(httpx.HTTPError):
                acknowledged.append(_put(cluster, old, "cut", "x").status_code == 200)
        return leads

    wait_until(
        still_leads,
        until=lambda leads: not leads,
        timeout=15,
        interval=0,
        message="the isolated leader to step down",
    )
    assert not any(acknowledged), "a leader without a majority acknowledged a write"
    for _ in range(3):  # and it keeps refusing: no quorum, no commit
        with contextlib.suppress(httpx.HTTPError):
            assert _put(cluster, old, "cut", "x").status_code != 200

    wait_until(
        lambda: cluster.leader() not in (None, old),
        timeout=20,
        interval=0.2,
        message="a new leader among the majority",
    )
    new = cluster.leader()
    assert new is not None
    assert (cluster.get(new, "/v1/cluster/replica") or {})["term"] > old_term
    assert _put(cluster, new, "cut", "majority").status_code == 200
    cluster.heal_network()
    wait_until(
        lambda: (cluster.get(old, "/v1/kv/cut?stale=true") or {}).get("value") == "majority",
        timeout=20,
        interval=0.2,
        message="heal",
    )


def test_kill_pause_and_restart_keep_the_data(cluster: Cluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    assert _put(cluster, leader, "d", "1").status_code == 200
    cluster.kill(leader)
    assert not cluster.node(leader).running
    wait_until(
        lambda: cluster.leader() not in (None, leader), timeout=30, interval=0.2, message="a new leader"
    )
    paused = next(n.name for n in cluster.nodes if n.name not in (leader, cluster.leader()))
    cluster.pause(paused)
    assert cluster.get(paused, "/v1/cluster/replica", timeout=1) is None, "a paused node does not answer"
    cluster.resume(paused)
    cluster.start(leader)
    wait_until(
        lambda: (cluster.get(leader, "/v1/kv/d?stale=true") or {}).get("value") == "1",
        timeout=30,
        interval=0.2,
        message="rejoin",
    )
    wait_until(
        lambda: len(set(cluster.state_hashes().values())) == 1,
        timeout=30,
        interval=0.2,
        message="equal state hashes",
    )


def test_cleanup_removes_namespaces_even_of_a_crashed_run(tmp_path: Path) -> None:
    c = Cluster(work_dir=tmp_path / "c", size=1)
    c.create()
    made = [n.namespace for n in c.nodes] + [c.bridge_ns]
    assert set(made) <= set(namespaces())
    c.close()
    assert not set(made) & set(namespaces())
    assert c.root_link not in sh("ip", "-o", "link", "show")

    # A run that died without cleaning up: a namespace whose owner pid is gone.
    orphan = "octc999999-n1"
    sh("ip", "netns", "add", orphan)
    assert orphan in namespaces()
    removed = remove_stale("octc0-")
    assert orphan in removed
    assert orphan not in namespaces()


def test_failed_create_leaves_nothing(tmp_path: Path) -> None:
    """Even when building the cluster fails halfway, nothing of it stays behind."""
    c = Cluster(work_dir=tmp_path / "c", size=1)
    bad = tmp_path / "c" / "n1"
    bad.parent.mkdir(parents=True)
    bad.write_text("not a folder")  # the node's data dir cannot be created
    with pytest.raises((OSError, HarnessError)), c:
        pass
    assert not [ns for ns in namespaces() if ns.startswith(c.prefix)]


def test_bad_seed_list_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="expected numbers or ranges"):
        parse_seeds("1,x")
    assert parse_seeds("3, 5-7") == [3, 5, 6, 7]
