"""Rotating a log file that another process appends to: copy it aside, then truncate it.

HAProxy (the access log) and a process service (its output) write through a descriptor they
opened, or were handed, with ``O_APPEND``: renaming the file would leave them writing into the
renamed one forever. Copying the content to ``<name>.1`` and truncating the file in place keeps
their descriptor valid, and their next write lands at the new end, the file's start. A line
written between the copy and the truncation is lost: the price of not signalling the writer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["copy_truncate"]


def copy_truncate(path: Path, max_bytes: int) -> bool:
    """Move the content of ``path`` to ``<path>.1`` (replacing it) once it holds ``max_bytes``;
    True if it did. A missing file is not full."""
    try:
        if path.stat().st_size < max_bytes:
            return False
        older = path.with_name(path.name + ".1")
        older.unlink(missing_ok=True)
        fd = os.open(older, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as copy, open(path, "rb") as current:
            shutil.copyfileobj(current, copy)
        os.truncate(path, 0)
    except FileNotFoundError:
        return False
    return True
