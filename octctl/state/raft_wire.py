"""How Raft messages are sealed on the wire: AES-GCM with per-process session keys, no zlib for
small messages.

PySyncObj frames every message as ``zlib.compress(pickle)`` sealed with Fernet. For the small
messages Raft sends per write (an entry, an acknowledgement: ~250 bytes) nearly all of that CPU
is ``zlib.compress`` setting up a deflate stream and Fernet (AES-CBC + HMAC-SHA256 + base64, and
its receiver verifies the HMAC twice), not the pickling; a committed write takes eight messages.
AES-GCM seals the same message in a small fraction of that time (docs/architecture.md#the-wire).

Security is unchanged or better: the frame is authenticated before anything is unpickled (a
stranger's bytes still never reach ``pickle.loads``), and PySyncObj's per-connection random
keys still stop a frame from being replayed on another connection.

Nonces: AES-GCM must never reuse a (key, nonce) pair. Each process draws a random 128-bit
session id at start and seals with its own key, derived from the cluster secret and that id
(HKDF), under a counter nonce that only grows. Two processes would have to draw the same
session id to share a key. Random 96-bit nonces under one shared key would instead have a
lifetime budget of ~2^32 messages for the whole cluster: hours under load.

Wire format (version 1), after PySyncObj's 4-byte length prefix::

    version (1) | session id (16) | counter (8, big-endian) | AES-GCM(key(session), counter, data)

Nodes of the same cluster must run the same wire version; a frame of another version or key is
dropped with its connection, as a wrong password always was.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from collections import OrderedDict
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from octctl.state import pysyncobj_adapter

VERSION: Final = 1
_HEADER: Final = struct.Struct(">B16sQ")
_INFO: Final = b"oct raft wire v1"
#: Sessions whose keys a receiver keeps: one per peer process it hears from, so a few dozen.
_KEYS_KEPT: Final = 64
#: Messages at least this large are still deflated (log catch-up, snapshots): on a real network
#: the bytes saved are worth setting up a deflate stream. Smaller ones are sent as pickled.
COMPRESS_FROM: Final = 4096
#: Pickle protocol 2 (PySyncObj's) starts with this byte; zlib output never does (0x78).
_PICKLE_START: Final = 0x80


class RaftCipher:
    """Seals and opens Raft frames with the cluster secret; a drop-in for PySyncObj's Fernet.

    PySyncObj's connections call ``encrypt_at_time`` to send, and ``extract_timestamp`` then
    ``decrypt`` to receive, asserting per connection that timestamps never go back. Here the
    "timestamp" is the sender's counter, which is strictly increasing per sender process. Any
    exception from the receiving calls makes PySyncObj drop the connection.
    """

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._session = os.urandom(16)
        self._seal = AESGCM(self._derive(self._session)).encrypt
        self._counter = itertools.count(1)
        self._keys: OrderedDict[bytes, AESGCM] = OrderedDict()

    def _derive(self, session: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=session, info=_INFO).derive(self._secret)

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        """Seal ``data``; the wall-clock time PySyncObj passes is not needed (the counter is)."""
        header = _HEADER.pack(VERSION, self._session, next(self._counter))
        return header + self._seal(_nonce(header), data, header)

    def extract_timestamp(self, token: bytes) -> int:
        """The sender's counter. Unverified here: ``decrypt`` authenticates it (it is the nonce
        and in the associated data), and a frame that fails there closes the connection."""
        version, _, counter = _HEADER.unpack_from(token)
        if version != VERSION:
            raise InvalidTag(f"raft wire version {version}, expected {VERSION}")
        return int(counter)

    def decrypt(self, token: bytes) -> bytes:
        header = token[: _HEADER.size]
        version, session, _ = _HEADER.unpack(header)
        if version != VERSION:
            raise InvalidTag(f"raft wire version {version}, expected {VERSION}")
        key = self._keys.get(session) or AESGCM(self._derive(session))
        opened = key.decrypt(_nonce(header), token[_HEADER.size :], header)
        # Cached only once it opened a frame: a stranger's made-up sessions take no slot.
        self._keys[session] = key
        self._keys.move_to_end(session)
        if len(self._keys) > _KEYS_KEPT:
            self._keys.popitem(last=False)
        return opened


def _nonce(header: bytes) -> bytes:
    """The 96-bit nonce: four zero bytes and the 64-bit counter."""
    return b"\0\0\0\0" + header[-8:]


class _SmallFramesZlib:
    """Stands in for the ``zlib`` module inside PySyncObj's connection code: compresses only
    messages worth it, and passes through those it did not compress."""

    error = zlib.error

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, level) if len(data) >= COMPRESS_FROM else data

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return data if data[:1] == bytes((_PICKLE_START,)) else zlib.decompress(data)


def install() -> None:
    """Make PySyncObj's connections skip zlib for small messages (idempotent, process-wide)."""
    pysyncobj_adapter.use_frame_codec(_SmallFramesZlib)
