"""Tests for the oct CLI and library that touch no network and start no process: config checks,
state file, lock, waiting for a deployment, recovery from files, the questions asked before
spending or destroying, and the exit codes users script against. The client against stub servers,
teardown of real processes and the rest that talks to something are in
``tests/integration/test_cli_client.py``."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from octcli import api, rollout, state
from octcli.errors import DeployFailed, InvalidConfig, NotConfirmed, OctError, Timeout
from octcli.main import app
from octcli.providers import local
from octcli.providers.local import adopt
from octcli.state import ClusterRecord, state_lock
from octctl.api.models import DeploymentView, NodeView, ServiceView, StatusResponse
from octctl.config import ConfigError, load_config
from octctl.node_settings import NodeSettings, Secrets, write_node_files
from octctl.tls import issue_node_certificate, new_ca

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


def test_invalid_config_stops_deploy_before_anything_starts(tmp_path: Path) -> None:
    path = write_config(tmp_path, BAD)
    result = runner.invoke(app, ["deploy", "-c", str(path)])
    assert result.exit_code == 2
    assert not (tmp_path / ".oct").exists()


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
