"""Log lines that an attacker cannot multiply: at most a few per kind and minute, the rest counted.

A flood of malformed packets, refused connections or bad frames must cost the node a few log lines
a minute, not a disk; the lines over the limit are reported as one "suppressed N" line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LOG_BURST", "LOG_WINDOW", "LogLimiter"]

LOG_BURST = 10  # log lines per kind and window; the rest are counted in one "suppressed" line
LOG_WINDOW = 60.0


class LogLimiter:
    """At most ``burst`` lines per ``window`` seconds for each kind of message.

    The lines over the limit are counted and reported in one "suppressed" line when the kind's next
    window opens (or at :meth:`flush`), so a flood of bad packets costs a few lines a minute.
    """

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = LOG_BURST,
        window: float = LOG_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.window = window
        self.clock = clock
        self._kinds: dict[str, list[float]] = {}  # kind -> [window start, lines, suppressed, level]

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = self.clock()
        state = self._kinds.get(kind)
        if state is None or now - state[0] >= self.window:
            if state is not None:
                self._report(kind, state)
            state = self._kinds[kind] = [now, 0, 0, level]
        if state[1] < self.burst:
            state[1] += 1
            self.logger.log(level, msg, *args)
        else:
            state[2] += 1
            state[3] = max(state[3], level)

    def flush(self) -> None:
        for kind, state in self._kinds.items():
            self._report(kind, state)

    def _report(self, kind: str, state: list[float]) -> None:
        if state[2]:
            self.logger.log(
                int(state[3]), "suppressed %d similar messages (%s) in %.0f s", state[2], kind, self.window
            )
            state[2] = 0
