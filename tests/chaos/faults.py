"""A seeded, randomized schedule of faults, and the loop that injects it into a running cluster.

The schedule is a pure function of the seed (kinds, start offsets, durations, which follower or node),
so a failing seed replays the same faults. Whom "the leader" names is decided when the fault fires,
by asking the nodes, because that depends on the run. Faults come one after another, each undone
before the next: the point is to stress elections, catch-up and recovery, not to starve the cluster
of a majority for the whole run (a majority-less cluster correctly commits nothing).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from enum import StrEnum

from tests.chaos.netns import Cluster


class FaultKind(StrEnum):
    KILL_LEADER = "kill-leader"
    KILL_FOLLOWER = "kill-follower"
    ISOLATE_LEADER = "isolate-leader"
    ISOLATE_FOLLOWER = "isolate-follower"
    PAUSE_NODE = "pause-node"
    RESTART_ALL = "restart-all"


#: how often each kind is drawn; a full restart is the rarest and the most disruptive
WEIGHTS = {
    FaultKind.KILL_LEADER: 3,
    FaultKind.KILL_FOLLOWER: 2,
    FaultKind.ISOLATE_LEADER: 3,
    FaultKind.ISOLATE_FOLLOWER: 2,
    FaultKind.PAUSE_NODE: 2,
    FaultKind.RESTART_ALL: 1,
}


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    at: float  # seconds after the workload starts
    duration: float  # how long the fault lasts before it is undone
    pick: int  # chooses among followers / nodes, deterministically given the same candidates

    def describe(self) -> str:
        return f"{self.at:5.1f}s +{self.duration:.1f}s {self.kind}"


def schedule(seed: int, duration: float, min_faults: int = 3, max_faults: int = 6) -> list[Fault]:
    """Faults spread over ``duration``: one per equal slot, starting somewhere in the slot's first
    half and over before the slot ends, so the cluster gets a moment to recover between them."""
    rng = random.Random(f"{seed}/faults")
    count = rng.randint(min_faults, max_faults)
    slot = duration / count
    kinds = list(WEIGHTS)
    faults = []
    for i in range(count):
        kind = rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        start = i * slot + rng.uniform(0.1, 0.4) * slot
        longest = max(0.5, (i + 1) * slot - start - 1.0)
        length = min(
            longest, rng.uniform(0.5, 2.0) if kind is FaultKind.RESTART_ALL else rng.uniform(1.5, 5.0)
        )
        faults.append(Fault(kind, round(start, 2), round(length, 2), rng.randrange(1000)))
    return faults


@dataclass
class Event:
    """What was actually done, for the report (offsets from the workload's start)."""

    at: float
    fault: Fault
    target: str
    healed_at: float | None = None

    def describe(self) -> str:
        healed = f"{self.healed_at:.1f}s" if self.healed_at is not None else "by the final heal"
        return f"{self.at:5.1f}s {self.fault.kind} {self.target} (undone {healed})"


def _targets(cluster: Cluster, fault: Fault) -> list[str]:
    names = [n.name for n in cluster.nodes]
    if fault.kind is FaultKind.RESTART_ALL:
        return names
    if fault.kind is FaultKind.PAUSE_NODE:
        return [names[fault.pick % len(names)]]
    leader = cluster.leader()
    if fault.kind in (FaultKind.KILL_LEADER, FaultKind.ISOLATE_LEADER):
        # No leader right now (an election is on): hit whichever node the seed picks.
        return [leader or names[fault.pick % len(names)]]
    followers = [n for n in names if n != leader]
    return [followers[fault.pick % len(followers)]]


def _apply(cluster: Cluster, fault: Fault, targets: list[str]) -> None:
    if fault.kind in (FaultKind.KILL_LEADER, FaultKind.KILL_FOLLOWER, FaultKind.RESTART_ALL):
        for name in targets:
            cluster.kill(name)
    elif fault.kind in (FaultKind.ISOLATE_LEADER, FaultKind.ISOLATE_FOLLOWER):
        for name in targets:
            cluster.isolate(name)
    else:
        for name in targets:
            cluster.pause(name)


def _undo(cluster: Cluster, fault: Fault, targets: list[str]) -> None:
    if fault.kind in (FaultKind.KILL_LEADER, FaultKind.KILL_FOLLOWER, FaultKind.RESTART_ALL):
        for name in targets:
            cluster.start(name)
    elif fault.kind in (FaultKind.ISOLATE_LEADER, FaultKind.ISOLATE_FOLLOWER):
        cluster.heal_network()
    else:
        for name in targets:
            cluster.resume(name)


async def inject(cluster: Cluster, faults: list[Fault], t0: float, events: list[Event]) -> None:
    """Fire each fault at its time and undo it after its duration. Harness calls (``ip``, HTTP)
    block, so they run in a thread and the clients keep going meanwhile."""
    for fault in faults:
        delay = t0 + fault.at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        targets = await asyncio.to_thread(_targets, cluster, fault)
        event = Event(round(time.monotonic() - t0, 2), fault, ",".join(targets))
        events.append(event)
        await asyncio.to_thread(_apply, cluster, fault, targets)
        await asyncio.sleep(fault.duration)
        await asyncio.to_thread(_undo, cluster, fault, targets)
        event.healed_at = round(time.monotonic() - t0, 2)
