"""What it takes for a file to survive a power cut, not only a crash of the process.

A write that returned is in the kernel's page cache: it survives ``kill -9`` of the writer, and
is lost when the machine loses power before the kernel writes it back (up to ~30 s later). Raft
may acknowledge an entry only once a majority holds it *on disk*, so the journal is synced before
any message that reports it leaves the node (see ``RaftNode``). A file replaced by rename needs
two more syncs: its contents before the rename (or the new name may point at an empty file after
a cut), and its directory after (or the old name may come back).
"""

from __future__ import annotations

import os
from pathlib import Path


def sync_file(path: str | Path) -> None:
    """Write ``path``'s contents and size to disk (``fdatasync``: the timestamps may wait)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def sync_dir(path: str | Path) -> None:
    """Make the names in directory ``path`` (a rename, a new file) survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: str | Path, target: str | Path) -> None:
    """``os.replace`` after which a power cut leaves either the old ``target`` or all of ``source``."""
    sync_file(source)
    os.replace(source, target)
    sync_dir(Path(target).parent)


def write_durably(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through a synced temporary file beside it."""
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        f.write(data)
    replace_durably(temporary, path)
