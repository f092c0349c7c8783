"""The replicated state machine: the only writer of cluster state and of the KV store.

Commands arrive committed, in log order, from PySyncObj (on the event loop, inside a Raft tick;
:mod:`octctl.state.machine` drives it). Readers take :meth:`StateMachine.view`, a consistent
copy made under the apply lock (kept: a snapshot may still be taken from a worker thread) and
cached until the next command.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from pysyncobj import replicated

from octctl.state.kv import KvEntry, KvState, apply_kv, empty_kv
from octctl.state.model import ClusterState, apply_command, empty_state, snapshot
from octctl.state.pysyncobj_adapter import Consumer

log = logging.getLogger(__name__)


class StateMachine(Consumer):
    """The only writer of cluster state. Attributes set before ``super().__init__`` are local
    (not replicated, not snapshotted); ``state`` and ``kv`` are what Raft persists and ships to new
    nodes."""

    def __init__(self, follows: StateMachine | None = None) -> None:
        """``follows``: the machine this one replaces (a reopened replica); its listeners carry over
        and the version goes on from its, so caches keyed on the version are rebuilt."""
        self._lock = threading.Lock()
        self._version = 0 if follows is None else follows.version + 1
        self._view: tuple[int, ClusterState] | None = None
        self._listeners: list[Callable[[], None]] = [] if follows is None else follows._listeners
        super().__init__()
        self.state: ClusterState = empty_state()
        self.kv: KvState = empty_kv()

    @replicated
    def execute(self, cmd: dict[str, Any]) -> Any:
        """One command per entry: how journals written before group commit replay."""
        return self.execute_batch([cmd])[0]

    @replicated
    def execute_batch(self, cmds: list[dict[str, Any]]) -> list[Any]:
        changed = False
        with self._lock:
            results = []
            for cmd in cmds:
                result, touched = self._apply(cmd)
                results.append(result)
                changed = changed or touched
            if changed:
                self._version += 1
        if changed:
            self._notify()
        return results

    def _apply(self, cmd: dict[str, Any]) -> tuple[Any, bool]:
        """Route one command; the flag says whether the cluster state (not the KV store) changed."""
        op = cmd.get("op") if isinstance(cmd, dict) else None
        if op == "noop":
            return None, False
        if isinstance(op, str) and op.startswith("kv_"):
            return apply_kv(self.kv, op, cmd.get("args") or {}), False
        return apply_command(self.state, cmd), True

    def restore(self, data: dict[str, Any]) -> None:
        with self._lock:
            super().restore(data)
            self._version += 1
        self._notify()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # a listener must never break the apply loop
                log.exception("state listener failed")

    @property
    def version(self) -> int:
        """Bumped by every applied command; cheap to compare, so caches of derived data key on it."""
        return self._version

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change (on the event loop, inside a Raft tick)."""
        self._listeners.append(listener)

    def kv_get(self, key: str) -> KvEntry | None:
        with self._lock:
            entry = self.kv["items"].get(key)
            return None if entry is None else {"value": entry["value"], "revision": entry["revision"]}

    def kv_revision(self) -> int:
        return self.kv["revision"]

    def state_hash(self) -> str:
        """Digest of everything replicated, so tests can check that replicas converged."""
        with self._lock:
            blob = json.dumps({"state": self.state, "kv": self.kv}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def view(self) -> ClusterState:
        """A consistent copy of the state; treat it as read-only (it is shared until the next change)."""
        with self._lock:
            cached = self._view
            if cached is not None and cached[0] == self._version:
                return cached[1]
            copy = snapshot(self.state)
            self._view = (self._version, copy)
            return copy
