"""The cluster's event and audit trail (``oct events``), kept in the replicated state.

Most events are not commands of their own: the state machine notes them as it applies the
commands that make them true (a deployment started, a node went down, an instance's container
restarted), comparing the state before and after, so they cost no extra Raft entry and cannot
disagree with the state. Two kinds are commands: ``leader_elected`` (the new leader's first
write) and ``audit`` (one per mutating API call: who, what, the result; never a secret value).
Deterministic like every command: times come inside the commands.

The trail is bounded (:data:`EVENTS_SIZE`); the oldest entries roll off. Each has a sequence
number, so ``oct events -f`` asks for what came after the last one it saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

__all__ = [
    "EVENTS_SIZE",
    "Event",
    "audit",
    "events_after",
    "instance_events",
    "leader_elected",
    "note",
]

#: Entries kept, oldest rolling off: a few days of a busy cluster's deploys and failures.
EVENTS_SIZE = 1000


class Event(TypedDict):
    seq: int
    at: float | None  # None: noted by a command written before commands carried their time
    kind: str  # e.g. deployment.started, node.down, instance.restarted, leader.elected, audit
    subject: str  # a deployment, node or instance id; for audit, who called
    message: str


def note(state: Any, kind: str, subject: str, message: str, at: float | None) -> None:
    events: list[Event] = state.setdefault("events", [])
    seq = events[-1]["seq"] + 1 if events else 1
    events.append({"seq": seq, "at": at, "kind": kind, "subject": subject, "message": message})
    if len(events) > EVENTS_SIZE:
        del events[: len(events) - EVENTS_SIZE]


def events_after(state: Any, after: int, limit: int) -> list[Event]:
    """The entries with a sequence number above ``after``, oldest first, at most ``limit``."""
    return [e for e in state.get("events") or [] if e["seq"] > after][:limit]


def leader_elected(state: Any, node: str, term: int, at: float) -> None:
    note(state, "leader.elected", node, f"{node} leads (term {term})", at)


def audit(state: Any, who: str, action: str, result: str, at: float) -> None:
    """One mutating API call: ``who`` (the API token, a node), ``action`` (method, route and
    names; no body), ``result`` (the status, and the id it made)."""
    note(state, "audit", who, f"{action}: {result}", at)


def _problem(seen: Mapping[str, Any]) -> str:
    said = seen.get("error") or seen.get("health_output") or ""
    return f": {str(said)[:200]}" if said else ""


def instance_events(
    state: Any, node: str, before: Mapping[str, Any], after: Mapping[str, Any], at: float | None
) -> None:
    """What changed in what one node runs, as events: started (it runs, and did not a moment
    ago), stopped, restarted, unhealthy, exited or failed."""
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name) or {}, after.get(name)
        subject = f"{name}@{node}"

        def say(kind: str, what: str) -> None:
            note(state, f"instance.{kind}", subject, f"{name} on {node} {what}", at)  # noqa: B023

        if new is None:
            say("stopped", "stopped")
            continue
        now = new.get("state")
        if now == "running" and (
            old.get("state") != "running" or old.get("spec_hash") != new.get("spec_hash")
        ):
            say("started", f"runs deployment {new.get('deployment') or '?'}")
        if old and new.get("restarts", 0) > old.get("restarts", 0):
            say("restarted", f"restarted ({new.get('restarts')} in all)")
        if new.get("health") == "unhealthy" and old.get("health") != "unhealthy":
            say("unhealthy", f"fails its health check{_problem(new)}")
        if now in ("failed", "exited") and old.get("state") != now:
            say(now, f"{now}{_problem(new)}")
