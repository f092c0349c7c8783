"""Fixtures shared by every suite: the real Docker engine, the offline test image, and tmp_path
folders that the unprivileged user of process services may pass through."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

IMAGE = "oct-test/busybox:latest"


def searchable_by_others(folder: Path) -> None:
    """Let the unprivileged service user reach ``folder`` (a project's folder, its working directory).

    As root, oct-ctl runs process services as ``oct-svc``/``nobody``, and pytest makes its temporary
    folders 0700: add search (not read) permission for others on the ones we own between the
    system's temporary folder and ``folder``. pytest's folders go with its next sessions.
    """
    top = Path(tempfile.gettempdir()).resolve()
    for path in (folder.resolve(), *folder.resolve().parents):
        if path == top or not path.is_relative_to(top):
            break
        info = path.stat()
        if info.st_uid == os.getuid() and not info.st_mode & stat.S_IXOTH:
            path.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


@pytest.fixture(autouse=True)
def _services_may_enter_tmp_path(request: pytest.FixtureRequest) -> None:
    """Projects made under a test's tmp_path must be reachable by the process services they run."""
    if "tmp_path" in request.fixturenames:
        searchable_by_others(request.getfixturevalue("tmp_path"))


BUILD_SCRIPT = Path(__file__).resolve().parent / "images" / "build_busybox_image.sh"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(
            f"the Docker engine is not reachable ({exc}); install docker.io and start it "
            "(dockerd >dockerd.log 2>&1 &) before running these tests",
            pytrace=False,
        )
    built = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=120)
    if built.returncode != 0:
        pytest.fail(f"building {IMAGE} failed:\n{built.stdout}\n{built.stderr}", pytrace=False)
    yield client
    client.close()
