"""The one place oct touches PySyncObj's internals: every private name and every replaced global.

PySyncObj has no public hook for what oct needs from it: to be driven by the asyncio loop (its
poller), to report leadership and term, to refuse an oversized entry, to send appends when oct
decides, and to let oct read, frame and compress its connections' messages. This module wraps
those internals in public names (:class:`OctSyncObj`, :class:`Consumer`, :class:`HookedTransport`,
:class:`HookedConnection`, :func:`loop_transport`, :func:`use_connection_class`,
:func:`use_frame_codec`), and the rest of oct calls only those.

:data:`PRIVATE_SURFACE` lists each internal used here. ``tests/unit/test_pysyncobj_adapter.py``
checks that the installed PySyncObj still has every one of them, of the expected kind, and that no
other module of oct uses one; ``tests/integration/test_raft_wire.py`` pins the source of the PySyncObj
code behind them. pyproject pins the exact PySyncObj version they were read from.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

from pysyncobj import (
    FAIL_REASON,
    SyncObj,
    SyncObjConsumer,
    serializer,
    syncobj,
    tcp_connection,
    tcp_server,
    transport,
)
from pysyncobj.journal import FileJournal, Journal, MemoryJournal, MetaStorer, dumps
from pysyncobj.poller import Poller
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.transport import TCPTransport

from octctl.state.stable_storage import replace_durably, write_durably

log = logging.getLogger(__name__)

#: Every PySyncObj internal oct relies on: (where, name, kind). Kinds: ``method`` (a function of
#: the class, called or overridden), ``attribute`` (set on instances by the class's ``__init__``,
#: read or written), ``class`` (a module-level class), ``global`` (a module-level name that the
#: module looks up on every use, so that replacing it takes effect). Private names of classes are
#: given mangled, as Python stores them.
PRIVATE_SURFACE: Final[tuple[tuple[str, str, str], ...]] = (
    ("pysyncobj.syncobj", "_RAFT_STATE", "class"),
    ("pysyncobj.syncobj.SyncObj", "_isLeader", "method"),
    ("pysyncobj.syncobj.SyncObj", "_getLeader", "method"),
    ("pysyncobj.syncobj.SyncObj", "_getTerm", "method"),
    ("pysyncobj.syncobj.SyncObj", "_applyCommand", "method"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__callErrCallback", "method"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__sendAppendEntries", "method"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__onMessageReceived", "method"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__raftLog", "attribute"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__raftCurrentTerm", "attribute"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__raftCommitIndex", "attribute"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__raftLastApplied", "attribute"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__otherNodes", "attribute"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__transport", "attribute"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__raftElectionDeadline", "attribute"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__votedForNodeId", "attribute"),
    ("pysyncobj.syncobj.SyncObj", "_SyncObj__selfNode", "attribute"),
    ("pysyncobj.syncobj.SyncObj", "_poller", "attribute"),
    ("pysyncobj.syncobj.SyncObjConsumer", "_deserialize", "method"),
    ("pysyncobj.transport.TCPTransport", "_onNewIncomingConnection", "method"),
    ("pysyncobj.transport.TCPTransport", "_onTick", "method"),
    ("pysyncobj.transport.TCPTransport", "_nodes", "attribute"),
    ("pysyncobj.transport.TCPTransport", "_selfIsReadonlyNode", "attribute"),
    ("pysyncobj.transport.TCPTransport", "_connections", "attribute"),
    ("pysyncobj.tcp_connection.TcpConnection", "_TcpConnection__tryReadBuffer", "method"),
    ("pysyncobj.tcp_connection.TcpConnection", "_TcpConnection__processParseMessage", "method"),
    ("pysyncobj.tcp_connection.TcpConnection", "_TcpConnection__socket", "attribute"),
    ("pysyncobj.tcp_connection.TcpConnection", "_TcpConnection__fileno", "attribute"),
    ("pysyncobj.tcp_connection.TcpConnection", "_TcpConnection__poller", "attribute"),
    ("pysyncobj.tcp_connection.TcpConnection", "_TcpConnection__lastReadTime", "attribute"),
    ("pysyncobj.syncobj", "createJournal", "global"),
    ("pysyncobj.serializer", "atomicReplace", "global"),
    ("pysyncobj.journal.FileJournal", "_FileJournal__metaStorer", "attribute"),
    ("pysyncobj.tcp_connection", "zlib", "global"),
    ("pysyncobj.tcp_server", "TcpConnection", "global"),
    ("pysyncobj.transport", "TcpConnection", "global"),
)

#: Longest random wait before a node stands for election after refusing a candidate whose log is
#: behind (``OctSyncObj._hurry_if_candidate_behind``): short next to the 0.4 s minimum timeout.
HURRY_JITTER: Final[float] = 0.05

#: The raft state PySyncObj passes to its ``onStateChanged`` hook for a leader.
LEADER_STATE: Final[int] = _RAFT_STATE.LEADER


class Consumer(SyncObjConsumer):
    """A replicated object. Attributes set before ``super().__init__`` are local (not replicated,
    not snapshotted): PySyncObj records them then and leaves them out of snapshots."""

    def _deserialize(self, data: dict[str, Any]) -> None:
        self.restore(data)

    def restore(self, data: dict[str, Any]) -> None:
        """Take the replicated attributes from a snapshot (PySyncObj calls this on loading one)."""
        SyncObjConsumer._deserialize(self, data)


class OctSyncObj(SyncObj):
    """PySyncObj with oct's wire cipher, an entry size cap, and public names for the internals the
    event-loop driver needs."""

    _SyncObj__raftElectionDeadline: float  # (set by SyncObj.__init__; declared for the type checker)

    def __init__(self, *args: Any, cipher: Any, max_entry: int, **kwargs: Any) -> None:
        self._cipher = cipher
        self._max_entry = max_entry
        super().__init__(*args, **kwargs)

    @property
    def encryptor(self) -> Any:
        """What PySyncObj's connections seal and open frames with (its own would be Fernet)."""
        return self._cipher

    def _applyCommand(self, command: bytes, callback: Any, commandType: Any = None) -> None:
        """Refuse an entry over ``max_entry`` when it is proposed: the followers' frame cap
        (``raft_guard.MAX_FRAME``) would refuse every message carrying it, forever."""
        if len(command) > self._max_entry:
            log.warning("raft: refused a %d-byte entry (at most %d)", len(command), self._max_entry)
            self._SyncObj__callErrCallback(FAIL_REASON.REQUEST_DENIED, callback)
            return
        super()._applyCommand(command, callback, commandType)

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        """Every message from another node; an append is first checked by :func:`checked_append`."""
        if isinstance(message, dict) and message.get("type") == "append_entries":
            message = checked_append(
                message,
                self._SyncObj__raftLog,
                self._SyncObj__raftCurrentTerm,
                max(self._SyncObj__raftCommitIndex, self._SyncObj__raftLastApplied),
            )
            if message is None:
                return
        super()._SyncObj__onMessageReceived(node, message)
        if isinstance(message, dict) and message.get("type") == "request_vote":
            self._hurry_if_candidate_behind(message)

    def _hurry_if_candidate_behind(self, message: dict[str, Any]) -> None:
        """Start an election soon when a candidate whose log is behind ours asked for our vote.

        PySyncObj refuses such a vote and leaves its own election timer alone, so the cluster
        waits for the behind candidate's next timeout or ours, whichever is later, up to
        ``raftMaxTimeout``. Under write load that is the usual case when a leader stops: whichever
        follower times out first may lack the leader's last append. The request already cost us
        our leader (its term is higher), only a node at least as up to date as us can win, and
        we are one, so we stand now (after a short random wait, so that in larger clusters two such
        nodes rarely split the vote). Starting an election early is safe at any time in Raft;
        only liveness depends on timers. Not when we voted this term or follow a leader of it:
        then an election we would disrupt is under way or over."""
        if self._SyncObj__selfNode is None or message.get("term") != self._SyncObj__raftCurrentTerm:
            return  # (a non-voter, or a stale request PySyncObj ignored)
        if self._isLeader() or self._getLeader() is not None or self._SyncObj__votedForNodeId is not None:
            return
        last = self._SyncObj__raftLog[-1]
        theirs = (message.get("last_log_term", 0), message.get("last_log_index", 0))
        if theirs >= (last[2], last[1]):
            return  # (as up to date as us: it got, or may get, our vote)
        soon = time.monotonic() + random.uniform(0.0, HURRY_JITTER)
        if soon < self._SyncObj__raftElectionDeadline:
            self._SyncObj__raftElectionDeadline = soon
            log.info("raft: a candidate behind our log asked for a vote; standing for election")

    def election_due(self) -> float:
        """Seconds until this node stands for election if it hears from no leader (negative: due)."""
        return float(self._SyncObj__raftElectionDeadline - time.monotonic())

    def receive(self, node: Any, message: Any, *, checked: bool = True) -> None:
        """Handle ``message`` as if ``node`` had just sent it; ``checked=False`` skips
        :func:`checked_append` (PySyncObj's own handling, which the tests compare against)."""
        if checked:
            self._SyncObj__onMessageReceived(node, message)
        else:
            SyncObj._SyncObj__onMessageReceived(self, node, message)

    def votes(self, node: Any) -> bool:
        """Whether ``node`` is a voting member (a non-voter is one of PySyncObj's read-only nodes)."""
        return node in self._SyncObj__otherNodes

    def peers(self) -> list[Any]:
        """The other members' nodes, as PySyncObj names them in messages."""
        return list(self._SyncObj__otherNodes)

    def log_positions(self) -> list[tuple[int, int]]:
        """``(index, term)`` of every entry in the log (from the last snapshot on)."""
        return [(entry[1], entry[2]) for entry in self._SyncObj__raftLog[0:]]

    def last_applied(self) -> int:
        return int(self._SyncObj__raftLastApplied)

    def is_leader(self) -> bool:
        """Whether this node is in the leader state (another may lead a newer term already)."""
        return bool(self._isLeader())

    def leader(self) -> Any:
        """The last known leader node (or its address), ``None`` if none is known."""
        return self._getLeader()

    def term(self) -> int:
        return int(self._getTerm())

    def last_log_index(self) -> int:
        return int(self._SyncObj__raftLog[-1][1])

    def send_append_entries(self) -> None:
        """Send every follower what it lacks, with the current commit index (a heartbeat if none)."""
        self._SyncObj__sendAppendEntries()

    @property
    def transport(self) -> Any:
        """The transport ``transportClass`` made (see :func:`loop_transport`)."""
        return self._SyncObj__transport

    @property
    def journal(self) -> Journal:
        """The Raft log: a :class:`DurableJournal` when the node keeps one on disk
        (see :func:`use_durable_files`)."""
        return self._SyncObj__raftLog


def checked_append(message: dict[str, Any], entries: Any, term: int, applied: int) -> dict[str, Any] | None:
    """An append a follower may act on as PySyncObj does, or None to drop it (Raft §5.3).

    PySyncObj deletes every entry of the follower's log after ``prevLogIdx`` whenever the log is
    longer, then adds the message's entries. Raft deletes only from the first entry that conflicts
    (same index, another term). The difference shows when a message arrives late (reordered, or
    sent twice): an old append from the current leader then cuts off entries the follower already
    acknowledged, and applied (PySyncObj logs CRITICAL "truncating already-applied log entries").
    So: entries the follower already holds are not sent through again (``prevLogIdx`` moves to the
    last one it agrees with, and the deletion starts at the first that conflicts or is new), and a
    message that would still delete an applied entry, or one of the sender's own term (which that
    leader sent later, so this message is stale), is dropped. The leader repeats what matters.

    ``entries`` is the follower's log (entries are ``(command, index, term)``), ``term`` its
    current term, ``applied`` the highest index it committed or applied.
    """
    if "prevLogIdx" not in message or message.get("transmission") is not None or message["term"] < term:
        return message  # (not a plain append PySyncObj would act on: as it was)
    first, last = entries[0][1], entries[-1][1]
    prev = message["prevLogIdx"]
    if prev >= last:
        return message  # nothing after prev to lose
    sent = list(message.get("entries") or [])
    agreed = 0  # how many of the sent entries the follower holds already
    for entry in sent:
        index = entry[1]
        if index <= last and (index < first or entries[index - first][2] == entry[2]):
            agreed += 1
        else:
            break
    cut = sent[agreed][1] if agreed < len(sent) else (sent[-1][1] + 1 if sent else prev + 1)
    if cut <= last:
        doomed = [entries[i - first] for i in range(max(cut, first), last + 1)]
        if cut <= applied or any(e[2] == message["term"] for e in doomed):
            log.debug("raft: dropped a stale append (it would delete entries from %d of %d)", cut, last)
            return None
    if agreed == 0:
        return message
    kept = sent[agreed - 1]
    return {**message, "prevLogIdx": kept[1], "prevLogTerm": kept[2], "entries": sent[agreed:]}


def loop_transport(poller: Poller, transport_class: type[TCPTransport]) -> Callable[..., TCPTransport]:
    """A ``transportClass`` for :class:`OctSyncObj` whose sockets are watched by ``poller``.

    ``SyncObj`` takes a transport factory; the factory runs after ``SyncObj`` made its own poller
    and before any socket is subscribed to it, so swapping the poller there moves every socket
    (server, peers) onto ``poller``. (PySyncObj's wake-up pipe exists only without
    ``appendEntriesUseBatch``; whoever proposes ticks at once instead.)
    """

    def make(sync_obj: SyncObj, self_node: Any, other_nodes: Any) -> TCPTransport:
        sync_obj._poller = poller
        return transport_class(sync_obj, self_node, other_nodes)

    return make


class HookedTransport(TCPTransport):
    """PySyncObj's TCP transport with public hooks for accepted connections, ticks and sends."""

    #: Runs before every message this node sends, with the message (the journal's sync barrier).
    before_send: Callable[[Any], None] = staticmethod(lambda message: None)

    def send(self, node: Any, message: Any) -> Any:
        self.before_send(message)
        return super().send(node, message)

    def voting_peers(self) -> list[Any]:
        """The other voting members' nodes whose connection finished its handshake (a message
        sent before then would be taken for the handshake's own), or none on a non-voter (which
        never asks for a vote)."""
        if self._selfIsReadonlyNode:
            return []
        return [n for n in self._nodes if (c := self._connections.get(n)) is not None and c.sendRandKey]

    def admit(self, conn: Any) -> bool:
        """Whether to keep a connection the server accepted; one refused is closed before
        PySyncObj knows of it (nothing else holds it)."""
        return True

    def on_tick(self) -> None:
        """Runs after each of the transport's ticks."""

    def _onNewIncomingConnection(self, conn: Any) -> None:
        if not self.admit(conn):
            conn.disconnect()
            return
        super()._onNewIncomingConnection(conn)

    def _onTick(self) -> None:
        super()._onTick()
        self.on_tick()


class HookedConnection(TcpConnection):
    """PySyncObj's connection with its read and parse steps as public hooks, and public names for
    the parts of its state those steps need.

    PySyncObj calls ``read_available`` when the socket is readable and ``next_message`` until it
    returns ``None``; by default they are PySyncObj's own steps.
    """

    # Attributes PySyncObj sets, for the type checker (the handshake sets the public ones).
    encryptor: Any
    recvRandKey: bytes | None
    recvLastTimestamp: int
    _TcpConnection__fileno: int | None

    @property
    def sock(self) -> socket.socket | None:
        """The connection's socket (``None`` before connecting)."""
        return self._TcpConnection__socket

    def stop_watching(self) -> None:
        """Stop the poller watching the socket, before PySyncObj closes it: the event loop cannot
        change its interest in a closed descriptor (asyncio raises EBADF while a writer is
        registered)."""
        fileno = self._TcpConnection__fileno
        if fileno is not None:
            self._TcpConnection__fileno = None
            self._TcpConnection__poller.unsubscribe(fileno)

    def mark_read(self) -> None:
        """Record that the peer was heard from now (PySyncObj's idle timeout counts from it)."""
        self._TcpConnection__lastReadTime = time.monotonic()

    def read_available(self) -> None:
        """Read what the socket has into the connection's buffer."""
        TcpConnection._TcpConnection__tryReadBuffer(self)

    def next_message(self) -> Any:
        """The next complete message, or ``None`` when there is none yet."""
        return TcpConnection._TcpConnection__processParseMessage(self)

    def _TcpConnection__tryReadBuffer(self) -> None:
        self.read_available()

    def _TcpConnection__processParseMessage(self) -> Any:
        return self.next_message()


def use_connection_class(cls: type[HookedConnection]) -> None:
    """Make PySyncObj create ``cls`` for every Raft connection, accepted or opened (process-wide).

    PySyncObj creates its connections itself and offers no factory; its server and transport
    modules look ``TcpConnection`` up as a global on every new connection, so that name is what
    is replaced.
    """
    tcp_server.TcpConnection = cls
    transport.TcpConnection = cls


def use_frame_codec(codec: Any) -> None:
    """Make PySyncObj's connections compress and decompress every message with ``codec`` (an
    object with ``compress(data, level)``, ``decompress(data)`` and ``error``; process-wide).

    PySyncObj offers no hook for its framing; its connection module looks ``zlib`` up as a global
    on every message, so that name is what is replaced. Only Raft connections use it.
    """
    tcp_connection.zlib = codec


def frame_codec() -> Any:
    """What PySyncObj's connections compress and decompress messages with now."""
    return tcp_connection.zlib


class DurableJournal(FileJournal):
    """PySyncObj's file journal (an mmap it never syncs) with a sync barrier.

    Every change marks the journal dirty; :meth:`sync` makes all of them durable with one
    ``fdatasync`` (group commit: one sync covers every entry since the last one). PySyncObj itself
    never calls it: the node calls it before any message that could report an entry leaves, and
    before a tick's commits are answered (``RaftNode``). The term and vote are written through a
    synced temporary file, because a node must not forget a vote it granted. ``durable = False``
    turns every sync off (``unsafe_no_fsync``: tests and benchmarks only).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.durable = True
        self._dirty = False
        super().__init__(path)
        self._FileJournal__metaStorer = _DurableMetaStorer(path + ".meta", self)
        #: Kept open for the journal's life (a sync per tick should not cost an open and a close),
        #: closed with it.
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        weakref.finalize(self, os.close, self._fd)

    def add(self, command: Any, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._dirty = True

    def clear(self) -> None:
        super().clear()
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True

    @property
    def dirty(self) -> bool:
        """Whether the journal changed since it was last synced."""
        return self._dirty

    def sync(self) -> None:
        """Put every change so far on stable storage (nothing to do if none). Raises ``OSError``
        if the disk refused, and the journal stays dirty: nothing it holds may be reported."""
        if self._dirty:
            if self.durable:
                os.fdatasync(self._fd)  # (the mmap's dirty pages are the file's)
            self._dirty = False


class _DurableMetaStorer(MetaStorer):
    def __init__(self, path: str, journal: DurableJournal) -> None:
        super().__init__(path)
        self._journal = journal

    def storeMeta(self, meta: Any) -> None:
        if self._journal.durable:
            write_durably(self.getPath(), dumps(meta))
        else:
            super().storeMeta(meta)


def _create_journal(path: str | None = None) -> Journal:
    return MemoryJournal() if path is None else DurableJournal(path)


def use_durable_files() -> None:
    """Make PySyncObj keep its journal in a :class:`DurableJournal` and replace its snapshot
    (full dump) files durably: synced before the rename, the directory synced after (process-wide).

    PySyncObj looks ``createJournal`` and ``atomicReplace`` up as module globals on every use, so
    those names are what is replaced.
    """
    syncobj.createJournal = _create_journal
    serializer.atomicReplace = replace_durably
