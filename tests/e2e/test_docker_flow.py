"""The quickstart-docker project on a real 3-node local cluster and the real Docker engine."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from octctl.addresses import container_address
from tests.conftest import IMAGE
from tests.e2e.harness import Project, http_get, octctl_pids, services_by_name

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

EXAMPLE_IMAGE = "busybox:1.36"  # what examples/quickstart-docker names; no registry here, so we tag ours


@pytest.fixture
def engine(docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    try:
        docker_client.images.get(EXAMPLE_IMAGE)
    except docker.errors.ImageNotFound:
        docker_client.images.get(IMAGE).tag(EXAMPLE_IMAGE)
    yield docker_client


def containers(engine: docker.DockerClient) -> dict[str, docker.models.containers.Container]:
    found = engine.containers.list(all=True, filters={"label": ["oct.project=quickstart-docker"]})
    return {c.labels["oct.service"]: c for c in found}


def test_docker_deploy_update_remove_destroy(make_project, engine: docker.DockerClient) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("examples/quickstart-docker")
    project.oct("deploy")

    status = project.status()
    assert status["deployment"]["state"] == "succeeded"
    assert len(status["nodes"]) == 3
    services = services_by_name(status)
    assert set(services) == {"store", "api", "web"}
    assert all(s["state"] == "running" and s["runtime"] == "docker" for s in services.values()), [
        (s["name"], s["state"], s["error"]) for s in services.values()
    ]
    assert len({s["node"] for s in services.values()}) == 3

    running = containers(engine)
    assert set(running) == {"store", "api", "web"}
    for name, container in running.items():
        assert container.status == "running"
        assert container.labels["oct.managed"] == "true"
        assert container.labels["oct.node"] == services[name]["node"]
        host = container.attrs["HostConfig"]
        assert host["NanoCpus"] == 100_000_000 and host["Memory"] == 32 * 1024 * 1024

    # Each published port answers HTTP on its node's own address, with oct's rendered env inside:
    # containers are told the names and ports they can reach on the cluster network.
    store = services["store"]
    assert http_get(services["web"]["endpoint"]).strip() == (
        "Hello from oct; api at http://api.quickstart-docker.oct:8080/"
    )
    assert http_get(services["api"]["endpoint"]).strip() == (
        "api, store at http://store.quickstart-docker.oct:8080/"
    )
    # ({{ services.store.ip }} in a container: its node's address for containers, 198.18.0.N)
    assert http_get(store["endpoint"]).strip() == f"store on {container_address(store['address'])}"

    # depends_on order: store started before api, api before web.
    started = {name: c.attrs["State"]["StartedAt"] for name, c in running.items()}
    assert started["store"] <= started["api"] <= started["web"]

    ids = {name: c.id for name, c in running.items()}
    project.oct("deploy")
    assert {name: c.id for name, c in containers(engine).items()} == ids, (
        "unchanged redeploy replaced something"
    )

    project.edit('GREETING = "Hello"', 'GREETING = "Hallo"')
    project.oct("deploy")
    after = {name: c.id for name, c in containers(engine).items()}
    assert after["store"] == ids["store"] and after["api"] == ids["api"]
    assert after["web"] != ids["web"]
    assert http_get(services["web"]["endpoint"]).startswith("Hallo from oct")

    text = project.config.read_text()
    project.config.write_text(text[: text.index('[[project.services]]\nname = "web"')])
    project.oct("deploy")
    assert set(containers(engine)) == {"store", "api"}
    assert set(services_by_name(project.status())) == {"store", "api"}

    project.oct("destroy", "--yes")
    assert containers(engine) == {}
    assert (
        engine.containers.list(
            all=True, filters={"label": ["oct.managed=true", "oct.project=quickstart-docker"]}
        )
        == []
    )
    assert octctl_pids(project.dir) == []
    assert not (project.dir / ".oct").exists()
