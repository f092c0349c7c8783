"""Volumes on a real 3-node local cluster, docker and process runtimes alike.

``db`` appends its version to a file in its volume at every start and serves the file through
every node's ingress. After each event the issue names, the lines written before are still there:
a redeploy that changes ``db``, a crash of its instance, a change to an unrelated service (which
leaves the file alone), ``kill -9`` of its node's oct-ctl and the restart, a whole-cluster restart,
a leader killed in the middle of a redeploy; its node's death leaves it waiting for that node (and
saying so) rather than starting empty elsewhere; ``oct destroy`` keeps the volume for the next
cluster, and ``oct destroy --volumes`` removes it. ``oct backup`` and ``oct restore`` round-trip
the data through the node the CLI talks to.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import uuid
from pathlib import Path

import docker
import pytest

import octcli
from octcli.errors import OctError
from octctl.providers.local.provider import octctl_pids
from tests.e2e.harness import Project, http_get, services_by_name
from tests.wait import wait_until

pytestmark = pytest.mark.e2e

PORT = 9620

#: db: one start, one line; then it serves its volume. (``$V`` is the version in its envs.)
DB = {
    "docker": """\
image = "oct-test/busybox:latest"
command = "sh -c 'echo $V >> /data/lines; trap exit TERM; httpd -f -p 8080 -h /data & wait'"
internal_port = 8080
volumes = ["data:/data"]
""",
    "process": """\
runtime = "process"
command = "sh -c 'cd $OCT_VOLUME_DATA; echo $V >> lines; exec python3 -m http.server -b $HOST $PORT'"
volumes = ["data"]
""",
}


def config(name: str, runtime: str) -> str:
    # web is the larger, so it is placed first, on the leader's node, and leaves no room there
    # for db (a node has 4096 MB): db's data lands on another node, whose death leaves a quorum.
    # (Should leadership move to db's node first, killing that node is a leader's death, which
    # the data survives the same way.)
    return f"""\
[project]
name = "{name}"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3

[[project.services]]
name = "web"
runtime = "process"
command = "sleep 3600"
cpus = 100
memory = 4080

[project.services.envs]
GREETING = "hello"

[[project.services]]
name = "db"
{DB[runtime]}external_port = {PORT}
cpus = 100
memory = 32

[project.services.envs]
V = "one"
"""


def lines(project: Project) -> list[str]:
    """db's file, through a ready node's ingress (a node just restarted may answer ``status``
    before its replica caught up, and know of no ready node yet: asked again). The ready node is
    looked up through the library, in-process: an ``oct status`` process per read cost ~0.6 s,
    and this test reads the file some twenty times."""
    nodes = wait_until(
        lambda: [n for n in octcli.status(project.config).nodes if n.status == "ready"],
        timeout=30,
        interval=0.3,
    )
    return http_get(f"http://{nodes[0].address}:{PORT}/lines").splitlines()


def wait_for_lines(project: Project, count: int) -> list[str]:
    return wait_until(
        lambda: lines(project),
        until=lambda found: len(found) >= count,
        timeout=60,
        interval=0.3,
        ignore=(AssertionError, OSError, KeyError, OctError),
        message=lambda: f"db to have written {count} lines\n{project.node_logs()}",
    )


def db_of(project: Project) -> dict:
    return services_by_name(project.status())["db"]


def instance_of(project: Project, runtime: str, name: str, node: str) -> str:
    """db's container id, or its process's pid: what a restart or replacement would change."""
    if runtime == "docker":
        return str(docker.from_env().containers.get(f"oct-{name}-db").id)
    record = next((project.dir / ".oct" / "nodes" / node).glob("processes/*-db.json"))
    return str(json.loads(record.read_text())["pid"])


def kill_node(project: Project, node: str, runtime: str, name: str) -> None:
    """kill -9 what a dead machine would take with it: its oct-ctl and db's instance."""
    folder = project.dir / ".oct" / "nodes" / node
    os.kill(int((folder / "oct-ctl.pid").read_text()), signal.SIGKILL)
    if runtime == "docker":
        docker.from_env().containers.get(f"oct-{name}-db").kill()
        return
    for record in folder.glob("processes/*-db.json"):
        with contextlib.suppress(ProcessLookupError, KeyError, TypeError):
            os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)


@pytest.mark.parametrize("runtime", ["docker", "process"])
def test_a_volume_keeps_its_data_through_every_event(make_project, runtime: str) -> None:  # type: ignore[no-untyped-def]
    name = f"vol{uuid.uuid4().hex[:6]}"
    project: Project = make_project(f"volumes-{runtime}", config(name, runtime))
    project.oct("deploy")
    home = db_of(project)["node"]
    web_node = services_by_name(project.status())["web"]["node"]
    assert home != web_node, "web leaves no room for db on its node"
    assert wait_for_lines(project, 1) == ["one"]
    volumes = json.loads(project.oct("volumes", "--json").stdout)
    assert [(v["name"], v["service"], v["node"], v["state"]) for v in volumes] == [
        ("data", "db", home, "in use")
    ]

    # A redeploy that changes db: stopped, started again with its data.
    project.edit('V = "one"', 'V = "two"')
    project.oct("deploy")
    assert wait_for_lines(project, 2) == ["one", "two"]

    # Its instance crashes: restarted with its data.
    if runtime == "docker":
        docker.from_env().containers.get(f"oct-{name}-db").exec_run(["sh", "-c", "kill -TERM 1"])
    else:
        record = next((project.dir / ".oct" / "nodes" / home).glob("processes/*-db.json"))
        os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)
    assert wait_for_lines(project, 3) == ["one", "two", "two"]

    # A change to another service leaves db and its volume alone.
    instance = instance_of(project, runtime, name, home)
    project.edit('GREETING = "hello"', 'GREETING = "hallo"')
    project.oct("deploy")
    assert instance_of(project, runtime, name, home) == instance
    assert lines(project) == ["one", "two", "two"]

    # kill -9 of db's node's oct-ctl, and its restart (the next deploy restarts it from its files).
    os.kill(int((project.dir / ".oct" / "nodes" / home / "oct-ctl.pid").read_text()), signal.SIGKILL)
    project.oct("deploy")
    kept = wait_for_lines(project, 3)
    assert kept[:3] == ["one", "two", "two"] and set(kept[3:]) <= {"two"}

    # The leader is killed in the middle of a redeploy of db; the new one finishes it.
    # (db's node was the one killed and restarted, so another node leads: the one killed now)
    leader = next(n for n in octcli.status(project.config).nodes if n.role == "leader")
    assert leader.id != home
    killed: list[str] = []

    def on_phase(message: str) -> None:
        if "accepted" in message and not killed:
            os.kill(
                int((project.dir / ".oct" / "nodes" / leader.id / "oct-ctl.pid").read_text()), signal.SIGKILL
            )
            killed.append(message)

    before = lines(project)
    project.edit('V = "two"', 'V = "three"')
    result = octcli.deploy(project.config, on_phase=on_phase, timeout=120)
    assert killed and result.deployment is not None and result.deployment.state == "succeeded"
    after = wait_for_lines(project, len(before) + 1)
    assert after[: len(before)] == before and after[-1] == "three"
    project.oct("deploy")  # (brings the old leader's node back: the next kill must leave a quorum)

    # The whole cluster is killed and started again.
    before = lines(project)
    for pid in octctl_pids(project.dir):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: octctl_pids(project.dir), until=lambda pids: not pids, timeout=10)
    project.oct("deploy")
    after = wait_for_lines(project, len(before))
    assert after[: len(before)] == before
    assert db_of(project)["node"] == home

    # db's node dies: db waits for it, saying so, and does not start empty elsewhere.
    before = lines(project)
    kill_node(project, home, runtime, name)
    waiting = f"waiting for {home}, which holds data ({home} is unreachable)"
    status = wait_until(
        project.status,
        until=lambda s: services_by_name(s)["db"]["error"] == waiting,
        timeout=60,
        interval=0.3,
        message=lambda: f"db to wait for {home}\n{project.node_logs()}",
    )
    assert services_by_name(status)["db"]["node"] is None
    assert f"waiting for {home}, which holds data" in project.oct("status").stdout
    volumes = json.loads(project.oct("volumes", "--json").stdout)
    assert [(v["node"], v["state"]) for v in volumes] == [(home, "waiting")]
    project.oct("deploy")  # the node comes back: db runs there again, with its data
    after = wait_for_lines(project, len(before) + 1)
    assert after[: len(before)] == before and db_of(project)["node"] == home

    # A backup (packed on db's node, passed through the node the CLI talks to), a change, a restore.
    archive = project.dir / "db.tar.gz"
    project.oct("backup", "db", "-o", str(archive))
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    saved = lines(project)
    project.edit('V = "three"', 'V = "four"')
    project.oct("deploy")
    assert wait_for_lines(project, len(saved) + 1)[-1] == "four"
    out = project.oct("restore", "db", str(archive), "--yes").stdout
    assert f"db: restored data from {archive}" in out
    # (started again after the restore, db appends its version once more)
    assert wait_for_lines(project, len(saved) + 1) == [*saved, "four"]

    # destroy keeps the volume, and a new cluster finds the data; --volumes removes it.
    before = lines(project)
    out = project.oct("destroy", "--yes").stdout
    assert "kept 1 volume(s): data" in out
    project.oct("deploy")
    after = wait_for_lines(project, len(before) + 1)
    assert after[: len(before)] == before
    out = project.oct("destroy", "--yes", "--volumes").stdout
    assert "kept" not in out
    assert json.loads(project.oct("volumes", "--json").stdout) == []
    if runtime == "docker":
        assert docker.from_env().volumes.list(filters={"label": f"oct.project={name}"}) == []
    else:
        assert not any(Path(project.dir / ".oct-volumes").glob(f"{name}-*"))
