"""Replicas on a real local cluster: three instances of a service spread over three nodes, every
node's ingress balancing over them; a changed service rolled one instance at a time, each drained
before it stops, under a steady load that loses no request; an instance killed with kill -9 taken
out of rotation without a failed request (HAProxy sends a refused connection to another)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import threading
import urllib.request
from collections import Counter

import pytest

from tests.e2e.harness import OCT, Project, services_by_name
from tests.wait import wait_until

pytestmark = pytest.mark.e2e

PORT = 9300
#: Requests the load has in flight at once: all an instance killed mid-answer can take with it.
IN_FLIGHT = 1

CONFIG = f"""\
[project]
name = "replicas"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3

[[project.services]]
name = "web"
runtime = "process"
command = "python3 serve.py"
external_port = {PORT}
replicas = 3
cpus = 100
memory = 64

[project.services.envs]
VERSION = "one"
"""

SERVE = """\
import http.server, os

BODY = f"{os.environ['VERSION']} {os.environ['OCT_INSTANCE']}".encode()
SICK = f"sick-{os.environ['OCT_INSTANCE']}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/up" and (os.path.exists(SICK) or os.environ["VERSION"] == "broken"):
            self.send_response(500)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""


class Load(threading.Thread):
    """One client sending GETs through one node's ingress, a new connection each, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    self.answers[answer.read().decode()] += 1
            except (OSError, http.client.HTTPException) as e:  # (a truncated answer: IncompleteRead)
                self.failures.append(repr(e))

    def __enter__(self) -> Load:
        self.start()
        wait_until(lambda: sum(self.answers.values()) >= 20, timeout=20, message="the load to flow")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.join(20)

    def settle(self, count: int = 20, timeout: float = 15) -> set[str]:
        """Which answers ``count`` requests in a row got, once they were all alike (a proxy
        reloading after a change may answer the first few from the old instances)."""

        def batch() -> set[str]:
            self.answers.clear()
            wait_until(lambda: sum(self.answers.values()) >= count, timeout=10, message=f"{count} answers")
            return set(self.answers)

        return wait_until(batch, until=lambda seen: len(seen) == 1, timeout=timeout, interval=0.1)


def project_with_replicas(make_project) -> Project:  # type: ignore[no-untyped-def]
    project: Project = make_project("replicas", CONFIG)
    (project.dir / "serve.py").write_text(SERVE)
    os.chmod(project.dir, 0o755)
    os.chmod(project.dir / "serve.py", 0o644)
    return project


def test_replicas_spread_roll_one_at_a_time_without_a_lost_request_and_survive_a_kill(make_project) -> None:  # type: ignore[no-untyped-def]
    project = project_with_replicas(make_project)
    project.oct("deploy")
    web = services_by_name(project.status())["web"]
    instances = web["instances"]
    assert [i["name"] for i in instances] == ["web", "web.2", "web.3"]
    assert len({i["node"] for i in instances}) == 3, "spread over distinct nodes"
    assert all(i["state"] == "running" for i in instances)
    address = instances[0]["address"]
    url = f"http://{address}:{PORT}/"

    with Load(url) as load:
        wait_until(lambda: len(load.answers) == 3, timeout=20, message="answers from all three instances")
        assert set(load.answers) == {"one web", "one web.2", "one web.3"}

        project.edit('VERSION = "one"', 'VERSION = "two"')
        project.oct("deploy")
        wait_until(
            lambda: {"two web", "two web.2", "two web.3"} <= set(load.answers),
            timeout=60,
            message="every instance to answer with the new version",
        )
        assert load.failures == [], f"requests lost during the rolling update: {load.failures[:5]}"
        rolled = services_by_name(project.status())["web"]["instances"]
        assert not any(i["draining"] for i in rolled) and {i["node"] for i in rolled} == {
            i["node"] for i in instances
        }

        # kill -9 one instance: the proxies send its refused connections to the others. Only a
        # request it was answering at that moment can be lost (layer 4 cannot replay it): the one
        # client has at most one in flight.
        record = next(project.dir.glob(".oct/nodes/*/processes/replicas-web.2.json"))
        os.kill(json.loads(record.read_text())["pid"], signal.SIGKILL)
        before = sum(load.answers.values())
        wait_until(lambda: sum(load.answers.values()) >= before + 200, timeout=30, message="200 more answers")
        assert len(load.failures) <= IN_FLIGHT, f"requests lost after kill -9 of an instance: {load.failures}"
    project.oct("destroy", "--yes")


def kill_node(project: Project, node: str) -> None:
    """A machine dying: its oct-ctl, the service processes it runs and its proxy, all kill -9."""
    folder = project.dir / ".oct" / "nodes" / node
    pids = [int((folder / "oct-ctl.pid").read_text())]
    pids += [json.loads(r.read_text())["pid"] for r in folder.glob("processes/*.json")]
    haproxy = folder / "ingress" / "haproxy.pid"
    if haproxy.exists():
        pids += [int(p) for p in haproxy.read_text().split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_dead_nodes_instance_moves_to_a_live_node_while_the_service_keeps_answering(make_project) -> None:  # type: ignore[no-untyped-def]
    """Its HTTP check makes the ingress proxy it request by request, so not even a request the
    dead node's instance took is lost: the proxy sends it again to another instance."""
    project = project_with_replicas(make_project)
    project.config.write_text(project.config.read_text() + HEALTHCHECK)
    project.oct("deploy")
    status = project.status()
    leader = next(n["id"] for n in status["nodes"] if n["role"] == "leader")
    instances = {i["name"]: i for i in services_by_name(status)["web"]["instances"]}
    victim = next(i for i in instances.values() if i["node"] != leader)
    survivor = next(i for i in instances.values() if i["node"] not in (leader, victim["node"]))

    with Load(f"http://{survivor['address']}:{PORT}/") as load:
        kill_node(project, victim["node"])

        def moved(status: dict) -> bool:
            now = {i["name"]: i for i in services_by_name(status)["web"]["instances"]}
            return now[victim["name"]]["node"] != victim["node"] and all(
                i["state"] == "running" for i in now.values()
            )

        wait_until(project.status, until=moved, timeout=60, interval=0.3, message="the instance to move")
        before = sum(load.answers.values())
        wait_until(lambda: sum(load.answers.values()) >= before + 50, timeout=20, message="50 more answers")
        assert f"one {victim['name']}" in load.answers
        assert load.failures == [], f"requests lost while a node died: {load.failures}"


HEALTHCHECK = """
[project.services.healthcheck]
http = "/up"
interval = 0.5
timeout = 0.4
retries = 2
start_period = 0
"""


def dns_addresses(project: Project, node_address: str) -> set[str]:
    """The A records of web that a node's DNS server answers, asked with a real query."""
    from dnslib import QTYPE, DNSRecord

    status = project.status()
    node = next(n for n in status["nodes"] if n["address"] == node_address)
    port = json.loads((project.dir / ".oct" / "nodes" / node["id"] / "node.json").read_text()).get(
        "dns_port", 53
    )
    answer = DNSRecord.parse(DNSRecord.question("web.replicas.oct", "A").send(node_address, port, timeout=2))
    return {str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A}


def test_an_unhealthy_instance_leaves_the_proxies_until_it_passes_again(make_project) -> None:  # type: ignore[no-untyped-def]
    project = project_with_replicas(make_project)
    project.edit("replicas = 3", "replicas = 2")
    project.config.write_text(project.config.read_text() + HEALTHCHECK)
    project.oct("deploy")
    instances = {i["name"]: i for i in services_by_name(project.status())["web"]["instances"]}
    assert {i["health"] for i in instances.values()} == {"healthy"}
    url = f"http://{instances['web']['address']}:{PORT}/"
    sick = project.dir / "sick-web.2"
    with Load(url) as load:
        wait_until(lambda: len(load.answers) == 2, timeout=20, message="answers from both instances")
        # web is meshed: a node's DNS names the node itself, whose proxy picks a healthy instance.
        sick_node = instances["web.2"]["address"]
        assert dns_addresses(project, sick_node) == {sick_node}

        sick.write_text("")
        wait_until(
            lambda: services_by_name(project.status())["web"]["instances"][1],
            until=lambda i: i["health"] != "healthy" and i["restarts"] >= 1,
            timeout=30,
            message="web.2 to fail its check and be restarted",
        )
        assert dns_addresses(project, sick_node) == {sick_node}
        load.answers.clear()  # (twice: a proxy reloading as health changed may still have had one on the way)
        wait_until(lambda: sum(load.answers.values()) >= 20, timeout=30, message="20 answers")
        load.answers.clear()
        wait_until(lambda: sum(load.answers.values()) >= 100, timeout=30, message="100 answers")
        assert set(load.answers) == {"one web"}, "the ingress sends nothing to the unhealthy instance"

        sick.unlink()
        wait_until(lambda: "one web.2" in load.answers, timeout=30, message="web.2 back in rotation")
    assert len(load.failures) <= IN_FLIGHT, load.failures


def test_a_version_that_never_passes_its_check_is_rolled_back_while_the_old_one_serves(make_project) -> None:  # type: ignore[no-untyped-def]
    project = project_with_replicas(make_project)
    project.config.write_text(
        project.config.read_text() + HEALTHCHECK + "\n[project.services.update]\nhealthy_deadline = 20\n"
    )
    project.oct("deploy")
    address = services_by_name(project.status())["web"]["instances"][0]["address"]
    with Load(f"http://{address}:{PORT}/") as load:
        project.edit('VERSION = "one"', 'VERSION = "broken"')
        result = project.oct("deploy", check=False)
        assert result.returncode == 1, result.stderr
        assert "service web failed" in result.stderr and "rolled back automatically" in result.stderr

        def back(status: dict) -> bool:
            deployment = status["deployment"]
            return deployment["state"] == "succeeded" and all(
                i["state"] == "running" and i["health"] == "healthy"
                for i in services_by_name(status)["web"]["instances"]
            )

        wait_until(project.status, until=back, timeout=60, interval=0.3, message="the rollback to finish")
        load.answers.clear()
        wait_until(lambda: len(load.answers) == 3, timeout=20, message="all three old instances answering")
        assert set(load.answers) == {"one web", "one web.2", "one web.3"}
    assert load.failures == [], f"requests lost during a failed update and its rollback: {load.failures[:5]}"
    rollback, failed, first = json.loads(project.oct("history", "--json").stdout)["deployments"]
    assert (failed["state"], rollback["rollback_of"], rollback["state"]) == (
        "failed",
        first["id"],
        "succeeded",
    )


def test_a_rollout_interrupted_by_the_leaders_death_is_finished_by_the_next_leader(make_project) -> None:  # type: ignore[no-untyped-def]
    project = project_with_replicas(make_project)
    slow = "\n[project.services.update]\nmin_healthy_time = 3\n"  # a rollout of several seconds
    project.config.write_text(project.config.read_text() + HEALTHCHECK + slow)
    project.oct("deploy")
    status = project.status()
    leader = next(n for n in status["nodes"] if n["role"] == "leader")
    first = status["deployment"]["id"]

    project.edit('VERSION = "one"', 'VERSION = "two"')
    deploy = subprocess.Popen(
        [*OCT, "deploy", "-c", str(project.config)],
        cwd=project.dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(
        lambda: services_by_name(project.status())["web"]["instances"],
        until=lambda instances: any(
            i["deployment"] not in ("", first) and i["health"] == "healthy" for i in instances
        ),
        timeout=60,
        interval=0.2,
        message="the first instance of the new version",
    )
    os.kill(int((project.dir / ".oct" / "nodes" / leader["id"] / "oct-ctl.pid").read_text()), signal.SIGKILL)

    def finished(status: dict) -> bool:
        instances = services_by_name(status)["web"]["instances"]
        return (
            status["leader"] not in (None, leader["id"])
            and status["deployment"]["state"] == "succeeded"
            and all(
                i["deployment"] == status["deployment"]["id"] and i["health"] == "healthy" for i in instances
            )
        )

    done = wait_until(
        project.status, until=finished, timeout=120, interval=0.5, message="the new leader to finish"
    )
    assert done["deployment"]["id"] != first
    assert deploy.wait(120) == 0, deploy.stderr.read() if deploy.stderr else ""


START_FIRST = """
[project.services.update]
order = "start-first"
healthy_deadline = 15
"""


def test_a_single_instance_updated_start_first_loses_no_request_nor_in_a_rollback(make_project) -> None:  # type: ignore[no-untyped-def]
    """One replica, so stop-first would leave nothing to serve while it restarts: start-first runs
    a surge instance of the new version first (``web.2``), replaces ``web`` behind it, then drains
    the surge away. A version that never passes its check is rolled back with the old one serving."""
    project = project_with_replicas(make_project)
    project.edit("replicas = 3", "replicas = 1")
    project.config.write_text(project.config.read_text() + HEALTHCHECK + START_FIRST)
    project.oct("deploy")
    address = services_by_name(project.status())["web"]["instances"][0]["address"]
    with Load(f"http://{address}:{PORT}/") as load:
        project.edit('VERSION = "one"', 'VERSION = "two"')
        project.oct("deploy")
        wait_until(
            lambda: [i["name"] for i in services_by_name(project.status())["web"]["instances"]],
            until=lambda names: names == ["web"],
            timeout=30,
            interval=0.3,
            message="the surge instance to leave",
        )
        assert {"two web.2", "two web"} <= set(load.answers), (
            "the surge served, then web with the new version"
        )
        # (The state drops web.2 a few milliseconds before the node's proxy has reloaded without
        # it, so the first requests after may still reach it: wait for twenty in a row without.)
        assert load.settle() == {"two web"}

        project.edit('VERSION = "two"', 'VERSION = "broken"')
        result = project.oct("deploy", check=False)
        assert result.returncode == 1 and "rolled back automatically" in result.stderr, result.stderr
        wait_until(
            lambda: services_by_name(project.status())["web"]["instances"],
            until=lambda instances: [i["name"] for i in instances] == ["web"],
            timeout=30,
            interval=0.3,
            message="the broken surge instance to be removed",
        )
        assert load.settle() == {"two web"}, "the old version kept serving"
    assert load.failures == [], f"requests lost during a start-first update or rollback: {load.failures[:5]}"
    project.oct("destroy", "--yes")
