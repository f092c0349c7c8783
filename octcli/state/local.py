"""The record in a local file (``[project.state_backend.local]``), locked with ``flock``.

The file holds the API token, so it is written readable by its owner only, and atomically: a crash
mid-write must never leave a half-written file that loses the token and strands a running cluster.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from octcli.errors import InvalidConfig, OctError
from octcli.state.base import StateStore
from octcli.state.record import ClusterRecord, parse_record

__all__ = ["LocalStore", "load", "remove", "save", "state_lock", "state_path"]


class LocalStore(StateStore):
    """A kernel lock (``flock``) dies with its process, so a crashed command never leaves a stale lock.

    The lock file goes when the record does (see :func:`state_lock`), so a destroyed project leaves
    neither behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def load(self) -> ClusterRecord | None:
        return load(self.path)

    def save(self, record: ClusterRecord) -> None:
        save(self.path, record)

    def remove(self) -> None:
        remove(self.path)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return state_lock(self.path)

    def break_lock(self) -> str | None:
        """Nothing to break: the lock of a dead process is already gone; a live holder must end first."""
        try:
            with state_lock(self.path):
                return None
        except OctError as e:
            raise OctError(f"{e}: a local lock ends with its process, so stop that command instead") from None


def state_path(config_path: Path, backend: object) -> Path:
    """Where the record lives for a project whose ``project.state_backend`` is ``backend``.

    Relative paths are taken from the folder of oct.toml, not the working directory, so ``oct -c
    some/dir/oct.toml`` and ``cd some/dir && oct`` find the same cluster.
    """
    local = getattr(backend, "local", None)
    raw = getattr(local, "path", None)
    if not raw:
        raise InvalidConfig("oct.toml has no state backend: add [project.state_backend.local] with a path")
    path = Path(str(raw)).expanduser()
    if not path.is_absolute():
        path = config_path.resolve().parent / path
    return path


def load(path: Path) -> ClusterRecord | None:
    """The record at ``path``, or None when the project has no cluster yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OctError(f"cannot read state file {path}: {e.strerror}") from None
    return parse_record(text, f"state file {path}", "move it away to start over")


def save(path: Path, record: ClusterRecord) -> None:
    """Replace the record in one step; the temporary file is 0600 from creation, never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(record.model_dump_json(indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` so two oct commands cannot change one project's cluster at once.

    The lock file lives as long as the record: when the holder leaves no record behind (``oct
    destroy``, or a first deploy that failed before saving one), the file is removed on release,
    while still locked. A command that opened the old file meanwhile may then lock a file that is
    no longer at the path, so each taker checks, once locked, that the path still names the file it
    holds, and starts over if not: two commands never both hold "the" lock.
    """
    lock_file = path.with_name(path.name + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OctError(
                    f"another oct command is running for this project (lock {lock_file})"
                ) from None
            raise
        try:
            current = os.stat(lock_file)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # the holder before us removed it as it released it: take the new one
    try:
        try:
            yield
        finally:
            if not path.exists():
                with contextlib.suppress(FileNotFoundError):
                    lock_file.unlink()
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
