"""A disk made a mounted folder with the real tools (blkid, mkfs.ext4, mount), on a disk image
loop-mounted as root: formatted once, and its data kept across unmounts and repeated prepares."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from octctl.providers.aws.disks import DiskError, has_filesystem, prepare


def mounts_at(folder: Path) -> int:
    wanted = str(folder.resolve())
    return sum(line.split()[4] == wanted for line in Path("/proc/self/mountinfo").read_text().splitlines())


def unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True, text=True, timeout=60, check=True)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    subprocess.run(
        ["truncate", "-s", "64M", str(path)], capture_output=True, text=True, timeout=10, check=True
    )
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "volumes" / "data"
    yield path
    while os.path.ismount(path):  # every mount a test left, stacked ones too
        unmount(path)


def test_a_blank_disk_is_formatted_once_and_keeps_its_data_across_mounts(image: Path, folder: Path) -> None:
    assert has_filesystem(image) is False
    assert prepare(image, folder, label="oct-a-rather-long-volume-name") is True
    assert has_filesystem(image) is True
    assert os.path.ismount(folder) and (folder / "lost+found").is_dir()
    assert folder.stat().st_dev != folder.parent.stat().st_dev
    label = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "LABEL", str(image)], capture_output=True, text=True, timeout=10
    )
    assert label.stdout.strip() == "oct-a-rather-lon"  # ext4 labels hold 16 bytes
    (folder / "kept.txt").write_text("still here")

    unmount(folder)
    assert not os.path.ismount(folder) and not (folder / "kept.txt").exists()
    assert prepare(image, folder, label="oct-data") is False  # a filesystem: never formatted again
    assert os.path.ismount(folder)
    assert (folder / "kept.txt").read_text() == "still here"


def test_prepare_while_mounted_is_a_no_op(image: Path, folder: Path) -> None:
    assert prepare(image, folder, label="oct-data") is True
    (folder / "kept.txt").write_text("still here")
    assert prepare(image, folder, label="oct-data") is False
    assert mounts_at(folder) == 1
    assert (folder / "kept.txt").read_text() == "still here"


def test_something_else_mounted_there_is_mounted_over(image: Path, folder: Path) -> None:
    folder.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "tmpfs", str(folder)], capture_output=True, timeout=10, check=True
    )
    assert prepare(image, folder, label="oct-data") is True
    assert mounts_at(folder) == 2 and (folder / "lost+found").is_dir()
    assert prepare(image, folder, label="oct-data") is False
    assert mounts_at(folder) == 2


def test_a_disk_with_only_a_partition_table_is_not_formatted_and_the_mount_error_is_told(
    image: Path, folder: Path
) -> None:
    with image.open("r+b") as disk:  # an MBR with one Linux partition: someone's disk, not blank
        disk.seek(446)
        disk.write(
            bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
        )
        disk.seek(510)
        disk.write(b"\x55\xaa")
    assert has_filesystem(image) is True
    with pytest.raises(DiskError, match=r"mount .*disk\.img.*: .+"):
        prepare(image, folder, label="oct-data")
    assert not os.path.ismount(folder)
    kind = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "PTTYPE", str(image)], capture_output=True, text=True
    )
    assert kind.stdout.strip() == "dos"  # still only the partition table: nothing was formatted


def test_a_mounted_disk_is_remembered_for_the_next_boot_by_its_uuid(
    image: Path, folder: Path, tmp_path: Path
) -> None:
    """After a reboot the machine mounts the disk before Docker restarts its containers, so no
    service starts on the empty folder under the mount point. ``mount -a`` reads the line back."""
    from octctl.providers.aws.disks import remember

    fstab = tmp_path / "fstab"
    fstab.write_text(
        "UUID=root-disk / ext4 defaults 0 1\nUUID=stale " + str(folder) + " ext4 noatime,nofail 0 2\n"
    )
    prepare(image, folder, label="oct-data")
    (folder / "kept.txt").write_text("still here")
    assert remember(image, folder, fstab) is True
    uuid = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "UUID", str(image)], capture_output=True, text=True, timeout=10
    ).stdout.strip()
    lines = fstab.read_text().splitlines()
    assert lines == ["UUID=root-disk / ext4 defaults 0 1", f"UUID={uuid} {folder} ext4 noatime,nofail 0 2"]
    assert remember(image, folder, fstab) is False  # once

    # What the boot does with the line: mount the disk at the folder, the data there.
    unmount(folder)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    try:
        mounted = subprocess.run(
            ["mount", "--fstab", str(fstab), "-o", "loop", str(folder)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert mounted.returncode == 0, mounted.stderr
        assert (folder / "kept.txt").read_text() == "still here"
    finally:
        while os.path.ismount(folder):
            unmount(folder)
        subprocess.run(["losetup", "-d", loop], capture_output=True, timeout=10)
