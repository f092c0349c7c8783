"""A rolling update of a 3-replica HTTP service under steady load: oct vs Docker Swarm (or compose).

Why: an update that drops requests, or takes much longer than the tool people already use, makes
replicas pointless. Both sides run the same busybox httpd image (the offline test image) whose
page names its version (``VERSION``) and container, three instances each, under the same paced
load (bench/_load.py: every request timed and checked, failures with the moment they happened):

- **oct**: a local 3-node cluster, docker runtime, ``replicas = 3``; the load goes through every
  node's ingress (``external_port`` on each 127.0.0.N: the addresses users would use). Then
  ``oct deploy`` of a changed env var; the wall time runs from the deploy call until ``oct status``
  (the library call behind ``oct status --json``) shows three running, undrained instances and each
  of them answers the new version on its own address and port.
- **Docker Swarm**: ``docker swarm init`` on the loopback, ``docker service create --replicas 3``
  published through the routing mesh, ``docker service update --update-order start-first
  --env-add``; done when ``docker service ps`` shows three running tasks, all new. If the mesh does
  not answer here (no IPVS in the kernel of a container), the error is shown, Swarm's update is
  still timed without load, and the anchor for failed requests and wall time becomes
  ``docker-compose up -d`` recreating a ``scale: 3`` compose service, loaded on its three ports.
- **rollback**: back on the oct cluster, under the same load, ``oct deploy`` of a version that
  serves but never passes its check: it must fail, roll back by itself, and lose no request.
- **kill**: back on the oct cluster, the service given an HTTP check (which makes every ingress
  proxy it request by request, so a request the dead instance took is sent again to another one:
  without a check it is carried connection by connection, and what was in flight is lost), kill -9
  one follower node holding a replica (its oct-ctl, its HAProxy and that replica's container)
  under load through the two other nodes; report failed requests and the seconds until three
  instances run again (the leader moves the dead node's instance once it declares the node
  unreachable).

Goals (issue 13): 0 failed requests during the update and during the rollback; update wall time
<= 1.0x the anchor's; a replacement instance <= 10 s after the kill. Loopback only; every phase
bounded (~60 s); the cluster, the swarm, the compose project and the networks they made are
removed even on error.

Usage: .venv/bin/python bench/update.py [--rate N] [--workers N] [--order start-first|stop-first]
[--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import BenchError, check_loopback, emit, exit_on_sigterm, log, temp_project_dir, wait_all_http
from _docker import TEST_IMAGE, docker_ready, ensure_test_image
from _load import Load, versions_seen, window
from _projects import check_clash, keep_logs, log_tails, oct_cleanup, retry_on_clash

PROJECT = "octbench-update"
REPLICAS = 3
OCT_PORT = 9480  # external_port: served by every node's ingress
SWARM_PORT = 31480  # outside oct's instance ports (20000-29999)
COMPOSE_PORTS = (31481, 31483)
SWARM_SERVICE = "octbench-update"
COMPOSE_PROJECT = "octbench-update"
#: Writes a page naming the version and the container, then serves it. ``trap exit TERM``: httpd
#: as PID 1 ignores SIGTERM, so every stop would wait out the engine's 10 s grace period instead.
SCRIPT = (
    "mkdir -p /tmp/www; echo $VERSION $HOSTNAME > /tmp/www/index.html; "
    "trap exit TERM; httpd -f -p 8080 -h /tmp/www & wait"
)
PHASE_TIMEOUT = 60.0  # each measured phase, and each wait for a side to come up
BASELINE = 3.0  # seconds of load before the change, for the latency at rest
TAIL = 2.0  # seconds of load after the update is done: late failures count too
POLL = 0.2
GOAL_FAILED = 0
GOAL_RATIO = 1.0
GOAL_REPLACEMENT_S = 10.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def run(*argv: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc


def poll_until(done: Callable[[], bool], timeout: float, what: str) -> float:
    """Call ``done`` every POLL seconds until it is true; the monotonic time when it was."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL) + 10):
        if done():
            return time.monotonic()
        if time.monotonic() > deadline:
            break
        time.sleep(POLL)
    raise BenchError(f"{what} did not happen within {timeout:.0f} s")


def answer_of(url: str) -> str | None:
    """The first word (the version) a URL answers with, None when it does not answer 200."""
    check_loopback(url)
    try:
        with _OPENER.open(url, timeout=1.0) as resp:
            words = resp.read(4096).decode(errors="replace").split()
            return words[0] if resp.status == 200 and words else None
    except OSError:
        return None


@dataclass
class Background:
    """A blocking call (a deploy, an update command) run in a thread while the benchmark polls."""

    call: Callable[[], object]
    returned_at: float | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.call()
        except BaseException as e:  # reported by join()
            self.error = e
        self.returned_at = time.monotonic()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise BenchError(f"the update command still runs after {timeout:.0f} s")
        if self.error is not None:
            raise BenchError(f"the update command failed: {self.error}") from self.error


def measured_update(
    load: Load, start: Callable[[], Background], updated: Callable[[], bool], label: str
) -> dict[str, Any]:
    """Load at rest, then the update, timed until ``updated()``; the figures of that window."""
    time.sleep(BASELINE)
    t0 = time.monotonic()
    log(f"{label}: updating under load")
    command = start()
    t_done = poll_until(updated, PHASE_TIMEOUT, f"{label}: every instance on the new version")
    command.join(PHASE_TIMEOUT)
    assert command.returned_at is not None
    log(f"{label}: every instance runs the new version after {t_done - t0:.2f} s")
    time.sleep(TAIL)
    return {"t0": t0, "t_done": t_done, "returned_s": round(command.returned_at - t0, 3)}


def summarize(load: Load, marks: dict[str, Any]) -> dict[str, Any]:
    t0, t_done = marks["t0"], marks["t_done"]
    first = min(o.started for o in load.outcomes)
    last = max(o.started for o in load.outcomes) + 1
    during = window(load.outcomes, t0, t_done + TAIL, load.urls)
    return {
        "update_wall_s": round(t_done - t0, 3),
        "command_returned_s": marks["returned_s"],
        "failed_requests": during["failed"],
        "requests_during_update": during["requests"],
        "p99_ms_during_update": window(load.outcomes, t0, t_done, load.urls)["p99_ms"],
        "p99_ms_at_rest": window(load.outcomes, first, t0, load.urls)["p99_ms"],
        "failed_requests_whole_run": window(load.outcomes, first, last, load.urls)["failed"],
        "failures": {k: during[k] for k in ("failure_reasons", "first_failures", "last_failure_at_s")},
        "versions_answered": versions_seen(load.outcomes, t0, t_done + TAIL),
    }


# -- oct -----------------------------------------------------------------------------------------------


#: The rollback phase's broken version: it serves its page, but its check asks for a page that
#: does not exist (404), so it never passes.
BROKEN_CHECK = """
[project.services.healthcheck]
http = "/no-such-page"
interval = 0.5
timeout = 0.4
retries = 1
start_period = 0
"""
ROLLBACK_DEADLINE = 5  # healthy_deadline: seconds the broken version gets before the rollback
#: The kill phase's service has an HTTP check, which tells the ingress it speaks HTTP: proxied
#: request by request, a request the dead instance took is sent again to another one.
HTTP_CHECK = """
[project.services.healthcheck]
http = "/"
interval = 1
timeout = 0.5
retries = 2
start_period = 0
"""


def oct_toml(version: str, order: str, broken: bool = False, checked: bool = False) -> str:
    script = SCRIPT.replace('"', '\\"')
    return f"""[project]
name = "{PROJECT}"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3
cpus = 4000
memory = 4096

[[project.services]]
name = "web"
image = "{TEST_IMAGE}"
command = "sh -c '{script}'"
internal_port = 8080
external_port = {OCT_PORT}
replicas = {REPLICAS}
cpus = 500
memory = 32

[project.services.envs]
VERSION = "{version}"

[project.services.update]
order = "{order}"
healthy_deadline = {ROLLBACK_DEADLINE}
""" + (BROKEN_CHECK if broken else HTTP_CHECK if checked else "")


def oct_deploy_raw(config: Path) -> Any:
    import octcli

    return octcli.deploy(config, on_phase=log, timeout=PHASE_TIMEOUT * 3)


def oct_deploy(config: Path) -> Any:
    from octcli.errors import OctError

    try:
        return oct_deploy_raw(config)
    except OctError as e:
        check_clash(config.parent, str(e))
        raise BenchError(f"oct deploy failed: {e}\n{log_tails(config.parent)}") from e


def oct_instances(config: Path) -> list[Any]:
    import octcli

    with contextlib.suppress(Exception):  # a node may be dead on purpose; the next poll retries
        web = next(s for s in octcli.status(config).services if s.name == "web")
        return list(web.instances)
    return []


def all_on(config: Path, version: str, avoid: str | None = None) -> bool:
    """Three running, undrained instances (none on ``avoid``), each answering ``version`` itself."""
    instances = oct_instances(config)
    return (
        len(instances) == REPLICAS
        and all(i.state == "running" and not i.draining and i.node != avoid for i in instances)
        and all(answer_of(f"http://{i.address}:{i.port}/") == version for i in instances)
    )


def oct_update(config: Path, nodes: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    urls = [f"http://{n.address}:{OCT_PORT}/" for n in nodes]
    wait_all_http(urls, PHASE_TIMEOUT)
    with Load(urls, args.rate, args.workers) as load:

        def start() -> Background:
            config.write_text(oct_toml("two", args.order))
            return Background(lambda: oct_deploy(config))

        marks = measured_update(load, start, lambda: all_on(config, "two"), "oct")
    return summarize(load, marks)


def oct_rollback(config: Path, nodes: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """A version that never passes its check, under the same load: oct deploy fails after
    ROLLBACK_DEADLINE and rolls back; every request must still be answered (by the old version)."""
    from octcli.errors import OctError

    urls = [f"http://{n.address}:{OCT_PORT}/" for n in nodes]
    with Load(urls, args.rate, args.workers) as load:
        time.sleep(BASELINE)
        t0 = time.monotonic()
        log("rollback: deploying a version that never passes its check, under load")
        config.write_text(oct_toml("broken", args.order, broken=True))
        error = ""
        try:
            oct_deploy_raw(config)
        except OctError as e:
            error = str(e)
        t_returned = time.monotonic()
        if "rolled back" not in error:
            raise BenchError(f"rollback: oct deploy did not fail and roll back: {error or 'it succeeded'}")
        config.write_text(oct_toml("two", args.order))  # what the cluster runs again
        t_done = poll_until(lambda: all_on(config, "two"), PHASE_TIMEOUT, "rollback: every instance on two")
        log(f"rollback: oct deploy failed and rolled back after {t_returned - t0:.2f} s")
        time.sleep(TAIL)
    during = window(load.outcomes, t0, t_done + TAIL, load.urls)
    return {
        "deploy_returned_s": round(t_returned - t0, 3),
        "healthy_deadline_s": ROLLBACK_DEADLINE,
        "all_on_old_version_after_s": round(t_done - t0, 3),
        "failed_requests": during["failed"],
        "requests": during["requests"],
        "p99_ms": during["p99_ms"],
        "failures": {k: during[k] for k in ("failure_reasons", "first_failures", "last_failure_at_s")},
        "versions_answered": versions_seen(load.outcomes, t0, t_done + TAIL),
        "goal": "0 failed requests",
        "goal_met": during["failed"] == 0,
    }


def no_previous() -> bool:
    """No container of an update's previous generation is left (the nodes retire them a few
    seconds after their replacements serve): the kill must find the cluster at rest."""
    names = run("docker", "ps", "-a", "--format", "{{.Names}}", "--filter", f"name=oct-{PROJECT}-").stdout
    return not any(name.endswith(".previous") for name in names.split())


def kill_node(folder: Path, node: str, container: str) -> list[str]:
    """kill -9 what a dead machine would take with it: oct-ctl, its HAProxy, the replica."""
    done = []
    node_dir = folder / ".oct" / "nodes" / node
    pid = int((node_dir / "oct-ctl.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    done.append(f"oct-ctl {pid}")
    with contextlib.suppress(OSError, ValueError):
        master = int((node_dir / "ingress" / "haproxy.pid").read_text().split()[0])
        os.killpg(master, signal.SIGKILL)  # started in its own session: master and workers
        done.append(f"haproxy group {master}")
    run("docker", "kill", "--signal", "KILL", container, timeout=30)
    done.append(f"container {container}")
    return done


def oct_kill(config: Path, args: argparse.Namespace) -> dict[str, Any]:
    import octcli

    status = octcli.status(config)
    web = next(s for s in status.services if s.name == "web")
    victim = next(n for n in status.nodes if n.role == "follower")
    instance = next(i for i in web.instances if i.node == victim.id)
    survivors = [n for n in status.nodes if n.id != victim.id]
    urls = [f"http://{n.address}:{OCT_PORT}/" for n in survivors]
    unreachable_at: list[float] = []

    def replaced() -> bool:
        if not unreachable_at:
            with contextlib.suppress(Exception):
                if any(n.id == victim.id and n.status == "unreachable" for n in octcli.status(config).nodes):
                    unreachable_at.append(time.monotonic())
        return all_on(config, "two", avoid=victim.id)

    with Load(urls, args.rate, args.workers) as load:
        time.sleep(BASELINE)
        t_kill = time.monotonic()
        killed = kill_node(config.parent, victim.id, f"oct-{PROJECT}-{instance.name}")
        log(f"kill: killed node {victim.id} ({', '.join(killed)}); load through {[n.id for n in survivors]}")
        t_back = poll_until(replaced, PHASE_TIMEOUT, "kill: three running instances again")
        log(f"kill: three instances run again {t_back - t_kill:.2f} s after the kill")
        time.sleep(TAIL)
    during = window(load.outcomes, t_kill, t_back + TAIL, load.urls)
    moved_to = next((i.node for i in oct_instances(config) if i.name == instance.name), None)
    return {
        "killed_node": victim.id,
        "killed_instance": instance.name,
        "moved_to": moved_to,
        "load_through": [n.id for n in survivors],
        "unreachable_after_s": round(unreachable_at[0] - t_kill, 3) if unreachable_at else None,
        "replacement_running_after_s": round(t_back - t_kill, 3),
        "failed_requests": during["failed"],
        "requests": during["requests"],
        "p99_ms": during["p99_ms"],
        "failures": {k: during[k] for k in ("failure_reasons", "first_failures", "last_failure_at_s")},
        "goal": f"0 failed requests, replacement <= {GOAL_REPLACEMENT_S:.0f} s",
        "goal_met": during["failed"] == 0 and t_back - t_kill <= GOAL_REPLACEMENT_S,
    }


def oct_side(args: argparse.Namespace) -> dict[str, Any]:
    """One cluster: the update, then the kill; destroyed afterwards whatever happened."""
    import octcli

    with temp_project_dir("octbench-update-") as folder:
        config = folder / "oct.toml"
        config.write_text(oct_toml("one", args.order))
        try:
            log(f"oct: deploying 3 replicas on a 3-node cluster in {folder}")
            oct_deploy(config)
            poll_until(lambda: all_on(config, "one"), PHASE_TIMEOUT, "oct: three instances on version one")
            status = octcli.status(config)
            spread = sorted({str(i.node) for s in status.services for i in s.instances})
            log(f"oct: instances on {spread}")
            update = oct_update(config, list(status.nodes), args)
            log(f"oct: {update['failed_requests']} failed requests during the update")
            rollback = oct_rollback(config, list(status.nodes), args)
            log(f"rollback: {rollback['failed_requests']} failed requests")
            log("kill: giving the service an HTTP check first (a rolling update, not measured)")
            config.write_text(oct_toml("two", args.order, checked=True))
            oct_deploy(config)
            poll_until(lambda: all_on(config, "two"), PHASE_TIMEOUT, "kill: three checked instances")
            poll_until(no_previous, PHASE_TIMEOUT, "kill: the nodes to retire the replaced containers")
            kill = oct_kill(config, args)
        except BenchError as e:
            raise BenchError(f"{e}\n{log_tails(folder)}") from e
        finally:
            keep_logs(folder, args.keep_logs, "oct")
            log("oct: destroying")
            failure = oct_cleanup(config, PROJECT)
    if failure is not None:
        raise BenchError(failure)
    return {"update": update, "rollback": rollback, "kill": kill}


# -- Docker Swarm ------------------------------------------------------------------------------------


class MeshUnavailable(BenchError):
    """Swarm runs, but its routing mesh does not answer on this machine."""


def network_names() -> set[str]:
    return set(run("docker", "network", "ls", "--format", "{{.Name}}").stdout.split())


@contextlib.contextmanager
def swarm() -> Iterator[None]:
    """A single-node swarm on the loopback, left (with the networks it made) on the way out."""
    state = run("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state != "inactive":
        raise BenchError(f"this Docker engine is already in a swarm ({state}): not touching it")
    before = network_names()
    try:
        run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
        yield
    finally:
        run("docker", "service", "rm", SWARM_SERVICE, check=False)
        run("docker", "swarm", "leave", "--force", check=False)
        for name in sorted(network_names() - before):  # docker_gwbridge outlives the swarm
            run("docker", "network", "rm", name, check=False)
        log("swarm: left, networks it made removed")


def swarm_tasks() -> list[tuple[str, str]]:
    out = run(
        "docker", "service", "ps", SWARM_SERVICE, "--filter", "desired-state=running",
        "--format", "{{.ID}} {{.CurrentState}}", check=False,
    ).stdout  # fmt: skip
    return [(line.split()[0], line.split()[1]) for line in out.splitlines() if line.strip()]


def swarm_running(exclude: set[str]) -> bool:
    tasks = swarm_tasks()
    return len(tasks) == REPLICAS and all(s == "Running" and i not in exclude for i, s in tasks)


def swarm_side(args: argparse.Namespace) -> tuple[dict[str, Any], MeshUnavailable | None]:
    """Swarm's figures; with a mesh that does not answer, its unloaded update and the error."""
    with swarm():
        run(
            "docker", "service", "create", "--detach", "--no-resolve-image", "--name", SWARM_SERVICE,
            "--replicas", str(REPLICAS), "--publish", f"published={SWARM_PORT},target=8080",
            "--env", "VERSION=one", "--limit-cpu", "0.5", "--limit-memory", "32m",
            TEST_IMAGE, "sh", "-c", SCRIPT,
        )  # fmt: skip
        poll_until(lambda: swarm_running(set()), PHASE_TIMEOUT, "swarm: three running tasks")
        old = {i for i, _ in swarm_tasks()}
        url = f"http://127.0.0.1:{SWARM_PORT}/"
        update = [
            "docker", "service", "update", "--detach", "--no-resolve-image", "--update-order",
            "start-first", "--env-add", "VERSION=two", SWARM_SERVICE,
        ]  # fmt: skip
        mesh: MeshUnavailable | None = None
        try:
            wait_all_http([url], 15)
        except BenchError as e:
            mesh = MeshUnavailable(f"Swarm's routing mesh does not answer {url}: {e}. {ipvs_hint()}")
        if mesh is not None:
            t0 = time.monotonic()
            run(*update)
            t_done = poll_until(lambda: swarm_running(old), PHASE_TIMEOUT, "swarm: three new tasks")
            log(f"swarm (no load, no mesh): every task new and running after {t_done - t0:.2f} s")
            return {"update_wall_s": round(t_done - t0, 3), "under_load": False}, mesh
        with Load([url], args.rate, args.workers) as load:
            marks = measured_update(
                load, lambda: Background(lambda: run(*update)), lambda: swarm_running(old), "swarm"
            )
        return {**summarize(load, marks), "under_load": True}, None


def ipvs_hint() -> str:
    if not Path("/proc/sys/net/ipv4/vs").exists():
        return "The kernel has no IPVS (/proc/sys/net/ipv4/vs is missing), which the mesh needs."
    return "See dockerd's log for why."


# -- docker-compose ------------------------------------------------------------------------------------


def compose_yml(version: str) -> str:
    low, high = COMPOSE_PORTS
    return json.dumps(  # JSON is YAML; no quoting of the script to get wrong
        {
            "version": "2.4",
            "services": {
                "web": {
                    "image": TEST_IMAGE,
                    "command": ["sh", "-c", SCRIPT.replace("$", "$$")],  # compose interpolates $X
                    "environment": {"VERSION": version},
                    "ports": [f"127.0.0.1:{low}-{high}:8080"],
                    "scale": REPLICAS,
                    "cpus": 0.5,
                    "mem_limit": "32m",
                }
            },
        },
        indent=2,
    )


def compose(folder: Path, *args: str) -> None:
    run("docker-compose", "-p", COMPOSE_PROJECT, "-f", str(folder / "docker-compose.yml"), *args, timeout=120)


def compose_side(args: argparse.Namespace) -> dict[str, Any]:
    urls = [f"http://127.0.0.1:{p}/" for p in range(COMPOSE_PORTS[0], COMPOSE_PORTS[1] + 1)]
    with temp_project_dir("octbench-update-compose-") as folder:
        (folder / "docker-compose.yml").write_text(compose_yml("one"))
        try:
            compose(folder, "up", "-d")
            wait_all_http(urls, PHASE_TIMEOUT)
            with Load(urls, args.rate, args.workers) as load:

                def start() -> Background:
                    (folder / "docker-compose.yml").write_text(compose_yml("two"))
                    return Background(lambda: compose(folder, "up", "-d"))

                def updated() -> bool:
                    return all(answer_of(u) == "two" for u in urls)

                marks = measured_update(load, start, updated, "compose")
        finally:
            with contextlib.suppress(BenchError, subprocess.SubprocessError):
                compose(folder, "down", "-t", "1", "--remove-orphans")
            log("compose: down")
    return summarize(load, marks)


# -- main ------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=300.0, help="requests/s offered (default 300)")
    parser.add_argument("--workers", type=int, default=12, help="concurrent clients (default 12)")
    parser.add_argument(
        "--order",
        choices=("start-first", "stop-first"),
        default="start-first",
        help="oct's update order (default start-first, as Swarm's update here)",
    )
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the oct nodes' logs here")
    args = parser.parse_args()
    exit_on_sigterm()
    result: dict[str, Any] = {
        "bench": "update",
        "replicas": REPLICAS,
        "oct_order": args.order,
        "rate": args.rate,
        "workers": args.workers,
    }
    clashes: list[str] = []
    try:
        if shutil.which("docker-compose") is None:
            raise BenchError("docker-compose is not installed (apt-get install docker-compose)")
        docker_ready()
        ensure_test_image()
        octs = retry_on_clash(lambda: oct_side(args), "oct", clashes)
        try:
            swarm_figures, mesh = swarm_side(args)
        except BenchError as e:  # swarm itself cannot run here (or this engine is in one already)
            swarm_figures, mesh = {}, MeshUnavailable(f"Docker Swarm cannot run here: {e}")
        if mesh is None:
            anchor_name, anchor = "swarm", swarm_figures
        else:
            log(f"ERROR {mesh}; the anchor becomes docker-compose (up -d recreation)")
            anchor_name, anchor = "compose", compose_side(args)
    except BenchError as e:
        log(f"BROKEN: {e}")
        emit({**result, "error": str(e).splitlines()[0], "address_clash_retries": clashes})
        return 1
    update = octs["update"]
    ratio = round(update["update_wall_s"] / anchor["update_wall_s"], 3)
    result["oct"] = {
        **update,
        "goal": f"{GOAL_FAILED} failed requests, update wall <= {GOAL_RATIO}x {anchor_name}",
        "goal_met": update["failed_requests"] == GOAL_FAILED and ratio <= GOAL_RATIO,
    }
    result[anchor_name] = anchor
    if mesh is not None:
        result["swarm"] = {**swarm_figures, "error": str(mesh)}
        if "update_wall_s" in swarm_figures:
            result["ratio_update_wall_vs_swarm_unloaded"] = round(
                update["update_wall_s"] / swarm_figures["update_wall_s"], 3
            )
    result["ratio_update_wall"] = ratio
    result["rollback"] = octs["rollback"]
    result["kill"] = octs["kill"]
    result["address_clash_retries"] = clashes
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
