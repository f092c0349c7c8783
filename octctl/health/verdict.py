"""Pure: from one instance's probe results to its health, the way Docker's HEALTHCHECK judges.

``starting`` until the first success (failures inside ``start_period`` do not count, later ones
do), ``healthy`` from a success, ``unhealthy`` after ``retries`` consecutive counted failures.
Whoever drives it (:mod:`~octctl.health.monitor`) restarts an unhealthy instance and calls
:meth:`Verdict.restarted`, which starts the judgement over. Times come in as arguments (``now`` a
monotonic clock for the windows, ``wall`` Unix time for the report), so tests need no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from octctl.runtime.base import HealthcheckSpec, HealthState

#: What a report keeps of a probe's output (bytes of UTF-8): enough for an error line or the
#: start of a body, small enough to sit in every replica's state.
OUTPUT_LIMIT = 512


def bounded(output: str, limit: int = OUTPUT_LIMIT) -> str:
    """``output`` cut to ``limit`` bytes of UTF-8 without splitting a character."""
    raw = output.encode("utf-8", "replace")
    if len(raw) <= limit:
        return output
    return raw[:limit].decode("utf-8", "ignore")


@dataclass
class Verdict:
    """The health of one instance; mutate it only through its methods."""

    check: HealthcheckSpec
    #: Monotonic time the instance last (re)started: the start period counts from here.
    started: float
    changed_at: float
    state: HealthState = "starting"
    failures: int = 0
    output: str = ""

    def record(self, ok: bool, output: str, now: float, wall: float) -> bool:
        """Take one probe's result; True when the state changed.

        The output is kept from every failure and from the success that ended a failure or a
        start: a steady healthy instance keeps one output, so what the node reports (and the
        leader writes to Raft when it differs) does not change with every probe.
        """
        if ok:
            self.failures = 0
            if self.state == "healthy":
                return False
            self.output = bounded(output)
            return self._become("healthy", wall)
        self.output = bounded(output)
        if self.state == "starting" and now - self.started < self.check.start_period:
            return False
        self.failures += 1
        if self.failures >= self.check.retries and self.state != "unhealthy":
            return self._become("unhealthy", wall)
        return False

    def restarted(self, now: float, wall: float) -> bool:
        """The instance (re)starts now: failures are forgotten and the start period begins again.
        The last output stays, so the reason for a restart can still be read while it starts."""
        self.started = now
        self.failures = 0
        return self._become("starting", wall)

    def _become(self, state: HealthState, wall: float) -> bool:
        if state == self.state:
            return False
        self.state = state
        self.changed_at = wall
        return True
