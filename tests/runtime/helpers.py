"""Helpers shared by the runtime tests: free ports and plain HTTP over loopback (polling is
:func:`tests.wait.wait_until`)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel picks it, so parallel runs don't clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> str | None:
    """Body of a GET, or None while the server is not answering yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (PID 1 here may never reap orphans, so a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return False
    return raw[raw.rfind(")") + 2 :].split()[0] not in ("Z", "X")
