"""PySyncObj's sockets on the asyncio event loop: the loop watches them, no thread polls.

:class:`octctl.state.machine.RaftNode` hands PySyncObj a :class:`LoopTransport` whose sockets a
:class:`LoopPoller` registers with the loop; the loop then runs their handlers and a tick after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pysyncobj.poller import POLL_EVENT_TYPE, Poller
from pysyncobj.transport import TransportNotReadyError

from octctl.state.raft_guard import GuardedTransport

#: Seconds between heartbeats to an idle non-voter (a voter gets one every 0.1 s).
NON_VOTER_HEARTBEAT = 0.5
#: A voter sends a :data:`KEEPALIVE` to another voter it has sent nothing for this long; well
#: under PySyncObj's ``connectionTimeout`` (3.5 s without reading: the connection is dropped).
VOTER_KEEPALIVE = 1.0
#: A message PySyncObj's handler ignores (no branch matches its type), sent only to be read.
KEEPALIVE: dict[str, Any] = {"type": "keepalive"}

log = logging.getLogger(__name__)


class LoopPoller(Poller):
    """PySyncObj's socket watcher, backed by the asyncio loop's ``add_reader``/``add_writer``.

    PySyncObj calls ``poll()`` at the end of every tick to wait for its sockets; here the loop
    does the waiting, so ``poll`` returns at once and each ready socket's handler runs from the
    loop, followed by ``after`` (a tick, to act on what arrived).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, after: Callable[[], None]) -> None:
        self._loop = loop
        self._after = after
        self._watched: set[int] = set()

    def subscribe(self, descr: int, callback: Callable[[int, int], None], eventMask: int) -> None:
        self.unsubscribe(descr)
        self._watched.add(descr)
        if eventMask & (POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR):
            # A socket error or hang-up makes the socket readable; PySyncObj checks SO_ERROR then.
            self._loop.add_reader(descr, self._ready, descr, callback, POLL_EVENT_TYPE.READ)
        if eventMask & POLL_EVENT_TYPE.WRITE:
            self._loop.add_writer(descr, self._ready, descr, callback, POLL_EVENT_TYPE.WRITE)

    def unsubscribe(self, descr: int) -> None:
        if descr in self._watched:
            self._watched.discard(descr)
            self._loop.remove_reader(descr)
            self._loop.remove_writer(descr)

    def poll(self, timeout: float) -> None:
        """The loop waits for the sockets; PySyncObj's end-of-tick wait becomes a no-op."""

    def close(self) -> None:
        """Stop watching every socket (PySyncObj may leave some subscribed on destroy)."""
        for descr in list(self._watched):
            self.unsubscribe(descr)

    def _ready(self, descr: int, callback: Callable[[int, int], None], event: int) -> None:
        try:
            callback(descr, event)
        except Exception:  # as PySyncObj's tick thread did: log, keep serving
            log.exception("raft socket handler failed")
        self._after()


class LoopTransport(GuardedTransport):
    """Without a tick thread ``SyncObj`` retries binding in a busy loop until it succeeds; one try
    and a clear error is better than a node that spins a core on a taken port. Also remembers the
    newest commit index it told the followers, so a commit notice is sent only when none has.
    Guarded: frame caps and few unauthenticated connections on the Raft port (``raft_guard``).
    Its sockets are watched by a :class:`LoopPoller` (``pysyncobj_adapter.loop_transport``)."""

    commit_index_sent = 0
    #: Whether a peer votes (set by ``RaftNode``); heartbeats to the others are thinned.
    is_voter: Callable[[Any], bool] = staticmethod(lambda node: True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: node -> (when, commit index) of the last append sent to it
        self._last_to: dict[Any, tuple[float, int]] = {}
        #: node -> when anything was last sent to it
        self._sent_at: dict[Any, float] = {}
        super().__init__(*args, **kwargs)

    def tryGetReady(self) -> None:
        super().tryGetReady()
        if not self.ready:
            raise TransportNotReadyError

    def send(self, node: Any, message: Any) -> Any:
        if isinstance(message, dict) and message.get("type") == "append_entries":
            self.commit_index_sent = max(self.commit_index_sent, message["commit_index"])
            if self._idle_heartbeat_to_non_voter(node, message):
                return True  # (dropped, as a lost message would be: the next one carries the same)
        self._sent_at[node] = time.monotonic()
        return super().send(node, message)

    def on_tick(self) -> None:
        super().on_tick()
        self._keep_voter_links()

    def _keep_voter_links(self) -> None:
        """Send a :data:`KEEPALIVE` to each voter this node has sent nothing for
        :data:`VOTER_KEEPALIVE`.

        Followers of a healthy leader never talk to each other, and PySyncObj drops a connection
        it has read nothing from for ``connectionTimeout`` (3.5 s) when it next sends on it or
        reads from it: so when the leader stopped, the first vote request from one follower to
        the other was lost with the connection that carried it, and the election waited for the
        next timeout (bench/raft_failover.py --fault pause: p50 1.3 s, half the trials over 1 s).
        Each voter keeping its side fresh keeps both sides reading."""
        now = time.monotonic()
        for node in self.voting_peers():
            if now - self._sent_at.get(node, 0.0) >= VOTER_KEEPALIVE:
                self.send(node, KEEPALIVE)  # (not connected: False, and tried again next tick)

    def _idle_heartbeat_to_non_voter(self, node: Any, message: dict[str, Any]) -> bool:
        """An empty append that tells a non-voter nothing new, sent within
        :data:`NON_VOTER_HEARTBEAT` of the last one it got.

        A leader heartbeats every member every 0.1 s so that no voter starts an election. A
        non-voter never does, so it needs only to keep its connection (idle for 3.5 s: closed)
        and to learn of commits: 55 of a 60-node cluster's members cost the idle leader three
        quarters of its heartbeat traffic (bench/scale.py). Entries, snapshots and a new commit
        index always go at once.
        """
        # Only a plain empty append: an entry over 64 KB goes in chunks ("transmission", no
        # "entries"), a snapshot as "serialized", and every one of those must go.
        heartbeat = (
            message.get("entries") == [] and "transmission" not in message and "serialized" not in message
        )
        if self.is_voter(node) or not heartbeat:
            self._last_to[node] = (time.monotonic(), message["commit_index"])
            return False
        now = time.monotonic()
        sent_at, commit_index = self._last_to.get(node, (0.0, -1))
        if commit_index == message["commit_index"] and now - sent_at < NON_VOTER_HEARTBEAT:
            return True
        self._last_to[node] = (now, message["commit_index"])
        return False
