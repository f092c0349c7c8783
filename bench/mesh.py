"""The service mesh's data path: a caller on one node reaching a 3-instance HTTP service on three
other nodes, against HAProxy configured by hand with TLS between the same two hops.

Four "nodes" on loopback addresses (127.0.1.1-4). The caller's node runs no instance; each other
node runs one (an nginx answering a fixed body, never the bottleneck). Same machine, same run,
same load generator (wrk, keep-alive), rounds alternating between:

- ``mesh``: oct's configuration for every node, as ``octctl.ingress`` renders it (mutual TLS with
  certificates of a cluster CA, server names per instance, the access log on both hops);
- ``haproxy``: the anchor, what one would write by hand for the same two hops (mutual TLS,
  ``verify required``, an access log on both hops unless ``--anchor-log off``);
- ``direct``: straight to one instance (what the two hops add).

Then the proxies' memory while idle (each node's HAProxy master and worker); a run through the
mesh while all three instances are replaced one by one (new instances, routes changed on every
node, the old ones stopped); and a run while one instance's node dies (its proxy and instance
killed with SIGKILL, the routes changed a moment later as the leader would), counting failed
requests in both.

Goals (issue 19): p50 added over direct <= 0.5 ms; throughput >= 0.8x the anchor; proxy RSS per
node <= 30 MB idle; 0 failed requests during the replacement and the node's death. Needs
``haproxy``, ``nginx`` and ``wrk`` (``make bench-deps``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from _common import BenchError, emit, exit_on_sigterm, find_tool, log, wait_all_http
from _procs import proc_status_mb
from _wrk import WRK_DONE
from ingress import UPSTREAM_CONF, Nginx, Runs, alternating_rounds

from octctl.addresses import MESH_PORT
from octctl.ingress.haproxy import Haproxy, haproxy_binary
from octctl.ingress.routes import Inbound, IngressRoutes, Mesh, Route, Upstream
from octctl.mesh import MeshIdentity, server_name, service_name
from octctl.tls import new_ca

CALLER = "127.0.1.1"
NODES = ("127.0.1.2", "127.0.1.3", "127.0.1.4")
SERVICE, PROJECT, PORT = "web", "bench", 9500
#: The anchor's ports: its own front port and hop port, beside oct's on the same addresses.
ANCHOR_PORT, ANCHOR_HOP = 9501, 31899

ANCHOR_FRONT = """
global
{log_global}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
{log_defaults}
frontend web
    bind {caller}:{port}
    default_backend web
backend web
    balance roundrobin
{servers}
"""

ANCHOR_HOP_CONF = """
global
{log_global}
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
{log_defaults}
frontend hop
    bind {node}:{hop} ssl crt {pem} ca-file {ca} verify required
    default_backend local
backend local
    server local {node}:{instance}
"""


class Credentials:
    """A cluster CA and one certificate per node (key and certificate in one PEM, as HAProxy loads)."""

    def __init__(self, folder: Path) -> None:
        self.ca_key, self.ca = new_ca("bench")
        self.folder = folder
        (folder / "ca.pem").write_text(self.ca)

    def node(self, address: str, names: tuple[str, ...] = ()) -> str:
        """What the node at ``address`` presents, issued as oct-ctl issues it (:mod:`octctl.mesh`)."""
        return MeshIdentity(address, address, self.ca_key, self.ca).credentials(names)

    def node_file(self, address: str) -> Path:
        path = self.folder / f"{address}.pem"
        path.write_text(self.node(address))
        return path


@contextlib.contextmanager
def instances(folder: Path, port: int) -> Iterator[dict[str, Nginx]]:
    """One nginx per node address, all on ``port``."""
    started = {
        node: Nginx(UPSTREAM_CONF, folder / f"{node}-{port}", address=node, port=port) for node in NODES
    }
    try:
        wait_all_http([f"http://{node}:{port}/" for node in NODES], timeout=20)
        yield started
    finally:
        for server in started.values():
            server.stop()


def mesh_routes(address: str, placed: dict[str, list[int]], credentials: Credentials) -> IngressRoutes:
    """What oct's node at ``address`` serves when ``placed`` says which instance ports run on
    which node: web's port, its local instances direct and the others through the mesh, and
    (on a node running web) the mesh's inbound side."""
    upstreams = []
    for node, ports in placed.items():
        for port in ports:
            via = None if node == address else server_name(PROJECT, SERVICE, port)
            upstreams.append(Upstream(node, port, via))
    if any(u.address == address for u in upstreams):
        upstreams = [Upstream(u.address, u.port, u.via, backup=u.address != address) for u in upstreams]
    own = placed.get(address, [])
    names = (service_name(PROJECT, SERVICE),) if own else ()
    inbound = tuple(Inbound(server_name(PROJECT, SERVICE, p), p) for p in own)
    mesh = Mesh(MESH_PORT, names, inbound, credentials.node(address, names), credentials.ca)
    return IngressRoutes(address, (Route(SERVICE, PORT, "http", tuple(upstreams)),), mesh=mesh)


async def apply_all(
    proxies: dict[str, Haproxy], placed: dict[str, list[int]], credentials: Credentials
) -> None:
    for address, proxy in proxies.items():
        await proxy.apply(mesh_routes(address, placed, credentials))


@contextlib.contextmanager
def anchor(folder: Path, credentials: Credentials, port: int, access_log: bool) -> Iterator[str]:
    """The hand-written two hops: a front on the caller's address, a TLS hop on each node."""
    log_global = "    log stdout format raw local0 info" if access_log else ""
    log_defaults = "    log global\n    option httplog" if access_log else ""
    ca = folder / "ca.pem"
    client = credentials.node_file(CALLER)
    servers = "\n".join(
        f"    server n{i} {node}:{ANCHOR_HOP} ssl crt {client} ca-file {ca} verify required"
        f" verifyhost {node} check"
        for i, node in enumerate(NODES)
    )
    configs = [
        ANCHOR_FRONT.format(
            log_global=log_global, log_defaults=log_defaults, caller=CALLER, port=ANCHOR_PORT, servers=servers
        )
    ]
    for node in NODES:
        pem = credentials.node_file(node)
        tcp_log = log_defaults.replace("httplog", "tcplog")
        configs.append(
            ANCHOR_HOP_CONF.format(
                log_global=log_global,
                log_defaults=tcp_log,
                node=node,
                hop=ANCHOR_HOP,
                pem=pem,
                ca=ca,
                instance=port,
            )
        )
    processes = []
    try:
        for i, text in enumerate(configs):
            path = folder / f"anchor-{i}.cfg"
            path.write_text(text)
            out = open(folder / f"anchor-{i}.log", "wb")  # noqa: SIM115 (closed with the process)
            # (its own session, as oct's proxy has: see ingress.Nginx on the autogroup scheduler)
            command = [haproxy_binary(), "-f", str(path)]
            anchor_proxy = subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True)
            processes.append((anchor_proxy, out))
        url = f"http://{CALLER}:{ANCHOR_PORT}/"
        wait_all_http([url], timeout=20)
        yield url
    finally:
        for process, out in processes:
            process.terminate()
            process.wait(timeout=10)
            out.close()


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (an HAProxy master and its worker)."""
    total = 0.0
    for candidate in [pid, *children(pid)]:
        found = proc_status_mb(candidate, "VmRSS")
        total += found["VmRSS"] if found else 0.0
    return round(total, 1)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = stat.read_text()
            if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def start_wrk(script: Path, duration: float) -> subprocess.Popen[str]:
    """wrk through the caller's node for ``duration`` seconds, 32 connections kept alive."""
    cmd = ["wrk", "-t", "2", "-c", "32", "-d", f"{duration:.0f}s", "--timeout", "5s", "-s", str(script)]
    return subprocess.Popen(
        [*cmd, f"http://{CALLER}:{PORT}/"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def wrk_figures(run: subprocess.Popen[str], what: str, timeout: float) -> dict[str, int]:
    out, err = await asyncio.to_thread(run.communicate, timeout=timeout)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise BenchError(f"wrk during {what} failed: {err.strip()[:300]}")
    f = json.loads(line.removeprefix("WRKJSON "))
    return {"requests": f["requests"], "failed": f["status_errors"] + f["socket_errors"]}


async def rolling_replacement(
    folder: Path, proxies: dict[str, Haproxy], credentials: Credentials, old_port: int, duration: float
) -> dict[str, object]:
    """wrk through the mesh while each node's instance is replaced by a new one on another port:
    the new one is added everywhere (its node first, so the hop exists before callers use it),
    then the old one removed everywhere (callers first), as a drain would. The old ones are
    served again at the end."""
    new_port = old_port + 1
    placed = {node: [old_port] for node in NODES}
    with instances(folder / "next", new_port):
        run = start_wrk(folder / "get.lua", duration)
        await asyncio.sleep(min(1.0, duration / 4))
        reloads = 0
        for node in NODES:
            placed[node] = [old_port, new_port]
            await apply_all(proxies, placed, credentials)
            await asyncio.sleep(duration / 8)
            placed[node] = [new_port]
            await apply_all(proxies, placed, credentials)
            reloads += 2 * len(proxies)
            await asyncio.sleep(duration / 8)
        figures = await wrk_figures(run, "the replacement", duration + 60)
        await apply_all(proxies, {node: [old_port] for node in NODES}, credentials)
    return {**figures, "reloads": reloads}


async def node_kill(
    folder: Path,
    proxies: dict[str, Haproxy],
    credentials: Credentials,
    servers: dict[str, Nginx],
    port: int,
    duration: float,
) -> dict[str, object]:
    """wrk through the mesh while a node dies (its proxy and its instance, kill -9), then the
    routes drop it everywhere else, as the leader would once it saw the node gone."""
    victim = NODES[-1]
    run = start_wrk(folder / "get.lua", duration)
    await asyncio.sleep(duration / 3)
    servers[victim].process.kill()
    master = proxies[victim].pid or 0
    for pid in [*children(master), master]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(duration / 3)
    alive = {node: [port] for node in NODES if node != victim}
    await apply_all({a: p for a, p in proxies.items() if a != victim}, alive, credentials)
    return {**await wrk_figures(run, "the node kill", duration + 60), "killed": victim}


async def measure(folder: Path, args: argparse.Namespace) -> dict[str, object]:
    script = folder / "get.lua"
    script.write_text(WRK_DONE)
    credentials = Credentials(folder)
    port = 21000
    with instances(folder, port) as servers:
        proxies = {address: Haproxy(folder / f"node-{address}") for address in (CALLER, *NODES)}
        try:
            await apply_all(proxies, {node: [port] for node in NODES}, credentials)
            await asyncio.sleep(1.0)  # (idle: the workers have settled)
            rss = {address: tree_rss_mb(proxy.pid or 0) for address, proxy in proxies.items()}
            log(f"idle proxy RSS (MB): {rss}")
            with anchor(folder, credentials, port, args.anchor_log == "on") as anchor_url:
                targets = {
                    "mesh": f"http://{CALLER}:{PORT}/",
                    "haproxy": anchor_url,
                    "direct": f"http://{NODES[0]}:{port}/",
                }
                wait_all_http(list(targets.values()), timeout=20)
                runs = await alternating_rounds(targets, args, script)
            replacement = await rolling_replacement(
                folder, proxies, credentials, port, max(args.duration, 4.0)
            )
            log(f"replacement: {replacement}")
            killed = await node_kill(folder, proxies, credentials, servers, port, max(args.duration, 4.0))
            log(f"node kill: {killed}")
        finally:
            for proxy in proxies.values():
                await proxy.stop()
    return summary(runs, rss, replacement, killed, args)


def summary(
    runs: Runs,
    rss: dict[str, float],
    replacement: dict[str, object],
    killed: dict[str, object],
    args: argparse.Namespace,
) -> dict[str, object]:
    med = runs.med
    loaded = args.clients
    ratio = runs.throughput_ratio("mesh", "haproxy", loaded)
    added_p50 = runs.added_p50("mesh")
    anchor_added = runs.added_p50("haproxy")
    max_rss = max(rss.values())
    return {
        "benchmark": "mesh",
        "clients": loaded,
        "anchor_access_log": args.anchor_log,
        "rounds": args.rounds,
        "mesh_rps": med("mesh", loaded, "requests_per_s"),
        "haproxy_rps": med("haproxy", loaded, "requests_per_s"),
        "direct_rps": med("direct", loaded, "requests_per_s"),
        "throughput_vs_haproxy": ratio,
        "mesh_p99_ms": med("mesh", loaded, "p99_ms"),
        "haproxy_p99_ms": med("haproxy", loaded, "p99_ms"),
        "mesh_p50_ms_1_client": med("mesh", 1, "p50_ms"),
        "haproxy_p50_ms_1_client": med("haproxy", 1, "p50_ms"),
        "direct_p50_ms_1_client": med("direct", 1, "p50_ms"),
        "added_p50_ms": added_p50,
        "haproxy_added_p50_ms": anchor_added,
        "proxy_rss_mb_idle": rss,
        "proxy_rss_mb_idle_max": max_rss,
        "errors": sum(r.errors for r in runs),
        "replacement": replacement,
        "node_kill": killed,
        "goal_met": ratio >= 0.8
        and added_p50 <= 0.5
        and max_rss <= 30
        and replacement["failed"] == 0
        and killed["failed"] == 0,
        "runs": [asdict(r) for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--anchor-log", choices=("on", "off"), default="on", help="the anchor's access log")
    args = parser.parse_args()
    exit_on_sigterm()
    for tool, package in (("haproxy", "haproxy"), ("nginx", "nginx"), ("wrk", "wrk")):
        find_tool(tool, package)
    with tempfile.TemporaryDirectory(prefix="oct-bench-mesh-") as tmp:
        emit(asyncio.run(measure(Path(tmp), args)))


if __name__ == "__main__":
    main()
