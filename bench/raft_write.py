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
with the cluster's Raft password, so etcd's peer links are encrypted too). Durability is made
equal by turning fsync off on both: PySyncObj's journal is an mmap that is never fsynced, so etcd runs with
``--unsafe-no-fsync`` (a 3.4.23 flag that ``etcd --help`` does not list, but that the binary
accepts: an unknown flag makes etcd exit at once, which this script would report).

The load generator is wrk (C, one event loop per thread, from apt), driven by a generated Lua
script that also reports exact percentiles. It is not the bottleneck: measured on this 2-core
machine kind against etcd, wrk used 25% of one core at 12K writes/s (64 clients) and 6% at 1
client (each run reports it as ``loadgen_cpu_pct``), while a Python asyncio client (aiohttp, 64
tasks) used 53% of a core for only 6.7K writes/s, taking that from the servers it measures, and
added 0.2 ms to the 1-client p50 (0.60 ms instead of 0.40 ms).

Usage: .venv/bin/python bench/raft_write.py [--duration S] [--rounds N] [--only oct|etcd]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import (
    BenchError,
    OctCluster,
    bare_oct_cluster,
    check_loopback,
    cpu_seconds,
    emit,
    exit_on_sigterm,
    log,
    median,
    octctl_pids,
    retry_on_clash,
    temp_project_dir,
)

PROJECT = "octbench-raft-write"
CLIENTS = (1, 64)
WRK_THREADS = 2  # one per core; more threads would only contend with the servers
KEYS = 1000
VALUE_BYTES = 64
ETCD_MEMBERS = 3
#: fsync off: PySyncObj never fsyncs its journal, so etcd must not either for a fair comparison.
ETCD_FLAGS = ("--unsafe-no-fsync", "--log-level", "warn", "--logger", "zap")
TRANSPORT = "TLS on both sides: oct HTTPS API (cluster CA) + encrypted Raft; etcd client and peer TLS"
DURABILITY = "no fsync on either side: PySyncObj journal is mmap'd and never fsynced; etcd --unsafe-no-fsync"
START_TIMEOUT = 60.0
MAX_ERROR_SHARE = 0.001  # more failed writes than this and the figures mean nothing
GOAL_P50_RATIO_1 = 1.0  # oct p50 / etcd p50 at 1 client, at most
GOAL_WPS_RATIO_64 = 1.0  # oct writes/s / etcd writes/s at 64 clients, at least

#: Prints the figures from inside wrk: its own summary rounds latencies to two digits.
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d,'
    .. ' "p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass
class Target:
    """One side of the comparison: where writes go, what they look like, which processes serve them."""

    name: str
    url: str  # the leader's base URL
    method: str
    requests: list[tuple[str, str]]  # (path, JSON body), cycled through
    #: both sides speak HTTPS; this verifies our own checks (wrk does not verify: loopback only)
    tls: ssl.SSLContext
    headers: dict[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)

    def lua(self) -> str:
        """A wrk script cycling through the requests; the token lives in this file, never in argv."""

        def quote(s: str) -> str:
            return json.dumps(s)  # ASCII JSON string literals are valid Lua string literals

        lines = [f"wrk.method = {quote(self.method)}", 'wrk.headers["Content-Type"] = "application/json"']
        lines += [f"wrk.headers[{quote(k)}] = {quote(v)}" for k, v in self.headers.items()]
        lines.append("local paths = {" + ", ".join(quote(p) for p, _ in self.requests) + "}")
        lines.append("local bodies = {" + ", ".join(quote(b) for _, b in self.requests) + "}")
        lines.append("local i = 0")
        lines.append("request = function()\n  i = i % #paths + 1")
        lines.append("  return wrk.format(nil, paths[i], nil, bodies[i])\nend")
        return "\n".join(lines) + "\n" + WRK_DONE


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


# -- wrk -------------------------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    clients: int
    writes_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int
    loadgen_cpu_pct: float  # wrk's own CPU, % of one core: it must stay far below 100
    server_cpu_ms_per_write: float  # all 3 members together
    round_no: int  # runs of one round are back to back: their ratio is the fair one
    busiest_server_cpu_pct: float  # the busiest member (the leader): near 100 = one core's worth, GIL-bound


def run_wrk(target: Target, script: Path, clients: int, duration: float, round_no: int = 0) -> Run:
    """One wrk run against ``target``; CPU of wrk (from wait4) and of the servers (from /proc) too."""
    check_loopback(target.url)
    threads = min(clients, WRK_THREADS)
    cmd = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{duration:.0f}s", "--timeout", "5s"]
    cmd += ["-s", str(script), target.url]
    cpu_before = {pid: cpu_seconds(pid) for pid in target.pids}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(duration + 30, proc.kill)  # wrk stops by itself; this is the bound
    watchdog.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)  # Popen.wait would drop the child's rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        watchdog.cancel()
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    wall = time.monotonic() - started
    server_cpu = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk against {target.name} failed (exit {proc.returncode}): {err.strip()[:300]}")
    figures = json.loads(line.removeprefix("WRKJSON "))
    errors = figures["status_errors"] + figures["socket_errors"]
    if figures["requests"] == 0 or errors > MAX_ERROR_SHARE * figures["requests"]:
        raise BenchError(
            f"{target.name}, {clients} client(s): {errors} of {figures['requests']} writes failed "
            f"({figures['status_errors']} HTTP errors, {figures['socket_errors']} socket errors)"
        )
    ok = figures["requests"] - errors
    return Run(
        target=target.name,
        clients=clients,
        writes_per_s=round(ok / (figures["duration_us"] / 1e6), 1),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        requests=figures["requests"],
        errors=errors,
        loadgen_cpu_pct=round(100 * (usage.ru_utime + usage.ru_stime) / wall, 1),
        server_cpu_ms_per_write=round(1000 * sum(server_cpu.values()) / max(ok, 1), 3),
        round_no=round_no,
        busiest_server_cpu_pct=round(100 * max(server_cpu.values()) / wall, 1),
    )


# -- etcd ------------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1 right now (held together, so they are distinct)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def etcd_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and one certificate for 127.0.0.1 (serverAuth and clientAuth), written for etcd:
    ``(ca, cert, key)``. oct's own issuer makes them, so both sides use the same kind of key."""
    from octctl.tls import issue_node_certificate, new_ca

    ca_key, ca_cert = new_ca("etcd-bench")
    key, cert = issue_node_certificate(ca_key, ca_cert, "etcd", ["127.0.0.1"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    for path, text in zip(paths, (ca_cert, cert, key), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return paths


@contextlib.contextmanager
def etcd_cluster(folder: Path) -> Iterator[tuple[list[tuple[str, int]], ssl.SSLContext]]:
    """A 3-member etcd on 127.0.0.1 with client and peer TLS; yields ``([(client URL, pid)], client
    TLS context)``; every member is stopped after."""
    if shutil.which("etcd") is None:
        raise BenchError("etcd is not installed: run `make bench-deps` (apt package etcd-server)")
    ca, cert, key = etcd_tls_files(folder / "tls")
    tls_flags = (
        *("--cert-file", str(cert), "--key-file", str(key)),  # server TLS, like oct's API
        *("--peer-cert-file", str(cert), "--peer-key-file", str(key)),
        *("--peer-trusted-ca-file", str(ca), "--peer-client-cert-auth"),
    )
    context = ssl.create_default_context(cafile=str(ca))
    ports = free_ports(2 * ETCD_MEMBERS)
    names = [f"m{i}" for i in range(ETCD_MEMBERS)]
    peers = [f"https://127.0.0.1:{ports[2 * i + 1]}" for i in range(ETCD_MEMBERS)]
    clients = [f"https://127.0.0.1:{ports[2 * i]}" for i in range(ETCD_MEMBERS)]
    initial = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, peer, client in zip(names, peers, clients, strict=True):
            log_file = open(folder / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
            with log_file:
                procs.append(
                    subprocess.Popen(
                        [
                            *("etcd", "--name", name, "--data-dir", str(folder / name)),
                            *("--listen-client-urls", client, "--advertise-client-urls", client),
                            *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
                            *("--initial-cluster", initial, "--initial-cluster-state", "new"),
                            *("--initial-cluster-token", "octbench", *ETCD_FLAGS, *tls_flags),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        wait_etcd_healthy(folder, clients, procs, context)
        yield [(url, proc.pid) for url, proc in zip(clients, procs, strict=True)], context
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def wait_etcd_healthy(
    folder: Path, clients: list[str], procs: list[subprocess.Popen[bytes]], tls: ssl.SSLContext
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(trust_env=False, timeout=1.0, verify=tls) as http:
        for _ in range(int(START_TIMEOUT / 0.1) + 10):
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    tail = (folder / f"m{i}.log").read_text(errors="replace").splitlines()[-10:]
                    raise BenchError(f"etcd member m{i} exited ({proc.returncode}):\n" + "\n".join(tail))
            healthy = 0
            for url in clients:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    healthy += http.get(f"{url}/health").json().get("health") == "true"
            if healthy == len(clients):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    raise BenchError(f"etcd was not healthy within {START_TIMEOUT:.0f} s")


def etcd_leader(clients: list[str], tls: ssl.SSLContext) -> str:
    """The client URL of the member that leads (its member_id equals the leader it reports)."""
    with httpx.Client(trust_env=False, timeout=2.0, verify=tls) as http:
        for url in clients:
            check_loopback(url)
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                status = http.post(f"{url}/v3/maintenance/status", json={}).json()
                if status["header"]["member_id"] == status["leader"]:
                    return url
    raise BenchError("no etcd member says it is the leader")


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


def wrk_version() -> str:
    proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    return (proc.stdout or proc.stderr).split("[", 1)[0].strip() or "wrk"


def run(only: str | None, rounds: int, duration: float) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: run `make bench-deps` (apt package wrk)")
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(temp_project_dir("octbench-raft-write-"))
        targets = []
        if only in (None, "oct"):
            cluster = stack.enter_context(bare_oct_cluster("octbench-raft-write-oct-", PROJECT))
            targets.append(oct_target(cluster))
        if only in (None, "etcd"):
            (folder / "etcd").mkdir()
            members, etcd_tls = stack.enter_context(etcd_cluster(folder / "etcd"))
            targets.append(etcd_target(members, etcd_tls))
        for target in targets:
            log(f"{target.name}: writing to the leader at {target.url}")
        runs = measure(targets, folder, rounds, duration)
    oct_, etcd = summary(runs, "oct"), summary(runs, "etcd")
    result: dict[str, Any] = {"oct": oct_, "etcd": etcd, "ratios": ratios(runs)}
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
    args = parser.parse_args()
    exit_on_sigterm()
    head: dict[str, Any] = {
        "bench": "raft_write",
        "load_generator": "",
        "durability": DURABILITY,
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
        result = retry_on_clash(lambda: run(args.only, args.rounds, args.duration), "raft_write", clashes)
    except BenchError as e:
        log(f"BROKEN: {e}")
        emit({**head, "error": str(e).splitlines()[0], "address_clash_retries": clashes})
        return 1
    emit({**head, **result, "address_clash_retries": clashes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
