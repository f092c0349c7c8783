"""What Linux's ``/proc`` says about a pid: its state, process group, start time and argv.

A pid alone does not name a process: after a reboot, or once ours exited, the number may belong to
an unrelated program, and signalling that would hit someone else. The start time (clock ticks
since boot, field 22 of ``/proc/<pid>/stat``) and the argv are what tell our oct-ctl or service
apart from such a stranger. Every reader returns None where ``/proc`` cannot tell (no such
process, or a system without ``/proc`` such as macOS), and callers decide what to trust then.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


#: Clock ticks per second (``/proc``'s unit of CPU time) and bytes per page (of its memory sizes).
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcStat:
    state: str  # one letter: R running, S sleeping, Z zombie, X dead, ...
    pgrp: int
    start_time: int
    cpu_ticks: int = 0  # user + system time so far

    @property
    def dead(self) -> bool:
        """A zombie (exited, not yet reaped) or dead process: it no longer runs anything."""
        return self.state in ("Z", "X")


def available() -> bool:
    """Whether this system has a ``/proc`` to ask (Linux)."""
    return (PROC / "self" / "stat").exists()


def stat(pid: int) -> ProcStat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is parenthesised and may contain spaces: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return ProcStat(
            state=fields[0],
            pgrp=int(fields[2]),
            start_time=int(fields[19]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
        )
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    found = stat(pid)
    return found.start_time if found else None


def cmdline(pid: int) -> list[str] | None:
    """The process's argv; ``[]`` when there is no such process, None where /proc cannot tell.

    Decoded like file names (``os.fsdecode``), so a path in it compares equal to ``str(Path)``.
    """
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return [] if (PROC / "self").exists() else None
    except OSError:
        return None
    return [os.fsdecode(part) for part in raw.split(b"\0") if part]


def pids() -> Iterator[int]:
    """Every pid /proc lists now (none without /proc)."""
    if not PROC.exists():
        return
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def group_has_members(pgid: int) -> bool:
    """True if any live (non-zombie) process belongs to the group; its leader may already be gone."""
    for pid in pids():
        found = stat(pid)
        if found is not None and found.pgrp == pgid and found.state != "Z":
            return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (by signal 0, so it works without ``/proc`` too). A zombie counts as
    gone: ours is reaped here, and another's (a node's oct-ctl, reparented to pid 1) waits for an
    init that may be slow to reap it, or never does (a container without one), while a stop
    waiting on it would wait out its timeout."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    found = stat(pid)  # (None without /proc: then signal 0 had the last word)
    return found is None or not found.dead


def group_usage(pgid: int) -> tuple[float, int] | None:
    """CPU seconds used so far and resident bytes now of every live process in the group (a
    process service and its children); None when the group has none."""
    ticks, pages, found = 0, 0, False
    for pid in pids():
        member = stat(pid)
        if member is None or member.pgrp != pgid or member.dead:
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            pages += int((PROC / str(pid) / "statm").read_text().split()[1])
        ticks += member.cpu_ticks
        found = True
    return (ticks / TICKS, pages * PAGE) if found else None
