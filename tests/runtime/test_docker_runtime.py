"""DockerRuntime against the real engine and the offline busybox image.

A missing engine is a test *failure*, not a skip: CI installs and starts docker, so an unreachable
engine means the environment is broken and must be loud.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from docker.errors import NotFound

from octctl.runtime.base import (
    LABEL_CLUSTER,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    InstanceSpec,
    InstanceStatus,
    PortMapping,
    RuntimeFailure,
)
from octctl.runtime.docker import DockerRuntime, container_name
from tests.wait import wait_until

from .helpers import free_port, http_get

pytestmark = pytest.mark.docker

IMAGE = "oct-test/busybox:latest"


@pytest.fixture
def project(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={name}"}):
        container.remove(force=True)
    # A foreign container some tests create under oct's naming scheme carries no labels.
    for container in docker_client.containers.list(all=True, filters={"name": f"oct-{name}-"}):
        container.remove(force=True)


@pytest.fixture
def runtime(docker_client: docker.DockerClient) -> Iterator[DockerRuntime]:
    rt = DockerRuntime(node="node-a")  # connects lazily through docker.from_env, like the daemon
    yield rt
    rt.close()


def make_spec(project: str, service: str = "web", **overrides: Any) -> InstanceSpec:
    fields: dict[str, Any] = {
        "project": project,
        "service": service,
        "cluster": "c-test",
        "deployment": "d1",
        "spec_hash": "h1",
        "runtime": "docker",
        "image": IMAGE,
        "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
        "cpus": 250,
        "memory": 32,
    }
    fields.update(overrides)
    return InstanceSpec(**fields)


def web_spec(project: str, port: int, **overrides: Any) -> InstanceSpec:
    return make_spec(
        project,
        ports=[PortMapping(host_ip="127.0.0.1", host_port=port, container_port=8080)],
        **overrides,
    )


def find_status(
    runtime: DockerRuntime,
    project: str,
    service: str,
    when: Callable[[InstanceStatus], bool] = lambda _: True,
) -> InstanceStatus | None:
    """The service's status if it satisfies ``when`` (a check for :func:`~tests.wait.wait_until`)."""
    status = next((s for s in runtime.list(project) if s.service == service), None)
    return status if status is not None and when(status) else None


def test_apply_runs_the_service_with_env_limits_and_labels(
    runtime: DockerRuntime, docker_client: docker.DockerClient, project: str
) -> None:
    port = free_port()
    spec = web_spec(
        project,
        port,
        command=["sh", "-c", "echo $GREETING > /www/greeting; exec httpd -f -p 8080 -h /www"],
        env={"GREETING": "hello-from-env"},
        cpus=500,
        memory=64,
    )

    status = runtime.apply(spec)

    assert status.state == "running", status
    assert (status.project, status.service, status.runtime) == (project, "web", "docker")
    assert (status.deployment, status.spec_hash) == ("d1", "h1")
    index = wait_until(lambda: http_get(f"http://127.0.0.1:{port}/"), message="httpd index page")
    assert "oct-test busybox" in index
    greeting = wait_until(lambda: http_get(f"http://127.0.0.1:{port}/greeting"), message="greeting")
    assert greeting.strip() == "hello-from-env"

    container = docker_client.containers.get(container_name(project, "web"))
    host_config = container.attrs["HostConfig"]
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == 64 * 1024 * 1024
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped"
    assert host_config["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "16m"}}
    assert container.labels == {
        LABEL_MANAGED: "true",
        LABEL_PROJECT: project,
        LABEL_SERVICE: "web",
        LABEL_DEPLOYMENT: "d1",
        LABEL_SPEC_HASH: "h1",
        LABEL_NODE: "node-a",
        LABEL_CLUSTER: "c-test",
    }
    exec_env = container.exec_run("env").output.decode()
    assert "GREETING=hello-from-env" in exec_env


def test_same_hash_is_left_alone_and_a_new_hash_replaces(
    runtime: DockerRuntime, docker_client: docker.DockerClient, project: str
) -> None:
    port = free_port()
    runtime.apply(web_spec(project, port))
    first_id = docker_client.containers.get(container_name(project, "web")).id

    again = runtime.apply(web_spec(project, port, deployment="d2"))
    assert again.state == "running"
    assert again.deployment == "d1"  # untouched: still the instance of the first deployment
    assert docker_client.containers.get(container_name(project, "web")).id == first_id

    replaced = runtime.apply(web_spec(project, port, deployment="d2", spec_hash="h2"))
    assert replaced.state == "running", replaced
    assert (replaced.deployment, replaced.spec_hash) == ("d2", "h2")
    second = docker_client.containers.get(container_name(project, "web"))
    assert second.id != first_id
    with pytest.raises(NotFound):
        docker_client.containers.get(first_id)
    # The replacement got the same host port, which only works if the old one was removed first.
    assert wait_until(lambda: http_get(f"http://127.0.0.1:{port}/"), message="replacement serving")


def test_remove_deletes_and_is_idempotent(
    runtime: DockerRuntime, docker_client: docker.DockerClient, project: str
) -> None:
    runtime.apply(make_spec(project))

    runtime.remove(project, "web")

    with pytest.raises(NotFound):
        docker_client.containers.get(container_name(project, "web"))
    assert runtime.list(project) == []
    runtime.remove(project, "web")
    runtime.remove(project, "never-existed")


def test_unpullable_image_is_reported_failed(runtime: DockerRuntime, project: str) -> None:
    status = runtime.apply(make_spec(project, image="oct-test/nope:1"))

    assert status.state == "failed"
    assert status.error is not None
    assert "cannot pull image 'oct-test/nope:1'" in status.error


def test_crash_loop_shows_exit_code_restarts_and_log_tail(
    runtime: DockerRuntime, docker_client: docker.DockerClient, project: str
) -> None:
    runtime.apply(make_spec(project, service="job", command=["sh", "-c", "echo boom; exit 3"]))

    looping = wait_until(
        lambda: find_status(runtime, project, "job", lambda s: s.restarts >= 1 and s.exit_code == 3),
        message="the crash loop to be visible",
    )
    assert looping.state in ("restarting", "running", "exited")

    docker_client.containers.get(container_name(project, "job")).stop(timeout=1)
    stopped = find_status(runtime, project, "job")
    assert stopped is not None
    assert stopped.state == "exited"
    assert stopped.exit_code == 3
    assert stopped.restarts >= 1
    assert "boom" in stopped.log_tail


def test_port_already_allocated_is_a_failure_not_an_exception(runtime: DockerRuntime, project: str) -> None:
    port = free_port()
    assert runtime.apply(web_spec(project, port)).state == "running"

    clash = runtime.apply(
        make_spec(
            project,
            service="api",
            ports=[PortMapping(host_ip="127.0.0.1", host_port=port, container_port=8080)],
        )
    )

    assert clash.state == "failed"
    assert clash.error is not None
    assert str(port) in clash.error
    listed = find_status(runtime, project, "api")
    assert listed is not None and listed.state == "failed"  # the leader keeps seeing it


def test_logs_returns_the_tail(runtime: DockerRuntime, project: str) -> None:
    runtime.apply(
        make_spec(project, command=["sh", "-c", "for i in 1 2 3 4 5 6; do echo line$i; done; sleep 60"])
    )

    lines = wait_until(
        lambda: runtime.logs(project, "web", tail=3) == ["line4", "line5", "line6"], message="logs"
    )
    assert lines
    assert runtime.logs(project, "absent") == []


def test_a_container_oct_does_not_own_is_never_touched(
    runtime: DockerRuntime, docker_client: docker.DockerClient, project: str
) -> None:
    foreign = docker_client.containers.run(
        IMAGE, ["sleep", "60"], name=container_name(project, "web"), detach=True
    )

    status = runtime.apply(make_spec(project))
    runtime.remove(project, "web")

    assert status.state == "failed"
    assert status.error is not None and "does not own" in status.error
    foreign.reload()
    assert foreign.status == "running"


def test_list_filters_by_project(runtime: DockerRuntime, project: str) -> None:
    other = f"{project}x"
    try:
        runtime.apply(make_spec(project, command=["sleep", "60"]))
        runtime.apply(make_spec(other, command=["sleep", "60"]))

        assert [s.project for s in runtime.list(project)] == [project]
        everything = {(s.project, s.service) for s in runtime.list()}
        assert {(project, "web"), (other, "web")} <= everything
    finally:
        runtime.remove(other, "web")


def test_unreachable_engine_raises_a_clear_failure_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    rt = DockerRuntime()  # constructing never touches the engine

    with pytest.raises(RuntimeFailure, match="cannot reach the Docker engine"):
        rt.list()


def beside_spec(project: str, port: int, version: str, **overrides: Any) -> InstanceSpec:
    """A page naming its version, on ``port``, replaced beside (start-first)."""
    fields: dict[str, Any] = {
        "command": ["sh", "-c", f"echo {version} > /www/index.html; exec httpd -f -p 8080 -h /www"],
        "spec_hash": version,
        "instance_port": port,
        "beside": True,
        **overrides,
    }
    return web_spec(project, port, **fields)


def test_a_beside_update_keeps_the_old_version_serving_until_it_is_retired(
    runtime: DockerRuntime, docker_client: docker.DockerClient, project: str
) -> None:
    old_port, new_port = free_port(), free_port()
    assert runtime.apply(beside_spec(project, old_port, "one")).port == old_port
    wait_until(lambda: http_get(f"http://127.0.0.1:{old_port}/"), message="version one")

    status = runtime.apply(beside_spec(project, new_port, "two", deployment="d2"))
    assert (status.state, status.spec_hash, status.port, status.previous_port) == (
        "running", "two", new_port, old_port,
    )  # fmt: skip
    assert wait_until(lambda: http_get(f"http://127.0.0.1:{new_port}/")).strip() == "two"
    assert http_get(f"http://127.0.0.1:{old_port}/").strip() == "one", "the old one still serves"
    listed = [s for s in runtime.list(project)]
    assert [(s.service, s.spec_hash, s.previous_port) for s in listed] == [("web", "two", old_port)]

    runtime.retire_previous(project, "web")
    assert wait_until(lambda: http_get(f"http://127.0.0.1:{old_port}/") is None, message="old one gone")
    assert [(s.service, s.previous_port) for s in runtime.list(project)] == [("web", None)]
    names = [
        c.name
        for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={project}"})
    ]
    assert names == [container_name(project, "web")]


def test_a_rollback_before_retirement_makes_the_previous_generation_current_again(
    runtime: DockerRuntime, docker_client: docker.DockerClient, project: str
) -> None:
    old_port, new_port = free_port(), free_port()
    runtime.apply(beside_spec(project, old_port, "one"))
    first = docker_client.containers.get(container_name(project, "web")).id
    broken = runtime.apply(beside_spec(project, new_port, "two", command=["no-such-command"]))
    assert broken.state == "failed" and broken.previous_port == old_port
    assert wait_until(lambda: http_get(f"http://127.0.0.1:{old_port}/")).strip() == "one"

    back = runtime.apply(beside_spec(project, old_port, "one", deployment="d3"))
    assert (back.state, back.spec_hash, back.port, back.previous_port) == ("running", "one", old_port, None)
    assert docker_client.containers.get(container_name(project, "web")).id == first, "the same container"
    assert [s.service for s in runtime.list(project)] == ["web"]

    runtime.remove(project, "web")
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={project}"}) == []


def test_remove_takes_the_previous_generation_too(
    runtime: DockerRuntime, docker_client: docker.DockerClient, project: str
) -> None:
    runtime.apply(beside_spec(project, free_port(), "one"))
    runtime.apply(beside_spec(project, free_port(), "two"))
    assert len(docker_client.containers.list(filters={"label": f"{LABEL_PROJECT}={project}"})) == 2
    runtime.remove(project, "web")
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={project}"}) == []
