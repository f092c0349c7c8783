"""wrk, the load generator of bench/raft_write.py: one run of a :class:`Target`'s requests, read
back as writes/s and exact latency percentiles (printed by a Lua ``done`` hook), with the CPU wrk
and the servers used meanwhile.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import BenchError, check_loopback
from _procs import cpu_seconds

WRK_THREADS = 2  # one per core; more threads would only contend with the servers
MAX_ERROR_SHARE = 0.001  # more failed writes than this and the figures mean nothing

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


def wrk_version() -> str:
    proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    return (proc.stdout or proc.stderr).split("[", 1)[0].strip() or "wrk"
