"""What the CLI tests feed the oct command and library, shared by the unit and integration suites.

oct.toml texts (a good local or AWS project, a bad one) and a writer, the ``project`` fixture, a
cluster record pinned to the stub servers' CA, status answers as a node gives them, an
``approve`` that says no, an AWS endpoint that refuses at once (``closed_aws``), a terminal at
stdin (``terminal``) and an address nobody listens on. A test module that uses a fixture from
here imports it and names it in ``__all__``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from octcli.state import ClusterRecord
from octctl.api.models import DeploymentView, NodeView, ServiceView, StatusResponse
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


#: The stubs' cluster CA and their certificate (the CLI talks HTTPS and pins the CA from the record).
STUB_CA_KEY, STUB_CA = new_ca("c-test")


STUB_KEY, STUB_CERT = issue_node_certificate(STUB_CA_KEY, STUB_CA, "stub", ["127.0.0.1"])


def record(nodes: list[str], token: str = "s3cr3t-token", root: str = "/nowhere/.oct") -> ClusterRecord:
    return ClusterRecord(
        cluster="c-test", project="demo", token=token, nodes=nodes, root=root, ca_cert=STUB_CA
    )


def running(name: str = "web", state_: str = "running") -> ServiceView:
    return ServiceView(name=name, node="node-2", address="127.0.0.2", runtime="process", state=state_)


def declining(seen: list[Any]) -> Callable[[Any], bool]:
    """An ``approve`` that notes what it was shown and says no."""

    def approve(summary: Any) -> bool:
        seen.append(summary)
        return False

    return approve


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


def dead_address() -> str:
    """A 127.0.0.1 port nobody listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"
