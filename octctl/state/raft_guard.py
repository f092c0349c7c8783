"""The Raft port against strangers: frame caps, bounded reads, and few connections that have not
authenticated.

PySyncObj reads a 4-byte frame length and then buffers until the whole frame has arrived, before
anything is authenticated, appending every read to an immutable ``bytes`` (a copy of the whole
buffer per read) and reading until the socket is drained, all on the event loop. A stranger who
claimed ~2 GiB and streamed junk at the port had the node buffer it all: 16 MB cost a leader its
leadership, 42 MB froze a node (API and DNS too) for 9 s. Here:

- **Frame caps, checked on the length before the frame is buffered.** A connection is
  *authenticated* once a frame opened with the cluster key *and* carried the random key this end
  drew for the connection (PySyncObj's handshake: each side sends a random key in its first
  sealed message, and every later message must carry it back). A replayed frame can pass the
  cipher but not that check, so only a holder of the secret gets there, and only live. Until
  then a frame may be at most :data:`MAX_FRAME_UNAUTHENTICATED` (the handshake messages are
  ~100 bytes); afterwards :data:`MAX_FRAME` (see there for why no legitimate message comes near
  it). A frame over the cap closes the connection at once.
- **Bounded reads.** Each readiness event reads at most :data:`READ_BUDGET` bytes (the handshake
  cap before authentication) in :data:`READ_CHUNK` pieces into a ``bytearray``, consumed from
  the front without copying the rest, then hands the loop back.
- **Few unauthenticated connections.** At most :data:`MAX_PENDING_PER_IP` per peer address (more
  are closed as they are accepted) and :data:`MAX_PENDING` in all (the oldest is closed for a
  new one: a real peer's handshake takes a round trip, so a flood cannot starve it by holding
  slots); one that has not authenticated within :data:`AUTH_TIMEOUT` is closed (PySyncObj's own
  timeout only runs when the connection has an event, so a silent stranger stayed forever).

Every refusal logs one warning line with the peer's address, at most one per
:data:`WARN_EVERY` seconds (the next one counts those not logged).

PySyncObj's read and parse steps and its transport's accept and tick steps are reached through
the hooks of :mod:`octctl.state.pysyncobj_adapter`; :func:`install` has the adapter make every
Raft connection a :class:`GuardedConnection` (process-wide, idempotent).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from collections import Counter
from typing import Any, Final

from pysyncobj import pickle as pysyncobj_pickle

from octctl.logthrottle import LogLimiter
from octctl.state import pysyncobj_adapter
from octctl.state.pysyncobj_adapter import HookedConnection, HookedTransport

log = logging.getLogger(__name__)

#: PySyncObj's frame length: ``struct.pack('i', len)``, native order, signed 32 bits.
_LENGTH: Final = struct.Struct("i")
#: Largest frame before the connection authenticated. The handshake's messages are a sealed
#: pickled 32-byte key (~100 bytes) and then the sender's ``host:port``, ``'readonly'`` or a
#: short admin command.
MAX_FRAME_UNAUTHENTICATED: Final = 64 * 1024
#: Largest Raft command (one entry: a pickled batch of up to ``MAX_BATCH`` commands); a bigger one
#: is refused when proposed (:class:`octctl.state.pysyncobj_adapter.OctSyncObj`). 256 KV writes
#: of 64 KiB come to ~16 MiB; a deploy body is at most 1 MiB.
MAX_ENTRY: Final = 32 * 1024 * 1024
#: Largest frame after authentication. PySyncObj sends a snapshot in ``logCompactionBatchSize``
#: chunks and a lone entry over ``appendEntriesBatchSizeBytes`` in chunks of that size (both
#: 64 KiB, its defaults, which oct keeps); other appends hold entries adding up to under 64 KiB
#: plus one more entry, so a message is at most ``MAX_ENTRY`` + 64 KiB + pickling, deflate and
#: sealing overhead (well under 1%): half this cap.
MAX_FRAME: Final = 64 * 1024 * 1024
#: One ``recv`` at most (PySyncObj's ``recvBufferSize``).
READ_CHUNK: Final = 64 * 1024
#: Most bytes one readiness event reads from an authenticated connection before the loop moves on.
READ_BUDGET: Final = 1024 * 1024
#: Unauthenticated connections kept at once from one peer address, and in all.
MAX_PENDING_PER_IP: Final = 8
MAX_PENDING: Final = 64
#: Seconds a connection may take to authenticate (a real peer needs one round trip).
AUTH_TIMEOUT: Final = 5.0
#: At most one refusal warning of a kind per this many seconds (the rest are counted).
WARN_EVERY: Final = 10.0


_warnings = LogLimiter(log, burst=1, window=WARN_EVERY)


class GuardedConnection(HookedConnection):
    """PySyncObj's connection with frame caps, bounded reads and an *authenticated* flag.

    Replaces PySyncObj's read and parse steps (:meth:`read_available`, :meth:`next_message`);
    what it does with a frame once complete is PySyncObj's, with its ``assert`` checks made real
    checks (``python -O`` would drop them).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._frames = bytearray()
        self.authenticated = False
        self.peer = "unknown"
        self.peer_ip = "unknown"
        self.pending: PendingConnections | None = None
        super().__init__(*args, **kwargs)
        sock = self.sock
        if sock is not None:  # accepted by the server
            try:
                host, port = sock.getpeername()[:2]
            except OSError:
                return
            self.peer, self.peer_ip = f"{host}:{port}", str(host)

    def connect(self, host: str, port: int) -> bool:
        self._frames = bytearray()
        self.authenticated = False
        self.peer, self.peer_ip = f"{host}:{port}", str(host)
        return bool(super().connect(host, port))

    def disconnect(self) -> None:
        self._frames = bytearray()
        self.authenticated = False
        if self.pending is not None:
            self.pending.release(self)
        self.stop_watching()
        super().disconnect()

    @property
    def limit(self) -> int:
        """The largest frame this connection may receive now."""
        return MAX_FRAME if self.authenticated else MAX_FRAME_UNAUTHENTICATED

    # -- PySyncObj's read and parse steps, replaced ----------------------------------------------
    def read_available(self) -> None:
        budget = READ_BUDGET if self.authenticated else MAX_FRAME_UNAUTHENTICATED + _LENGTH.size
        while budget > 0:
            got = self._read(min(READ_CHUNK, budget))
            if not got:
                break
            budget -= got
        self.mark_read()

    def next_message(self) -> Any:
        frames = self._frames
        if len(frames) < _LENGTH.size or not self._head_fits():
            return None
        end = _LENGTH.size + _LENGTH.unpack_from(frames)[0]
        if len(frames) < end:
            return None
        with memoryview(frames) as view:
            data = view[_LENGTH.size : end].tobytes()
        del frames[:end]  # O(1): a bytearray drops its front by moving its start
        try:
            return self._open(data)
        except Exception as e:  # as PySyncObj: any failure drops the connection
            if not self.authenticated:
                _warnings.log(
                    logging.WARNING,
                    "refused",
                    "raft: closed a connection from %s: its frame did not authenticate (%s)",
                    self.peer,
                    type(e).__name__,
                )
            self.disconnect()
            return None

    # -- helpers ---------------------------------------------------------------------------------
    def _read(self, size: int) -> int:
        """One ``recv`` into the buffer, as PySyncObj's ``__processRead``; the bytes read, 0 when
        there is nothing more now or the connection was closed."""
        sock = self.sock
        if sock is None:
            return 0
        try:
            incoming = sock.recv(size)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.disconnect()
            return 0
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or not incoming:
            self.disconnect()
            return 0
        self._frames += incoming
        return len(incoming) if self._head_fits() else 0

    def _head_fits(self) -> bool:
        """Check the next frame's length against the cap as soon as it is known; close if over."""
        frames = self._frames
        if len(frames) < _LENGTH.size:
            return True
        length = _LENGTH.unpack_from(frames)[0]
        if 0 <= length <= self.limit:
            return True
        _warnings.log(
            logging.WARNING,
            "refused",
            "raft: closed a connection from %s: frame of %d bytes, over the %d-byte limit %s",
            self.peer,
            length,
            self.limit,
            "after authentication" if self.authenticated else "before authentication",
        )
        self.disconnect()
        return False

    def _open(self, data: bytes) -> Any:
        """PySyncObj's ``__processParseMessage`` from the frame on: check the sender's counter,
        open the seal, unpickle, check this connection's random key."""
        encryptor = self.encryptor
        if encryptor:
            stamp = encryptor.extract_timestamp(data)
            if stamp < self.recvLastTimestamp:
                raise ValueError("frame counter went back")
            self.recvLastTimestamp = stamp
            data = encryptor.decrypt(data)
        message = pysyncobj_pickle.loads(pysyncobj_adapter.frame_codec().decompress(data))
        if self.recvRandKey:
            rand_key, message = message
            if rand_key != self.recvRandKey:
                raise ValueError("frame of another connection")
            if not self.authenticated:
                self.authenticated = True
                if self.pending is not None:
                    self.pending.release(self)
        return message


class PendingConnections:
    """The accepted connections of one node that have not authenticated yet, oldest first."""

    def __init__(
        self, per_ip: int = MAX_PENDING_PER_IP, total: int = MAX_PENDING, timeout: float = AUTH_TIMEOUT
    ) -> None:
        self.per_ip = per_ip
        self.total = total
        self.timeout = timeout
        self._since: dict[GuardedConnection, float] = {}
        self._by_ip: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._since)

    def admit(self, conn: GuardedConnection) -> bool:
        """Track a new connection, or say no (the caller closes it)."""
        if self._by_ip[conn.peer_ip] >= self.per_ip:
            _warnings.log(
                logging.WARNING,
                "refused",
                "raft: refused a connection from %s: %d from that address have not authenticated",
                conn.peer,
                self._by_ip[conn.peer_ip],
            )
            return False
        while len(self._since) >= self.total:
            oldest = next(iter(self._since))
            _warnings.log(
                logging.WARNING,
                "refused",
                "raft: closed a connection from %s: %d connections have not authenticated",
                oldest.peer,
                len(self._since),
            )
            self._close(oldest)
        self._since[conn] = time.monotonic()
        self._by_ip[conn.peer_ip] += 1
        conn.pending = self
        return True

    def release(self, conn: GuardedConnection) -> None:
        """The connection authenticated or closed."""
        conn.pending = None
        if self._since.pop(conn, None) is not None:
            self._by_ip[conn.peer_ip] -= 1
            if not self._by_ip[conn.peer_ip]:
                del self._by_ip[conn.peer_ip]

    def expire(self, now: float) -> None:
        """Close the connections that did not authenticate in time."""
        while self._since:
            conn, since = next(iter(self._since.items()))
            if now - since < self.timeout:
                return
            _warnings.log(
                logging.WARNING,
                "refused",
                "raft: closed a connection from %s: not authenticated within %.0fs",
                conn.peer,
                self.timeout,
            )
            self._close(conn)

    def _close(self, conn: GuardedConnection) -> None:
        self.release(conn)
        conn.disconnect()


class GuardedTransport(HookedTransport):
    """PySyncObj's TCP transport that admits only a few unauthenticated connections at a time.

    Needs the connections' cipher: without it nothing ever authenticates.
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        if not syncObj.encryptor:
            raise ValueError("the Raft port guard needs the connections' cipher (encryptor)")
        install()
        self.pending = PendingConnections()
        super().__init__(syncObj, selfNode, otherNodes)

    def admit(self, conn: Any) -> bool:
        return isinstance(conn, GuardedConnection) and self.pending.admit(conn)

    def on_tick(self) -> None:
        self.pending.expire(time.monotonic())


def install() -> None:
    """Make PySyncObj create :class:`GuardedConnection` for every Raft connection, accepted or
    opened (idempotent, process-wide)."""
    pysyncobj_adapter.use_connection_class(GuardedConnection)
