"""``oct logs`` on a real 3-node cluster: every instance's lines, from the nodes that run them, each
after its instance and node; ``--since`` keeps the recent ones; ``-f`` goes on through a rollout
that replaces every instance (docker containers and a process alike), losing no line of the new
version; piped output is plain text."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time

import pytest

from tests.e2e.harness import OCT, Project, services_by_name

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

CONFIG = """\
[project]
name = "logs"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3

[[project.services]]
name = "tick"
image = "oct-test/busybox:latest"
command = "sh -c 'i=0; trap exit TERM; while true; do i=$((i+1)); echo $V tick $i; sleep 0.2; done'"
replicas = 2
cpus = 100
memory = 32

[project.services.envs]
V = "one"

[[project.services]]
name = "proc"
runtime = "process"
command = "sh -c 'i=0; while true; do i=$((i+1)); echo $V proc $i; sleep 0.2; done'"
cpus = 100
memory = 32

[project.services.envs]
V = "one"
"""

LINE = re.compile(
    r"^(?P<instance>[\w.]+) (?P<node>node-\d+) \| (?P<version>\w+) (?P<kind>tick|proc) (?P<n>\d+)$"
)


def parsed(output: str) -> list[dict[str, str]]:
    found = []
    for line in output.splitlines():
        match = LINE.match(line)
        assert match, f"not an instance's prefixed line: {line!r}"
        found.append(match.groupdict())
    return found


class Follower:
    """``oct logs SERVICE -f`` in the background, its lines readable as they come."""

    def __init__(self, project: Project, service: str) -> None:
        self.process = subprocess.Popen(
            [*OCT, "logs", service, "-f", "-n", "1", "-c", str(project.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, wanted: set[tuple[str, str]], timeout: float = 60) -> list[dict[str, str]]:
        """Read until a line of each (instance, "<version> <n>") in ``wanted`` came; all read."""
        seen: list[dict[str, str]] = []
        missing = set(wanted)
        deadline = time.monotonic() + timeout
        while missing:
            left = deadline - time.monotonic()
            assert left > 0, f"no line for {sorted(missing)} within {timeout} s; got {seen[-10:]}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            (entry,) = parsed(line)
            seen.append(entry)
            missing.discard((entry["instance"], f"{entry['version']} {entry['n']}"))
            missing.discard((entry["instance"], entry["version"]))
        return seen

    def stop(self) -> str:
        self.process.terminate()
        _, errors = self.process.communicate(timeout=10)
        return errors


def test_logs_fan_in_every_instance_and_follow_through_a_rollout(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("logs", CONFIG)
    project.oct("deploy")
    status = project.status()
    placed = {i["name"]: i["node"] for s in status["services"] for i in s["instances"]}
    genesis = status["nodes"][0]["id"]
    assert placed["tick"] != placed["tick.2"]
    time.sleep(1.5)  # a few lines each

    # Every instance's last lines, from the node running it (not the one the CLI asked, for one).
    entries = parsed(project.oct("logs", "tick", "-n", "3").stdout)
    by_instance = {e["instance"]: e for e in entries}
    assert set(by_instance) == {"tick", "tick.2"}
    assert all(e["node"] == placed[e["instance"]] for e in entries)
    assert any(
        node != genesis for node in placed.values() if node == placed["tick.2"] or node == placed["tick"]
    )
    assert sorted(sum(1 for e in entries if e["instance"] == i) for i in ("tick", "tick.2")) == [3, 3]
    out = project.oct("logs", "proc", "-n", "2").stdout
    assert "\x1b[" not in out, "piped output is plain"
    assert [(e["instance"], e["node"]) for e in parsed(out)] == [("proc", placed["proc"])] * 2

    # --since: only what the last second saw (a tick every 0.2 s), however many lines are asked for.
    time.sleep(2)
    recent = parsed(project.oct("logs", "tick", "-n", "10000", "--since", "1s").stdout)
    every = parsed(project.oct("logs", "tick", "-n", "10000").stdout)
    assert 0 < sum(e["instance"] == "tick" for e in recent) <= 8 < sum(e["instance"] == "tick" for e in every)

    # -f through a rollout of both services: the new containers' and process's lines from their first.
    ticks, procs = Follower(project, "tick"), Follower(project, "proc")
    try:
        ticks.until({("tick", "one"), ("tick.2", "one")})
        procs.until({("proc", "one")})
        project.edit('V = "one"', 'V = "two"')
        project.edit('V = "one"', 'V = "two"')
        project.oct("deploy")
        after = ticks.until({("tick", "two 1"), ("tick", "two 2"), ("tick.2", "two 1"), ("tick.2", "two 2")})
        assert {e["node"] for e in after if e["version"] == "two"} <= set(placed.values())
        after += procs.until({("proc", "two 1"), ("proc", "two 2")})
        lines = [(e["instance"], e["version"], e["n"]) for e in after]
        assert len(lines) == len(set(lines)), f"a line came twice: {lines}"
    finally:
        errors = ticks.stop() + procs.stop()
    assert "Traceback" not in errors, errors
    assert services_by_name(project.status())["tick"]["state"] == "running"

    # A node's own log, from that node (not the one the CLI asked): what it did in the rollout.
    other = placed["tick.2"]
    node_lines = project.oct("logs", "--node", other, "-n", "200").stdout.splitlines()
    assert all(line.startswith(f"{other} | ") for line in node_lines)
    assert any("applied logs/tick.2: running" in line for line in node_lines), node_lines[-10:]
    logs = project.node_logs()
    assert "Traceback" not in logs, f"a client hanging up on a followed log is no error:\n{logs}"
