"""Building images from ``dockerfile_path`` with the real Docker engine (``octcli.images``).

The base image is the offline ``oct-test/busybox:latest`` (built by the ``docker_client``
fixture); no registry is involved. Each test uses its own project name and removes its images.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from octcli.errors import InvalidConfig
from octcli.images import BuildFailed, build_images, planned_images
from octctl.config import Config, load_config
from octctl.runtime.base import LABEL_MANAGED, LABEL_PROJECT, LABEL_SERVICE

pytestmark = pytest.mark.docker

DOCKERFILE = 'FROM oct-test/busybox:latest\nCOPY . /ctx\nCMD ["cat", "/ctx/index.html"]\n'


@pytest.fixture
def project(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"img-{uuid.uuid4().hex[:8]}"
    yield name
    for image in docker_client.images.list(filters={"label": f"{LABEL_PROJECT}={name}"}):
        for tag in image.tags:
            docker_client.images.remove(tag, force=True)


@pytest.fixture
def make_dir(tmp_path: Path, project: str) -> Callable[..., Path]:
    def make(dockerfile: str = DOCKERFILE, dockerfile_path: str = "Dockerfile") -> Path:
        root = tmp_path / "app"
        root.mkdir()
        (root / "oct.toml").write_text(
            f'[project]\nname = "{project}"\n\n'
            '[project.state_backend.local]\npath = "./state.json"\n\n'
            "[project.provider.local]\nnodes = 1\n\n"
            f'[[project.services]]\nname = "web"\ndockerfile_path = "{dockerfile_path}"\n'
            "internal_port = 8080\ncpus = 100\nmemory = 32\n"
        )
        target = (root / dockerfile_path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dockerfile)
        (root / "index.html").write_text("hello\n")
        return root

    return make


def build(root: Path, client: docker.DockerClient, phases: list[str] | None = None) -> tuple[Config, str]:
    config = load_config(root / "oct.toml")
    built = build_images(config, root, client=client, on_phase=(phases if phases is not None else []).append)
    return built, built.service("web").image


def run(client: docker.DockerClient, image: str, *command: str) -> str:
    out = client.containers.run(image, list(command) or None, remove=True)
    return bytes(out).decode()


def test_builds_the_image_and_sets_it_in_the_config(make_dir, docker_client, project) -> None:  # type: ignore[no-untyped-def]
    root = make_dir()
    config, image = build(root, docker_client)

    assert re.fullmatch(rf"oct-{project}/web:[0-9a-f]{{12}}", image), image
    assert config.service("web").dockerfile_path == "Dockerfile"
    labels = docker_client.images.get(image).labels
    assert (
        labels[LABEL_PROJECT] == project
        and labels[LABEL_SERVICE] == "web"
        and labels[LABEL_MANAGED] == "true"
    )
    assert run(docker_client, image) == "hello\n"
    # The plan shows the same tag without building anything.
    assert planned_images(load_config(root / "oct.toml"), root) == {"web": image}


def test_tag_is_stable_for_an_unchanged_context_and_follows_its_files(make_dir, docker_client) -> None:  # type: ignore[no-untyped-def]
    root = make_dir()
    (root / ".dockerignore").write_text("notes.txt\n")
    (root / "notes.txt").write_text("draft")
    _, first = build(root, docker_client)
    first_id = docker_client.images.get(first).id

    phases: list[str] = []
    _, again = build(root, docker_client, phases)
    assert again == first
    assert docker_client.images.get(again).id == first_id
    assert any("up to date" in p for p in phases), phases

    # Timestamps, oct's own files and ignored files are not part of the image.
    os.utime(root / "index.html", (1_000_000, 1_000_000))
    (root / ".oct" / "nodes").mkdir(parents=True)
    (root / ".oct" / "nodes" / "secrets.json").write_text("{}")
    (root / "state.json").write_text('{"token": "x"}')
    (root / "notes.txt").write_text("another draft")
    assert build(root, docker_client)[1] == first

    (root / "index.html").write_text("hello again\n")
    _, changed = build(root, docker_client)
    assert changed != first
    assert run(docker_client, changed) == "hello again\n"

    (root / "run.sh").write_text("echo hi\n")
    _, with_script = build(root, docker_client)
    (root / "run.sh").chmod(0o755)
    _, executable = build(root, docker_client)
    assert len({first, changed, with_script, executable}) == 4, "a mode change must change the tag"


def test_context_never_holds_state_git_or_node_files(make_dir, docker_client) -> None:  # type: ignore[no-untyped-def]
    root = make_dir()
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".oct" / "nodes" / "node-2").mkdir(parents=True)
    (root / ".oct" / "nodes" / "node-2" / "secrets.json").write_text("{}")
    (root / "state.json").write_text('{"token": "secret"}')
    (root / "state.json.lock").write_text("")
    (root / "secret.env").write_text("A=1")
    # A user's "!" rule cannot pull oct's state back in; their own exclusions are honoured.
    (root / ".dockerignore").write_text("secret.env\n!state.json\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('hi')\n")

    _, image = build(root, docker_client)
    listing = set(run(docker_client, image, "ls", "-a", "/ctx").split())
    assert {"Dockerfile", "index.html", "oct.toml", "src"} <= listing
    assert listing.isdisjoint({".git", ".oct", "state.json", "state.json.lock", "secret.env"}), listing
    assert run(docker_client, image, "cat", "/ctx/src/app.py") == "print('hi')\n"


def test_dockerfile_outside_the_folder(tmp_path, make_dir, docker_client) -> None:  # type: ignore[no-untyped-def]
    root = make_dir(dockerfile_path="../docker/web.Dockerfile")
    assert not (root / "web.Dockerfile").exists()
    _, image = build(root, docker_client)
    assert run(docker_client, image) == "hello\n"


def test_a_failing_build_names_the_service_file_and_log_tail(make_dir, docker_client, project) -> None:  # type: ignore[no-untyped-def]
    root = make_dir(
        "FROM oct-test/busybox:latest\nRUN echo preparing-the-thing && false\n",
        dockerfile_path="build/Dockerfile.web",
    )
    with pytest.raises(BuildFailed) as caught:
        build(root, docker_client)
    message = str(caught.value)
    assert "service 'web'" in message
    assert "build/Dockerfile.web" in message
    assert "returned a non-zero code: 1" in message
    assert "last lines of the build log" in message
    assert "  preparing-the-thing" in message.splitlines()
    assert caught.value.exit_code != 0
    assert docker_client.images.list(filters={"label": f"{LABEL_PROJECT}={project}"}) == []


def test_a_dockerfile_that_does_not_parse(make_dir, docker_client) -> None:  # type: ignore[no-untyped-def]
    root = make_dir("FROOM oct-test/busybox:latest\n")
    with pytest.raises(BuildFailed, match=r"(?s)service 'web'.*Dockerfile.*unknown instruction"):
        build(root, docker_client)


def test_a_missing_dockerfile_is_bad_input(make_dir, docker_client) -> None:  # type: ignore[no-untyped-def]
    root = make_dir()
    (root / "Dockerfile").unlink()
    with pytest.raises(InvalidConfig) as caught:
        build(root, docker_client)
    assert caught.value.exit_code == 2
    assert "service 'web'" in str(caught.value) and str(root / "Dockerfile") in str(caught.value)
