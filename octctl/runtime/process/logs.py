"""The log file of a process service: opened by the daemon, rotated, read from the end or followed.

A child has no log driver: its stdout and stderr go to one file in the runtime's private folder,
which the daemon opens and hands over (the child never opens anything there itself). This module is
that file's whole life, so the size cap and the way ``oct logs`` reads it live in one place.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from octctl.runtime.base import LogStream

#: How many lines a status of a not-running instance carries, as the docker runtime does.
LOG_TAIL_LINES = 20
#: Past this a log is rotated (one older file kept): at a (re)start by renaming it
#: (:func:`rotate_if_large`), while the child runs by copying and truncating it
#: (``octctl/log_files.py``), so a chatty service never fills the disk.
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
    try:
        with path.open("rb") as handle:
            return _tail_of(handle, handle.seek(0, os.SEEK_END), count)
    except FileNotFoundError:
        return []


def _tail_of(handle: BinaryIO, end: int, count: int) -> list[str]:
    """The last ``count`` lines before offset ``end``, read backwards a block at a time."""
    if count <= 0:
        return []
    block = 8192
    data = b""
    while end > 0 and data.count(b"\n") <= count:
        start = max(0, end - block)
        handle.seek(start)
        data = handle.read(end - start) + data
        end = start
    return data.decode("utf-8", "replace").splitlines()[-count:]


#: How often a followed log file is looked at for new lines.
FOLLOW_POLL = 0.2


class FileLines(LogStream):
    """The last lines of a log file and, when following, what is appended to it: read from where
    the last read ended, and from the start of a new file once the file was rotated away (a
    restart of a large log, :func:`rotate_if_large`). Memory stays one read block whatever the size."""

    def __init__(self, path: Path, tail: int, follow: bool) -> None:
        self._path, self._tail, self._follow = path, tail, follow
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[str]:
        handle, inode, pending = None, None, b""
        with contextlib.suppress(FileNotFoundError):
            handle = self._path.open("rb")
        try:
            if handle is not None:
                end = handle.seek(0, os.SEEK_END)  # the tail ends here, and following starts here
                inode = os.fstat(handle.fileno()).st_ino
                tail = _tail_of(handle, end, self._tail)
                handle.seek(end)
                yield from tail
            while self._follow and not self._closed.is_set():
                if handle is not None and os.fstat(handle.fileno()).st_size < handle.tell():
                    handle.seek(0)  # copied aside and truncated while running: read from its start
                    pending = b""
                data = handle.read(65536) if handle is not None else b""
                if data:
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", "replace")
                    continue
                try:  # rotated (a new file at the path), or created: read the new one from its start
                    current = self._path.stat().st_ino
                except FileNotFoundError:
                    current = None
                if current is not None and current != inode:
                    if handle is not None:
                        handle.close()
                    handle, inode, pending = self._path.open("rb"), current, b""
                    continue
                self._closed.wait(FOLLOW_POLL)
        finally:
            if handle is not None:
                handle.close()

    def close(self) -> None:
        self._closed.set()
