"""Backups of volumes: a round trip keeps content, links, modes (and, as root, owners); an archive
that names another volume, or holds anything that could write outside the volume (an absolute or
climbing path, a link out, a device, a link planted to be written through) is refused whole,
with the reason, and leaves the volume as it was."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from octctl.volume_archive import BadArchive, check, pack, unpack


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Each entry: (kind, mode, content or link target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        body = os.readlink(path) if kind == "link" else path.read_text() if kind == "file" else ""
        found[str(path.relative_to(root))] = (kind, stat.S_IMODE(info.st_mode), body)
    return found


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    data = tmp_path / "pgdata"
    (data / "base").mkdir(parents=True)
    (data / "base" / "1").write_text("rows")
    (data / "PG_VERSION").write_text("16")
    (data / "current").symlink_to("base/1")
    os.chmod(data / "base", 0o700)
    os.chmod(data / "PG_VERSION", 0o600)
    os.chmod(data, 0o700)
    return data


def test_a_round_trip_brings_back_content_links_and_modes(tmp_path: Path, volume: Path) -> None:
    archive = tmp_path / "backup.tar.gz"
    before = tree(volume)
    pack({"pgdata": volume}, archive)
    (volume / "base" / "1").write_text("changed")
    (volume / "new-file").write_text("written after the backup")
    os.chmod(volume, 0o755)
    assert check(archive, {"pgdata": volume}) == ["pgdata"]
    assert unpack(archive, {"pgdata": volume}) == ["pgdata"]
    assert tree(volume) == before
    assert stat.S_IMODE(volume.stat().st_mode) == 0o700
    if os.geteuid() == 0:  # as the node's root daemon: owners come back too
        os.chown(volume / "PG_VERSION", 999, 999)
        pack({"pgdata": volume}, archive)
        os.chown(volume / "PG_VERSION", 0, 0)
        unpack(archive, {"pgdata": volume})
        assert (volume / "PG_VERSION").stat().st_uid == 999


def crafted(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, body in members:
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


TOP = (entry("pgdata", tarfile.DIRTYPE), None)


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([(entry("other/x"), b"x")], "the archive holds 'other/x', outside the volumes pgdata"),
        ([TOP, (entry("pgdata/../../escape"), b"x")], "refusing 'pgdata/../../escape' of volume pgdata"),
        ([TOP, (entry("pgdata/etc", tarfile.SYMTYPE, "/etc"), None)], "is a link to an absolute path"),
        ([TOP, (entry("pgdata/up", tarfile.SYMTYPE, "../../.."), None)], "would link to"),
        ([TOP, (entry("pgdata/dev", tarfile.CHRTYPE), None)], "is a special file"),
        ([(entry("pgdata"), b"not a folder")], "'pgdata' should be the folder of volume pgdata"),
    ],
)
def test_an_unsafe_or_foreign_archive_is_refused_and_changes_nothing(
    tmp_path: Path, volume: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], reason: str
) -> None:
    before = tree(volume)
    archive = crafted(tmp_path / "bad.tar.gz", *members)
    with pytest.raises(BadArchive) as caught:
        check(archive, {"pgdata": volume})
    assert reason in str(caught.value)
    with pytest.raises(BadArchive):
        unpack(archive, {"pgdata": volume})
    assert tree(volume) == before
    assert not (tmp_path / "escape").exists()


def test_a_link_planted_to_write_through_is_refused_when_extracted(tmp_path: Path, volume: Path) -> None:
    """``a/b/sub`` -> ``../..`` (the volume) and ``a/b/sub/../x`` (``a/b/x`` while ``sub`` does not
    exist) pass a check made before extraction; once the link exists, the second resolves to the
    folder above the volume. The filter runs again as each member is written, and stops it."""
    outside = volume.parent / "x"
    archive = crafted(
        tmp_path / "plant.tar.gz",
        TOP,
        (entry("pgdata/a/b", tarfile.DIRTYPE), None),
        (entry("pgdata/a/b/sub", tarfile.SYMTYPE, "../.."), None),
        (entry("pgdata/a/b/sub/../x"), b"planted"),
    )
    assert check(archive, {"pgdata": volume}) == ["pgdata"], "(the plant passes the first look)"
    with pytest.raises(BadArchive, match="outside the destination"):
        unpack(archive, {"pgdata": volume})
    assert not outside.exists()


def test_garbage_is_not_an_archive(tmp_path: Path, volume: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b" + os.urandom(64))
    with pytest.raises(BadArchive, match="cannot read the archive"):
        check(junk, {"pgdata": volume})
    empty = crafted(tmp_path / "empty.tar.gz")
    with pytest.raises(BadArchive, match="the archive holds no volume"):
        check(empty, {"pgdata": volume})
