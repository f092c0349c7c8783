"""Fixtures shared by every suite: the real Docker engine and the offline test image."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

IMAGE = "oct-test/busybox:latest"
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
