"""What the DNS server did, counted: one record that the transports, the zone answers and the
forwarder all add to, so a test (or an operator in a debugger) reads one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stats:
    queries: int = 0  # parsed and answered or forwarded (not counting replays from the cache)
    cached: int = 0  # answered with the packed reply to an identical earlier query
    answered: int = 0
    nxdomain: int = 0
    forwarded: int = 0
    servfail: int = 0
    truncated: int = 0
    malformed: int = 0
    refused: int = 0  # outside names asked by a client not in forward_for
    overloaded: int = 0  # forwards and TCP connections turned away at their cap
