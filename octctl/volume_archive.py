"""A service's volumes as one gzipped tarball, and back: what ``oct backup`` and ``oct restore`` move.

The archive holds one top folder per volume (``pgdata/...``) with modes and numeric owners kept,
since a database refuses a data folder with the wrong owner or mode. Unpacking is the dangerous
half: the archive comes over the network and is unpacked by a root daemon, so every member is
passed through the standard library's ``data`` filter (no absolute paths, nothing outside the
volume, no links out of it, no device files) before its mode (without set-id bits) and owner
are put back, and an archive that names a volume the service does not have changes nothing.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["BadArchive", "check", "pack", "unpack"]


class BadArchive(Exception):
    """The archive is not one of this service's backups, or holds something unsafe; the message
    says what, and nothing was changed."""


def pack(folders: Mapping[str, Path], out: Path) -> None:
    """Write ``out`` with each folder's content under its volume's name (symlinks kept as links)."""
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        for name, folder in sorted(folders.items()):
            tar.add(folder, arcname=name)


def _volume_of(member: tarfile.TarInfo, names: Mapping[str, Path]) -> str:
    top = member.name.lstrip("./").split("/", 1)[0]
    if top not in names:
        raise BadArchive(f"the archive holds {member.name!r}, outside the volumes {', '.join(sorted(names))}")
    return top


def _safe(member: tarfile.TarInfo, folder: str) -> tarfile.TarInfo:
    """The ``data`` filter's verdict on the member, with its mode (set-id and sticky bits dropped)
    and numeric owner put back. Run before anything is written, and again as each member is
    extracted, when links made by earlier members exist and are followed."""
    checked = tarfile.data_filter(member, folder)
    return checked.replace(
        mode=member.mode & 0o777, uid=member.uid, gid=member.gid, uname="", gname="", deep=False
    )


def _inside(member: tarfile.TarInfo, volume: str, folder: Path) -> tarfile.TarInfo:
    """The member renamed into its volume's folder (``pgdata/base/1`` to ``base/1``), checked."""
    moved = member.replace(name=member.name.lstrip("./").split("/", 1)[1], deep=False)
    if moved.islnk():  # a hard link names another member: rename its target the same way
        moved = moved.replace(linkname=moved.linkname.lstrip("./").split("/", 1)[-1], deep=False)
    try:
        _safe(moved, str(folder))
    except tarfile.FilterError as e:
        raise BadArchive(f"refusing {member.name!r} of volume {volume}: {e}") from None
    return moved


def _empty(folder: Path) -> None:
    """Remove what the folder holds, keeping the folder (a mount point, or owned by the service)."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _plan(
    tar: tarfile.TarFile, folders: Mapping[str, Path]
) -> tuple[dict[str, list[tarfile.TarInfo]], dict[str, tarfile.TarInfo]]:
    """Each volume's members renamed into its folder, and its top folder; raises BadArchive."""
    plan: dict[str, list[tarfile.TarInfo]] = {}
    tops: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        volume = _volume_of(member, folders)
        if "/" not in member.name.lstrip("./"):
            if not member.isdir():
                raise BadArchive(f"{member.name!r} should be the folder of volume {volume}")
            tops[volume] = member
            continue
        plan.setdefault(volume, []).append(_inside(member, volume, folders[volume]))
    return plan, tops


def check(archive: Path, folders: Mapping[str, Path]) -> list[str]:
    """The volumes :func:`unpack` would restore; raises BadArchive without touching anything."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            plan, tops = _plan(tar, folders)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BadArchive(f"cannot read the archive: {e}") from None
    if not plan and not tops:
        raise BadArchive("the archive holds no volume")
    return sorted(set(plan) | set(tops))


def unpack(archive: Path, folders: Mapping[str, Path]) -> list[str]:
    """Replace each volume's content with the archive's; returns the volumes restored.

    Every member is checked before any folder is touched. A volume the archive does not hold is
    left as it is.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            plan, tops = _plan(tar, folders)
            for volume in sorted(set(plan) | set(tops)):
                folder = folders[volume]
                _empty(folder)
                tar.extractall(folder, members=plan.get(volume, []), numeric_owner=True, filter=_safe)
                top = tops.get(volume)
                if top is not None:
                    os.chmod(folder, top.mode & 0o777)
                    if os.geteuid() == 0:
                        os.chown(folder, top.uid, top.gid)
            return sorted(set(plan) | set(tops))
    except tarfile.FilterError as e:  # (a link made by an earlier member led outside)
        raise BadArchive(f"refusing part of the archive: {e}") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BadArchive(f"cannot read the archive: {e}") from None
