"""What every benchmark script does (not a benchmark itself: it prints nothing when run).

The scripts are run as ``.venv/bin/python bench/<name>.py``, so Python puts ``bench/`` on
``sys.path`` and they import this module as ``_common`` (and its neighbours, each named after what
it holds, likewise; ``make bench`` runs only the files not starting with ``_``). Here: the error
that marks a broken measurement, progress on stderr and the figures as one JSON line on stdout,
cleaning up on SIGTERM, HTTP to loopback only, and a temporary project folder.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import ssl
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: No proxy, ever: a proxy from the environment would carry benchmark traffic off this machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_T0 = time.monotonic()


class BenchError(RuntimeError):
    """The thing being measured broke (deploy failed, a service never answered): exit non-zero."""


def log(message: str) -> None:
    """Progress for humans goes to stderr, so stdout's last line stays the JSON result."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """The figures, as exactly one JSON object on the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=False), flush=True)


def median(samples: Iterable[float]) -> float:
    return round(statistics.median(list(samples)), 3)


def exit_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks still clean up what we started."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


# -- HTTP ------------------------------------------------------------------------------------------


def check_loopback(url: str) -> None:
    """Benchmarks may only talk to 127.0.0.0/8; refuse anything else rather than send it."""
    if not re.match(r"^https?://127\.\d{1,3}\.\d{1,3}\.\d{1,3}(:\d+)?(/|$)", url):
        raise BenchError(f"refusing to send traffic to {url!r}: only 127.0.0.0/8 is allowed")


def check_loopback_host(host: str) -> None:
    if not re.match(r"^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$", host):
        raise BenchError(f"refusing to send DNS traffic to {host!r}: only 127.0.0.0/8 is allowed")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """One small GET; True only for a 200 answer."""
    check_loopback(url)
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            resp.read(4096)
            return bool(resp.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def wait_all_http(urls: list[str], timeout: float, interval: float = 0.05) -> float:
    """Poll until every URL answers 200 (each once is enough); returns monotonic time when done.

    Bounded twice: by ``timeout`` seconds and by a round count, so a hang never loops forever.
    """
    for url in urls:
        check_loopback(url)
    pending = list(urls)
    deadline = time.monotonic() + timeout
    max_rounds = int(timeout / interval) + 10
    for _ in range(max_rounds):
        pending = [url for url in pending if not http_ok(url)]
        if not pending:
            return time.monotonic()
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise BenchError(
        f"{len(pending)}/{len(urls)} endpoints never answered 200 within {timeout:.0f} s: {pending[:5]}"
    )


def http_json(
    url: str, timeout: float = 1.0, token: str | None = None, tls: ssl.SSLContext | None = None
) -> Any:
    """GET ``url`` and decode its JSON body; None on any failure (a node may be down on purpose)."""
    check_loopback(url)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        opener = (
            _OPENER
            if tls is None
            else urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls)
            )
        )
        with opener.open(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def temp_project_dir(prefix: str) -> Iterator[Path]:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    # mkdtemp makes it 0700; a root oct-ctl runs process services as an unprivileged user, which
    # must be able to enter the project folder (their working directory) and read what it holds.
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def find_tool(name: str, package: str) -> str:
    """The tool's path (dnsmasq lives in /usr/sbin, often not on a developer's PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise BenchError(f"{name} is not installed (apt-get install {package})")
    return found
