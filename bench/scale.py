"""How oct's costs grow with the cluster: local clusters of 3 to 60 nodes, 100 to 1,000 services.

Why: the other benchmarks run 3-6 nodes. A leader that reconciles every node and service, a state
that every node replicates and every DNS zone is built from: anything in there that grows faster
than the cluster shows here first, long before a user's 50-node cluster finds it.

Each point is a local cluster (process runtime; every service one ``sleep`` process of 10
millicores and 4 MB) formed by ``oct deploy`` of an empty project, then deployed with the services
by a second ``oct deploy``, then left idle. Measured at each point:

- ``form_s``: the empty cluster's deploy (every node started and joined);
- ``deploy_s``: the deploy of the services, from ``oct deploy`` until every instance runs;
- the leader's CPU (share of one core) and RSS during that deploy and while idle (``--idle`` s);
- ``status_ms``: median latency of ``GET /v1/status`` at the leader (it lists every instance);
- ``journal_kb`` and ``dump_kb``: the leader's Raft journal (the part in use) and snapshot;
- ``zone_build_ms``: the leader's DNS zone build after the deploy (``oct_dns_zone_build_seconds``).

By default the nodes vary with 100 services (3, 10, 30, 60 nodes) and the services with 30 nodes
(100, 300, 1,000): the two axes, each with the other held (``--full`` runs every pair). Each
figure's growth along each axis is fitted as ``y ~ x^k`` (least squares on logs): ``k`` about 1 is
linear, the goal; well above 1 is what to fix. Goals: 1,000 services on 30 nodes deployed in
<= 30 s, an idle 60-node cluster costing its leader <= 5 % of a core.

Usage: .venv/bin/python bench/scale.py [--nodes 3,10,30,60] [--services 100,300,1000]
       [--hold-nodes 30] [--hold-services 100] [--full] [--idle S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _common import BenchError, emit, exit_on_sigterm, log, median, temp_project_dir
from _procs import cpu_seconds, proc_status_mb
from _projects import check_clash, log_tails, oct_cleanup

from octctl.providers.local.provider import octctl_pids

PROJECT = "octbench-scale"
DEPLOY_TIMEOUT = 900.0
GOAL_DEPLOY_1000_ON_30_S = 30.0
GOAL_IDLE_LEADER_60_PCT = 5.0
#: PySyncObj's journal header: the offset where the records in use end (format 1).
JOURNAL_END_AT = 36


def project_toml(nodes: int, services: int) -> str:
    lines = [
        "[project]",
        f'name = "{PROJECT}"',
        "services = []" if services == 0 else "",
        "",
        "[project.state_backend.local]",
        'path = "./state.json"',
        "",
        "[project.provider.local]",
        f"nodes = {nodes}",
    ]
    for i in range(services):
        lines += [
            "",
            "[[project.services]]",
            f'name = "s{i:04d}"',
            'runtime = "process"',
            'command = "sleep 86400"',
            "cpus = 10",
            "memory = 4",
        ]
    return "\n".join(lines) + "\n"


class Leader:
    """The cluster's leader process, and its API with the project's credentials."""

    def __init__(self, folder: Path) -> None:
        from octcli.providers.local import adopt
        from octctl.node_settings import read_node_files, scrape_token
        from octctl.providers.local.provider import local_nodes, nodes_dir
        from octctl.tls import client_context

        record = adopt(folder / ".oct", PROJECT)
        if record is None:
            raise BenchError(f"no node files under {folder / '.oct'}")
        self.http = httpx.Client(verify=client_context(record.ca_cert or ""), trust_env=False, timeout=30.0)
        self.headers = {"Authorization": f"Bearer {record.token}"}
        self.scrape = {"Authorization": f"Bearer {scrape_token(record.token)}"}
        urls = {}
        for node in local_nodes(folder / ".oct"):
            settings, _ = read_node_files(nodes_dir(folder / ".oct") / node)
            urls[node] = f"https://{settings.api_address}"
        self.urls = urls
        self.node = self._agreed_leader()
        self.url = urls[self.node]
        self.data_dir = nodes_dir(folder / ".oct") / self.node
        self.pid = int((self.data_dir / "oct-ctl.pid").read_text())

    def _agreed_leader(self) -> str:
        for url in self.urls.values():
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                leader = self.http.get(url + "/v1/health", headers=self.headers).json()["leader"]
                if leader:
                    return str(leader)
        raise BenchError(f"no node of {sorted(self.urls)} names a leader")

    def wait_ready(self, nodes: int, timeout: float) -> None:
        """Until ``nodes`` nodes are members and ready: the local provider starts followers after
        ``oct deploy`` of the genesis returned."""
        deadline = time.monotonic() + timeout
        ready: list[str] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                status = self.http.get(self.url + "/v1/status", headers=self.headers).json()
                ready = [n["id"] for n in status["nodes"] if n.get("status") == "ready"]
                if len(ready) >= nodes:
                    return
            time.sleep(0.2)
        raise BenchError(f"only {len(ready)} of {nodes} nodes ready after {timeout:.0f} s")

    def close(self) -> None:
        self.http.close()

    def usage(self) -> tuple[float, float]:
        """(CPU seconds so far, RSS in MB)."""
        rss = proc_status_mb(self.pid, "VmRSS") or {"VmRSS": math.nan}
        return cpu_seconds(self.pid), rss["VmRSS"]

    def status_ms(self, samples: int = 10) -> float:
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            self.http.get(self.url + "/v1/status", headers=self.headers).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
        return round(median(times), 2)

    def zone_build_ms(self) -> float | None:
        """The mean of the leader's zone builds since the deploy (one query makes one happen)."""
        from dnslib import DNSRecord

        before = self._zone_builds()
        node = json.loads((self.data_dir / "node.json").read_text())
        query = DNSRecord.question(f"s0000.{PROJECT}.{node.get('dns_domain', 'oct')}")
        port = int(node.get("dns_port", 53))
        with contextlib.suppress(OSError):
            query.send(node["address"], port, timeout=10)
        after = self._zone_builds()
        if after[1] <= before[1]:
            return None
        return round((after[0] - before[0]) / (after[1] - before[1]) * 1000, 2)

    def _zone_builds(self) -> tuple[float, float]:
        text = self.http.get(self.url + "/v1/metrics", headers=self.scrape).text
        found = {"sum": 0.0, "count": 0.0}
        for line in text.splitlines():
            for kind in found:
                if line.startswith(f"oct_dns_zone_build_seconds_{kind} "):
                    found[kind] = float(line.split()[1])
        return found["sum"], found["count"]

    def raft_files_kb(self) -> tuple[float, float]:
        journal = self.data_dir / "raft.journal"
        with journal.open("rb") as f:
            f.seek(JOURNAL_END_AT)
            used = struct.unpack("<I", f.read(4))[0]
        dump = self.data_dir / "raft.dump"
        return round(used / 1024, 1), round(dump.stat().st_size / 1024, 1) if dump.exists() else 0.0


def deploy(config: Path) -> float:
    import octcli
    from octcli.errors import OctError

    started = time.monotonic()
    try:
        octcli.deploy(config, on_phase=lambda m: None, timeout=DEPLOY_TIMEOUT)
    except OctError as e:
        check_clash(config.parent, str(e))
        raise BenchError(f"oct deploy failed: {e}\n{log_tails(config.parent)}") from e
    return round(time.monotonic() - started, 2)


def point(nodes: int, services: int, idle: float) -> dict[str, Any]:
    """One cluster of ``nodes`` deployed with ``services``, measured, destroyed."""
    with temp_project_dir("octbench-scale-") as folder:
        config = folder / "oct.toml"
        config.write_text(project_toml(nodes, 0))
        leader: Leader | None = None
        try:
            log(f"{nodes} nodes: forming")
            started = time.monotonic()
            deploy(config)
            leader = Leader(folder)
            leader.wait_ready(nodes, DEPLOY_TIMEOUT)
            form_s = round(time.monotonic() - started, 2)
            config.write_text(project_toml(nodes, services))
            cpu0, _ = leader.usage()
            log(f"{nodes} nodes: deploying {services} services (formed in {form_s} s)")
            deploy_s = deploy(config)
            cpu1, deploy_rss = leader.usage()
            zone_ms = leader.zone_build_ms()
            time.sleep(2.0)  # the deploy's last notices and polls settle
            cpu2, _ = leader.usage()
            time.sleep(idle)
            cpu3, idle_rss = leader.usage()
            status_ms = leader.status_ms()
            journal_kb, dump_kb = leader.raft_files_kb()
            running = len(octctl_pids(folder))
        finally:
            if leader is not None:
                leader.close()
            failure = oct_cleanup(config, PROJECT)
        if failure is not None:
            raise BenchError(failure)
    result = {
        "nodes": nodes,
        "services": services,
        "nodes_running": running,
        "form_s": form_s,
        "deploy_s": deploy_s,
        "leader_deploy_cpu_pct": round((cpu1 - cpu0) / deploy_s * 100, 1),
        "leader_deploy_rss_mb": round(deploy_rss, 1),
        "leader_idle_cpu_pct": round((cpu3 - cpu2) / idle * 100, 2),
        "leader_idle_rss_mb": round(idle_rss, 1),
        "status_ms": status_ms,
        "journal_kb": journal_kb,
        "dump_kb": dump_kb,
        "zone_build_ms": zone_ms,
    }
    log(f"{nodes} nodes, {services} services: {result}")
    return result


FIGURES = (
    "form_s",
    "deploy_s",
    "leader_deploy_cpu_pct",
    "leader_idle_cpu_pct",
    "leader_idle_rss_mb",
    "status_ms",
    "journal_kb",
    "zone_build_ms",
)


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """k of the least-squares fit of log y = log c + k log x (None with fewer than two usable points)."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y and y > 0]
    if len(pairs) < 2:
        return None
    mx = sum(p[0] for p in pairs) / len(pairs)
    my = sum(p[1] for p in pairs) / len(pairs)
    sxx = sum((p[0] - mx) ** 2 for p in pairs)
    if sxx == 0:
        return None
    return round(sum((p[0] - mx) * (p[1] - my) for p in pairs) / sxx, 2)


def growth(points: list[dict[str, Any]], axis: str, held: str, value: int) -> dict[str, Any]:
    """The fitted exponent of every figure along ``axis``, over the points where ``held`` = ``value``."""
    line = sorted((p for p in points if p[held] == value), key=lambda p: p[axis])
    return {
        "along": axis,
        f"at_{held}": value,
        "points": [p[axis] for p in line],
        "exponent": {f: exponent([p[axis] for p in line], [p[f] for p in line]) for f in FIGURES},
    }


def parse_counts(text: str) -> list[int]:
    return sorted({int(part) for part in text.split(",") if part.strip()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=parse_counts, default=[3, 10, 30, 60])
    parser.add_argument("--services", type=parse_counts, default=[100, 300, 1000])
    parser.add_argument("--hold-nodes", type=int, default=30, help="nodes while the services vary (30)")
    parser.add_argument("--hold-services", type=int, default=100, help="services while the nodes vary (100)")
    parser.add_argument("--full", action="store_true", help="every (nodes, services) pair")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement (10)")
    args = parser.parse_args()
    exit_on_sigterm()
    if args.full:
        pairs = [(n, s) for n in args.nodes for s in args.services]
    else:
        pairs = sorted(
            {(n, args.hold_services) for n in args.nodes} | {(args.hold_nodes, s) for s in args.services}
        )
    head: dict[str, Any] = {
        "bench": "scale",
        "pairs": pairs,
        "idle_s": args.idle,
        "cores": os.cpu_count() or 0,
    }
    points = []
    try:
        for nodes, services in pairs:
            points.append(point(nodes, services, args.idle))
    except BenchError as e:
        log(f"BROKEN: {e}")
        emit({**head, "points": points, "error": str(e).splitlines()[0]})
        return 1
    fits = [
        growth(points, "nodes", "services", args.hold_services),
        growth(points, "services", "nodes", args.hold_nodes),
    ]
    goals = {}
    big = next((p for p in points if p["nodes"] == 30 and p["services"] == 1000), None)
    if big is not None:
        goals["deploy_1000_services_on_30_nodes_s"] = {
            "measured": big["deploy_s"],
            "max": GOAL_DEPLOY_1000_ON_30_S,
            "met": big["deploy_s"] <= GOAL_DEPLOY_1000_ON_30_S,
        }
    idle60 = [p for p in points if p["nodes"] == 60]
    if idle60:
        worst = max(p["leader_idle_cpu_pct"] for p in idle60)
        goals["idle_60_node_leader_cpu_pct"] = {
            "measured": worst,
            "max": GOAL_IDLE_LEADER_60_PCT,
            "met": worst <= GOAL_IDLE_LEADER_60_PCT,
        }
    emit({**head, "points": points, "growth": fits, "goals": goals})
    return 0


if __name__ == "__main__":
    sys.exit(main())
