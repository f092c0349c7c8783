"""Finding an attached EBS volume's device: the names the kernel gives it on Nitro and on Xen,
and the wait for it to appear (a disk shows up a moment after EC2 says it is attached)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from octctl.providers.aws import disks
from octctl.providers.aws.disks import DiskError, device_candidates, find_device, has_filesystem

NITRO = Path("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123abcd")


def test_a_nitro_disk_is_found_by_its_volume_id_without_the_dash() -> None:
    assert device_candidates("vol-0123abcd", None) == [NITRO]


def test_a_xen_disk_attached_as_sdf_shows_as_xvdf_or_as_given() -> None:
    assert device_candidates("vol-0123abcd", "/dev/sdf") == [NITRO, Path("/dev/xvdf"), Path("/dev/sdf")]
    assert device_candidates("vol-0123abcd", "/dev/xvdg") == [NITRO, Path("/dev/xvdg")]
    assert device_candidates("vol-0123abcd", "xvdh") == [NITRO, Path("/dev/xvdh")]


def test_the_device_is_waited_for_until_its_link_appears(tmp_path: Path) -> None:
    by_id, dev = tmp_path / "by-id", tmp_path / "dev"
    by_id.mkdir()
    dev.mkdir()
    (dev / "nvme1n1").touch()
    link = by_id / "nvme-Amazon_Elastic_Block_Store_vol0123abcd"
    plug = threading.Timer(0.3, lambda: link.symlink_to(dev / "nvme1n1"))
    plug.start()
    try:
        started = time.monotonic()
        found = find_device("vol-0123abcd", "/dev/sdf", timeout=10, by_id=by_id, dev=dev)
    finally:
        plug.join()
    assert found == link
    assert 0.2 < time.monotonic() - started < 5


def test_a_xen_name_is_found_under_dev(tmp_path: Path) -> None:
    (tmp_path / "xvdf").touch()
    found = find_device("vol-0123abcd", "/dev/sdf", timeout=0, by_id=tmp_path / "by-id", dev=tmp_path)
    assert found == tmp_path / "xvdf"


def test_a_disk_that_never_appears_is_named_with_what_was_looked_for(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DiskError) as raised:
        find_device("vol-0123abcd", "/dev/sdf", timeout=0.3, by_id=tmp_path / "by-id", dev=tmp_path)
    assert time.monotonic() - started < 2
    message = str(raised.value)
    assert "vol-0123abcd" in message
    assert str(tmp_path / "by-id" / "nvme-Amazon_Elastic_Block_Store_vol0123abcd") in message
    assert str(tmp_path / "xvdf") in message and str(tmp_path / "sdf") in message


@pytest.mark.parametrize(("returncode", "blank"), [(2, True), (0, False)])
def test_blkid_exit_2_is_a_blank_disk_and_a_type_is_a_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returncode: int, blank: bool
) -> None:
    out = "" if blank else "ext4\n"
    done = subprocess.CompletedProcess(["blkid"], returncode, out, "")
    monkeypatch.setattr(disks, "_run", lambda *argv: done)
    (tmp_path / "disk").touch()
    assert has_filesystem(tmp_path / "disk") is not blank


def test_any_other_blkid_failure_is_an_error_not_a_blank_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = subprocess.CompletedProcess(["blkid"], 8, "", "ambivalent result")
    monkeypatch.setattr(disks, "_run", lambda *argv: done)
    (tmp_path / "disk").touch()
    with pytest.raises(DiskError, match="ambivalent result"):
        has_filesystem(tmp_path / "disk")
    with pytest.raises(DiskError, match="no such device"):  # blkid would say exit 2 here too
        has_filesystem(tmp_path / "missing")


def test_a_snapshot_restore_names_only_volumes_and_snapshot_ids() -> None:
    """What the restore routes accept before anything is touched on a node."""
    import pytest
    from pydantic import ValidationError

    from octctl.api.models import SnapshotRestoreRequest

    assert SnapshotRestoreRequest(snapshots={"pgdata": "snap-0123456789abcdef0"}).snapshots == {
        "pgdata": "snap-0123456789abcdef0"
    }
    for bad in (
        {"pgdata": "vol-0123456789abcdef0"},
        {"../etc": "snap-01234567"},
        {},
        {"pgdata": "snap-1; rm -rf"},
    ):
        with pytest.raises(ValidationError):
            SnapshotRestoreRequest(snapshots=bad)
