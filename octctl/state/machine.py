"""PySyncObj glue: the replicated state machine and its bridge to the asyncio event loop.

PySyncObj runs its own tick thread; committed commands are applied there. The event loop never
blocks on Raft: a write is proposed with a callback, and the callback resolves an asyncio future
through ``call_soon_threadsafe``. Readers on the loop take :meth:`StateMachine.view`, a consistent
copy made under the apply lock and cached until the next command.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated

from octctl.state.model import ClusterState, apply_command, empty_state, snapshot

log = logging.getLogger(__name__)


class StateMachine(SyncObjConsumer):
    """The only writer of cluster state. Attributes set before ``super().__init__`` are local
    (not replicated, not snapshotted); ``state`` is what Raft persists and ships to new nodes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._view: tuple[int, ClusterState] | None = None
        self._listeners: list[Callable[[], None]] = []
        super().__init__()
        self.state: ClusterState = empty_state()

    @replicated
    def execute(self, cmd: dict[str, Any]) -> Any:
        with self._lock:
            result = apply_command(self.state, cmd)
            self._version += 1
        self._notify()
        return result

    def _deserialize(self, data: dict[str, Any]) -> None:
        with self._lock:
            super()._deserialize(data)
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
        """Call ``listener`` (on the Raft thread) after every change."""
        self._listeners.append(listener)

    def view(self) -> ClusterState:
        """A consistent copy of the state; treat it as read-only (it is shared until the next change)."""
        with self._lock:
            cached = self._view
            if cached is not None and cached[0] == self._version:
                return cached[1]
            copy = snapshot(self.state)
            self._view = (self._version, copy)
            return copy


class NotLeader(Exception):
    """The write reached a node that is not (or no longer) the leader."""


class RaftUnavailable(Exception):
    """The write could not be committed (no quorum, timeout, queue full)."""


class RaftNode:
    """One node's Raft replica, driven from asyncio."""

    def __init__(
        self,
        self_address: str,
        partners: list[str],
        data_dir: Path,
        password: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.machine = StateMachine()
        self.loop = loop
        self.self_address = self_address
        conf = SyncObjConf(
            appendEntriesUseBatch=False,  # commit per write: ~0.3 ms instead of ~100 ms (pysyncobj-notes)
            dynamicMembershipChange=True,
            journalFile=str(data_dir / "raft.journal"),
            fullDumpFile=str(data_dir / "raft.dump"),
            password=password,
            bindAddress=self_address,  # never 0.0.0.0: the Raft port is for cluster members only
            useFork=False,
            leaderFallbackTimeout=3.0,
            connectionRetryTime=1.0,
            commandsWaitLeader=False,
        )
        self.sync = SyncObj(
            self_address, [p for p in partners if p != self_address], conf, consumers=[self.machine]
        )

    # -- reads ---------------------------------------------------------------------------------
    def view(self) -> ClusterState:
        return self.machine.view()

    def is_leader(self) -> bool:
        return bool(self.sync._isLeader()) and self.sync.isReady()

    def leader_address(self) -> str | None:
        leader = self.sync._getLeader()
        if leader is None:
            return None
        return str(leader.address if hasattr(leader, "address") else leader)

    def term(self) -> int:
        return int(self.sync._getTerm())

    def members(self) -> list[str]:
        others = [str(n.address if hasattr(n, "address") else n) for n in self.sync.otherNodes]
        return sorted([self.self_address, *others])

    # -- writes --------------------------------------------------------------------------------
    def _bridge(self) -> tuple[asyncio.Future[Any], Callable[[Any, int], None]]:
        future: asyncio.Future[Any] = self.loop.create_future()

        def done(result: Any, error: int) -> None:
            def resolve() -> None:
                if future.done():
                    return
                if error == FAIL_REASON.SUCCESS:
                    future.set_result(result)
                elif error == FAIL_REASON.NOT_LEADER:
                    future.set_exception(NotLeader("this node is not the leader"))
                else:
                    future.set_exception(RaftUnavailable(f"raft could not commit the write (reason {error})"))

            self.loop.call_soon_threadsafe(resolve)

        return future, done

    async def execute(self, cmd: dict[str, Any], timeout: float = 5.0) -> Any:
        future, done = self._bridge()
        self.machine.execute(cmd, callback=done)
        try:
            result = await asyncio.wait_for(future, timeout)
        except TimeoutError as e:
            raise RaftUnavailable(f"raft did not commit within {timeout:.0f}s (no quorum?)") from e
        if isinstance(result, dict) and set(result) == {"error"}:
            raise ValueError(result["error"])
        return result

    async def add_member(self, address: str, timeout: float = 15.0) -> None:
        await self._change_membership(self.sync.addNodeToCluster, address, "adding", timeout)

    async def remove_member(self, address: str, timeout: float = 15.0) -> None:
        await self._change_membership(self.sync.removeNodeFromCluster, address, "removing", timeout)

    async def _change_membership(
        self, change: Callable[..., None], address: str, doing: str, timeout: float
    ) -> None:
        """One membership change at a time (PySyncObj refuses overlapping ones); waits for its commit."""
        future, done = self._bridge()
        change(address, callback=done)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError as e:
            raise RaftUnavailable(f"{doing} {address} timed out (no quorum?)") from e

    def close(self) -> None:
        self.sync.destroy()
