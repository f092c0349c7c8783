"""The wheel the CLI ships to AWS nodes: the running oct, deterministic, complete, self-describing."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

import octctl
from octcli.artifact import LOCK_PATH, build_artifact


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("wheel")).path


def test_the_same_code_gives_the_same_wheel_byte_for_byte(tmp_path: Path) -> None:
    first = build_artifact(tmp_path / "a")
    second = build_artifact(tmp_path / "b")
    assert first.sha256 == second.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert first.filename == f"oct_cloud-{octctl.__version__}-py3-none-any.whl"
    assert first.version == octctl.__version__


def test_the_wheel_holds_both_packages_the_deploy_files_and_the_lock(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "octctl/__init__.py",
        "octctl/daemon.py",
        "octcli/main.py",
        "octctl/py.typed",
        "octctl/_deploy/genesis.sh",
        "octctl/_deploy/install-oct.sh",
        "octctl/_deploy/oct-ctl.service",
        LOCK_PATH,
    ):
        assert needed in names, needed
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    dist_info = f"oct_cloud-{octctl.__version__}.dist-info"
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "Name: oct-cloud" in metadata and f"Version: {octctl.__version__}" in metadata
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "oct = octcli.main:app" in entry_points and "oct-ctl = octctl.daemon:main" in entry_points


def test_record_lists_every_file_with_its_true_hash(wheel: Path) -> None:
    """What pip checks on install: a wrong RECORD line would fail there, on the node."""
    archive = zipfile.ZipFile(wheel)
    record_name = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
    rows = [line.split(",") for line in archive.read(record_name).decode().splitlines()]
    listed = {path for path, _, _ in rows}
    assert listed == set(archive.namelist())
    for path, digest, size in rows:
        if path == record_name:
            assert digest == size == ""
            continue
        data = archive.read(path)
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (f"sha256={expected}", len(data)), path


def test_scripts_keep_their_execute_bit(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    mode = archive.getinfo("octctl/_deploy/install-oct.sh").external_attr >> 16
    assert mode & 0o111, oct(mode)
    assert not (archive.getinfo("octctl/__init__.py").external_attr >> 16) & 0o111
