"""One node's Raft replica driven by the asyncio event loop: group commit, barriers, membership.

PySyncObj is driven by the event loop itself, not by its own tick thread: its sockets are watched
by the loop (:mod:`octctl.state.raft_sockets`), and a tick runs when a write is proposed (at once,
so the entry goes out before the handler yields), after socket events (one tick per loop pass),
and every ``TICK_PERIOD`` (timers: heartbeats, elections). A commit callback runs inside a tick and resolves
its callers' futures directly, with no thread hand-off on the write path.

Each write also costs few and cheap messages: they are sealed with AES-GCM and small ones are
not deflated (:mod:`octctl.state.raft_wire`), and the leader defers commit notices
(``NOTICE_DELAY``).

Writes are durable: an entry is acknowledged only once a majority holds it on disk. Each node
syncs its journal at the end of every tick and before it acknowledges anything
(``DurableJournal.sync``), so one ``fdatasync`` covers every entry a tick added, on the leader and
on each follower alike.
``unsafe_no_fsync`` drops the syncs (tests and benchmarks that say so; never production).

Writes are group-committed: while one Raft entry is in flight, the writes that arrive meanwhile
queue up and go out together as the next entry. One client still pays one commit; many concurrent
clients share commits, without giving up per-write acknowledgement. Why each of these, and what
they were measured to gain: docs/architecture.md#raft and docs/operations.md#benchmarks.

The replicated state itself is :mod:`octctl.state.replicated`; every use of PySyncObj's internals
is in :mod:`octctl.state.pysyncobj_adapter`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObjConf, SyncObjException

from octctl.state import raft_guard, raft_wire
from octctl.state.model import ClusterState
from octctl.state.pysyncobj_adapter import (
    LEADER_STATE,
    DurableJournal,
    OctSyncObj,
    loop_transport,
    use_durable_files,
)
from octctl.state.raft_files import DUMP, JOURNAL, check_raft_files
from octctl.state.raft_sockets import KEEPALIVE, LoopPoller, LoopTransport
from octctl.state.raft_wire import RaftCipher
from octctl.state.replicated import StateMachine

log = logging.getLogger(__name__)

#: The exit status of a node whose disk refused to sync its Raft journal.
EXIT_DISK_FAILED = 75
#: Set to ``1`` in a node's environment, it acknowledges writes before they are on disk (tests and
#: benchmarks only; see docs/operations.md#running-oct-ctl-by-hand).
UNSAFE_NO_FSYNC = "OCT_UNSAFE_NO_FSYNC"


def unsafe_no_fsync() -> bool:
    """Whether this process was told to skip the journal's syncs (and says so if it was)."""
    unsafe = os.environ.get(UNSAFE_NO_FSYNC) == "1"
    if unsafe:
        log.warning(
            "%s=1: Raft writes are acknowledged before they are on disk (never in production)",
            UNSAFE_NO_FSYNC,
        )
    return unsafe


#: Most commands one Raft entry carries; bounds the entry's size and the apply lock's hold time.
MAX_BATCH = 256
#: A batch whose callback has not come by then no longer blocks the next one (its own callers
#: still wait for their own outcome or timeout): a lost callback must never stall every writer.
INFLIGHT_GRACE = 2.0
#: Batches in flight at once. The leader is CPU-bound, so fewer, larger entries win: more in
#: flight gave fewer writes/s at the same 1-client latency (docs/operations.md#benchmarks).
MAX_INFLIGHT = 1
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
        unsafe_no_fsync: bool = False,
    ) -> None:
        check_raft_files(data_dir)  # refuse damaged files loudly instead of hanging on them
        self.machine = StateMachine()
        self.loop = loop
        self.self_address = self_address
        self.voter = voter
        self.unsafe_no_fsync = unsafe_no_fsync
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
        self._sockets: LoopPoller
        self._journal: DurableJournal
        #: Told the seconds each of this node's writes took to commit and apply (metrics).
        self.on_commit: Callable[[float], None] | None = None
        #: Told each time this node becomes leader or stops being it (metrics).
        self.on_leader_change: Callable[[], None] | None = None
        self.sync = self._open(partners)

    def _open(self, partners: list[str]) -> OctSyncObj:
        data_dir = self._data_dir
        self._sockets = LoopPoller(self.loop, self._tick_soon)
        raft_wire.install()
        use_durable_files()
        conf = SyncObjConf(
            autoTick=False,  # ticked from the event loop: see the module docstring
            # PySyncObj would otherwise hold new entries for the next heartbeat (~100 ms per
            # commit, docs/architecture.md#raft); _tick sends them at once, defers commit notices.
            appendEntriesUseBatch=True,
            dynamicMembershipChange=True,
            journalFile=str(data_dir / JOURNAL),
            fullDumpFile=str(data_dir / DUMP),
            password=None,  # encrypted all the same, by OctSyncObj's cipher (raft_wire)
            bindAddress=self.self_address,  # never 0.0.0.0: the Raft port is for cluster members only
            useFork=False,
            leaderFallbackTimeout=3.0,
            connectionRetryTime=1.0,
            commandsWaitLeader=False,
            onStateChanged=self._on_state_changed,
        )
        others = [p for p in partners if p != self.self_address]
        try:
            sync = OctSyncObj(
                self.self_address if self.voter else None,
                others,
                conf,
                consumers=[self.machine],
                transportClass=loop_transport(self._sockets, LoopTransport),
                cipher=RaftCipher(self._password),
                max_entry=raft_guard.MAX_ENTRY,
            )
        except SyncObjException as e:
            self._sockets.close()
            raise RaftUnavailable(
                f"cannot listen for Raft on {self.self_address} ({e}): is another process using the port?"
            ) from e
        journal = sync.journal
        assert isinstance(journal, DurableJournal)  # (use_durable_files, and a journal file given)
        journal.durable = not self.unsafe_no_fsync
        sync.transport.before_send = self._before_send  # nothing vouches for what a power cut could take
        sync.transport.is_voter = sync.votes
        self._journal = journal
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
            if sync.is_leader():
                if sync.last_log_index() > last_index:
                    sync.send_append_entries()  # new entries: the commit waits for their acks
                elif sync.raftLastApplied > applied:
                    self._notice_soon()
        except Exception:  # as PySyncObj's tick thread did: log, keep ticking
            log.exception("raft tick failed")
        finally:
            # After the appends went out, so the leader's disk write overlaps their trip; before
            # any acknowledgement can be read (the loop reads sockets between ticks) and before this
            # tick's commits are answered (a lone node's are committed in the tick itself).
            self._sync_journal()
            self._ticking = False

    def _before_send(self, message: Any) -> None:
        """Sync before anything that could vouch for this node's log leaves it (an acknowledgement
        above all). A leader's own appends are the exception: the entries they carry are synced
        at the end of the tick that added them, before a follower's acknowledgement can even be
        read, so the leader counts itself toward a commit only once they are on its disk (Raft
        thesis, 10.2.1: the leader writes its log in parallel with replicating it)."""
        if not (isinstance(message, dict) and message.get("type") in ("append_entries", KEEPALIVE["type"])):
            self._sync_journal()  # (a keepalive says nothing of the log)

    def _sync_journal(self) -> None:
        """The journal's sync barrier; a disk that refuses to sync stops the process.

        After a failed fsync the kernel may already have dropped the dirty pages, so neither a
        retry nor carrying on could be trusted (PostgreSQL and etcd stop too). The node's
        supervisor restarts it, and it rejoins from what its journal really holds.
        """
        try:
            self._journal.sync()
        except OSError as e:
            log.critical("cannot sync the Raft journal %s (%s): stopping the node", self._journal.path, e)
            logging.shutdown()
            os._exit(EXIT_DISK_FAILED)

    def _notice_soon(self) -> None:
        if self._notice is None:
            self._notice = self.loop.call_later(NOTICE_DELAY, self._send_notice)

    def _send_notice(self) -> None:
        """Tell the followers of commits no append has carried to them since (``NOTICE_DELAY``)."""
        self._notice = None
        sync = self.sync
        if self._closed or self._ticking or not sync.is_leader():
            return
        if sync.raftCommitIndex > sync.transport.commit_index_sent:
            sync.send_append_entries()

    def _tick_soon(self) -> None:
        """Tick once the loop has run what is ready: socket events of one pass share a tick, so
        under load the writes they carry make larger batches (docs/operations.md#benchmarks)."""
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
        self._destroy()
        self.machine, self.voter = StateMachine(follows=self.machine), voter
        self.sync = self._open(partners)
        log.info("raft replica reopened as a %s", "voter" if voter else "non-voting replica")

    def _on_state_changed(self, old: int, new: int) -> None:
        """Runs inside a Raft tick. The log line is part of the contract: the chaos suite reads it to
        check that no two nodes ever led in the same term."""
        sync = getattr(self, "sync", None)  # the hook can fire before the constructor returns
        term = sync.term() if sync is not None else -1
        if new == LEADER_STATE:
            log.info("became leader term=%d node=%s", term, self.self_address)
        elif old == LEADER_STATE:
            log.info("stepped down term=%d node=%s", term, self.self_address)
        if LEADER_STATE in (old, new) and old != new and self.on_leader_change is not None:
            self.on_leader_change()

    # -- reads ---------------------------------------------------------------------------------
    def view(self) -> ClusterState:
        return self.machine.view()

    def is_leader(self) -> bool:
        return self.sync.is_leader() and bool(self.sync.isReady())

    def leader_address(self) -> str | None:
        leader = self.sync.leader()
        if leader is None:
            return None
        return str(leader.address if hasattr(leader, "address") else leader)

    def term(self) -> int:
        return self.sync.term()

    def commit_index(self) -> int:
        return int(self.sync.getStatus()["commit_idx"])

    def applied_index(self) -> int:
        return int(self.sync.raftLastApplied)

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
        proposed = self.loop.time()
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
        if self.on_commit is not None:
            self.on_commit(self.loop.time() - proposed)
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
        self._sockets.close()
