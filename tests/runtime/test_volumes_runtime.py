"""Volumes on the real runtimes: what an instance writes there is still there after it is replaced
by a new version and after it is removed and started again; a docker volume is labelled as the
project's and outlives its container; a process volume is a folder of the service user's own,
named in its env, and a folder the user cannot reach fails the start with the reason."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from octctl.runtime.base import (
    LABEL_CLUSTER,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_VOLUME,
    InstanceSpec,
    VolumeMount,
)
from octctl.runtime.docker import DockerRuntime
from octctl.runtime.docker.volumes import volume_name
from octctl.runtime.process import ProcessRuntime, ServiceUser
from octctl.runtime.process.volumes import volume_folder
from tests.wait import wait_until

IMAGE = "oct-test/busybox:latest"
#: Appends its version to the volume at every start, then stays up.
APPEND = "echo $V >> {path}/lines; trap exit TERM; sleep 300 & wait"


def spec(project: str, runtime: str, version: str, **overrides: Any) -> InstanceSpec:
    fields: dict[str, Any] = {
        "project": project,
        "service": "db",
        "cluster": "c-test",
        "node": "node-a",
        "deployment": f"d-{version}",
        "spec_hash": f"h-{version}",
        "runtime": runtime,
        "env": {"V": version},
        "cpus": 100,
        "memory": 32,
    }
    fields.update(overrides)
    return InstanceSpec(**fields)


@pytest.fixture
def project(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={name}"}):
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters={"label": f"{LABEL_PROJECT}={name}"}):
        volume.remove(force=True)


@pytest.mark.docker
def test_a_docker_volume_keeps_its_data_across_replacement_and_removal(
    project: str, docker_client: docker.DockerClient
) -> None:
    runtime = DockerRuntime(node="node-a")
    mounted = {
        "image": IMAGE,
        "command": ["sh", "-c", APPEND.format(path="/data")],
        "volumes": [VolumeMount(name="pgdata", path="/data")],
    }

    def written(version: str) -> bool:
        """The running container has appended its line (before it is replaced: under load a
        container replaced at once would never write it)."""
        code, output = docker_client.containers.get(f"oct-{project}-db").exec_run(["cat", "/data/lines"])
        return code == 0 and version in output.decode().split()

    try:
        for version in ("one", "two"):
            status = runtime.apply(spec(project, "docker", version, **mounted))
            assert status.state == "running", status
            wait_until(lambda v=version: written(v), timeout=10)  # type: ignore[misc]
        runtime.remove(project, "db")
        assert runtime.apply(spec(project, "docker", "three", **mounted)).state == "running"
        container = docker_client.containers.get(f"oct-{project}-db")

        def lines() -> str | None:
            code, output = container.exec_run(["cat", "/data/lines"])
            return output.decode() if code == 0 and output.decode().count("\n") == 3 else None

        assert wait_until(lines, timeout=10) == "one\ntwo\nthree\n"
        volume = docker_client.volumes.get(volume_name(project, "pgdata"))
        assert volume.attrs["Labels"] == {
            LABEL_MANAGED: "true",
            LABEL_PROJECT: project,
            LABEL_SERVICE: "db",
            LABEL_VOLUME: "pgdata",
            LABEL_CLUSTER: "c-test",
            LABEL_NODE: "node-a",
        }
        runtime.remove(project, "db")
        assert docker_client.volumes.get(volume.name).name == volume.name, "the volume outlives the container"
    finally:
        runtime.close()


@pytest.fixture
def nobody() -> ServiceUser:
    """The service user a root oct-ctl runs processes as; nothing that needs root may skip itself."""
    if os.geteuid() != 0:
        pytest.fail("switching to the service user needs root (CI runs the suite as root)")
    entry = pwd.getpwnam("nobody")
    return ServiceUser(name="nobody", uid=entry.pw_uid, gid=entry.pw_gid, home="/nonexistent")


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder every user can search (pytest's own temporary folders are 0700 from the top)."""
    folder = Path(tempfile.mkdtemp(prefix="oct-volumes-", dir="/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_process_volume_is_the_service_users_folder_and_keeps_its_data(
    tmp_path: Path, reachable: Path, nobody: ServiceUser
) -> None:
    root = reachable / "volumes"
    runtime = ProcessRuntime(tmp_path / "state", startup_grace=0.3, run_as=nobody, volumes_dir=root)
    mounted = {
        "command": ["sh", "-c", APPEND.format(path="$OCT_VOLUME_PGDATA")],
        "volumes": [VolumeMount(name="pgdata")],
    }
    folder = volume_folder(root, "demo", "pgdata")
    try:
        for version in ("one", "two"):
            assert runtime.apply(spec("demo", "process", version, **mounted)).state == "running"
            wait_until(lambda v=version: v in (folder / "lines").read_text() or None, timeout=10)  # type: ignore[misc]
        runtime.remove("demo", "db")
        assert runtime.apply(spec("demo", "process", "three", **mounted)).state == "running"
        wait_until(lambda: (folder / "lines").read_text().count("\n") == 3 or None, timeout=10)
        assert (folder / "lines").read_text() == "one\ntwo\nthree\n"
        info = folder.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (nobody.uid, 0o700)
        assert stat.S_IMODE(root.stat().st_mode) == 0o711, "others may reach a folder, never list them"
        assert (folder / "lines").stat().st_uid == nobody.uid, "written by the service user, not root"
    finally:
        runtime.close()


def test_a_volume_folder_the_service_user_cannot_reach_fails_the_start(
    tmp_path: Path, nobody: ServiceUser
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    runtime = ProcessRuntime(
        tmp_path / "state", startup_grace=0.3, run_as=nobody, volumes_dir=private / "volumes"
    )
    try:
        status = runtime.apply(
            spec("demo", "process", "one", command=["sleep", "300"], volumes=[VolumeMount(name="pgdata")])
        )
        assert status.state == "failed"
        assert status.error == (
            f"the volumes folder {private / 'volumes'} is not reachable by the service user 'nobody' "
            f"(uid {nobody.uid}): make every folder above it searchable by that user"
        )
        assert runtime.pid("demo", "db") is None
    finally:
        runtime.close()
