"""The log file of a process service: opened by the daemon, rotated at each start, read from the end.

A child has no log driver: its stdout and stderr go to one file in the runtime's private folder,
which the daemon opens and hands over (the child never opens anything there itself). This module is
that file's whole life, so the size cap and the way ``oct logs`` reads it live in one place.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

#: How many lines a status of a not-running instance carries, as the docker runtime does.
LOG_TAIL_LINES = 20
#: One rotation (``.log`` → ``.log.1``) at (re)start keeps a chatty service from filling the disk.
MAX_LOG_BYTES = 16 * 1024 * 1024


def rotate_if_large(path: Path) -> None:
    """Move ``path`` aside to ``.log.1`` once it grew past :data:`MAX_LOG_BYTES` (one old file kept)."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > MAX_LOG_BYTES:
            os.replace(path, path.with_suffix(".log.1"))


def open_for_child(path: Path) -> BinaryIO:
    """Open ``path`` owner-only for appending; raises ``OSError``.

    The caller closes its copy once the child holds its own descriptor.
    """
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


def tail_lines(path: Path, count: int) -> list[str]:
    """Last ``count`` lines without reading a large log from the start."""
    if count <= 0:
        return []
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            block = 8192
            data = b""
            while end > 0 and data.count(b"\n") <= count:
                start = max(0, end - block)
                handle.seek(start)
                data = handle.read(end - start) + data
                end = start
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-count:]
