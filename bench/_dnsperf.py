"""dnsperf, the load generator of bench/dns.py: one run against a server, read back as qps, losses,
response codes per query and latency percentiles from its ``-v`` lines.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path
from typing import Any

from _common import BenchError, check_loopback_host
from _dns_records import Query, Records, Server, want
from _procs import cpu_with_children


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def statistic(text: str, label: str) -> str:
    m = re.search(rf"^\s*{re.escape(label)}:\s*(.+)$", text, re.MULTILINE)
    if m is None:
        raise BenchError(f"dnsperf printed no '{label}' line:\n{text[-1500:]}")
    return m.group(1).strip()


def dnsperf(
    binary: str, server: Server, queries: Path, out: Path, args: argparse.Namespace, rate: int | None
) -> dict[str, Any]:
    """One dnsperf run with -v; qps, losses, response codes and latency percentiles."""
    check_loopback_host(server.address)
    duration = args.duration if rate is None else args.rate_duration
    argv = [binary, "-m", args.mode, "-s", server.address, "-p", str(server.port), "-d", str(queries)]
    argv += ["-l", str(duration), "-c", str(args.clients), "-q", "100", "-t", "5", "-v"]
    if rate is not None:
        argv += ["-Q", str(rate)]
    cpu_before = cpu_with_children(server.pid)
    with out.open("wb") as stdout:
        proc = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, timeout=duration + 60)
    cpu = cpu_with_children(server.pid) - cpu_before
    stderr = proc.stderr.decode(errors="replace")
    latencies: list[float] = []
    by_query: dict[str, dict[str, int]] = {}
    other: list[str] = []  # the summary and status lines
    with out.open(errors="replace") as f:
        for line in f:
            parts = line.split()
            if line.startswith("> ") and len(parts) == 5:  # "> NOERROR name TYPE 0.000123"
                latencies.append(float(parts[4]))
                counts = by_query.setdefault(f"{parts[2]} {parts[3]}", {})
                counts[parts[1]] = counts.get(parts[1], 0) + 1
            else:
                other.append(line)
    text = "".join(other)
    if proc.returncode != 0:
        raise BenchError(f"dnsperf against {server.label} failed ({proc.returncode}): {stderr[-1000:]}")
    latencies.sort()
    sent = int(statistic(text, "Queries sent").split()[0])
    completed = int(statistic(text, "Queries completed").split()[0])
    lost = int(statistic(text, "Queries lost").split()[0])
    average = float(statistic(text, "Average Latency (s)").split()[0])
    result = {
        "qps": round(float(statistic(text, "Queries per second")), 1),
        "sent": sent,
        "completed": completed,
        "lost": lost,
        "response_codes": statistic(text, "Response codes"),
        "avg_ms": round(average * 1000, 3),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "max_ms": round(latencies[-1] * 1000, 3) if latencies else None,
        "server_cpu_s": round(cpu, 2),
        "server_cpu_s_per_100k": round(cpu / completed * 100_000, 3) if completed else None,
        "answers_by_query": by_query,
    }
    if completed == 0:
        raise BenchError(f"{server.label} answered none of {sent} queries: {stderr[-1000:]}")
    if "Timeout" in stderr or "Timeout" in text:
        result["timeouts_logged"] = stderr.count("Timeout") + text.count("Timeout")
    out.unlink()  # ~40 bytes a query; no need to keep a million lines
    return result


def wrong_rcodes(run: dict[str, Any], records: Records) -> list[str]:
    """Queries that got another RCODE under load than the one checked beforehand."""
    wrong = []
    for key, counts in run["answers_by_query"].items():
        name, qtype = key.split(" ", 1)
        expected = want(records, Query(name, qtype))["rcode"]
        others = {rcode: n for rcode, n in counts.items() if rcode != expected}
        if others:
            wrong.append(f"{key}: {others} (want {expected})")
    return wrong
