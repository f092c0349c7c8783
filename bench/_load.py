"""A steady, paced HTTP load that records every request: when it started, how long it took,
whether it failed and why, and which version answered.

Why not wrk: an update benchmark needs to know *when* each request failed (to say where oct loses
one), which version answered it, and the same offered load on every side (wrk sends as fast as it
can, and a saturated 2-core machine would mostly measure whose control plane starves first). The
load runs in its own process (spawned: no share of the benchmark's GIL) and each request opens a
new connection (``Connection: close``), as busybox httpd answers anyway, so a refused or reset
connection is seen as such. Timestamps are ``time.monotonic()``, which is system-wide, so the
benchmark can compare them with its own.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any
from urllib.parse import urlsplit

from _common import BenchError, check_loopback

REQUEST_TIMEOUT = 5.0  # as wrk's --timeout in the other benchmarks
MAX_RESPONSE = 65536


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic() when the connection was opened
    ms: float
    target: int  # index into the load's URLs
    ok: bool
    answer: str  # the first word of the body (the version) when ok, else why it failed


async def one_request(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """One GET on a fresh connection; (ok, version or reason)."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while len(raw) < MAX_RESPONSE:  # Connection: close, so the answer ends at EOF
            more = await asyncio.wait_for(reader.read(MAX_RESPONSE), timeout)
            if not more:
                break
            raw += more
    except TimeoutError:
        return False, "timeout"
    except ConnectionRefusedError:
        return False, "refused"
    except ConnectionResetError:
        return False, "reset"
    except OSError as e:
        return False, type(e).__name__
    finally:
        if writer is not None:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head:
        return False, "empty answer"
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or not status[1].startswith(b"2"):
        return False, f"status {status[1].decode(errors='replace') if len(status) > 1 else '?'}"
    words = body.decode(errors="replace").split()
    return True, words[0] if words else "?"


async def worker(
    targets: list[tuple[str, int]], index: int, interval: float, stop: Event, out: list[Outcome]
) -> None:
    host, port = targets[index % len(targets)]
    next_at = time.monotonic() + interval * (index / max(1, len(targets)))  # spread the starts
    while not stop.is_set():
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.monotonic()
        ok, answer = await one_request(host, port, REQUEST_TIMEOUT)
        done = time.monotonic()
        out.append(Outcome(started, round((done - started) * 1000, 3), index % len(targets), ok, answer))
        next_at = max(next_at + interval, done)  # behind: go on at once, never burst to catch up


async def drive(targets: list[tuple[str, int]], rate: float, workers: int, stop: Event) -> list[Outcome]:
    out: list[Outcome] = []
    interval = workers / rate
    await asyncio.gather(*(worker(targets, i, interval, stop, out) for i in range(workers)))
    return out


def _child(targets: list[tuple[str, int]], rate: float, workers: int, stop: Event, pipe: Connection) -> None:
    pipe.send(asyncio.run(drive(targets, rate, workers, stop)))
    pipe.close()


class Load:
    """``with Load(urls, rate, workers) as load: ...``; ``load.outcomes`` once the block is left."""

    def __init__(self, urls: list[str], rate: float, workers: int) -> None:
        for url in urls:
            check_loopback(url)
        self.urls = urls
        self.targets = [(str(urlsplit(u).hostname), int(urlsplit(u).port or 80)) for u in urls]
        self.rate, self.workers = rate, workers
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._receive, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_child, args=(self.targets, rate, workers, self._stop, send), daemon=True
        )
        self.outcomes: list[Outcome] = []

    def __enter__(self) -> Load:
        self._process.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        try:
            if self._receive.poll(REQUEST_TIMEOUT + 30):
                self.outcomes = self._receive.recv()
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        if not self.outcomes:
            raise BenchError("the load generator returned no requests")


def window(outcomes: list[Outcome], start: float, end: float, urls: list[str]) -> dict[str, Any]:
    """Requests started in [start, end): how many, how many failed (and the first failures, with
    seconds after ``start``), and latency percentiles of those that were answered."""
    inside = sorted((o for o in outcomes if start <= o.started < end), key=lambda o: o.started)
    answered = sorted(o.ms for o in inside if o.ok)
    failed = [o for o in inside if not o.ok]

    def pct(p: float) -> float | None:
        if not answered:
            return None
        return round(answered[min(len(answered) - 1, int(p / 100 * len(answered)))], 2)

    reasons: dict[str, int] = {}
    for o in failed:
        reasons[o.answer] = reasons.get(o.answer, 0) + 1
    return {
        "seconds": round(end - start, 2),
        "requests": len(inside),
        "failed": len(failed),
        "failure_reasons": reasons,
        "first_failures": [
            {"at_s": round(o.started - start, 3), "url": urls[o.target], "why": o.answer} for o in failed[:10]
        ],
        "last_failure_at_s": round(max(o.started for o in failed) - start, 3) if failed else None,
        "p50_ms": round(statistics.median(answered), 2) if answered else None,
        "p99_ms": pct(99),
        "max_ms": round(answered[-1], 2) if answered else None,
    }


def versions_seen(outcomes: list[Outcome], start: float, end: float) -> dict[str, int]:
    seen: dict[str, int] = {}
    for o in outcomes:
        if o.ok and start <= o.started < end:
            seen[o.answer] = seen.get(o.answer, 0) + 1
    return seen
