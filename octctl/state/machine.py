"""PySyncObj glue: the replicated state machine and its bridge to the asyncio event loop.

PySyncObj is driven by the event loop itself, not by its own tick thread: its sockets are watched
by the loop (:class:`LoopPoller`), and a tick runs when a write is proposed (at once, so the entry
goes out before the handler yields), after socket events (one tick per loop pass), and every
``TICK_PERIOD`` (timers: heartbeats, elections). A commit callback runs inside a tick and resolves
its callers' futures directly. With the tick thread every write crossed threads twice (a pipe
wake-up to propose, ``call_soon_threadsafe`` to answer), each time a GIL hand-off and an extra
loop pass. Measured with ``bench/raft_write.py`` on the 2-core machine, together with the
batching and GC settings: 1-client p50 0.95 -> 0.70 ms, 64 clients 8.8K -> 13-15K writes/s.
Readers on the loop take :meth:`StateMachine.view`, a consistent copy made under the apply lock
(kept: a snapshot may still be taken from a worker thread) and cached until the next command.

Each write also costs few and cheap messages: they are sealed with AES-GCM and small ones are
not deflated (:mod:`octctl.state.raft_wire`), and the leader defers commit notices
(``NOTICE_DELAY``). Measured with ``bench/raft_write.py`` (3 rounds): 1-client p50 0.65 -> 0.36 ms
and CPU per write, all three nodes together, 1.10 -> 0.52 ms (the wire alone: 0.47 ms p50, the
deferred notices alone: 0.53 ms).

Writes are group-committed: while one Raft entry is in flight, the writes that arrive meanwhile
queue up and go out together as the next entry. One client still pays one commit; many concurrent
clients share commits, which is what lifts throughput from ~3K to tens of thousands of writes/s
(``pysyncobj-notes.md``) without giving up per-write acknowledgement.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, SyncObjException, replicated
from pysyncobj.poller import POLL_EVENT_TYPE, Poller
from pysyncobj.transport import TCPTransport, TransportNotReadyError

from octctl.state import raft_guard, raft_wire
from octctl.state.kv import KvEntry, KvState, apply_kv, empty_kv
from octctl.state.model import ClusterState, apply_command, empty_state, snapshot
from octctl.state.raft_files import DUMP, JOURNAL, check_raft_files
from octctl.state.raft_wire import RaftCipher

log = logging.getLogger(__name__)

#: Most commands one Raft entry carries; bounds the entry's size and the apply lock's hold time.
MAX_BATCH = 256
#: A batch whose callback has not come by then no longer blocks the next one (its own callers
#: still wait for their own outcome or timeout): a lost callback must never stall every writer.
INFLIGHT_GRACE = 2.0
#: Batches in flight at once. Measured side by side (bench/raft_write.py load, 4 paired rounds, 64
#: clients): 1 -> 15.8K writes/s at 0.083 ms server CPU/write, 2 -> 13.3K at 0.105, 3 -> 12.4K at
#: 0.116; 1-client latency was the same. The leader is CPU-bound, so fewer, larger entries win.
MAX_INFLIGHT = 1
#: PySyncObj's internal leader state (``_RAFT_STATE.LEADER``), for its ``onStateChanged`` hook.
_LEADER_STATE = 2
#: Longest gap between ticks when no socket is ready: PySyncObj's own ``autoTickPeriod``. Timers
#: (heartbeats every ``appendEntriesPeriod`` 0.1 s, election timeouts from 0.4 s) are checked on
#: ticks, so this bounds how late they fire; messages and writes tick at once.
TICK_PERIOD = 0.05
#: How long the news of a commit waits for a write to carry it to the followers. PySyncObj sends
#: it at once, in the tick that commits, before the writer can be answered: two messages out and
#: two acknowledgements back, on the critical path of every write. An append carries the commit
#: index anyway, so under load the notice rides on the next write; an isolated write's followers
#: learn of its commit this much later (their reads and DNS answers are local and may lag anyway).
NOTICE_DELAY = 0.002


class StateMachine(SyncObjConsumer):
    """The only writer of cluster state. Attributes set before ``super().__init__`` are local
    (not replicated, not snapshotted); ``state`` and ``kv`` are what Raft persists and ships to new
    nodes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._view: tuple[int, ClusterState] | None = None
        self._listeners: list[Callable[[], None]] = []
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


def _loop_transport(poller: LoopPoller) -> Callable[..., TCPTransport]:
    """PySyncObj's TCP transport, with its sockets watched by ``poller``.

    ``SyncObj`` takes a transport factory; the factory runs after ``SyncObj`` made its own poller
    and before any socket is subscribed to it, so swapping ``_poller`` there moves every socket
    (server, peers) onto the loop. (PySyncObj's wake-up pipe exists only without
    ``appendEntriesUseBatch``; whoever proposes here ticks at once instead.)
    """

    def make(sync_obj: SyncObj, self_node: Any, other_nodes: Any) -> TCPTransport:
        sync_obj._poller = poller
        return _BindOnceTransport(sync_obj, self_node, other_nodes)

    return make


class _BindOnceTransport(raft_guard.GuardedTransport):
    """Without a tick thread ``SyncObj`` retries binding in a busy loop until it succeeds; one try
    and a clear error is better than a node that spins a core on a taken port. Also remembers the
    newest commit index it told the followers, so a commit notice is sent only when none has.
    Guarded: frame caps and few unauthenticated connections on the Raft port (``raft_guard``)."""

    commit_index_sent = 0

    def tryGetReady(self) -> None:
        super().tryGetReady()
        if not self.ready:
            raise TransportNotReadyError

    def send(self, node: Any, message: Any) -> Any:
        if isinstance(message, dict) and message.get("type") == "append_entries":
            self.commit_index_sent = max(self.commit_index_sent, message["commit_index"])
        return super().send(node, message)


class _OctSyncObj(SyncObj):
    """PySyncObj with oct's wire cipher, and the few internals the event-loop driver needs.

    Every use of PySyncObj's private names is here and in :mod:`octctl.state.raft_guard` (pyproject
    pins the version they were read from, and ``tests/unit/test_raft_wire.py`` fails loudly if an
    upgrade moves them).
    """

    def __init__(self, *args: Any, cipher: RaftCipher, **kwargs: Any) -> None:
        self._cipher = cipher
        super().__init__(*args, **kwargs)

    @property
    def encryptor(self) -> RaftCipher:
        """What PySyncObj's connections seal and open frames with (its own would be Fernet)."""
        return self._cipher

    def _applyCommand(self, command: bytes, callback: Any, commandType: Any = None) -> None:
        """Refuse an entry over ``raft_guard.MAX_ENTRY`` when it is proposed: the followers' frame
        cap (``raft_guard.MAX_FRAME``) would refuse every message carrying it, forever."""
        if len(command) > raft_guard.MAX_ENTRY:
            log.warning("raft: refused a %d-byte entry (at most %d)", len(command), raft_guard.MAX_ENTRY)
            self._SyncObj__callErrCallback(FAIL_REASON.REQUEST_DENIED, callback)
            return
        super()._applyCommand(command, callback, commandType)

    def last_log_index(self) -> int:
        return int(self._SyncObj__raftLog[-1][1])

    def send_append_entries(self) -> None:
        """Send every follower what it lacks, with the current commit index (a heartbeat if none)."""
        self._SyncObj__sendAppendEntries()

    def commit_index_sent(self) -> int:
        return int(self._SyncObj__transport.commit_index_sent)


class NotLeader(Exception):
    """The write reached a node that is not (or no longer) the leader."""


class RaftUnavailable(Exception):
    """The write could not be committed (no quorum, timeout, queue full)."""


def _settle(future: asyncio.Future[Any], result: Any, error: int) -> None:
    """Hand PySyncObj's outcome of one proposal to its waiting caller (on the event loop)."""
    if future.done():  # the caller timed out already
        return
    if error == FAIL_REASON.SUCCESS:
        future.set_result(result)
    elif error == FAIL_REASON.NOT_LEADER:
        future.set_exception(NotLeader("this node is not the leader"))
    else:
        future.set_exception(RaftUnavailable(f"raft could not commit the write (reason {error})"))


def _expire(future: asyncio.Future[Any], timeout: float) -> None:
    """The caller stops waiting; a commit that comes later is still applied, just not reported."""
    if not future.done():
        future.set_exception(RaftUnavailable(f"raft did not commit within {timeout:.0f}s (no quorum?)"))


class RaftNode:
    """One node's Raft replica, driven from asyncio.

    A *voter* takes part in elections and commits. A non-voter (PySyncObj's read-only node: it
    binds no port and connects out to the voters) receives every entry from the leader, so its
    replica, DNS answers and API reads stay current, but it is not counted for the majority: large
    clusters keep a small voter set, whose commits stay fast, while every node still has the state.
    """

    def __init__(
        self,
        self_address: str,
        partners: list[str],
        data_dir: Path,
        password: str,
        loop: asyncio.AbstractEventLoop,
        voter: bool = True,
    ) -> None:
        check_raft_files(data_dir)  # refuse damaged files loudly instead of hanging on them
        self.machine = StateMachine()
        self.loop = loop
        self.self_address = self_address
        self.voter = voter
        self._data_dir = data_dir
        self._password = password
        self._queue: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        self._inflight: set[int] = set()  # ids of the batches in flight
        self._batches = 0
        self._tick_pending = False
        self._ticking = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._notice: asyncio.TimerHandle | None = None
        self._poller: LoopPoller
        self.sync = self._open(partners)

    def _open(self, partners: list[str]) -> SyncObj:
        data_dir = self._data_dir
        self._poller = LoopPoller(self.loop, self._tick_soon)
        raft_wire.install()
        conf = SyncObjConf(
            autoTick=False,  # ticked from the event loop: see the module docstring
            # PySyncObj would otherwise hold new entries for the next heartbeat (~100 ms per
            # commit, pysyncobj-notes); _tick sends them at once and defers commit notices.
            appendEntriesUseBatch=True,
            dynamicMembershipChange=True,
            journalFile=str(data_dir / JOURNAL),
            fullDumpFile=str(data_dir / DUMP),
            password=None,  # encrypted all the same, by _OctSyncObj's cipher (raft_wire)
            bindAddress=self.self_address,  # never 0.0.0.0: the Raft port is for cluster members only
            useFork=False,
            leaderFallbackTimeout=3.0,
            connectionRetryTime=1.0,
            commandsWaitLeader=False,
            onStateChanged=self._on_state_changed,
        )
        others = [p for p in partners if p != self.self_address]
        try:
            sync = _OctSyncObj(
                self.self_address if self.voter else None,
                others,
                conf,
                consumers=[self.machine],
                transportClass=_loop_transport(self._poller),
                cipher=RaftCipher(self._password),
            )
        except SyncObjException as e:
            self._poller.close()
            raise RaftUnavailable(
                f"cannot listen for Raft on {self.self_address} ({e}): is another process using the port?"
            ) from e
        self._closed = False
        self._timer = self.loop.call_later(TICK_PERIOD, self._tick_timer)
        return sync

    # -- ticking -------------------------------------------------------------------------------
    def _tick(self) -> None:
        """One PySyncObj tick, now: commit and apply what the peers acknowledged, send what is
        queued, fire elections and heartbeats that are due. Never nested: PySyncObj is not
        re-entrant, and a commit callback may lead to another proposal."""
        if self._closed:  # scheduled before close(): a tick would bind the port again
            return
        if self._ticking:  # asked from inside a tick (a commit callback): run it right after
            self._tick_soon()
            return
        self._ticking = True
        sync = self.sync
        try:
            last_index, applied = sync.last_log_index(), sync.raftLastApplied
            sync.doTick(0.0)
            if sync._isLeader():
                if sync.last_log_index() > last_index:
                    sync.send_append_entries()  # new entries: the commit waits for their acks
                elif sync.raftLastApplied > applied:
                    self._notice_soon()
        except Exception:  # as PySyncObj's tick thread did: log, keep ticking
            log.exception("raft tick failed")
        finally:
            self._ticking = False

    def _notice_soon(self) -> None:
        if self._notice is None:
            self._notice = self.loop.call_later(NOTICE_DELAY, self._send_notice)

    def _send_notice(self) -> None:
        """Tell the followers of commits no append has carried to them since (``NOTICE_DELAY``)."""
        self._notice = None
        sync = self.sync
        if self._closed or self._ticking or not sync._isLeader():
            return
        if sync.raftCommitIndex > sync.commit_index_sent():
            sync.send_append_entries()

    def _tick_soon(self) -> None:
        """Tick once the loop has run what is ready: socket events of one pass share a tick.

        Measured side by side (4 paired rounds): a tick after each event and a shared tick had
        the same 1-client p50 (0.72 / 0.68 ms), but at 64 clients the shared tick made larger
        batches: 14.0K instead of 12.5K writes/s.
        """
        if not self._tick_pending:
            self._tick_pending = True
            self.loop.call_soon(self._deferred_tick)

    def _deferred_tick(self) -> None:
        self._tick_pending = False
        self._tick()

    def _tick_timer(self) -> None:
        self._tick()
        self._timer = self.loop.call_later(TICK_PERIOD, self._tick_timer)

    def _stop_ticking(self) -> None:
        for handle in (self._timer, self._notice):
            if handle is not None:
                handle.cancel()
        self._timer = self._notice = None

    async def reopen(self, voter: bool) -> None:
        """Restart the replica as a voter or a non-voter (PySyncObj fixes the role at creation).

        The new replica replays this node's own journal into a fresh state machine and then
        follows the leader; readers keep using ``self.machine`` and see a new version number, so
        caches keyed on it are rebuilt. Writes in flight meanwhile fail and may be retried.
        """
        partners = self.members()
        old_machine = self.machine
        self._destroy()
        machine = StateMachine()
        machine._version = old_machine.version + 1
        machine._listeners = old_machine._listeners
        self.machine, self.voter = machine, voter
        self.sync = self._open(partners)
        log.info("raft replica reopened as a %s", "voter" if voter else "non-voting replica")

    def _on_state_changed(self, old: int, new: int) -> None:
        """Runs inside a Raft tick. The log line is part of the contract: the chaos suite reads it to
        check that no two nodes ever led in the same term."""
        sync = getattr(self, "sync", None)  # the hook can fire before the constructor returns
        term = sync._getTerm() if sync is not None else -1
        if new == _LEADER_STATE:
            log.info("became leader term=%d node=%s", term, self.self_address)
        elif old == _LEADER_STATE:
            log.info("stepped down term=%d node=%s", term, self.self_address)

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

    def commit_index(self) -> int:
        return int(self.sync.getStatus()["commit_idx"])

    def members(self) -> list[str]:
        """The voters' Raft addresses (a non-voter is not one of them)."""
        others = [str(n.address if hasattr(n, "address") else n) for n in self.sync.otherNodes]
        return sorted([self.self_address, *others] if self.voter else others)

    # -- writes --------------------------------------------------------------------------------
    async def execute(self, cmd: dict[str, Any], timeout: float = 5.0) -> Any:
        """Commit ``cmd`` (sharing a Raft entry with concurrent writes) and return its result once
        this node has applied it. Raises :class:`NotLeader`, :class:`RaftUnavailable`, or
        ``ValueError`` when the state machine refused the command."""
        future: asyncio.Future[Any] = self.loop.create_future()
        self._queue.append((cmd, future))
        if len(self._inflight) < MAX_INFLIGHT:
            self._flush()
        # One timer on the future itself: ``asyncio.wait_for`` adds a second future and callbacks,
        # about 5% of the leader's CPU at 64 clients.
        expiry = self.loop.call_later(timeout, _expire, future, timeout)
        try:
            result = await future
        finally:
            expiry.cancel()
        if isinstance(result, dict) and set(result) == {"error"}:
            raise ValueError(result["error"])
        return result

    async def barrier(self, timeout: float = 2.0) -> None:
        """Return once an entry of this leader's term has committed and applied here.

        That proves the node still led a majority *after* the caller started waiting, and that every
        write acknowledged before then is applied locally: reads that follow are linearizable.
        """
        await self.execute({"op": "noop", "args": {}}, timeout)

    def _flush(self) -> None:
        """Send the queued writes as one entry; more wait while ``MAX_INFLIGHT`` batches are out."""
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        batch = [(cmd, future) for cmd, future in batch if not future.done()]  # timed-out callers
        if not batch:
            if self._queue:
                self._flush()
            return
        self._batches += 1
        batch_id = self._batches
        self._inflight.add(batch_id)

        def release() -> None:
            grace.cancel()
            if batch_id in self._inflight:
                self._inflight.discard(batch_id)
                if self._queue:
                    self._flush()

        def done(results: Any, error: int) -> None:  # inside a tick, or inline when refused
            for i, (_, future) in enumerate(batch):  # callers resume on this loop pass
                _settle(future, results[i] if error == FAIL_REASON.SUCCESS else None, error)
            self.loop.call_soon(release)  # the next batch's tick must not run inside this one

        grace = self.loop.call_later(INFLIGHT_GRACE, release)
        self.machine.execute_batch([cmd for cmd, _ in batch], callback=done)
        self._tick()  # send it now, not at the next timer tick

    def _bridge(self) -> tuple[asyncio.Future[Any], Callable[[Any, int], None]]:
        future: asyncio.Future[Any] = self.loop.create_future()

        def done(result: Any, error: int) -> None:
            _settle(future, result, error)

        return future, done

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
        self._tick()
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError as e:
            raise RaftUnavailable(f"{doing} {address} timed out (no quorum?)") from e

    def close(self) -> None:
        self._destroy()

    def _destroy(self) -> None:
        """Close the replica's sockets and journal now (there is no tick thread to wait for)."""
        self._closed = True
        self._stop_ticking()
        self.sync.destroy()
        self._poller.close()
