"""Failover time of a local 3-node oct cluster: kill -9 (or pause) the leader under light write load.

Why: while there is no leader nothing in the cluster can change (no deploy, no reschedule, no KV
write), so the time from a leader's death to the next acknowledged write is how long a machine
crash freezes oct. It is measured from outside, through the API, as a client sees it.

Each trial: one writer per node (``PUT /v1/kv/failover-<node>``; a write every 50 ms after a
success, a retry 10 ms after a failure) runs for a second, the leader's process gets SIGKILL, and
the writers keep going against every node, the dead one included. The sample is the time from the
kill to the first 200 for a write *sent after* the kill (one sent before could have been committed
by the old leader). Then the killed node is started again from its own data dir, and the next
trial waits until all three nodes name the same leader and a write through the restarted node is
acknowledged.

With ``--fault pause`` the leader gets SIGSTOP instead (a hung process, a VM frozen by its host):
it keeps its sockets, so clients and forwarding followers wait on it rather than being refused.
The sample is taken the same way, then the node gets SIGCONT and rejoins as a follower.

Usage: .venv/bin/python bench/raft_failover.py [--trials N] [--fault kill|pause]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _bare_cluster import OctCluster, bare_oct_cluster
from _common import BenchError, check_loopback, emit, exit_on_sigterm, log
from _projects import log_tails, retry_on_clash

from octctl.node_settings import read_node_files
from octctl.providers.local.provider import node_pid, nodes_dir, start_node

PROJECT = "octbench-raft-failover"
NODES = 3
TRIALS = 20
LOAD_BEFORE_KILL = 1.0  # seconds of writes before each kill, so the leader dies mid-load
PACE_OK = 0.05  # a writer's pause after an acknowledged write: light load, ~20 writes/s per node
PACE_RETRY = 0.01  # and after a failed one: the sample's resolution
REQUEST_TIMEOUT = 2.0
RECOVERY_TIMEOUT = 30.0  # no acknowledged write this long after the kill: the cluster is broken
REJOIN_TIMEOUT = 60.0
SETTLE = 0.5  # after the restarted node is back, before the next trial's load starts
MAX_ATTEMPTS = 20_000  # per writer and trial: the count bound next to the time bound
GOAL_P50_S = 1.0
GOAL_MAX_S = 2.5


@dataclass
class Attempt:
    node: str
    started: float
    ended: float
    status: int  # HTTP status; 0 when nothing answered (refused, reset, timed out)


@dataclass
class Sample:
    killed: str
    new_leader: str  # as all nodes name it once the killed one is back
    seconds: float
    failed_writes: int  # sent after the kill and not acknowledged, before the first that was


async def writer(
    http: httpx.AsyncClient, node: str, url: str, attempts: list[Attempt], stop: asyncio.Event
) -> None:
    """Write to one node until told to stop; every attempt is recorded with its outcome."""
    target = f"{url}/v1/kv/failover-{node}"
    check_loopback(target)
    for n in range(MAX_ATTEMPTS):
        if stop.is_set():
            return
        started = time.monotonic()
        try:
            status = (await http.put(target, json={"value": str(n)})).status_code
        except httpx.HTTPError:
            status = 0
        attempts.append(Attempt(node, started, time.monotonic(), status))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PACE_OK if status == 200 else PACE_RETRY)


def first_ack_after(attempts: list[Attempt], moment: float) -> Attempt | None:
    acked = [a for a in attempts if a.status == 200 and a.started >= moment]
    return min(acked, key=lambda a: a.ended) if acked else None


def process_gone(pid: int) -> bool:
    """Gone, or a zombie: a killed node's parent may be PID 1 here, which need not reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def leader_pid(cluster: OctCluster, leader: str) -> int:
    pid = node_pid(cluster.root, leader)
    data_dir = str(nodes_dir(cluster.root) / leader)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, TypeError):
        argv = []
    if pid is None or data_dir not in argv:
        raise BenchError(f"the pid file of leader {leader} names no running oct-ctl of {data_dir}")
    return pid


async def kill_leader(cluster: OctCluster, leader: str, fault: str = "kill") -> tuple[Sample, int]:
    """Kill (or pause) the leader under load; return the sample and its pid."""
    pid = leader_pid(cluster, leader)
    attempts: list[Attempt] = []
    stop = asyncio.Event()
    headers = {"Authorization": f"Bearer {cluster.token}"}
    async with httpx.AsyncClient(
        trust_env=False, timeout=REQUEST_TIMEOUT, headers=headers, verify=cluster.tls
    ) as http:
        tasks = [
            asyncio.create_task(writer(http, node, url, attempts, stop))
            for node, url in cluster.api_urls().items()
        ]
        try:
            await asyncio.sleep(LOAD_BEFORE_KILL)
            if not any(a.status == 200 for a in attempts):
                codes = sorted({a.status for a in attempts})
                raise BenchError(f"no write was acknowledged before the kill (statuses {codes})")
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
            for _ in range(int(RECOVERY_TIMEOUT / 0.005) + 10):
                if (first := first_ack_after(attempts, killed_at)) is not None:
                    break
                if time.monotonic() - killed_at > RECOVERY_TIMEOUT:
                    raise BenchError(
                        f"no write acknowledged within {RECOVERY_TIMEOUT:.0f} s of killing {leader}"
                    )
                await asyncio.sleep(0.005)
            else:
                raise BenchError(f"no write acknowledged after killing {leader}")
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    failed = [a for a in attempts if a.started >= killed_at and a.ended <= first.ended and a.status != 200]
    return Sample(leader, "", round(first.ended - killed_at, 3), len(failed)), pid


def restart(cluster: OctCluster, node: str, pid: int) -> None:
    """Start the killed node from its own data dir and wait until it is a working member again."""
    deadline = time.monotonic() + 10
    while not process_gone(pid):
        if time.monotonic() > deadline:
            raise BenchError(f"oct-ctl {node} (pid {pid}) still runs 10 s after SIGKILL")
        time.sleep(0.02)
    settings, secrets = read_node_files(nodes_dir(cluster.root) / node)
    start_node(cluster.root, settings, secrets)
    cluster.wait_agreed_leader(NODES, REJOIN_TIMEOUT)
    url = f"{cluster.api_urls()[node]}/v1/kv/failover-rejoined"
    check_loopback(url)
    headers = {"Authorization": f"Bearer {cluster.token}"}
    with httpx.Client(trust_env=False, timeout=REQUEST_TIMEOUT, headers=headers, verify=cluster.tls) as http:
        for _ in range(int(REJOIN_TIMEOUT / 0.1)):
            with contextlib.suppress(httpx.HTTPError):
                if http.put(url, json={"value": node}).status_code == 200:
                    return
            time.sleep(0.1)
    raise BenchError(f"{node} restarted but no write through it was acknowledged")


def resume(cluster: OctCluster, pid: int) -> None:
    """Wake the paused node; it rejoins as a follower of the leader elected meanwhile."""
    os.kill(pid, signal.SIGCONT)
    cluster.wait_agreed_leader(NODES, REJOIN_TIMEOUT)


def run_trials(trials: int, fault: str = "kill") -> list[Sample]:
    samples: list[Sample] = []
    with bare_oct_cluster("octbench-raft-failover-", PROJECT, NODES) as cluster:
        try:
            for i in range(trials):
                leader = cluster.wait_agreed_leader(NODES, REJOIN_TIMEOUT)
                sample, pid = asyncio.run(kill_leader(cluster, leader, fault))
                if fault == "kill":
                    restart(cluster, leader, pid)
                else:
                    resume(cluster, pid)
                time.sleep(SETTLE)
                sample.new_leader = cluster.wait_agreed_leader(NODES, REJOIN_TIMEOUT)
                samples.append(sample)
                log(
                    f"trial {i + 1}/{trials}: {fault} {sample.killed}, first write acknowledged after "
                    f"{sample.seconds:.3f} s ({sample.failed_writes} failed before it); "
                    f"leader now {sample.new_leader}"
                )
        except BenchError as e:
            raise BenchError(f"{e}\n{log_tails(cluster.config.parent)}") from e
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=TRIALS, help="leader kills")
    parser.add_argument("--fault", choices=("kill", "pause"), default="kill", help="SIGKILL or SIGSTOP")
    args = parser.parse_args()
    exit_on_sigterm()
    head: dict[str, Any] = {
        "bench": "raft_failover",
        "trials": args.trials,
        "fault": args.fault,
        "load": f"1 writer per node, {PACE_OK * 1000:.0f} ms between acknowledged writes, "
        f"retry after {PACE_RETRY * 1000:.0f} ms",
    }
    clashes: list[str] = []
    try:
        samples = retry_on_clash(lambda: run_trials(args.trials, args.fault), "raft_failover", clashes)
    except BenchError as e:
        log(f"BROKEN: {e}")
        emit({**head, "error": str(e).splitlines()[0], "address_clash_retries": clashes})
        return 1
    seconds = [s.seconds for s in samples]
    p50 = round(statistics.median(seconds), 3)
    worst = max(seconds)
    emit(
        {
            **head,
            "p50_s": p50,
            "max_s": worst,
            "min_s": min(seconds),
            "goal": {"p50_s_max": GOAL_P50_S, "max_s_max": GOAL_MAX_S},
            "goal_met": p50 <= GOAL_P50_S and worst <= GOAL_MAX_S,
            "samples_s": seconds,
            "failed_writes_median": statistics.median(s.failed_writes for s in samples),
            "leaders": [[s.killed, s.new_leader] for s in samples],
            "address_clash_retries": clashes,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
