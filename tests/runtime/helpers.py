"""Helpers shared by the runtime tests: free ports, bounded polling and plain HTTP over loopback."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel picks it, so parallel runs don't clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until ``probe`` returns something truthy; the deadline only bounds a hung test."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or probe!r}; last value: {last!r}")


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
