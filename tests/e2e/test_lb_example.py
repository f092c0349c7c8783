"""The reference example ``multi-host-rest-service-with-lb.toml`` deployed as written.

Its two apps and the nginx in front of them all claim ``external_port = 80``: each is host-bound,
placed on a node of its own, and served on port 80 of that node only; nginx reaches the apps at
``{{ services.app_N.public_ip }}:80``. The images it names are built offline by
``tests/images/build_lb_example_images.sh`` under the same tags (an httpd naming ``$APP_NAME``, and a
real nginx that runs ``$NGINX_CONF``). The file is copied unchanged, with one table appended: a
local provider, as docs/oct-toml.md says to run it on this machine instead of AWS.
"""

from __future__ import annotations

import contextlib
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import docker
import pytest

from octctl.addresses import container_address
from tests.e2e.harness import Project, http_get, octctl_pids, services_by_name
from tests.fixtures import REFERENCE_EXAMPLES
from tests.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

EXAMPLE = REFERENCE_EXAMPLES / "multi-host-rest-service-with-lb.toml"
BUILD = Path(__file__).resolve().parents[1] / "images" / "build_lb_example_images.sh"
PROJECT = "multi-host-rest-service-with-lb"


@pytest.fixture(scope="module")
def images(docker_client: docker.DockerClient) -> docker.DockerClient:
    built = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"building the example's images failed:\n{built.stdout}\n{built.stderr}"
    return docker_client


def containers(engine: docker.DockerClient) -> dict[str, docker.models.containers.Container]:
    found = engine.containers.list(all=True, filters={"label": [f"oct.project={PROJECT}"]})
    return {c.labels["oct.service"]: c for c in found}


def answers(url: str, count: int) -> list[str]:
    return [http_get(url).strip() for _ in range(count)]


def deploy(make_project) -> tuple[Project, dict[str, str]]:  # type: ignore[no-untyped-def]
    """The example as written plus a local provider, deployed; each service's node address."""
    text = EXAMPLE.read_text()
    project: Project = make_project(PROJECT, text + "\n[project.provider.local]\n")
    assert project.config.read_text().startswith(text)
    project.oct("deploy")
    status = project.status()
    assert status["deployment"]["state"] == "succeeded"
    services = services_by_name(status)
    assert set(services) == {"app_1", "app_2", "nginx"}
    assert all(s["state"] == "running" for s in services.values()), [
        (s["name"], s["state"], s["error"]) for s in services.values()
    ]
    assert len({s["node"] for s in services.values()}) == 3, "host-bound services share no node"
    return project, {name: s["address"] for name, s in services.items()}


def test_the_lb_example_deploys_as_written(make_project, images: docker.DockerClient) -> None:  # type: ignore[no-untyped-def]
    project, address = deploy(make_project)
    running = containers(images)
    assert set(running) == {"app_1", "app_2", "nginx"}
    assert all(c.status == "running" for c in running.values())

    # Port 80 of each app's node is that app's: its node's ingress serves the port for it alone.
    assert set(answers(f"http://{address['app_1']}/", 4)) == {"app_1"}
    assert set(answers(f"http://{address['app_2']}/", 4)) == {"app_2"}

    # nginx is told the apps' nodes (public_ip), and the real nginx answers on port 80 of its own.
    conf = dict(e.split("=", 1) for e in running["nginx"].attrs["Config"]["Env"])["NGINX_CONF"]
    # (each node's address for containers: a container's 127.0.0.N would be its own loopback)
    reach = {app: container_address(address[app]) for app in ("app_1", "app_2")}
    assert f"server {reach['app_1']}:80;" in conf and f"server {reach['app_2']}:80;" in conf
    assert nginx_server_header(f"http://{address['nginx']}/").startswith("nginx/")

    project.oct("destroy", "--yes")
    assert containers(images) == {}
    assert octctl_pids(project.dir) == []
    on_lo = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True
    ).stdout
    assert not [a for a in address.values() if f" {container_address(a)}/" in on_lo], (
        "destroy takes them down"
    )


def test_the_lb_example_s_nginx_balances_over_both_apps(make_project, images: docker.DockerClient) -> None:  # type: ignore[no-untyped-def]
    _, address = deploy(make_project)
    front = f"http://{address['nginx']}/"
    seen: set[str] = set()

    def one_more() -> set[str]:
        with contextlib.suppress(OSError), urllib.request.urlopen(front, timeout=3) as resp:
            seen.add(resp.read().decode().strip())
        return seen

    wait_until(
        one_more,
        until=lambda got: got >= {"app_1", "app_2"},
        timeout=30,
        interval=0.1,
        message=f"{front} to answer from both app_1 and app_2",
    )
    assert seen == {"app_1", "app_2"}


def nginx_server_header(url: str) -> str:
    """The ``Server`` header of the first answer, whatever its status (a 502 is nginx's answer too)."""

    def get() -> str:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return str(resp.headers.get("Server", ""))
        except urllib.error.HTTPError as e:
            return str(e.headers.get("Server", ""))

    return wait_until(get, timeout=20, interval=0.2, ignore=(OSError,), message=f"{url} to answer")
