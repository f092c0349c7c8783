"""The one way tests wait for something: poll a check until it gives a truthy value, and on timeout
fail saying what was awaited and what the check last gave.

Every suite waits on real parts (a process binding its port, a replica applying an entry, a node
reporting a state), so a wait is a bounded poll; the deadline only bounds a hung test and a failure
must show the last thing seen, not just "timed out". The async form is for tests running on the
event loop that drives what they wait for (an in-process Raft replica, a DNS server): it must yield
between checks, never block.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: What a failure says it waited for: text, or a callable that builds it only on failure (say, logs).
Message = str | Callable[[], str]


class WaitTimeout(AssertionError):
    """The check never gave a truthy value in time."""


def wait_until(
    check: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.05,
    message: Message = "",
    ignore: tuple[type[BaseException], ...] = (),
    until: Callable[[T], object] = bool,
) -> T:
    """Call ``check`` every ``interval`` seconds until ``until`` of its value is truthy (by default
    the value itself), and return that value.

    ``until`` lets a check fetch something worth showing (a status, a log) and the condition look
    at it: a timeout then shows the last status, not ``False``. Exceptions of the ``ignore`` types
    count as "not yet" (a server not listening yet); the last one is shown if the wait times out.
    Raises :class:`WaitTimeout` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            value = check()
        except ignore as e:
            last = e
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(_failure(check, timeout, message, last))
        time.sleep(interval)


async def wait_until_async(
    check: Callable[[], T | Awaitable[T]],
    timeout: float = 15.0,
    interval: float = 0.05,
    message: Message = "",
    ignore: tuple[type[BaseException], ...] = (),
    until: Callable[[T], object] = bool,
) -> T:
    """:func:`wait_until` for a test on the event loop: sleeps with ``asyncio.sleep`` so what it
    waits for keeps running; ``check`` may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last: object
        try:
            got = check()
            value: T = await got if inspect.isawaitable(got) else got
        except ignore as e:
            last = e
        else:
            if until(value):
                return value
            last = value
        if loop.time() >= deadline:
            raise WaitTimeout(_failure(check, timeout, message, last))
        await asyncio.sleep(interval)


#: How much of the last value a failure shows (its end: a log's last lines matter most).
SHOWN = 4000


def _failure(check: object, timeout: float, message: Message, last: object) -> str:
    what = (message() if callable(message) else message) or repr(check)
    seen = repr(last)
    if len(seen) > SHOWN:
        seen = "..." + seen[-SHOWN:]
    return f"timed out after {timeout:g} s waiting for {what}; last seen: {seen}"
