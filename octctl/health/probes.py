"""One probe of an instance, from its node: an HTTP GET or a TCP connect to where it listens.

A probe never raises: whatever goes wrong (refused, reset, timed out, a 500) is a failed
:class:`Probe` whose output says so in words, because that output is what ``oct status`` and a
failed deployment show the user. Command probes run inside the instance, so they go through the
runtime (:mod:`~octctl.health.monitor` asks the agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

import aiohttp

from octctl.runtime.base import HealthcheckSpec

from .verdict import OUTPUT_LIMIT, bounded


@dataclass(frozen=True)
class Probe:
    ok: bool
    output: str


def _where(check: HealthcheckSpec) -> str:
    host = f"[{check.host}]" if ":" in check.host else check.host
    return f"{host}:{check.port}"


async def http_probe(session: aiohttp.ClientSession, check: HealthcheckSpec) -> Probe:
    """GET ``check.path``; 2xx and 3xx are healthy (redirects are not followed: answering is enough)."""
    url = f"http://{_where(check)}{check.path}"
    try:
        async with session.get(
            url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=check.timeout)
        ) as response:
            body = await response.content.read(OUTPUT_LIMIT)
            text = body.decode("utf-8", "replace").strip()
            ok = 200 <= response.status < 400
            said = f"HTTP {response.status} from GET {check.path}" + (f": {text}" if text else "")
            return Probe(ok, bounded(said))
    except TimeoutError:
        return Probe(False, f"GET {url}: no answer within {check.timeout:g} s")
    except aiohttp.ClientError as exc:
        return Probe(False, bounded(f"GET {url}: {_reason(exc)}"))


async def tcp_probe(check: HealthcheckSpec) -> Probe:
    """A connection accepted within the timeout is healthy; nothing is sent."""
    where = _where(check)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(check.host, check.port), check.timeout)
    except TimeoutError:
        return Probe(False, f"connect to {where}: no answer within {check.timeout:g} s")
    except OSError as exc:
        return Probe(False, f"connect to {where}: {_os_reason(exc)}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Probe(True, f"connected to {where}")


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_reason(exc.os_error)
    return str(exc) or type(exc).__name__


def _os_reason(exc: OSError) -> str:
    """asyncio says "Connect call failed ('127.0.0.1', 8080)"; the errno says why ("Connection refused")."""
    return os.strerror(exc.errno) if exc.errno else str(exc)
