"""A dockerfile-only service deployed with the real ``oct deploy`` on a one-node local cluster.

``oct`` builds the image on this machine's engine (``FROM oct-test/busybox:latest``, no registry),
the node runs it, and it serves HTTP; an unchanged redeploy keeps the container, an edited file in
the build context replaces it, and a broken Dockerfile stops the deploy before anything changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import docker
import pytest

from tests.e2e.harness import Project, http_get, services_by_name

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

NAME = "dockerfile-web"
OCT_TOML = f"""
[project]
name = "{NAME}"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 1

[[project.services]]
name = "web"
dockerfile_path = "docker/Dockerfile"
internal_port = 8080
external_port = 9390
cpus = 100
memory = 32
"""
DOCKERFILE = """FROM oct-test/busybox:latest
COPY site/ /www/
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""


@pytest.fixture
def engine(docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    yield docker_client
    for image in docker_client.images.list(filters={"label": f"oct.project={NAME}"}):
        for tag in image.tags:
            docker_client.images.remove(tag, force=True)


def web_container(engine: docker.DockerClient) -> docker.models.containers.Container:
    found = engine.containers.list(all=True, filters={"label": [f"oct.project={NAME}", "oct.service=web"]})
    assert len(found) == 1, [c.name for c in found]
    return found[0]


# ``engine`` first: it is then torn down after ``make_project`` has destroyed the containers, so
# removing the images does not leave them dangling under a container that still uses them.
def test_dockerfile_service_is_built_deployed_and_rebuilt_on_change(engine, make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project(NAME, text=OCT_TOML)
    (project.dir / "docker").mkdir()
    (project.dir / "docker" / "Dockerfile").write_text(DOCKERFILE)
    (project.dir / "site").mkdir()
    (project.dir / "site" / "index.html").write_text("built by oct\n")

    deployed = project.oct("deploy")
    assert re.search(rf"building image oct-{NAME}/web:[0-9a-f]{{12}}", deployed.stderr + deployed.stdout)
    web = services_by_name(project.status())["web"]
    assert web["state"] == "running", web
    assert http_get(web["endpoint"]) == "built by oct\n"
    container = web_container(engine)
    image = container.image.tags[0]
    assert re.fullmatch(rf"oct-{NAME}/web:[0-9a-f]{{12}}", image), image

    again = project.oct("deploy")
    assert "up to date" in again.stderr + again.stdout
    assert web_container(engine).id == container.id, "an unchanged redeploy replaced the container"

    (project.dir / "site" / "index.html").write_text("rebuilt by oct\n")
    project.oct("deploy")
    replaced = web_container(engine)
    assert replaced.id != container.id and replaced.image.tags[0] != image
    web = services_by_name(project.status())["web"]
    assert http_get(web["endpoint"]) == "rebuilt by oct\n"

    (project.dir / "docker" / "Dockerfile").write_text(DOCKERFILE + "RUN echo about-to-fail && false\n")
    failed = project.oct("deploy", check=False)
    assert failed.returncode == 1, failed.stderr
    assert "service 'web'" in failed.stderr and "docker/Dockerfile" in failed.stderr
    assert "about-to-fail" in failed.stderr
    assert web_container(engine).id == replaced.id, "a failed build must leave the running service alone"
    assert http_get(web["endpoint"]) == "rebuilt by oct\n"

    project.oct("destroy", "--yes")
    assert engine.containers.list(all=True, filters={"label": f"oct.project={NAME}"}) == []
