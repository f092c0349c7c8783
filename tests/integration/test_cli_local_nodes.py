"""Destroying a local project's node processes: teardown, a crashing genesis node, the questions.

Teardown kills the recorded process instances but not a process that took a recycled pid; a
genesis node that dies at start-up shows its log and leaves a record destroy can clean up after;
destroy refuses without ``--yes`` off a terminal, asks on one, shows the library what goes, and
leaves no claim, lock or state behind (nothing left: no question).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from octcli import api, state
from octcli.errors import NotConfirmed
from octcli.main import app
from octcli.providers import local
from octcli.providers.local import teardown
from octcli.state import ClusterRecord, state_lock
from octctl.node_settings import NodeSettings, Secrets, write_node_files
from tests.cli_inputs import GOOD, LOCAL, dead_address, declining, project, runner, terminal, write_config

__all__ = ["project", "terminal"]  # the shared fixtures, for these tests


def test_destroy_without_state_is_a_noop(project: Path) -> None:
    result = runner.invoke(app, ["destroy", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert not (project.parent / ".oct").exists()
    api.destroy(project)  # and again, through the library


def start_time(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2 :].split()[19])


def test_teardown_kills_recorded_process_instances_but_not_a_recycled_pid(tmp_path: Path) -> None:
    root = tmp_path / ".oct"
    instance = subprocess.Popen(["sleep", "60"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        records = root / "nodes" / "node-9" / "processes"
        records.mkdir(parents=True)
        (records / "demo-web.json").write_text(
            json.dumps({"pid": instance.pid, "start_time": start_time(instance.pid)})
        )
        # A stale record and a stale pid file whose pid now belongs to someone else.
        (records / "demo-old.json").write_text(json.dumps({"pid": bystander.pid, "start_time": 1}))
        (root / "nodes" / "node-9" / "oct-ctl.pid").write_text(str(bystander.pid))

        teardown(root, f"t{os.getpid()}-{time.time_ns()}")

        assert instance.wait(timeout=10) == -signal.SIGTERM
        assert bystander.poll() is None
        assert not root.exists()
    finally:
        for proc in (instance, bystander):
            proc.kill()
            proc.wait()


def test_genesis_node_dying_shows_its_log(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    children: list[subprocess.Popen[bytes]] = []

    def crashing_start_node(root: Path, settings: NodeSettings, secrets: Secrets) -> int:
        data_dir = root / "nodes" / settings.node
        write_node_files(data_dir, settings, secrets)
        (data_dir / "oct-ctl.log").write_text("starting\nOSError: [Errno 98] address already in use\n")
        children.append(subprocess.Popen(["true"]))
        return children[-1].pid

    monkeypatch.setattr(local, "start_node", crashing_start_node)
    monkeypatch.setattr(local, "free_address", lambda root: "127.0.0.250")
    try:
        result = runner.invoke(app, ["deploy", "-c", str(project)])
        assert result.exit_code == 1, result.output
        assert "node-250 exited during start-up" in result.stderr
        assert "address already in use" in result.stderr
        # The record was saved before the node started, so destroy can clean up after the crash.
        saved = state.load(project.parent / ".oct/state.json")
        assert saved is not None and saved.nodes == ["127.0.0.250:31888"]
        assert runner.invoke(app, ["destroy", "--yes", "-c", str(project)]).exit_code == 0
        assert not (project.parent / ".oct").exists()
    finally:
        for child in children:
            child.wait()


def fake_cluster(folder: Path, state_file: Path, cluster: str = "c-gone") -> Path:
    """A local cluster of the project in ``folder`` whose node is down: its files and state record."""
    root = folder / ".oct"
    settings = NodeSettings(
        node="node-250", cluster=cluster, address="127.0.0.250", cpus=1000, memory=512, join=[]
    )
    data_dir = root / "nodes" / settings.node
    secrets = Secrets.mint()
    write_node_files(data_dir, settings, secrets)
    state.save(
        state_file,
        ClusterRecord(
            cluster=cluster,
            project=api.validate(folder).project.name,
            token="tok",
            ca_cert=secrets.ca_cert,
            nodes=[f"127.0.0.250:{dead_address().rsplit(':', 1)[1]}"],
            root=str(root.resolve()),
        ),
    )
    return data_dir


def test_destroy_refuses_without_yes_when_not_a_terminal(project: Path) -> None:
    fake_cluster(project.parent, project.parent / ".oct/state.json")
    result = runner.invoke(app, ["destroy", "-c", str(project)])
    assert result.exit_code == 2, result.output
    assert "refusing to destroy without confirmation" in result.stderr and "--yes" in result.stderr
    assert "cluster c-gone" in result.stderr and "127.0.0.250:" in result.stderr, "what would go is shown"
    assert (project.parent / ".oct/nodes/node-250/node.json").exists(), "nothing was touched"
    assert state.load(project.parent / ".oct/state.json") is not None


@pytest.mark.usefixtures("terminal")
def test_destroy_asks_on_a_terminal(project: Path) -> None:
    fake_cluster(project.parent, project.parent / ".oct/state.json")
    declined = runner.invoke(app, ["destroy", "-c", str(project)], input="n\n")
    assert declined.exit_code == 2, declined.output
    assert "Destroy all of this? [y/N]" in declined.stderr
    assert "destroy cancelled: nothing of t" in declined.stderr
    assert "(cluster c-gone) was removed" in declined.stderr
    assert (project.parent / ".oct/nodes/node-250/node.json").exists()

    ended = runner.invoke(app, ["destroy", "-c", str(project)], input="")  # end of input: no
    assert ended.exit_code == 2 and "cancelled" in ended.stderr
    assert (project.parent / ".oct/nodes/node-250/node.json").exists()

    agreed = runner.invoke(app, ["destroy", "-c", str(project)], input="y\n")
    assert agreed.exit_code == 0, agreed.output
    assert "destroyed" in agreed.stdout
    assert not (project.parent / ".oct").exists()


def test_library_destroy_needs_approve_and_shows_what_goes(project: Path) -> None:
    fake_cluster(project.parent, project.parent / ".oct/state.json")
    with pytest.raises(NotConfirmed, match="approve=True"):
        api.destroy(project)
    assert (project.parent / ".oct/nodes/node-250").exists()
    seen: list[api.DestroySummary] = []
    with pytest.raises(NotConfirmed, match="cancelled"):
        api.destroy(project, approve=declining(seen))
    summary = seen[0]
    assert (summary.project, summary.provider, summary.cluster) == (
        api.validate(project).project.name,
        "local",
        "c-gone",
    )
    assert len(summary.nodes) == 1 and summary.nodes[0].startswith("127.0.0.250:")
    assert summary.state == str(project.parent.resolve() / ".oct/state.json")
    assert any("1 oct-ctl node process" in line for line in summary.removes)
    api.destroy(project, approve=True)
    assert not (project.parent / ".oct").exists()


def test_destroy_leaves_no_claim_or_lock_of_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = tmp_path / "claims"
    monkeypatch.setenv("OCT_LOCAL_CLAIMS", str(claims))
    folder = tmp_path / "proj"
    path = write_config(
        folder,
        GOOD.format(name=f"t{os.getpid()}-{time.time_ns()}", provider=LOCAL).replace(
            ".oct/state.json", "state.json"
        ),
    )
    data_dir = fake_cluster(folder, folder / "state.json")
    retired = folder / ".oct/nodes/node-251"  # a node the leader retired: folder gone, claim left
    other = tmp_path / "other" / ".oct" / "nodes" / "node-252"
    other.mkdir(parents=True)
    claims.mkdir()
    (claims / "127.0.0.250").write_text(str(data_dir.resolve()))
    (claims / "127.0.0.251").write_text(str(retired.resolve()))
    (claims / "127.0.0.252").write_text(str(other.resolve()))
    with state_lock(folder / "state.json"):  # as deploy leaves it
        pass
    assert (folder / "state.json.lock").exists()

    result = runner.invoke(app, ["destroy", "--yes", "-c", str(path)])

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in claims.iterdir()) == ["127.0.0.252"], "another project's claim stays"
    assert sorted(p.name for p in folder.iterdir()) == ["oct.toml"], "no state, no lock, no .oct"
    assert runner.invoke(app, ["destroy", "-c", str(path)]).exit_code == 0, "nothing left: no question"
