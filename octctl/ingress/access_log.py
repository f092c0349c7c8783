"""The ingress's access log: one line per request (HTTP) or connection (TCP), kept on the node.

HAProxy has no log file of its own; it sends each line as a datagram to a Unix socket that this
node's ``oct-ctl`` listens on (beside the master's control socket, in the same private folder),
and :class:`AccessLog` appends it to ``ingress/access.log``, rotated at :data:`MAX_BYTES` into
``access.log.1``: two files at most, whatever the traffic. No syslog daemon is needed.

What a line holds is chosen in the proxy's configuration (``haproxy.cfg.j2``): the backend, a
timestamp, the client, the method and the path *without its query string* (queries carry tokens),
the status, bytes, total time and the instance that answered. No header, no body.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket as sockets
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_BYTES", "AccessLine", "AccessLog", "read_access"]

#: One file's size before it is rotated (the node keeps this file and the one before).
MAX_BYTES = 4 * 1024 * 1024
#: A datagram longer than this is cut (HAProxy's default line length is 1024).
MAX_LINE = 2048


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
    """Receives HAProxy's log datagrams on ``socket`` and keeps them in ``path`` (rotated)."""

    def __init__(self, path: Path, socket: Path) -> None:
        self.path = path
        self.socket = socket
        self._receiver: sockets.socket | None = None

    async def start(self) -> None:
        """Listen on the socket, from the event loop's reader (uvloop binds no Unix datagram
        endpoint by path, so the socket is made here)."""
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        receiver = sockets.socket(sockets.AF_UNIX, sockets.SOCK_DGRAM)
        receiver.bind(str(self.socket))
        os.chmod(self.socket, 0o600)
        receiver.setblocking(False)
        asyncio.get_running_loop().add_reader(receiver.fileno(), self._receive)
        self._receiver = receiver

    def _receive(self) -> None:
        assert self._receiver is not None
        while True:
            try:
                data = self._receiver.recv(MAX_LINE)
            except (BlockingIOError, InterruptedError):
                return
            self.write(data.decode(errors="replace").rstrip("\n"))

    def write(self, line: str) -> None:
        if not line:
            return
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_size >= MAX_BYTES:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)

    def stop(self) -> None:
        if self._receiver is not None:
            with contextlib.suppress(RuntimeError):  # (the loop may be closing already)
                asyncio.get_running_loop().remove_reader(self._receiver.fileno())
            self._receiver.close()
            self._receiver = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()


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
