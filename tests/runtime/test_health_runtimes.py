"""Health checks through the real agent and runtimes: a child process and a container whose check
passes are healthy; one whose check fails is reported unhealthy, restarted by its runtime (counted
in ``restarts``) and starting again. A container replaced beside its old version (start-first):
the old one is retired only once the new one passes its check, also by an agent that started
after the one that replaced it."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from octctl import agent as agent_module
from octctl.agent import Agent
from octctl.health import Verdict
from octctl.runtime.base import LABEL_PROJECT, HealthcheckSpec, InstanceSpec, InstanceStatus, PortMapping
from octctl.runtime.process import ProcessRuntime
from tests.wait import wait_until_async

from .helpers import free_port

#: Answers GET /up with the status in $UP_STATUS (200 unless set).
SERVER = textwrap.dedent(
    """
    import http.server, os

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status = int(os.environ.get("UP_STATUS", "200")) if self.path == "/up" else 404
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"up")

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


class Changes:
    """Every change of a verdict the agent's monitor makes, in order."""

    def __init__(self) -> None:
        self.states: list[str] = []

    def __call__(self, project: str, service: str, verdict: Verdict) -> None:
        self.states.append(verdict.state)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[Agent, Changes]]:
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    agent = Agent("node-a", data)
    # Children run as the test's user (like tests/runtime/test_process_runtime.py), so they can run
    # this venv's Python; who they run as is not what these tests are about.
    agent._runtimes["process"] = ProcessRuntime(data / "processes", node="node-a", startup_grace=0.5)
    changes = Changes()
    agent.health.listener = changes
    runner = asyncio.create_task(agent.watch_health())
    yield agent, changes
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await asyncio.to_thread(agent.close)


def check(kind: str, port: int | None = None, **overrides: Any) -> HealthcheckSpec:
    fields: dict[str, Any] = {
        "kind": kind,
        "path": "/up",
        "host": "127.0.0.1",
        "port": port,
        "interval": 0.2,
        "timeout": 0.15,
        "retries": 2,
        "start_period": 1.0,
    }
    fields.update(overrides)
    return HealthcheckSpec.model_validate(fields)


async def instance(agent: Agent, project: str, service: str) -> InstanceStatus | None:
    return next((s for s in await agent.list(project) if s.service == service), None)


# -- process runtime ------------------------------------------------------------------------------


def process_spec(healthcheck: HealthcheckSpec, env: dict[str, str]) -> InstanceSpec:
    return InstanceSpec(
        project="demo",
        service="web",
        deployment="d1",
        spec_hash=uuid.uuid4().hex[:8],
        runtime="process",
        command=[sys.executable, "-c", SERVER],
        env=env,
        cpus=100,
        memory=64,
        healthcheck=healthcheck,
    )


async def test_a_process_whose_http_check_passes_is_healthy(
    agent: tuple[Agent, Changes], tmp_path: Path
) -> None:
    node, changes = agent
    port = free_port()
    await node.apply(process_spec(check("http", port), {"PORT": str(port)}))
    status = await wait_until_async(
        lambda: instance(node, "demo", "web"), until=lambda s: s is not None and s.health == "healthy"
    )
    assert status is not None
    assert status.health_output == "HTTP 200 from GET /up: up" and status.restarts == 0
    assert status.health_changed_at is not None
    assert changes.states == ["healthy"]


async def test_a_process_whose_check_fails_is_restarted_and_starts_again(
    agent: tuple[Agent, Changes], tmp_path: Path
) -> None:
    node, changes = agent
    port = free_port()
    await node.apply(process_spec(check("http", port), {"PORT": str(port), "UP_STATUS": "503"}))
    status = await wait_until_async(
        lambda: instance(node, "demo", "web"),
        until=lambda s: s is not None and s.restarts >= 1,
        timeout=30,
        message="a restart by the failed check",
    )
    assert status is not None
    assert changes.states[:2] == ["unhealthy", "starting"]
    assert status.health in ("starting", "unhealthy")  # unhealthy again only after the start period
    assert status.health_output == "HTTP 503 from GET /up: up"


async def test_a_process_command_check_runs_with_the_service_environment(
    agent: tuple[Agent, Changes], tmp_path: Path
) -> None:
    node, _ = agent
    port = free_port()
    probe = [sys.executable, "-c", "import os, sys; print(os.environ['GREETING']); sys.exit(0)"]
    spec = process_spec(check("command", command=probe, timeout=2, interval=3), {"PORT": str(port)})
    spec.env["GREETING"] = "hello-from-env"
    await node.apply(spec)
    status = await wait_until_async(
        lambda: instance(node, "demo", "web"), until=lambda s: s is not None and s.health == "healthy"
    )
    assert status is not None and status.health_output == "exit 0: hello-from-env"


# -- docker runtime -------------------------------------------------------------------------------

IMAGE = "oct-test/busybox:latest"
#: httpd as a child of a shell that exits on SIGTERM, so a restart does not wait out the timeout.
HTTPD = ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /; sleep 1; wait"]


@pytest.fixture
def project(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={name}"}):
        container.remove(force=True)


def docker_spec(project: str, port: int, healthcheck: HealthcheckSpec) -> InstanceSpec:
    return InstanceSpec(
        project=project,
        service="web",
        deployment="d1",
        spec_hash=uuid.uuid4().hex[:8],
        runtime="docker",
        image=IMAGE,
        command=HTTPD,
        cpus=250,
        memory=32,
        ports=[PortMapping(host_ip="127.0.0.1", host_port=port, container_port=8080)],
        healthcheck=healthcheck,
    )


@pytest.mark.docker
async def test_a_container_whose_tcp_check_passes_is_healthy(
    agent: tuple[Agent, Changes], project: str, docker_client: docker.DockerClient
) -> None:
    node, changes = agent
    port = free_port()
    await node.apply(docker_spec(project, port, check("tcp", port)))
    status = await wait_until_async(
        lambda: instance(node, project, "web"), until=lambda s: s is not None and s.health == "healthy"
    )
    assert status is not None and status.health_output == f"connected to 127.0.0.1:{port}"
    assert changes.states == ["healthy"]


@pytest.mark.docker
async def test_a_container_whose_command_check_fails_is_restarted_and_starts_again(
    agent: tuple[Agent, Changes], project: str, docker_client: docker.DockerClient
) -> None:
    node, changes = agent
    port = free_port()
    failing = check("command", command=["sh", "-c", "echo not ready; exit 3"], timeout=2, interval=2.5)
    await node.apply(docker_spec(project, port, failing))
    status = await wait_until_async(
        lambda: instance(node, project, "web"),
        until=lambda s: s is not None and s.restarts >= 1,
        timeout=40,
        message="a restart by the failed check",
    )
    assert status is not None
    assert changes.states[:2] == ["unhealthy", "starting"]
    assert status.health_output == "exit 3: not ready"
    container = docker_client.containers.get(f"oct-{project}-web")
    assert container.status == "running"  # restarted, not removed


def beside(project: str, port: int, healthcheck: HealthcheckSpec) -> InstanceSpec:
    """A new version of the container on ``port``, started beside the running one (start-first)."""
    spec = docker_spec(project, port, healthcheck)
    return spec.model_copy(update={"instance_port": port, "beside": True})


def names(docker_client: docker.DockerClient, project: str) -> list[str]:
    return sorted(
        c.name
        for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={project}"})
    )


@pytest.fixture
def quick_retirement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "RETIRE_AFTER", 0.6)
    monkeypatch.setattr(agent_module, "RETIRE_POLL", 0.1)


@pytest.mark.docker
@pytest.mark.usefixtures("quick_retirement")
async def test_the_old_container_is_retired_only_once_its_replacement_passes_its_check(
    agent: tuple[Agent, Changes], project: str, docker_client: docker.DockerClient
) -> None:
    node, _ = agent
    first, second, third = free_port(), free_port(), free_port()
    await node.apply(beside(project, first, check("tcp", first, start_period=0)))
    never = check("tcp", free_port(), start_period=0)  # probes a port nothing listens on
    status = await node.apply(beside(project, second, never))
    assert status.previous_port == first
    await asyncio.sleep(2.0)  # three times the retirement delay: the old one still serves
    assert names(docker_client, project) == [f"oct-{project}-web", f"oct-{project}-web.previous"]
    listed = await instance(node, project, "web")
    assert listed is not None and listed.previous_port == first and listed.health != "healthy"

    status = await node.apply(beside(project, third, check("tcp", third, start_period=0)))
    assert status.previous_port == second  # (the one before it is dropped at once)
    await wait_until_async(
        lambda: asyncio.to_thread(names, docker_client, project),
        until=lambda found: found == [f"oct-{project}-web"],
        timeout=15,
        message="the old container to be retired once the new one passed its check",
    )
    listed = await instance(node, project, "web")
    assert listed is not None and (listed.port, listed.previous_port, listed.health) == (
        third,
        None,
        "healthy",
    )


@pytest.mark.docker
@pytest.mark.usefixtures("quick_retirement")
async def test_an_old_container_an_earlier_agent_left_is_retired_by_the_next(
    tmp_path: Path, project: str, docker_client: docker.DockerClient
) -> None:
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    first, second = free_port(), free_port()
    earlier = Agent("node-a", data)
    await earlier.apply(beside(project, first, check("tcp", first, start_period=0)))
    await earlier.apply(beside(project, second, check("tcp", second, start_period=0)))
    for task in list(earlier._retiring.values()):  # it dies before retiring anything
        task.cancel()
    await asyncio.to_thread(earlier.close)
    assert len(names(docker_client, project)) == 2

    later = Agent("node-a", data)
    runner = asyncio.create_task(later.watch_health())  # resumes the checks the earlier one saved
    try:
        assert (await instance(later, project, "web")).previous_port == first  # type: ignore[union-attr]
        await wait_until_async(
            lambda: asyncio.to_thread(names, docker_client, project),
            until=lambda found: found == [f"oct-{project}-web"],
            timeout=15,
            message="the next agent to retire what the earlier one left",
        )
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await asyncio.to_thread(later.close)


@pytest.mark.docker
@pytest.mark.usefixtures("quick_retirement")
async def test_the_old_container_stays_while_the_new_one_has_not_served_min_healthy_time(
    agent: tuple[Agent, Changes], project: str, docker_client: docker.DockerClient
) -> None:
    node, _ = agent
    first, second = free_port(), free_port()
    await node.apply(beside(project, first, check("tcp", first, start_period=0)))
    spec = beside(project, second, check("tcp", second, start_period=0)).model_copy(
        update={"keep_previous": 4.0}
    )
    await node.apply(spec)
    await wait_until_async(
        lambda: instance(node, project, "web"), until=lambda s: s is not None and s.health == "healthy"
    )
    await asyncio.sleep(2.0)  # past the agent's own delay (0.6 s here), within min_healthy_time
    assert names(docker_client, project) == [f"oct-{project}-web", f"oct-{project}-web.previous"]
    await wait_until_async(
        lambda: asyncio.to_thread(names, docker_client, project),
        until=lambda found: found == [f"oct-{project}-web"],
        timeout=15,
        message="the old container to be retired once min_healthy_time has passed",
    )
