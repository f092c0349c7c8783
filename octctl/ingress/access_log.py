"""The ingress's access log: one line per request (HTTP) or connection (TCP), kept on the node.

HAProxy writes each line to its standard output (``log stdout``), which oct-ctl opens for it on
``ingress/access.log`` (0600, append mode), so no line passes through Python and no syslog daemon
is needed: at tens of thousands of requests a second, receiving them in oct-ctl cost the ingress
a sixth of its throughput on two cores. oct-ctl checks the file's size every second and, past
:data:`MAX_BYTES`, copies it to ``access.log.1`` and truncates it (HAProxy appends, so it goes on
at the start): two files at most, each at most one second of traffic over the bound, and a line
written between the copy and the truncation is lost.

What a line holds is chosen in the proxy's configuration (``haproxy.cfg.j2``): the backend, a
timestamp, the client, the method and the path *without its query string* (queries carry tokens),
the status, bytes, total time and the instance that answered. No header, no body.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from octctl.log_files import copy_truncate

__all__ = ["MAX_BYTES", "AccessLine", "AccessLog", "read_access"]

#: One file's size before it is rotated (the node keeps this file and the one before).
MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class AccessLine:
    """One request or connection as HAProxy logged it: ``when`` (Unix time) and the line."""

    service: str
    when: float
    text: str


def service_of(backend: str) -> str:
    """The service a backend serves: ``site_<service>`` (HTTPS) or ``<service>_<port>``."""
    if backend.startswith("site_"):
        return backend[len("site_") :]
    name, _, port = backend.rpartition("_")
    return name if port.isdigit() and name else backend


def parse(line: str) -> AccessLine | None:
    """``<backend> <unix time> <rest>``, as the configuration's log-format writes it."""
    backend, _, rest = line.strip().partition(" ")
    stamp, _, text = rest.partition(" ")
    try:
        return AccessLine(service_of(backend), float(stamp), text)
    except ValueError:
        return None


class AccessLog:
    """The file HAProxy's standard output goes to, and its rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> int:
        """A descriptor to hand HAProxy as its standard output (the caller closes its copy)."""
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def rotate_if_full(self) -> bool:
        """Copy-and-truncate the file once it holds :data:`MAX_BYTES`; True if it did (a file
        gone with its node's folder, at destroy, is not full)."""
        return copy_truncate(self.path, MAX_BYTES)


def read_access(path: Path, service: str, tail: int) -> list[AccessLine]:
    """The last ``tail`` lines of ``service`` in the node's access log (this file and the one
    before it: at most ``2 * MAX_BYTES`` read, whatever was logged)."""
    found: deque[AccessLine] = deque(maxlen=tail)
    for file in (path.with_name(path.name + ".1"), path):
        with contextlib.suppress(FileNotFoundError), open(file, errors="replace") as lines:
            for raw in lines:
                line = parse(raw)
                if line is not None and line.service == service:
                    found.append(line)
    return list(found)
