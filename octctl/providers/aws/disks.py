"""Node side of EBS volumes: the attached disk made a mounted folder, formatted once.

The leader attaches a volume's disk to the node (``ebs.py``); the node finds it, formats it if it
is blank (never otherwise: that would erase the data of a disk that moved here), and mounts it at
the volume's folder, where both runtimes find the data. Every step is idempotent, because the
node does this before each start of the service.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

__all__ = [
    "DISKS_DIR_ENV",
    "MOUNT_ROOT",
    "DiskError",
    "device_candidates",
    "find_device",
    "has_filesystem",
    "mount",
    "prepare",
    "remember",
    "replace_contents",
    "unmount",
]

MOUNT_ROOT = Path("/var/lib/oct-volumes")
#: Tests only: the VM harness plays the disks (``tests/aws/hypervisor.py``): ``<dir>/<node>/<disk>``
#: is the attached disk, a folder that is bind-mounted instead of a device formatted and mounted.
DISKS_DIR_ENV = "OCT_AWS_DISKS_DIR"
_BY_ID = Path("/dev/disk/by-id")
_DEV = Path("/dev")
#: mkfs of a large disk and a mount that waits on a slow device take a while; a hung command
#: must not hold the agent forever.
_COMMAND_TIMEOUT = 300
_POLL = 0.5


class DiskError(Exception):
    """A disk could not be found, formatted or mounted; the message names it and says why."""


def device_candidates(volume_id: str, attached_as: str | None) -> list[Path]:
    """Where the kernel shows the EBS volume ``volume_id`` (e.g. "vol-0123abcd"): on Nitro
    instances an NVMe device whose /dev/disk/by-id link is
    ``nvme-Amazon_Elastic_Block_Store_vol0123abcd`` (the id without its dash: the NVMe serial; the
    name it was attached as means nothing there), on Xen instances the name it was attached as
    (``/dev/sdf`` shows as ``/dev/xvdf``, or as given)."""
    found = [_BY_ID / f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"]
    if attached_as:
        name = Path(attached_as).name
        if name.startswith("sd"):
            found.append(_DEV / f"xvd{name[2:]}")
        given = Path(attached_as) if attached_as.startswith("/dev/") else _DEV / name
        if given not in found:
            found.append(given)
    return found


def find_device(
    volume_id: str,
    attached_as: str | None,
    *,
    timeout: float = 60.0,
    by_id: Path = _BY_ID,
    dev: Path = _DEV,
) -> Path:
    """The device of ``volume_id``, waited for: the kernel (and udev's by-id link) shows an
    attached disk a moment after EC2 says it is attached. ``by_id`` and ``dev`` are for tests."""
    candidates = [
        by_id / c.relative_to(_BY_ID) if c.is_relative_to(_BY_ID) else dev / c.relative_to(_DEV)
        for c in device_candidates(volume_id, attached_as)
    ]
    deadline = time.monotonic() + timeout
    while True:
        for candidate in candidates:
            if candidate.exists():
                return candidate
        left = deadline - time.monotonic()
        if left <= 0:
            looked = ", ".join(str(c) for c in candidates)
            raise DiskError(f"disk {volume_id} did not appear within {timeout:g} s (looked for {looked})")
        time.sleep(min(_POLL, left))


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    # stdin is closed so that a tool that would ask "proceed anyway?" fails instead of hanging.
    try:
        return subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DiskError(f"{argv[0]} failed: {e}") from e


def has_filesystem(device: Path) -> bool:
    """Whether ``device`` holds a file system, or any signature blkid knows (a partition table
    too): then it is not blank, and formatting it would erase someone's data."""
    if not device.exists():  # blkid says "nothing found" (exit 2) for a missing device too
        raise DiskError(f"blkid {device}: no such device")
    done = _run("blkid", "-p", "-o", "value", "-s", "TYPE", str(device))
    if done.returncode == 2:  # no signature at all: a blank disk
        return False
    if done.returncode == 0:
        return True
    # exit 8 is an ambivalent probe (two signatures): not blank either, but not ours to guess.
    raise DiskError(f"blkid {device}: {done.stderr.strip() or f'exit {done.returncode}'}")


def _unescape(field: str) -> str:
    """A path as /proc/self/mountinfo writes it: space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts_at(folder: Path) -> list[tuple[str, str]]:
    """(major:minor, source) of each mount at ``folder``, bottom first: the last one is visible."""
    wanted = str(folder.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if _unescape(fields[4]) == wanted:
            found.append((fields[2], _unescape(fields[fields.index("-") + 2])))
    return found


def _mounted_at(folder: Path) -> str | None:
    """The source visible at ``folder``, or None."""
    found = _mounts_at(folder)
    return found[-1][1] if found else None


def _device_numbers(device: Path) -> set[str]:
    """The major:minor that a mount of ``device`` shows in mountinfo: a block device's own, or for
    a regular file (a disk image) those of the loop devices backed by it."""
    info = os.stat(device)
    if stat.S_ISBLK(info.st_mode):
        return {f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"}
    numbers = set()
    for loop in Path("/sys/block").glob("loop*"):
        try:
            backing = (loop / "loop" / "backing_file").read_text().strip()
            if Path(backing).exists() and Path(backing).samefile(device):
                numbers.add((loop / "dev").read_text().strip())
        except OSError:  # not attached, or detached meanwhile
            continue
    return numbers


def prepare(device: Path, mount_point: Path, *, label: str) -> bool:
    """Format ``device`` if it is blank, and mount it at ``mount_point`` unless it is mounted
    there already: the node calls this before every start, on a disk that may be new, moved here
    with its data, or still mounted from the last start. Returns whether it formatted."""
    formatted = False
    if not has_filesystem(device):
        done = _run("mkfs.ext4", "-q", "-L", label[:16], str(device))
        if done.returncode != 0:
            raise DiskError(f"mkfs.ext4 {device}: {done.stderr.strip() or f'exit {done.returncode}'}")
        formatted = True
    mount_point.mkdir(parents=True, exist_ok=True, mode=0o711)
    mounts = _mounts_at(mount_point)
    if not mounts or mounts[-1][0] not in _device_numbers(device):
        options = "noatime,nofail" + (",loop" if device.is_file() else "")
        done = _run("mount", "-o", options, str(device), str(mount_point))
        if done.returncode != 0:
            why = done.stderr.strip() or f"exit {done.returncode}"
            raise DiskError(f"mount {device} at {mount_point}: {why}")
    return formatted


def remember(device: Path, mount_point: Path, fstab: Path = Path("/etc/fstab")) -> bool:
    """Have the machine mount ``device`` at ``mount_point`` when it boots, by its file system's
    UUID (``nofail``: a disk moved away meanwhile does not stop the boot). Without it a reboot
    would start the services (Docker restarts its containers itself) on the empty folder under
    the mount point, and a database would start empty. Replaces an older line for the same mount
    point; returns whether the file changed."""
    done = _run("blkid", "-p", "-o", "value", "-s", "UUID", str(device))
    uuid = done.stdout.strip()
    if done.returncode != 0 or not uuid:
        raise DiskError(f"blkid {device}: no file system UUID ({done.stderr.strip() or done.returncode})")
    line = f"UUID={uuid} {mount_point} ext4 noatime,nofail 0 2"
    old = fstab.read_text().splitlines() if fstab.exists() else []
    kept = [entry for entry in old if entry.split()[1:2] != [str(mount_point)]]
    if line in old and len(kept) == len(old) - 1:
        return False
    tmp = fstab.with_name(fstab.name + ".oct-tmp")
    tmp.write_text("\n".join([*kept, line]) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, fstab)
    return True


def mount(disk: str, device: str, folder: Path, *, node: str, at_boot: bool = True) -> None:
    """Make the attached ``disk`` the folder ``folder`` (what ``AwsProvider.mount_disk`` does);
    ``at_boot``: and again whenever the machine starts (:func:`remember`)."""
    played = os.environ.get(DISKS_DIR_ENV)
    if played:
        source = Path(played) / node / disk
        deadline = time.monotonic() + 60
        while not source.exists():
            if time.monotonic() >= deadline:
                raise DiskError(f"disk {disk} was not attached to {node} within 60 s")
            time.sleep(0.3)
        folder.mkdir(parents=True, exist_ok=True, mode=0o711)
        if _mounted_at(folder) is None:
            done = _run("mount", "--bind", str(source.resolve()), str(folder))
            if done.returncode != 0:
                raise DiskError(f"mount {disk} at {folder}: {done.stderr.strip()}")
        return
    found = find_device(disk, device)
    prepare(found, folder, label=f"oct-{folder.name}")
    if at_boot:
        remember(found, folder)


def unmount(folder: Path) -> None:
    """Unmount whatever is mounted at ``folder`` (nothing: nothing to do)."""
    if _mounted_at(folder) is None:
        return
    done = _run("umount", str(folder))
    if done.returncode != 0:
        raise DiskError(f"umount {folder}: {done.stderr.strip() or f'exit {done.returncode}'}")


def replace_contents(source: Path, folder: Path) -> None:
    """Make ``folder``'s content a copy of ``source``'s: owners, modes and links kept (``cp -a``),
    whatever ``folder`` held before removed first. ``folder`` itself (a mount point) stays."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    done = _run("cp", "-a", f"{source}/.", str(folder))
    if done.returncode != 0:
        raise DiskError(f"copying {source} into {folder}: {done.stderr.strip() or f'exit {done.returncode}'}")
