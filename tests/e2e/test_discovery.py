"""Containers on different nodes find each other by name: a front fetching from two backends.

This is the flow of the reference's single-/multi-host "rest service with lb" examples, with an
image built offline: each backend serves its name, the front copies both pages into its own site.
"""

from __future__ import annotations

import docker
import pytest

from tests.conftest import IMAGE
from tests.e2e.harness import Project, http_get, services_by_name
from tests.wait import WaitTimeout, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


def fetch(url: str, target: str) -> str:
    return f"wget -q -O /www/{target}.tmp {url} && mv /www/{target}.tmp /www/{target}"


BACKEND = """
[[project.services]]
name = "{name}"
image = "{image}"
command = "sh -c 'mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8000 -h /www'"
internal_port = 8000
cpus = 100
memory = 32
"""

PROJECT = (
    """
[project]
name = "lb"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3
"""
    + BACKEND.format(name="app_1", image=IMAGE, text="backend-one")
    + BACKEND.format(name="app_2", image=IMAGE, text="backend-two")
    + """
[[project.services]]
name = "front"
image = "{image}"
command = "sh -c 'mkdir -p /www; while true; do {fetch_one}; {fetch_two}; sleep 0.3; done & {serve}'"
internal_port = 8080
external_port = 9300
cpus = 100
memory = 32
depends_on = ["app_1", "app_2"]
""".format(
        image=IMAGE,
        fetch_one=fetch("http://app_1:8000/", "one"),  # the short name
        fetch_two=fetch("http://app_2.lb.oct:8000/", "two"),  # the name in the cluster zone
        serve="exec httpd -f -p 8080 -h /www",
    )
)


def wait_for_text(url: str, text: str, timeout: float = 30.0) -> None:
    def answer() -> str:
        try:
            return http_get(url, timeout=2).strip()
        except WaitTimeout:
            return "(no answer)"

    wait_until(
        answer,
        until=lambda got: got == text,
        timeout=timeout,
        interval=0.2,
        message=f"{url} to answer {text!r}",
    )


def test_a_front_reaches_backends_on_other_nodes_by_name(
    make_project, docker_client: docker.DockerClient
) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("lb", PROJECT)
    project.oct("deploy")
    status = project.status()
    services = services_by_name(status)
    assert len({services[name]["node"] for name in ("app_1", "app_2", "front")}) == 3
    front = f"http://{services['front']['address']}:9300"
    wait_for_text(f"{front}/one", "backend-one")  # short name
    wait_for_text(f"{front}/two", "backend-two")  # name in the cluster zone

    # A redeployed backend is found again under the same name.
    project.edit("backend-two", "backend-two-v2")
    project.oct("deploy")
    wait_for_text(f"{front}/two", "backend-two-v2")

    cluster = status["cluster"]
    networks = docker_client.networks.list(filters={"label": f"oct.cluster={cluster}"})
    assert [n.name for n in networks] == [f"oct-{cluster}"]
    project.oct("destroy", "--yes")
    assert docker_client.networks.list(filters={"label": f"oct.cluster={cluster}"}) == []
