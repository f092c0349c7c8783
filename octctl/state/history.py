"""The last deployments, kept in the replicated state so ``oct history`` and ``oct rollback`` work
from any node, after a leader change and after a full-cluster restart.

Each entry keeps the desired project it deployed (what a rollback deploys again), what it did to
each service, and how it ended. Plain functions over plain lists, called by the state machine's
commands (``octctl/state/model.py``), so every replica keeps the same history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

__all__ = ["HISTORY_SIZE", "HistoryEntry", "remember", "rollback_target", "settle"]

#: Entries kept; the oldest rolls off (each holds a whole project, envs included).
HISTORY_SIZE = 20


class HistoryEntry(TypedDict):
    id: str
    generation: int
    started_at: float
    finished_at: float | None
    state: str  # as the deployment's: pending | in_progress | succeeded | failed
    changes: dict[str, str]  # service -> started | replaced | removed | unchanged
    error: str | None
    failed_service: str | None
    log_tail: list[str]
    project: dict[str, Any]
    source_dir: str | None
    public_zone: str | None
    #: The deployment this one rolled back to, when it was a rollback.
    rollback_of: str | None


def remember(history: list[HistoryEntry], entry: HistoryEntry) -> None:
    history.append(entry)
    del history[:-HISTORY_SIZE]


def settle(history: list[HistoryEntry], deployment: Mapping[str, Any]) -> None:
    """Copy how a deployment stands (state, end, error) into its entry."""
    for entry in reversed(history):
        if entry["id"] == deployment["id"]:
            entry["state"] = deployment["state"]
            entry["finished_at"] = deployment.get("finished_at")
            entry["error"] = deployment.get("error")
            entry["failed_service"] = deployment.get("failed_service")
            entry["log_tail"] = list(deployment.get("log_tail") or [])
            return


def rollback_target(
    history: list[HistoryEntry], current: str | None, wanted: str | None
) -> HistoryEntry | None:
    """The entry ``oct rollback`` deploys again: ``wanted`` when given (any recorded one), else the
    latest one before ``current`` that succeeded, as Kamal's and Nomad's rollbacks pick."""
    if wanted is not None:
        return next((e for e in history if e["id"] == wanted), None)
    before = [e for e in history if e["id"] != current]
    if current is not None and any(e["id"] == current for e in history):
        before = history[: next(i for i, e in enumerate(history) if e["id"] == current)]
    return next((e for e in reversed(before) if e["state"] == "succeeded"), None)
