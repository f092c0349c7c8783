"""Deploy time of 30 containerized services: oct on a warm local 3-node cluster vs docker-compose.

Why: "oct deploy" has to be about as quick as the tool people already use on one machine, or the
cluster is not worth it. Both sides run the same 30 busybox httpd containers with the same limits,
and both are timed the same way: from the command until every service answers HTTP 200. Rounds
alternate (oct first) so drift of the machine hits both sides alike; the median is reported.
A cold oct deploy (genesis + 3 nodes + 30 services) is measured once for later comparison.

Usage: .venv/bin/python bench/deploy.py [--rounds N] [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from _common import BenchError, emit, exit_on_sigterm, log, median, temp_project_dir, wait_all_http
from _docker import TEST_IMAGE, docker_ready, ensure_test_image
from _procs import cpu_seconds, pids_named
from _projects import check_clash, keep_logs, log_tails, node_logs, oct_cleanup, retry_on_clash

from octctl.providers.local.provider import octctl_pids

SERVICES = 30
PROJECT = "octbench-deploy"
OCT_PORT_BASE = 20000  # svc01 -> 20001 ... svc30 -> 20030; the warm-up service takes 20000
COMPOSE_PROJECT = "octbench"
COMPOSE_PORT_BASE = 21000  # svc01 -> 127.0.0.1:21001 ...
COMMAND = "httpd -f -p 8080 -h /www"  # /www/index.html is baked into the test image
DEPLOY_TIMEOUT = 300.0
HTTP_TIMEOUT = 120.0
GOAL_RATIO = 1.0


def names() -> list[str]:
    return [f"svc{i:02d}" for i in range(1, SERVICES + 1)]


def oct_toml(services: list[tuple[str, int]]) -> str:
    """An oct.toml for ``(name, external_port)`` pairs on a 3-node local cluster."""
    head = f"""[project]
name = "{PROJECT}"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3
cpus = 4000
memory = 4096
"""
    blocks = [
        f"""
[[project.services]]
name = "{name}"
image = "{TEST_IMAGE}"
command = "{COMMAND}"
internal_port = 8080
external_port = {port}
cpus = 100
memory = 32
"""
        for name, port in services
    ]
    return head + "".join(blocks)


def compose_yml() -> str:
    """The same 30 services for docker-compose 1.29 (file format 2.4 keeps mem_limit/cpus)."""
    lines = ['version: "2.4"', "services:"]
    for i, name in enumerate(names(), start=1):
        lines += [
            f"  {name}:",
            f"    image: {TEST_IMAGE}",
            f"    command: {COMMAND}",
            f'    ports: ["127.0.0.1:{COMPOSE_PORT_BASE + i}:8080"]',
            "    mem_limit: 32m",
            "    cpus: 0.1",
        ]
    return "\n".join(lines) + "\n"


# -- where oct spends its time, from the nodes' logs ------------------------------------------------

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")
_PUSH = re.compile(r"^starting (svc\d+) on (node-\d+)")
_APPLIED = re.compile(r"^applied [\w.-]+/(svc\d+): (\w+)")
_CONTAINER = re.compile(r"^starting container oct-[\w.-]+-(svc\d+)")
_GENESIS = re.compile(r"^genesis: cluster ")
_JOINED = re.compile(r"^joined cluster ")


@dataclass
class Timeline:
    """Seconds after the deploy call at which the leader/agents logged each step for the 30 services."""

    genesis_leader: float | None = None
    nodes_joined: float | None = None
    first_push: float | None = None
    last_push: float | None = None
    first_container: float | None = None
    last_applied: float | None = None
    pushes_per_node: dict[str, int] = field(default_factory=dict)


def timeline(project_dir: Path, t0_wall: float) -> Timeline:
    """Read the timestamps the nodes logged after ``t0_wall`` (the logs' clock is local wall time)."""
    out = Timeline()
    pushes: list[float] = []
    containers: list[float] = []
    applied: list[float] = []
    joined: list[float] = []
    for path in node_logs(project_dir).values():
        for raw in path.read_text(errors="replace").splitlines():
            m = _LINE.match(raw)
            if m is None:
                continue
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - t0_wall
            if at < -0.01:  # before the deploy call (warm-up, joins)
                continue
            msg = m.group(2)
            if p := _PUSH.match(msg):
                pushes.append(at)
                out.pushes_per_node[p.group(2)] = out.pushes_per_node.get(p.group(2), 0) + 1
            elif _CONTAINER.match(msg):
                containers.append(at)
            elif _APPLIED.match(msg):
                applied.append(at)
            elif _GENESIS.match(msg):
                out.genesis_leader = round(at, 3)
            elif _JOINED.match(msg):
                joined.append(at)
    if joined:
        out.nodes_joined = round(max(joined), 3)
    if pushes:
        out.first_push, out.last_push = round(min(pushes), 3), round(max(pushes), 3)
    if containers:
        out.first_container = round(min(containers), 3)
    if applied:
        out.last_applied = round(max(applied), 3)
    return out


def engine_cpu() -> float:
    """CPU seconds used so far by the Docker engine's daemons (both sides drive the same engine)."""
    return sum(cpu_seconds(pid) for pid in pids_named("dockerd", "containerd"))


# -- one oct sample ----------------------------------------------------------------------------------


def deploy_or_fail(config: Path) -> Any:
    import octcli
    from octcli.errors import OctError

    try:
        return octcli.deploy(config, on_phase=log, timeout=DEPLOY_TIMEOUT)
    except OctError as e:
        check_clash(config.parent, str(e))
        raise BenchError(f"oct deploy failed: {e}\n{log_tails(config.parent)}") from e


def endpoints(config: Path) -> list[str]:
    import octcli

    services = {s.name: s for s in octcli.status(config).services}
    missing = [n for n in names() if n not in services or not services[n].endpoint]
    if missing:
        raise BenchError(f"oct status has no endpoint for {missing}")
    return [str(services[n].endpoint) for n in names()]


def oct_sample(warm: bool, keep: Path | None, label: str) -> dict[str, Any]:
    """Time one 30-service deploy; ``warm`` first brings the cluster up with a 1-service project."""
    sample: dict[str, Any] = {}
    with temp_project_dir("octbench-deploy-") as folder:
        config = folder / "oct.toml"
        try:
            if warm:
                config.write_text(oct_toml([("warmup", OCT_PORT_BASE)]))
                log(f"{label}: warming up a 3-node cluster in {folder}")
                status = deploy_or_fail(config)
                wait_all_http([str(s.endpoint) for s in status.services], HTTP_TIMEOUT)
                ready = sum(1 for n in status.nodes if n.status == "ready")
                if ready < 3:
                    raise BenchError(f"warm-up cluster has {ready} ready nodes, expected 3")
            config.write_text(oct_toml([(n, OCT_PORT_BASE + i) for i, n in enumerate(names(), start=1)]))
            log(f"{label}: deploying {SERVICES} services ({'warm' if warm else 'cold'} cluster)")
            ctl_before = {pid: cpu_seconds(pid) for pid in octctl_pids(folder)}
            engine_before, client_before = engine_cpu(), time.process_time()
            t0_wall, t0 = time.time(), time.monotonic()
            deploy_or_fail(config)
            t_deployed = time.monotonic()
            urls = endpoints(config)
            t_done = wait_all_http(urls, HTTP_TIMEOUT)
            total = t_done - t0
            cpu = {
                "octctl_s": round(
                    sum(cpu_seconds(pid) - ctl_before.get(pid, 0.0) for pid in octctl_pids(folder)), 2
                ),
                "client_s": round(time.process_time() - client_before, 2),
                "engine_s": round(engine_cpu() - engine_before, 2),
            }
            check_clash(folder)  # a node that lost its address makes the leader wait for it
            spans = timeline(folder, t0_wall)
            log(
                f"{label}: all {SERVICES} answer after {total:.2f} s "
                f"(deploy() returned at {t_deployed - t0:.2f} s; leader pushes {spans.first_push}"
                f"..{spans.last_push} s, last agent apply {spans.last_applied} s, "
                f"per node {spans.pushes_per_node}; CPU {cpu})"
            )
            sample.update(
                total_s=round(total, 3),
                deploy_returned_s=round(t_deployed - t0, 3),
                timeline=asdict(spans),
                cpu=cpu,
            )
        finally:
            keep_logs(folder, keep, label)
            log(f"{label}: destroying")
            t_destroy = time.monotonic()
            failure = oct_cleanup(config, PROJECT)
            sample["destroy_s"] = round(time.monotonic() - t_destroy, 3)
    if failure is not None:
        raise BenchError(failure)
    return sample


# -- one docker-compose sample -----------------------------------------------------------------------


def compose(folder: Path, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-p", COMPOSE_PROJECT, "-f", str(folder / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=folder,
    )


def compose_sample(label: str) -> dict[str, Any]:
    """Time ``docker-compose up -d`` of the same 30 services until all answer."""
    sample: dict[str, Any] = {}
    with temp_project_dir("octbench-compose-") as folder:
        (folder / "docker-compose.yml").write_text(compose_yml())
        try:
            log(f"{label}: docker-compose up -d ({SERVICES} services)")
            engine_before = engine_cpu()
            cli_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            proc = compose(folder, "up", "-d")
            t_up = time.monotonic()
            if proc.returncode != 0:
                raise BenchError(f"docker-compose up failed ({proc.returncode}): {proc.stderr[-2000:]}")
            urls = [f"http://127.0.0.1:{COMPOSE_PORT_BASE + i}/" for i in range(1, SERVICES + 1)]
            total = wait_all_http(urls, HTTP_TIMEOUT) - t0
            cli = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = {
                "cli_s": round(cli.ru_utime + cli.ru_stime - cli_before.ru_utime - cli_before.ru_stime, 2),
                "engine_s": round(engine_cpu() - engine_before, 2),
            }
            log(
                f"{label}: all {SERVICES} answer after {total:.2f} s "
                f"(up returned at {t_up - t0:.2f} s; CPU {cpu})"
            )
            sample.update(total_s=round(total, 3), up_returned_s=round(t_up - t0, 3), cpu=cpu)
        finally:
            log(f"{label}: docker-compose down -t 1")
            t_down = time.monotonic()
            down = compose(folder, "down", "-t", "1", "--remove-orphans")
            sample["down_s"] = round(time.monotonic() - t_down, 3)
            if down.returncode != 0:
                log(f"docker-compose down failed: {down.stderr[-1000:]}")
    if down.returncode != 0:
        raise BenchError(f"docker-compose down failed ({down.returncode})")
    return sample


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="warm oct / compose pairs (default 3)")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the nodes' logs here")
    args = parser.parse_args()
    exit_on_sigterm()
    result: dict[str, Any] = {"bench": "deploy", "services": SERVICES}
    clashes: list[str] = []
    try:
        if shutil.which("docker-compose") is None:
            raise BenchError("docker-compose is not installed (apt-get install docker-compose)")
        docker_ready()
        ensure_test_image()
        sample = partial(oct_sample, warm=False, keep=args.keep_logs, label="oct-cold")
        cold = retry_on_clash(sample, "oct-cold", clashes)
        oct_runs: list[dict[str, Any]] = []
        compose_runs: list[dict[str, Any]] = []
        for r in range(1, max(1, args.rounds) + 1):
            label = f"oct-warm-{r}"
            sample = partial(oct_sample, warm=True, keep=args.keep_logs, label=label)
            oct_runs.append(retry_on_clash(sample, label, clashes))
            compose_runs.append(compose_sample(label=f"compose-{r}"))
    except BenchError as e:
        log(f"BROKEN: {e}")
        emit({**result, "error": str(e).splitlines()[0], "address_clash_retries": clashes})
        return 1
    oct_samples = [run["total_s"] for run in oct_runs]
    compose_samples = [run["total_s"] for run in compose_runs]
    oct_s, compose_s = median(oct_samples), median(compose_samples)
    ratio = round(oct_s / compose_s, 3)
    result.update(
        oct_s=oct_s,
        compose_s=compose_s,
        ratio=ratio,
        oct_samples=oct_samples,
        compose_samples=compose_samples,
        goal=f"oct <= {GOAL_RATIO}x compose",
        goal_met=ratio <= GOAL_RATIO,
        oct_first_deploy_s=cold["total_s"],
        oct_deploy_returned_samples=[run["deploy_returned_s"] for run in oct_runs],
        compose_up_returned_samples=[run["up_returned_s"] for run in compose_runs],
        oct_timelines=[run["timeline"] for run in oct_runs],
        oct_first_deploy_timeline=cold["timeline"],
        oct_cpu=[run["cpu"] for run in oct_runs],
        compose_cpu=[run["cpu"] for run in compose_runs],
        oct_destroy_samples=[run["destroy_s"] for run in oct_runs],
        compose_down_samples=[run["down_s"] for run in compose_runs],
        address_clash_retries=clashes,
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
