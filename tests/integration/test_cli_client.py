"""The oct CLI and library where they talk to something: the client against stub oct-ctl servers
(HTTPS on loopback), status and deploy through it, destroy and teardown of a local project's node
processes (and its containers on the Docker engine), and an AWS endpoint that does not answer.
What needs none of that is in ``tests/unit/test_cli.py``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from octcli import api, state
from octcli.client import OctClient
from octcli.errors import InvalidConfig, NotConfirmed, OctError, Unreachable
from octcli.main import app
from octcli.providers import local
from octcli.providers.local import teardown
from octcli.state import ClusterRecord, state_lock
from octctl.api.models import DeploymentView, StatusResponse
from octctl.node_settings import NodeSettings, Secrets, write_node_files
from octctl.tls import server_context
from tests.unit.test_cli import (
    GOOD,
    LOCAL,
    STUB_CA,
    STUB_CERT,
    STUB_KEY,
    closed_aws,
    declining,
    project,
    record,
    runner,
    running,
    snapshot,
    terminal,
    write_config,
)

__all__ = ["closed_aws", "project", "terminal"]  # the unit tests' fixtures, for these tests too


def test_aws_without_a_reachable_endpoint_fails_in_one_line_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # closed: nothing leaves this machine
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    result = runner.invoke(app, ["deploy", "--yes", "-c", str(path)])
    assert result.exit_code == 1
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / ".oct" / "state.json").exists(), "no cluster was recorded"


def test_destroy_without_state_is_a_noop(project: Path) -> None:
    result = runner.invoke(app, ["destroy", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert not (project.parent / ".oct").exists()
    api.destroy(project)  # and again, through the library


def test_state_backend_picks_the_store(project: Path, tmp_path: Path) -> None:
    """Opening a store contacts nothing; the S3 store itself is tested against moto in tests/aws."""
    config = api.validate(project)
    local = state.open_store(project, config.project.state_backend)
    assert isinstance(local, state.LocalStore)
    assert local.where == str(project.parent.resolve() / ".oct/state.json")
    text = GOOD.format(name="demo", provider=LOCAL).replace(
        '[project.state_backend.local]\npath = ".oct/state.json"',
        '[project.state_backend.s3]\nregion = "us-west-2"\nbucket = "b"\nkey = "k"',
    )
    s3 = state.open_store(tmp_path, api.validate(write_config(tmp_path, text)).project.state_backend)
    assert s3.where == "s3://b/k"


Reply = tuple[int, dict[str, Any]]


class Stub:
    """A tiny oct-ctl stand-in on 127.0.0.1 (HTTPS, certificate from ``STUB_CA``) that records what it
    was sent."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[], Reply]]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str, str | None]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                stub.seen.append((self.command, path, self.headers.get("Authorization")))
                route = stub.routes.get((self.command, path))
                code, body = route() if route else (404, {"error": "no such route"})
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls = server_context(STUB_CERT, STUB_KEY, STUB_CA)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stubs() -> Iterator[Callable[[dict[tuple[str, str], Callable[[], Reply]]], Stub]]:
    made: list[Stub] = []

    def make(routes: dict[tuple[str, str], Callable[[], Reply]]) -> Stub:
        made.append(Stub(routes))
        return made[-1]

    yield make
    for stub in made:
        stub.close()


def dead_address() -> str:
    """A 127.0.0.1 port nobody listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def ok_status() -> Reply:
    return 200, json.loads(snapshot().model_dump_json())


def test_client_skips_a_dead_node_and_sends_the_token(stubs: Any) -> None:
    stub = stubs({("GET", "/v1/status"): ok_status})
    dead = dead_address()
    with OctClient([dead, stub.address], "tok-123", STUB_CA, timeout=2.0, retry_for=0) as client:
        assert client.status().cluster == "c-test"
        assert client.nodes[0] == stub.address  # the node that answered is asked first next time
        client.status()
    assert stub.seen == [("GET", "/v1/status", "Bearer tok-123")] * 2
    assert "tok-123" not in repr(client)


def test_client_moves_on_from_503_and_401(stubs: Any) -> None:
    no_leader = stubs({("GET", "/v1/status"): lambda: (503, {"error": "no leader elected yet; retry"})})
    foreign = stubs({("GET", "/v1/status"): lambda: (401, {"error": "missing or wrong bearer token"})})
    good = stubs({("GET", "/v1/status"): ok_status})
    with OctClient([no_leader.address, foreign.address, good.address], "tok", STUB_CA, retry_for=0) as client:
        assert client.status().node == "node-2"


def test_client_unreachable_names_every_address(stubs: Any) -> None:
    no_leader = stubs({("GET", "/v1/status"): lambda: (503, {"error": "no leader elected yet; retry"})})
    dead = dead_address()
    with (
        OctClient([dead, no_leader.address], "tok", STUB_CA, retry_for=0) as client,
        pytest.raises(Unreachable) as caught,
    ):
        client.status()
    message = str(caught.value)
    assert dead in message and no_leader.address in message and "no leader" in message
    assert caught.value.exit_code == 3


def test_client_retries_until_a_leader_appears(stubs: Any) -> None:
    answers = iter([(503, {"error": "no leader elected yet; retry"})] * 2)
    stub = stubs({("GET", "/v1/status"): lambda: next(answers, ok_status())})
    with OctClient([stub.address], "tok", STUB_CA, retry_for=10) as client:
        assert client.status().cluster == "c-test"
    assert len(stub.seen) == 3


def test_client_reports_a_token_every_node_rejects(stubs: Any) -> None:
    foreign = stubs({("GET", "/v1/status"): lambda: (401, {"error": "missing or wrong bearer token"})})
    with (
        OctClient([foreign.address], "tok", STUB_CA, retry_for=30) as client,
        pytest.raises(OctError) as caught,
    ):
        client.status()
    assert "401" in str(caught.value)
    assert not isinstance(caught.value, Unreachable)
    assert len(foreign.seen) == 1  # not retried for 30 s


def test_422_maps_to_invalid_config(stubs: Any) -> None:
    details = ["project.services[0].cpus: expected an integer", "project.services[1].name: duplicate"]
    stub = stubs(
        {("POST", "/v1/deploy"): lambda: (422, {"error": "invalid configuration", "details": details})}
    )
    with (
        OctClient([stub.address], "tok", STUB_CA, retry_for=0) as client,
        pytest.raises(InvalidConfig) as caught,
    ):
        client.deploy({"project": {}}, source_dir="/src")
    assert caught.value.problems == details
    assert caught.value.exit_code == 2


def test_other_errors_carry_the_servers_reason(stubs: Any) -> None:
    stub = stubs({("POST", "/v1/destroy"): lambda: (500, {"error": "raft log is on fire"})})
    with (
        OctClient([stub.address], "tok", STUB_CA, retry_for=0) as client,
        pytest.raises(OctError, match="raft log is on fire"),
    ):
        client.destroy()


def test_status_json_prints_exactly_the_response(stubs: Any, project: Path) -> None:
    stub = stubs({("GET", "/v1/status"): ok_status})
    state.save(project.parent / ".oct/state.json", record([dead_address(), stub.address], token="tok"))
    result = runner.invoke(app, ["status", "--json", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert result.stdout == snapshot().model_dump_json(indent=2) + "\n"
    assert ("GET", "/v1/status", "Bearer tok") in stub.seen


def test_status_tables(stubs: Any, project: Path) -> None:
    stub = stubs({("GET", "/v1/status"): ok_status})
    state.save(project.parent / ".oct/state.json", record([stub.address], token="tok"))
    result = runner.invoke(app, ["status", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert "node-2" in result.stdout and "0.25/2" in result.stdout and "64/2048 MB" in result.stdout


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
    import octcli.providers.local as local

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


@pytest.mark.usefixtures("closed_aws", "terminal")
def test_a_first_aws_deploy_asks_and_no_creates_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    result = runner.invoke(app, ["deploy", "-c", str(path)], input="n\n")
    assert result.exit_code == 2, result.output
    assert "Create them? [y/N]" in result.stderr
    assert "deploy cancelled: nothing was created" in result.stderr
    assert not (tmp_path / ".oct").exists()
    # Yes goes ahead: here to the closed endpoint, which fails in one line (exit 1).
    result = runner.invoke(app, ["deploy", "-c", str(path)], input="y\n")
    assert result.exit_code == 1, result.output
    assert "127.0.0.1:9" in result.stderr


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


def test_deploy_reports_what_changed_per_service(
    stubs: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes = {"web": "replaced", "db": "unchanged", "cache": "started", "old": "removed"}
    done = snapshot(DeploymentView(id="d-7", state="succeeded"), [running()])
    stub = stubs(
        {
            ("POST", "/v1/deploy"): lambda: (202, {"deployment": "d-7", "changed": True, "changes": changes}),
            ("GET", "/v1/status"): lambda: (200, json.loads(done.model_dump_json())),
        }
    )
    monkeypatch.setattr(local, "ensure_cluster", lambda *a, **k: record([stub.address], token="tok"))

    result = runner.invoke(app, ["deploy", "-c", str(project)])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["~", "web", "replaced"] in lines and ["=", "db", "unchanged"] in lines
    assert ["+", "cache", "started"] in lines and ["-", "old", "removed"] in lines

    as_json = runner.invoke(app, ["deploy", "--json", "-c", str(project)])
    assert as_json.exit_code == 0, as_json.output
    printed = json.loads(as_json.stdout)
    assert printed["changes"] == changes
    assert printed["cluster"] == "c-test" and printed["deployment"]["id"] == "d-7"
    assert [s["name"] for s in printed["services"]] == ["web"]

    returned = api.deploy(project)
    assert isinstance(returned, api.DeployResult) and isinstance(returned, StatusResponse)
    assert returned.changes == changes and list(returned.changes) == list(changes)


def test_deploy_against_an_older_cluster_reports_no_changes(
    stubs: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = snapshot(DeploymentView(id="d-1", state="succeeded"), [running()])
    stub = stubs(
        {
            ("POST", "/v1/deploy"): lambda: (202, {"deployment": "d-1", "changed": False}),
            ("GET", "/v1/status"): lambda: (200, json.loads(done.model_dump_json())),
        }
    )
    monkeypatch.setattr(local, "ensure_cluster", lambda *a, **k: record([stub.address], token="tok"))
    assert api.deploy(project).changes == {}
