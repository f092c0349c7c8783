"""A blocking log stream read into asyncio: its own thread, a short queue, and nothing left behind.

A followed log blocks for as long as it is followed (a container's log connection, a file polled
for growth, ``journalctl -f``), so it cannot run in the event loop nor hold a worker of the shared
pool. Each gets a thread; the lines cross to the loop through a queue of :data:`QUEUE` lines, so a
slow reader holds the thread back and never grows the node's memory. When the reader stops (the
client hung up), the stream is closed and the thread ends at its next line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

from octctl.runtime.base import LogStream

__all__ = ["QUEUE", "lines_of"]

log = logging.getLogger(__name__)

#: Lines waiting between a log's reader thread and the loop.
QUEUE = 256


async def lines_of(stream: LogStream, name: str) -> AsyncIterator[str]:
    """The stream's lines, as they come; ``name`` names the thread (and the log line if it breaks)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=QUEUE)
    done = threading.Event()

    def hand_over(line: str | None) -> None:
        """Wait for room in the queue, but not past the reader's going away."""
        handed = asyncio.run_coroutine_threadsafe(lines.put(line), loop)
        while not done.is_set():
            with contextlib.suppress(concurrent.futures.TimeoutError):
                handed.result(timeout=0.5)
                return
        handed.cancel()

    def pump() -> None:
        try:
            for line in stream:
                if done.is_set():
                    return
                hand_over(line)
        except Exception as exc:  # (the stream broke: its end, for the reader)
            log.debug("log stream %s ended: %s", name, exc)
        finally:
            with contextlib.suppress(RuntimeError):  # (the loop is closing)
                hand_over(None)

    threading.Thread(target=pump, name=f"logs-{name}", daemon=True).start()
    try:
        while (line := await lines.get()) is not None:
            yield line
    finally:
        done.set()
        stream.close()
