"""The ingress's data path against nginx: requests/s and latency to a 3-instance HTTP service.

Same machine, same run, same load generator (wrk, keep-alive), rounds alternating: through oct's
ingress (HAProxy as ``octctl.ingress`` configures it), through nginx configured by hand with the
same three upstreams (the anchor), and straight to one instance (what a proxy adds). The three
instances are nginx servers answering a fixed body, so the upstreams are never the bottleneck.
A last run replaces all three instances one by one through the ingress while wrk runs, and
counts failed requests.

Goals (docs/ingress.md): throughput >= 0.8x nginx's; p50 added over direct <= 0.3 ms; 0 failed
requests during the replacement. Needs ``haproxy``, ``nginx`` and ``wrk`` (``make bench-deps``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import BenchError, check_loopback, emit, exit_on_sigterm, find_tool, log, median, wait_all_http
from _wrk import WRK_DONE

from octctl.ingress.haproxy import Haproxy
from octctl.ingress.routes import IngressRoutes, Route, Upstream

ADDRESS = "127.0.0.1"

UPSTREAM_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen {address}:{port} reuseport;
        location / {{ return 200 "ok {port}\\n"; }}
    }}
}}
"""

#: The anchor: what someone would write by hand to balance the same three instances.
PROXY_CONF = """
worker_processes auto;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {access_log}
    keepalive_requests 1000000;
    upstream app {{
{servers}
        keepalive 64;
    }}
    server {{
        listen {address}:{port} reuseport;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return int(s.getsockname()[1])


class Nginx:
    """One nginx in the foreground, in its own folder and its own session, as oct's HAProxy is.

    Linux's autogroup scheduler shares the CPU fairly between sessions first: a proxy in the
    benchmark's own session would share one slice with wrk, and lose to oct's proxy, alone in its
    session, on a saturated machine (that made the anchors look 20-30 % slower than they are)."""

    def __init__(self, template: str, folder: Path, address: str = ADDRESS, **values: object) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "nginx.conf").write_text(template.format(dir=folder, address=address, **values))
        self.process = subprocess.Popen(
            [find_tool("nginx", "nginx"), "-c", str(folder / "nginx.conf"), "-p", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def instances(folder: Path, count: int) -> Iterator[list[Upstream]]:
    started: list[Nginx] = []
    ports = [free_port() for _ in range(count)]
    try:
        for port in ports:
            started.append(Nginx(UPSTREAM_CONF, folder / f"upstream-{port}", port=port))
        wait_all_http([f"http://{ADDRESS}:{port}/" for port in ports], timeout=20)
        yield [Upstream(ADDRESS, port) for port in ports]
    finally:
        for server in started:
            server.stop()


@contextlib.contextmanager
def nginx_proxy(folder: Path, upstreams: list[Upstream], access_log: bool) -> Iterator[str]:
    """The anchor; ``access_log`` on like oct's ingress, which logs every request (a line per
    request to a file, nginx's default format), or off for the proxy's bare speed."""
    port = free_port()
    servers = "\n".join(f"        server {u.address}:{u.port};" for u in upstreams)
    logging = f"access_log {folder / 'proxy' / 'access.log'};" if access_log else "access_log off;"
    proxy = Nginx(PROXY_CONF, folder / "proxy", port=port, servers=servers, access_log=logging)
    try:
        url = f"http://{ADDRESS}:{port}/"
        wait_all_http([url], timeout=20)
        yield url
    finally:
        proxy.stop()


@dataclass
class Figures:
    target: str
    clients: int
    round_no: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def wrk(url: str, target: str, clients: int, duration: float, round_no: int, script: Path) -> Figures:
    check_loopback(url)
    threads = min(2, clients)  # one per core; wrk needs a connection per thread
    cmd = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{duration:.0f}s", "--timeout", "5s"]
    cmd += ["-s", str(script)]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk against {target} failed (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
    f = json.loads(line.removeprefix("WRKJSON "))
    errors = f["status_errors"] + f["socket_errors"]
    return Figures(
        target=target,
        clients=clients,
        round_no=round_no,
        requests_per_s=round((f["requests"] - errors) / (f["duration_us"] / 1e6), 1),
        p50_ms=f["p50_us"] / 1000,
        p99_ms=f["p99_us"] / 1000,
        errors=errors,
        requests=f["requests"],
    )


async def replace_all(
    proxy: Haproxy, port: int, old: list[Upstream], new: list[Upstream], pause: float
) -> int:
    """Swap ``old`` for ``new`` one instance at a time, as a rolling update would; reloads made."""
    current = list(old)
    reloads = 0
    for fresh, stale in zip(new, old, strict=True):
        for step in ([*current, fresh], [u for u in [*current, fresh] if u != stale]):
            await proxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=tuple(step)),)))
            reloads += 1
            current = step
            await asyncio.sleep(pause)
    return reloads


async def rolling_replacement(
    folder: Path, proxy: Haproxy, upstreams: list[Upstream], duration: float
) -> dict[str, object]:
    """wrk through the ingress while all three instances are replaced; then the old ones stop."""
    port = next(r.port for r in proxy_routes(proxy))
    url = f"http://{ADDRESS}:{port}/"
    script = folder / "get.lua"
    with instances(folder / "next", len(upstreams)) as fresh:
        run = subprocess.Popen(
            [
                "wrk",
                "-t",
                "2",
                "-c",
                "32",
                "-d",
                f"{duration:.0f}s",
                "--timeout",
                "5s",
                "-s",
                str(script),
                url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        await asyncio.sleep(min(1.0, duration / 4))
        reloads = await replace_all(proxy, port, upstreams, fresh, pause=duration / 8)
        out, err = await asyncio.to_thread(run.communicate, timeout=duration + 60)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise BenchError(f"wrk during the replacement failed: {err.strip()[:300]}")
    f = json.loads(line.removeprefix("WRKJSON "))
    return {"requests": f["requests"], "failed": f["status_errors"] + f["socket_errors"], "reloads": reloads}


def proxy_routes(proxy: Haproxy) -> tuple[Route, ...]:
    served = proxy.served
    if served is None:
        raise BenchError("the ingress serves nothing")
    return served.routes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--anchor-log",
        choices=("on", "off"),
        default="on",
        help="nginx's access log (default on: oct's ingress logs every request too)",
    )
    args = parser.parse_args()
    exit_on_sigterm()
    for tool, package in (("haproxy", "haproxy"), ("nginx", "nginx"), ("wrk", "wrk")):
        find_tool(tool, package)
    with tempfile.TemporaryDirectory(prefix="oct-bench-ingress-") as tmp:
        emit(asyncio.run(measure(Path(tmp), args)))


async def measure(folder: Path, args: argparse.Namespace) -> dict[str, object]:
    """Alternating rounds of the three targets, then the replacement run; the summary."""
    script = folder / "get.lua"
    script.write_text(WRK_DONE)
    with (
        instances(folder, 3) as upstreams,
        nginx_proxy(folder, upstreams, args.anchor_log == "on") as nginx_url,
    ):
        proxy = Haproxy(folder / "ingress")
        port = free_port()
        try:
            await proxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=tuple(upstreams)),)))
            targets = {
                "oct": f"http://{ADDRESS}:{port}/",
                "nginx": nginx_url,
                "direct": f"http://{ADDRESS}:{upstreams[0].port}/",
            }
            wait_all_http(list(targets.values()), timeout=20)
            runs = await alternating_rounds(targets, args, script)
            replacement = await rolling_replacement(folder, proxy, upstreams, max(args.duration, 4.0))
            log(f"replacement: {replacement}")
        finally:
            await proxy.stop()
    return summary(runs, replacement, args)


async def alternating_rounds(targets: dict[str, str], args: argparse.Namespace, script: Path) -> Runs:
    """``args.rounds`` rounds, each running every target loaded (``args.clients``: throughput)
    and with one client (what one request pays), in turn, so drifts of the machine hit all alike."""
    runs = Runs()
    for round_no in range(args.rounds):
        for clients in (args.clients, 1):
            for name, url in targets.items():
                run = await asyncio.to_thread(wrk, url, name, clients, args.duration, round_no, script)
                runs.append(run)
                log(f"round {round_no} {name} x{clients}: {run.requests_per_s:.0f} req/s p50 {run.p50_ms} ms")
    return runs


class Runs(list[Figures]):
    """Every run of a benchmark, and the medians its summary reports."""

    def pick(self, target: str, clients: int) -> list[Figures]:
        return [r for r in self if r.target == target and r.clients == clients]

    def med(self, target: str, clients: int, field: str) -> float:
        return median(getattr(r, field) for r in self.pick(target, clients))

    def throughput_ratio(self, target: str, anchor: str, clients: int) -> float:
        """The median over rounds of ``target``'s requests/s over ``anchor``'s in the same round."""
        by_round = {r.round_no: r for r in self.pick(anchor, clients)}
        return median(
            r.requests_per_s / by_round[r.round_no].requests_per_s for r in self.pick(target, clients)
        )

    def added_p50(self, target: str) -> float:
        """What ``target`` adds to one client's median latency over going straight to an instance."""
        return round(self.med(target, 1, "p50_ms") - self.med("direct", 1, "p50_ms"), 3)


def summary(runs: Runs, replacement: dict[str, object], args: argparse.Namespace) -> dict[str, object]:
    """Throughput from the loaded runs (paired by round), latency added from the one-client runs."""
    med = runs.med
    loaded = args.clients
    throughput_ratio = runs.throughput_ratio("oct", "nginx", loaded)
    added_p50 = runs.added_p50("oct")
    return {
        "benchmark": "ingress",
        "clients": loaded,
        "nginx_access_log": args.anchor_log,
        "rounds": args.rounds,
        "oct_rps": med("oct", loaded, "requests_per_s"),
        "nginx_rps": med("nginx", loaded, "requests_per_s"),
        "direct_rps": med("direct", loaded, "requests_per_s"),
        "throughput_vs_nginx": throughput_ratio,
        "oct_p99_ms": med("oct", loaded, "p99_ms"),
        "nginx_p99_ms": med("nginx", loaded, "p99_ms"),
        "oct_p50_ms_1_client": med("oct", 1, "p50_ms"),
        "nginx_p50_ms_1_client": med("nginx", 1, "p50_ms"),
        "direct_p50_ms_1_client": med("direct", 1, "p50_ms"),
        "added_p50_ms": added_p50,
        "errors": sum(r.errors for r in runs),
        "replacement": replacement,
        "goal_met": throughput_ratio >= 0.8 and added_p50 <= 0.3 and replacement["failed"] == 0,
        "runs": [asdict(r) for r in runs],
    }


if __name__ == "__main__":
    main()
