"""Write path of oct's replicated KV beside etcd 3.4: writes/s, p50 and p99 at 1 and 64 clients.

Why: every change to the cluster goes through one Raft write, so its latency is the floor of any
oct command and its throughput caps what a busy cluster can take. etcd is the Raft KV people know;
if oct writes are slower than etcd's on the same machine, the PySyncObj path is the thing to fix.

Both sides are a 3-member group on loopback, started in the same run, and get the same load from
the same tool in alternating rounds, so drift of the machine hits both alike (figures are medians
of rounds; ratios are medians of each round's back-to-back oct/etcd pair). oct is written
through ``PUT /v1/kv/{key}``, etcd through its JSON gateway ``POST /v3/kv/put``, each at the
leader, over 1000 keys with 64-byte values. Both sides speak TLS: oct's API is HTTPS with its cluster
CA, and etcd gets client and peer TLS from a CA this script mints (oct's Raft traffic is encrypted
with the cluster's Raft password, so etcd's peer links are encrypted too).

Durability is equal on both sides, in two modes measured in the same run. ``durable`` (both
defaults): a write is acknowledged once a majority synced it to disk (oct's journal fdatasync,
etcd's WAL fsync). ``no_fsync``: neither syncs (``OCT_UNSAFE_NO_FSYNC=1``; etcd's
``--unsafe-no-fsync``, a 3.4.23 flag that ``etcd --help`` does not list, but that the binary
accepts: an unknown flag makes etcd exit at once, which this script would report). ``--modes``
picks one.

The load generator is wrk (C, one event loop per thread, from apt), driven by a generated Lua
script that also reports exact percentiles. Unlike a Python client it is not the bottleneck, nor
does it take much CPU from the servers it measures (each run reports its share as
``loadgen_cpu_pct``; the comparison is in docs/operations.md#benchmarks).

Usage: .venv/bin/python bench/raft_write.py [--duration S] [--rounds N] [--only oct|etcd]
       [--modes durable,no_fsync]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
from _bare_cluster import OctCluster, bare_oct_cluster
from _common import BenchError, check_loopback, emit, exit_on_sigterm, log, median, temp_project_dir
from _etcd import ETCD_FLAGS, NO_FSYNC_FLAGS, etcd_cluster, etcd_leader
from _projects import retry_on_clash
from _wrk import Run, Target, run_wrk, wrk_version

from octctl.providers.local.provider import octctl_pids
from octctl.state.machine import UNSAFE_NO_FSYNC

PROJECT = "octbench-raft-write"
CLIENTS = (1, 64)
KEYS = 1000
VALUE_BYTES = 64
TRANSPORT = "TLS on both sides: oct HTTPS API (cluster CA) + encrypted Raft; etcd client and peer TLS"
MODES = {
    "durable": "both sync to disk before acknowledging: oct's journal fdatasync, etcd's WAL fsync (defaults)",
    "no_fsync": f"neither syncs: {UNSAFE_NO_FSYNC}=1 on oct's nodes, etcd {' '.join(NO_FSYNC_FLAGS)}",
}
#: How long oct's 3 nodes may take to agree on a leader.
START_TIMEOUT = 60.0
GOAL_P50_RATIO_1 = 1.0  # oct p50 / etcd p50 at 1 client, at most
GOAL_WPS_RATIO_64 = 1.0  # oct writes/s / etcd writes/s at 64 clients, at least


def value(key: int) -> str:
    return f"value-{key:04d}-".ljust(VALUE_BYTES, "x")


def oct_requests() -> list[tuple[str, str]]:
    return [(f"/v1/kv/bench-{k:04d}", json.dumps({"value": value(k)})) for k in range(KEYS)]


def etcd_requests() -> list[tuple[str, str]]:
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    return [
        ("/v3/kv/put", json.dumps({"key": b64(f"bench-{k:04d}"), "value": b64(value(k))}))
        for k in range(KEYS)
    ]


# -- the two targets -------------------------------------------------------------------------------


def check_one_write(target: Target) -> None:
    """One write with the exact request wrk will send: a 4xx served fast must not pass as speed."""
    path, body = target.requests[0]
    url = target.url + path
    check_loopback(url)
    with httpx.Client(trust_env=False, timeout=10.0, verify=target.tls) as http:
        resp = http.request(target.method, url, content=body, headers=target.headers)
    if resp.status_code != 200:
        raise BenchError(
            f"{target.name}: {target.method} {path} answered {resp.status_code}: {resp.text[:200]}"
        )
    log(f"{target.name}: a write answers 200: {resp.text[:120]}")


def oct_target(cluster: OctCluster) -> Target:
    leader = cluster.wait_agreed_leader(3, START_TIMEOUT)
    return Target(
        name="oct",
        url=cluster.api_urls()[leader],
        method="PUT",
        requests=oct_requests(),
        headers={"Authorization": f"Bearer {cluster.token}"},
        pids=octctl_pids(cluster.root),
        tls=cluster.tls,
    )


def etcd_target(members: list[tuple[str, int]], tls: ssl.SSLContext) -> Target:
    return Target(
        name="etcd",
        url=etcd_leader([url for url, _ in members], tls),
        method="POST",
        requests=etcd_requests(),
        pids=[pid for _, pid in members],
        tls=tls,
    )


def measure(targets: list[Target], folder: Path, rounds: int, duration: float) -> list[Run]:
    scripts = {}
    for target in targets:
        check_one_write(target)
        scripts[target.name] = folder / f"{target.name}.lua"
        fd = os.open(scripts[target.name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(target.lua())
    for target in targets:
        log(f"{target.name}: warm-up, 2 s at {max(CLIENTS)} clients")
        run_wrk(target, scripts[target.name], max(CLIENTS), 2)
    runs = []
    for r in range(rounds):
        order = targets if r % 2 == 0 else targets[::-1]
        for clients in CLIENTS:
            for target in order:
                run = run_wrk(target, scripts[target.name], clients, duration, r)
                log(
                    f"round {r + 1}/{rounds} {target.name:4} {clients:2} client(s): "
                    f"{run.writes_per_s:8.1f} w/s "
                    f"p50 {run.p50_ms:.3f} ms p99 {run.p99_ms:.3f} ms (wrk {run.loadgen_cpu_pct}% of a core, "
                    f"servers {run.server_cpu_ms_per_write} ms CPU/write, "
                    f"busiest {run.busiest_server_cpu_pct}% of a core)"
                )
                runs.append(run)
    return runs


def summary(runs: list[Run], target: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for clients in CLIENTS:
        mine = [r for r in runs if r.target == target and r.clients == clients]
        if mine:
            out[str(clients)] = {
                "writes_per_s": round(median(r.writes_per_s for r in mine), 1),
                "p50_ms": median(r.p50_ms for r in mine),
                "p99_ms": median(r.p99_ms for r in mine),
                "server_cpu_ms_per_write": median(r.server_cpu_ms_per_write for r in mine),
                "busiest_server_cpu_pct": median(r.busiest_server_cpu_pct for r in mine),
                "loadgen_cpu_pct_max": max(r.loadgen_cpu_pct for r in mine),
                "rounds_writes_per_s": [r.writes_per_s for r in mine],
            }
    return out


def ratios(runs: list[Run]) -> dict[str, float]:
    """oct over etcd, paired within each round (the two runs were back to back), median of rounds.

    Pairing matters on a shared 2-core machine: other work shifts both sides' figures by up to 2x
    between rounds, and a ratio of medians could pair a quiet oct round with a busy etcd one.
    """
    out = {}
    for clients in CLIENTS:
        pairs = [
            (o, e)
            for o in runs
            for e in runs
            if o.target == "oct"
            and e.target == "etcd"
            and o.clients == e.clients == clients
            and o.round_no == e.round_no
        ]
        if pairs:
            out[f"writes_per_s_oct_over_etcd_{clients}"] = median(
                o.writes_per_s / e.writes_per_s for o, e in pairs
            )
            out[f"p50_oct_over_etcd_{clients}"] = median(o.p50_ms / e.p50_ms for o, e in pairs)
            out[f"p99_oct_over_etcd_{clients}"] = median(o.p99_ms / e.p99_ms for o, e in pairs)
    return out


@contextlib.contextmanager
def environment(name: str, value: str | None) -> Any:
    """``name`` set to ``value`` (or unset) while the block runs: the nodes oct deploy starts
    inherit it."""
    before = os.environ.pop(name, None)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if before is not None:
            os.environ[name] = before


def run(only: str | None, rounds: int, duration: float, mode: str) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: run `make bench-deps` (apt package wrk)")
    durable = mode == "durable"
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(temp_project_dir("octbench-raft-write-"))
        targets = []
        if only in (None, "oct"):
            with environment(UNSAFE_NO_FSYNC, None if durable else "1"):
                cluster = stack.enter_context(bare_oct_cluster("octbench-raft-write-oct-", PROJECT))
            targets.append(oct_target(cluster))
        if only in (None, "etcd"):
            (folder / "etcd").mkdir()
            flags = () if durable else NO_FSYNC_FLAGS
            members, etcd_tls = stack.enter_context(etcd_cluster(folder / "etcd", flags))
            targets.append(etcd_target(members, etcd_tls))
        for target in targets:
            log(f"{target.name}: writing to the leader at {target.url}")
        runs = measure(targets, folder, rounds, duration)
    oct_, etcd = summary(runs, "oct"), summary(runs, "etcd")
    result: dict[str, Any] = {"durability": MODES[mode], "oct": oct_, "etcd": etcd, "ratios": ratios(runs)}
    if oct_ and etcd:
        p50_ratio = result["ratios"]["p50_oct_over_etcd_1"]
        wps_ratio = result["ratios"]["writes_per_s_oct_over_etcd_64"]
        result["goal"] = {
            "p50_oct_over_etcd_1_max": GOAL_P50_RATIO_1,
            "writes_per_s_oct_over_etcd_64_min": 1.0,
        }
        result["goal_met"] = p50_ratio <= GOAL_P50_RATIO_1 and wps_ratio >= GOAL_WPS_RATIO_64
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (1, 64 clients) x (oct, etcd)")
    parser.add_argument("--only", choices=("oct", "etcd"), help="measure one side only (no ratios)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: each of {', '.join(MODES)}")
    exit_on_sigterm()
    head: dict[str, Any] = {
        "bench": "raft_write",
        "load_generator": "",
        "transport": TRANSPORT,
        "etcd_flags": list(ETCD_FLAGS),
        "writes_to": "the leader",
        "keys": KEYS,
        "value_bytes": VALUE_BYTES,
        "duration_s": args.duration,
        "rounds": args.rounds,
    }
    clashes: list[str] = []
    try:
        head["load_generator"] = wrk_version() if shutil.which("wrk") else "wrk (missing)"
        result = {
            mode: retry_on_clash(
                lambda m=mode: run(args.only, args.rounds, args.duration, m), "raft_write", clashes
            )
            for mode in modes
        }
        if all("goal_met" in r for r in result.values()):
            result["goal_met"] = all(r["goal_met"] for r in result.values())
    except BenchError as e:
        log(f"BROKEN: {e}")
        emit({**head, "error": str(e).splitlines()[0], "address_clash_retries": clashes})
        return 1
    emit({**head, **result, "address_clash_retries": clashes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
