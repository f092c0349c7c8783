"""Tests for the oct CLI and library that need no daemon: config checks, state file, lock, client
failover against a stub HTTP server, teardown from files, and the exit codes users script against."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from octcli import api, rollout, state
from octcli.client import OctClient
from octcli.errors import DeployFailed, InvalidConfig, NotConfirmed, OctError, Timeout, Unreachable
from octcli.main import app
from octcli.providers import local
from octcli.providers.local import adopt, teardown
from octcli.state import ClusterRecord, state_lock
from octctl.api.models import DeploymentView, NodeView, ServiceView, StatusResponse
from octctl.config import ConfigError, load_config
from octctl.node_settings import NodeSettings, Secrets, write_node_files
from octctl.tls import issue_node_certificate, new_ca, server_context

runner = CliRunner()

GOOD = """\
[project]
name = "{name}"

[project.state_backend.local]
path = ".oct/state.json"
{provider}
[[project.services]]
name = "web"
runtime = "process"
command = "sleep 1000"
cpus = 250
memory = 64
external_port = 8080
internal_port = 8080
"""
LOCAL = """
[project.provider.local]
nodes = 1
cpus = 2000
memory = 2048
"""
BAD = """\
[project]
name = "demo"

[project.state_backend.local]
path = "state.json"

[[project.services]]
name = "web"
cpus = "lots"
memory = -1

[[project.services]]
name = "web"
cpu = 5
memory = 64
"""


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "oct.toml"
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A valid local-provider oct.toml with a project name no other test run shares."""
    return write_config(
        tmp_path / "proj", GOOD.format(name=f"t{os.getpid()}-{time.time_ns()}", provider=LOCAL)
    )


def snapshot(
    deployment: DeploymentView | None = None, services: list[ServiceView] | None = None
) -> StatusResponse:
    return StatusResponse(
        cluster="c-test",
        project="demo",
        node="node-2",
        leader="node-2",
        stale=False,
        deployment=deployment,
        nodes=[
            NodeView(
                id="node-2",
                address="127.0.0.2",
                api_port=31888,
                role="leader",
                status="ready",
                cpus=2000,
                memory=2048,
                cpus_used=250,
                memory_used=64,
            )
        ],
        services=services or [],
    )


# -- oct validate ------------------------------------------------------------------------------------


def test_validate_ok(project: Path) -> None:
    result = runner.invoke(app, ["validate", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{project}: ok (1 service)"


def test_validate_accepts_the_folder(project: Path) -> None:
    result = runner.invoke(app, ["validate", "--config", str(project.parent)])
    assert result.exit_code == 0, result.output
    assert "ok (1 service)" in result.stdout


def test_validate_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, BAD)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    expected = [str(problem) for problem in caught.value.problems]
    assert len(expected) >= 3

    result = runner.invoke(app, ["validate", "-c", str(path)])

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    for line in expected:
        assert line in result.stderr.splitlines()


def test_validate_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "-c", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_library_validate_raises_with_all_problems(tmp_path: Path) -> None:
    path = write_config(tmp_path, BAD)
    with pytest.raises(InvalidConfig) as caught:
        api.validate(path)
    assert caught.value.exit_code == 2
    assert len(caught.value.problems) >= 3


# -- deploy / destroy without a cluster ----------------------------------------------------------------


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


def test_invalid_config_stops_deploy_before_anything_starts(tmp_path: Path) -> None:
    path = write_config(tmp_path, BAD)
    result = runner.invoke(app, ["deploy", "-c", str(path)])
    assert result.exit_code == 2
    assert not (tmp_path / ".oct").exists()


def test_destroy_without_state_is_a_noop(project: Path) -> None:
    result = runner.invoke(app, ["destroy", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert not (project.parent / ".oct").exists()
    api.destroy(project)  # and again, through the library


def test_status_without_cluster_is_unreachable(project: Path) -> None:
    result = runner.invoke(app, ["status", "-c", str(project)])
    assert result.exit_code == 3
    assert "oct deploy" in result.stderr


# -- state file and lock -------------------------------------------------------------------------------


#: The stubs' cluster CA and their certificate (the CLI talks HTTPS and pins the CA from the record).
STUB_CA_KEY, STUB_CA = new_ca("c-test")
STUB_KEY, STUB_CERT = issue_node_certificate(STUB_CA_KEY, STUB_CA, "stub", ["127.0.0.1"])


def record(nodes: list[str], token: str = "s3cr3t-token", root: str = "/nowhere/.oct") -> ClusterRecord:
    return ClusterRecord(
        cluster="c-test", project="demo", token=token, nodes=nodes, root=root, ca_cert=STUB_CA
    )


def test_state_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    saved = record(["127.0.0.2:31888", "127.0.0.3:31888"])
    state.save(path, saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert state.load(path) == saved
    assert json.loads(path.read_text())["nodes"][0] == "127.0.0.2:31888"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left behind
    assert "s3cr3t-token" not in repr(saved)

    state.save(path, saved.model_copy(update={"nodes": ["127.0.0.4:31888"]}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = state.load(path)
    assert loaded is not None and loaded.nodes == ["127.0.0.4:31888"]

    state.remove(path)
    state.remove(path)
    assert state.load(path) is None


def test_corrupt_state_file_is_reported_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"token": "s3cr3t-token", "nodes": 5}')
    with pytest.raises(OctError) as caught:
        state.load(path)
    assert "corrupt" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with state_lock(path), pytest.raises(OctError, match="another oct command is running"), state_lock(path):
        pass
    with state_lock(path):  # released on exit
        pass


def test_state_path_is_relative_to_the_config(project: Path) -> None:
    config = api.validate(project)
    assert (
        state.state_path(project, config.project.state_backend)
        == project.parent.resolve() / ".oct/state.json"
    )


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


# -- client against a stub oct-ctl ---------------------------------------------------------------------

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


# -- waiting for a deployment --------------------------------------------------------------------------


class FakeClient:
    def __init__(self, answers: list[StatusResponse]) -> None:
        self.answers = answers

    def status(self) -> StatusResponse:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def learn(self, nodes: list[str]) -> None:
        pass


def running(name: str = "web", state_: str = "running") -> ServiceView:
    return ServiceView(name=name, node="node-2", address="127.0.0.2", runtime="process", state=state_)


def test_wait_reports_progress_and_ignores_other_deployments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "POLL_INTERVAL", 0)
    old = snapshot(DeploymentView(id="d-old", state="succeeded"))
    mine = snapshot(DeploymentView(id="d-new", state="in_progress"), [running(state_="starting")])
    done = snapshot(DeploymentView(id="d-new", state="succeeded"), [running()])
    seen: list[str] = []
    saved: list[ClusterRecord] = []
    result = rollout.wait_for_deployment(
        FakeClient([old, mine, done]),  # type: ignore[arg-type]
        "d-new",
        local.LocalCluster(Path("oct.toml")),
        record(["127.0.0.9:31888"]),
        saved.append,
        lambda s: seen.append(s.deployment.state if s.deployment else "-"),
        timeout=10,
    )
    assert result is done
    assert seen == ["in_progress", "succeeded"]
    assert saved and saved[-1].nodes == ["127.0.0.2:31888"]  # the record follows the cluster's nodes


def test_wait_raises_deploy_failed_with_service_error_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "POLL_INTERVAL", 0)
    failed = snapshot(
        DeploymentView(
            id="d-1",
            state="failed",
            failed_service="web",
            error="exited with code 127",
            log_tail=["sh: nope"],
        )
    )
    with pytest.raises(DeployFailed) as caught:
        rollout.wait_for_deployment(
            FakeClient([failed]),  # type: ignore[arg-type]
            "d-1",
            local.LocalCluster(Path("oct.toml")),
            record(["127.0.0.2:31888"]),
            lambda r: None,
            None,
            timeout=10,
        )
    message = str(caught.value)
    assert "web" in message and "exited with code 127" in message and "sh: nope" in message
    assert caught.value.exit_code == 1


def test_wait_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "POLL_INTERVAL", 0.01)
    pending = snapshot(DeploymentView(id="d-1", state="pending"))
    with pytest.raises(Timeout) as caught:
        rollout.wait_for_deployment(
            FakeClient([pending]),  # type: ignore[arg-type]
            "d-1",
            local.LocalCluster(Path("oct.toml")),
            record(["127.0.0.2:31888"]),
            lambda r: None,
            None,
            timeout=0.1,
        )
    assert caught.value.exit_code == 4 and "oct status" in str(caught.value)


# -- teardown and recovery from files ------------------------------------------------------------------


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


def test_adopt_rebuilds_the_record_from_node_files(tmp_path: Path) -> None:
    root = tmp_path / ".oct"
    secrets = Secrets.mint()
    for address, join in (("127.0.0.3", ["127.0.0.2:31888"]), ("127.0.0.2", [])):
        settings = NodeSettings(
            node="node-" + address.rsplit(".", 1)[1],
            cluster="c-abc",
            address=address,
            cpus=1000,
            memory=512,
            join=join,
        )
        write_node_files(root / "nodes" / settings.node, settings, secrets)
    adopted = adopt(root, "demo")
    assert adopted is not None
    assert adopted.cluster == "c-abc" and adopted.token == secrets.token
    assert adopted.nodes == ["127.0.0.2:31888", "127.0.0.3:31888"]  # genesis first
    assert adopt(tmp_path / "empty", "demo") is None


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


def test_a_deploy_request_refuses_a_zone_that_is_no_route53_id() -> None:
    from pydantic import ValidationError

    from octctl.api.models import DeployRequest

    assert DeployRequest(config={}, public_zone="/hostedzone/Z0123ABC").public_zone == "/hostedzone/Z0123ABC"
    for bad in ("", "../../etc", "Z1; rm -rf /", "x" * 40):
        with pytest.raises(ValidationError):
            DeployRequest(config={}, public_zone=bad)


# -- asking before spending or destroying ---------------------------------------------------------------


@pytest.fixture
def closed_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any AWS call would fail at once (exit 1): a test that exits 2 provably made none."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if someone sat at a terminal (CliRunner's stdin is not one); ``input=`` is their answer."""
    import octcli.main

    monkeypatch.setattr(octcli.main, "_stdin_is_terminal", lambda: True)


@pytest.mark.usefixtures("closed_aws")
def test_a_first_aws_deploy_shows_the_plan_and_refuses_without_yes(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    result = runner.invoke(app, ["deploy", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "refusing to create AWS resources without confirmation" in result.stderr
    assert "run with --yes" in result.stderr
    assert "t4g" in result.stderr or "t3" in result.stderr, "the plan's instance types are shown"
    assert "a month" in result.stderr and "$" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / ".oct").exists(), "nothing was created, not even the state"


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


@pytest.mark.usefixtures("closed_aws")
def test_library_deploy_on_aws_needs_approve(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    with pytest.raises(NotConfirmed, match="approve=True") as caught:
        api.deploy(path)
    assert caught.value.exit_code == 2
    shown: list[Any] = []
    with pytest.raises(NotConfirmed, match="cancelled"):
        api.deploy(path, approve=declining(shown))
    assert shown and shown[0].provider == "aws" and shown[0].monthly_usd > 0
    assert shown[0].model_dump() == api.plan(path).model_dump(), "what `oct plan` shows"
    assert not (tmp_path / ".oct").exists()


def declining(seen: list[Any]) -> Callable[[Any], bool]:
    """An ``approve`` that notes what it was shown and says no."""

    def approve(summary: Any) -> bool:
        seen.append(summary)
        return False

    return approve


def test_a_local_deploy_never_asks(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []

    def no_cluster(*args: object, **kwargs: object) -> ClusterRecord:
        raise OctError("stop here")

    monkeypatch.setattr(local, "ensure_cluster", no_cluster)
    with pytest.raises(OctError, match="stop here"):
        api.deploy(project, approve=declining(asked))
    assert asked == []


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


@pytest.mark.usefixtures("closed_aws")
def test_aws_destroy_without_a_record_asks_about_every_tagged_cluster(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    result = runner.invoke(app, ["destroy", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "every cluster tagged oct:project=demo in us-west-2" in result.stderr
    seen: list[api.DestroySummary] = []
    with pytest.raises(NotConfirmed):
        api.destroy(path, approve=declining(seen))
    assert seen[0].provider == "aws" and seen[0].cluster is None and seen[0].region == "us-west-2"


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


def test_the_lock_file_goes_with_the_record(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    lock_file = tmp_path / "state.json.lock"
    with state_lock(path):
        state.save(path, record(["127.0.0.2:31888"]))
    assert lock_file.exists(), "kept while there is a record"
    with state_lock(path):
        state.remove(path)
        assert lock_file.exists()
    assert not lock_file.exists(), "removed on release once the record is gone"
    with state_lock(path), pytest.raises(OctError, match="another oct command"), state_lock(path):
        pass


# -- what a deploy changed -----------------------------------------------------------------------------


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


# -- the library's surface ------------------------------------------------------------------------------


def test_the_library_exports_every_command(project: Path) -> None:
    import octcli
    from octcli.plan import build  # loading the module must not shadow the function

    assert build is not None
    for name in ("deploy", "destroy", "status", "logs", "validate", "plan", "unlock"):
        assert name in octcli.__all__ and getattr(octcli, name) is getattr(api, name), name
    assert octcli.plan(project).provider == "local"
    assert octcli.unlock(project) is None
    assert octcli.NotConfirmed.exit_code == 2
