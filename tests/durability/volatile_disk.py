"""A disk that forgets what was not synced: the power-cut layer of the durability test.

A FUSE file system (``mfusepy`` over libfuse 3) that mirrors a backing folder, the "platter".
Names (create, mkdir, rename, unlink, links) reach the backing folder at once, as a journaling file
system's metadata does in practice. File *contents* live in this process's memory, the "page
cache", until the file is fsynced (``fsync``/``fdatasync``/``msync``): only then are they written
to the backing file and synced there. Killing this process is the power cut: whatever was not
synced is gone, as from a machine that lost power. The kernel's page cache of the mount goes with
the mount (the harness unmounts it), so a new mount over the same folder reads what was synced,
and nothing else.

Run as ``python -m tests.durability.volatile_disk BACKING MOUNT``; it serves until killed. Writing
``sync`` to ``MOUNT/.volatile`` writes everything back, as the kernel's writeback would within
~30 s: the test's checkpoint before the writes it counts. (An LD_PRELOAD shim cannot see stores
to an mmap, which is how PySyncObj writes its journal; device-mapper is not available here.)
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

import mfusepy as fuse

CONTROL = "/.volatile"
_STAT_FIELDS = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")


class VolatileDisk(fuse.Operations):
    """Single-threaded (``nothreads``): no locks needed around the unsynced contents."""

    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = backing
        self.unsynced: dict[str, bytearray] = {}  # path -> contents not yet on the platter

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _contents(self, path: str) -> bytearray:
        if path not in self.unsynced:
            with open(self._real(path), "rb") as f:
                self.unsynced[path] = bytearray(f.read())
        return self.unsynced[path]

    def _persist(self, path: str) -> None:
        contents = self.unsynced.pop(path, None)
        if contents is None:
            return
        fd = os.open(self._real(path), os.O_WRONLY)
        try:
            os.pwrite(fd, contents, 0)
            os.ftruncate(fd, len(contents))
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- the control file ----------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == CONTROL:
            return {"st_mode": 0o100600, "st_nlink": 1, "st_size": 0}
        try:
            st = os.lstat(self._real(path))
        except OSError as e:
            raise fuse.FuseOSError(e.errno) from None
        attrs = {name: getattr(st, name) for name in _STAT_FIELDS}
        for name in ("st_atime", "st_mtime", "st_ctime"):
            attrs[name] = getattr(st, name + "_ns")
        if path in self.unsynced:
            attrs["st_size"] = len(self.unsynced[path])
        return attrs

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if path == CONTROL:
            for name in list(self.unsynced):
                self._persist(name)
            return len(data)
        contents = self._contents(path)
        if offset > len(contents):
            contents.extend(bytes(offset - len(contents)))
        contents[offset : offset + len(data)] = data
        return len(data)

    # -- contents ------------------------------------------------------------------------------
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if path in self.unsynced:
            return bytes(self.unsynced[path][offset : offset + size])
        with open(self._real(path), "rb") as f:
            f.seek(offset)
            return f.read(size)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if path == CONTROL:
            return 0
        contents = self._contents(path)
        del contents[length:]
        contents.extend(bytes(length - len(contents)))
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self._persist(path)
        return 0

    def open(self, path: str, flags: int) -> int:
        if path != CONTROL and not os.path.exists(self._real(path)):
            raise fuse.FuseOSError(errno.ENOENT)
        return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        os.close(os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
        self.unsynced[path] = bytearray()
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        return 0

    # -- names (durable at once) ---------------------------------------------------------------
    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        os.unlink(self._real(path))
        self.unsynced.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        os.replace(self._real(old), self._real(new))
        for name in [n for n in self.unsynced if n == old or n.startswith(old + "/")]:
            self.unsynced[new + name[len(old) :]] = self.unsynced.pop(name)
        return 0

    def symlink(self, target: str, source: str) -> int:
        os.symlink(source, self._real(target))
        return 0

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def mknod(self, path: str, mode: int, dev: int) -> int:
        os.mknod(self._real(path), mode, dev)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        os.utime(self._real(path), ns=times)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._real(path))
        names = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_frsize")
        return {name: getattr(st, name) for name in names} | {"f_namemax": st.f_namemax}


def main(argv: list[str]) -> None:
    backing, mount = argv
    fuse.FUSE(VolatileDisk(os.path.abspath(backing)), mount, foreground=True, nothreads=True)


if __name__ == "__main__":
    main(sys.argv[1:])
