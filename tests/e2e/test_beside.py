"""Start-first updates of containers on a real 3-node local cluster and the real Docker engine:
each instance's new version starts beside the running one (on the other port of its pair) and
takes over once it serves; the old container is retired by its node a few seconds later. Under a
steady load through the ingress: no request lost in an update, nor in the automatic rollback of a
version that never passes its check (the old container, not yet retired, serves again)."""

from __future__ import annotations

import docker
import pytest

from tests.conftest import IMAGE
from tests.e2e.harness import Project, services_by_name
from tests.e2e.test_replicas import Load
from tests.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

PORT = 9310
#: The page names the version and the container; ``/up`` (the check) exists unless broken.
SCRIPT = (
    "mkdir -p /www; echo $VERSION $HOSTNAME > /www/index.html; "
    "[ $VERSION = broken ] || echo ok > /www/up; trap exit TERM; httpd -f -p 8080 -h /www & wait"
)

CONFIG = f"""\
[project]
name = "beside"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3

[[project.services]]
name = "web"
image = "{IMAGE}"
command = "sh -c '{SCRIPT}'"
internal_port = 8080
external_port = {PORT}
replicas = 2
cpus = 100
memory = 32

[project.services.envs]
VERSION = "one"

[project.services.healthcheck]
http = "/up"
interval = 0.5
timeout = 0.4
retries = 2
start_period = 0

[project.services.update]
order = "start-first"
healthy_deadline = 8
"""


def settled_versions(load: Load) -> set[str]:
    """The versions twenty requests in a row got, once they all got one (the instances answer
    with their own container names, so :meth:`Load.settle` would wait for one instance)."""

    def batch() -> set[str]:
        load.answers.clear()
        wait_until(lambda: sum(load.answers.values()) >= 20, timeout=10, message="20 answers")
        return {answer.split()[0] for answer in load.answers}

    return wait_until(batch, until=lambda seen: len(seen) == 1, timeout=20, interval=0.1)


def containers(engine: docker.DockerClient) -> list[str]:
    return sorted(c.name for c in engine.containers.list(all=True, filters={"label": "oct.project=beside"}))


def test_containers_are_replaced_beside_without_a_lost_request_nor_in_a_rollback(
    make_project, docker_client: docker.DockerClient
) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("beside", CONFIG)
    project.oct("deploy")
    instances = services_by_name(project.status())["web"]["instances"]
    ports = {i["name"]: i["port"] for i in instances}
    assert containers(docker_client) == ["oct-beside-web", "oct-beside-web.2"]

    with Load(f"http://{instances[0]['address']}:{PORT}/") as load:
        project.edit('VERSION = "one"', 'VERSION = "two"')
        project.oct("deploy")
        assert {i["name"] for i in services_by_name(project.status())["web"]["instances"]} == {"web", "web.2"}
        assert settled_versions(load) == {"two"}
        moved = {i["name"]: i["port"] for i in services_by_name(project.status())["web"]["instances"]}
        assert all(moved[name] != port for name, port in ports.items()), (ports, moved)
        wait_until(
            lambda: containers(docker_client) == ["oct-beside-web", "oct-beside-web.2"],
            timeout=20,
            message="each node to retire the old container",
        )

        project.edit('VERSION = "two"', 'VERSION = "broken"')
        result = project.oct("deploy", check=False)
        assert result.returncode == 1 and "rolled back automatically" in result.stderr, result.stderr
        assert settled_versions(load) == {"two"}, "the old version kept serving"
        back = {i["name"]: i["port"] for i in services_by_name(project.status())["web"]["instances"]}
        assert back == moved, "the rollback made the old containers current again, where they were"
    assert load.failures == [], f"requests lost during an update or its rollback: {load.failures[:5]}"
    assert sum(load.answers.values()) > 0
    project.oct("destroy", "--yes")
    assert containers(docker_client) == []
