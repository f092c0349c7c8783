"""What /proc tells about a process: its memory, its CPU time, its name and arguments.

Read directly (no psutil) so the benchmarks measure the processes without a dependency of their
own, and a process that is gone reads as "nothing" instead of an error.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def proc_status_mb(pid: int, *keys: str) -> dict[str, float] | None:
    """Fields of /proc/<pid>/status given in kB (VmRSS, RssAnon, RssFile...) in MB; None if gone."""
    found: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in keys:
                found[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return found if len(found) == len(keys) else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (0 if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def pids_named(*names: str) -> list[int]:
    """pids whose executable name (comm) is one of ``names``, e.g. the Docker engine's daemons."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() in names:
                    found.append(int(proc.name))
    return found


def cmdline_arg_after(pid: int, flag: str) -> str | None:
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return None
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(flag) + 1]
    return None


def cpu_with_children(pid: int) -> float:
    """CPU seconds of the process plus its reaped children (dnsmasq forks one per TCP connection)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
