"""Raft frames: sealed with the cluster secret, opened only with it, small ones not deflated; and a
real three-replica group that commits with them and tells its followers of each commit."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import inspect
import pickle
import socket
import zlib
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from pysyncobj import tcp_connection

from octctl.state import pysyncobj_adapter, raft_wire
from octctl.state.kv import kv_command
from octctl.state.machine import RaftNode
from octctl.state.raft_wire import COMPRESS_FROM, RaftCipher
from tests.wait import wait_until_async


def test_a_frame_opens_with_the_same_secret_in_another_process() -> None:
    sender, receiver = RaftCipher("s3cret"), RaftCipher("s3cret")
    frame = sender.encrypt_at_time(b"hello raft", 0)
    assert b"hello raft" not in frame
    assert receiver.decrypt(frame) == b"hello raft"


def test_a_wrong_secret_or_any_flipped_byte_is_refused() -> None:
    frame = RaftCipher("s3cret").encrypt_at_time(b"append entries", 0)
    with pytest.raises(InvalidTag):
        RaftCipher("other").decrypt(frame)
    receiver = RaftCipher("s3cret")
    for i in range(len(frame)):
        tampered = bytearray(frame)
        tampered[i] ^= 0x01
        with pytest.raises((InvalidTag, ValueError)):
            receiver.decrypt(bytes(tampered))
    assert receiver.decrypt(frame) == b"append entries"


def test_counters_only_grow_and_sessions_differ_per_process() -> None:
    """The counter is the nonce: it must never repeat under one key, and every process has its
    own key, so two processes counting from 1 never share a (key, nonce) pair."""
    a, b = RaftCipher("s3cret"), RaftCipher("s3cret")
    frames = [a.encrypt_at_time(b"x", 0) for _ in range(5)]
    stamps = [b.extract_timestamp(f) for f in frames]
    assert stamps == sorted(set(stamps)) and len(stamps) == 5
    assert frames[0][1:17] != b.encrypt_at_time(b"x", 0)[1:17]  # session ids


def test_a_frame_of_another_wire_version_is_refused() -> None:
    frame = bytearray(RaftCipher("s3cret").encrypt_at_time(b"x", 0))
    frame[0] = raft_wire.VERSION + 1
    with pytest.raises(InvalidTag, match="version"):
        RaftCipher("s3cret").extract_timestamp(bytes(frame))


def test_only_senders_holding_the_secret_take_a_key_slot() -> None:
    receiver = RaftCipher("s3cret")
    for _ in range(200):  # strangers with made-up sessions
        with pytest.raises(InvalidTag):
            receiver.decrypt(RaftCipher("guess").encrypt_at_time(b"x", 0))
    assert not receiver._keys
    for _ in range(200):
        receiver.decrypt(RaftCipher("s3cret").encrypt_at_time(b"x", 0))
    assert len(receiver._keys) == raft_wire._KEYS_KEPT


def test_small_messages_skip_zlib_and_large_ones_keep_it() -> None:
    raft_wire.install()
    codec = pysyncobj_adapter.frame_codec()
    small = pickle.dumps({"type": "append_entries", "entries": []}, 2)
    assert codec.compress(small, 3) == small
    assert codec.decompress(small) == small
    large = pickle.dumps({"type": "append_entries", "entries": ["x" * COMPRESS_FROM]}, 2)
    packed = codec.compress(large, 3)
    assert len(packed) < len(large) and packed[:1] != large[:1]
    assert codec.decompress(packed) == large
    assert codec.decompress(zlib.compress(small, 3)) == small  # what PySyncObj itself would send


def free_addresses(count: int) -> list[str]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()


async def raft_group(tmp_path: Path, size: int = 3) -> list[RaftNode]:
    """``size`` voting replicas on loopback, each in its own folder, once one of them leads."""
    loop = asyncio.get_running_loop()
    addresses = free_addresses(size)
    nodes = []
    for i, address in enumerate(addresses):
        (tmp_path / str(i)).mkdir()
        nodes.append(RaftNode(address, addresses, tmp_path / str(i), "s3cret", loop))
    try:
        await wait_until_async(lambda: any(n.is_leader() for n in nodes), message="a leader")
    except BaseException:
        for n in nodes:
            n.close()
        raise
    return nodes


async def test_three_replicas_commit_and_followers_learn_of_a_lone_commit(tmp_path: Path) -> None:
    """Sealed frames carry a real group's traffic. The leader holds commit notices back for a next
    write to carry (NOTICE_DELAY); after the last write there is none, and the followers must still
    apply it and the leader must have told them of every commit."""
    nodes = await raft_group(tmp_path)
    try:
        leader = next(n for n in nodes if n.is_leader())
        followers = [n for n in nodes if n is not leader]
        for i in range(20):
            await leader.execute(kv_command("kv_put", key="k", value=str(i)))
        await leader.execute(kv_command("kv_put", key="last", value="lone"))
        await wait_until_async(
            lambda: all(f.machine.kv_get("last") is not None for f in followers), message="followers to apply"
        )
        assert {f.machine.state_hash() for f in followers} == {leader.machine.state_hash()}
        assert leader.sync.transport.commit_index_sent == leader.sync.raftCommitIndex
        assert leader.sync.last_log_index() == leader.sync.raftCommitIndex
    finally:
        for n in nodes:
            n.close()


async def test_a_replica_with_another_secret_gets_nothing(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    addresses = free_addresses(3)
    nodes = []
    for i, address in enumerate(addresses):
        (tmp_path / str(i)).mkdir()
        secret = "other" if i == 2 else "s3cret"
        nodes.append(RaftNode(address, addresses, tmp_path / str(i), secret, loop))
    try:
        await wait_until_async(
            lambda: nodes[0].is_leader() or nodes[1].is_leader(), message="a leader of the two"
        )
        leader = nodes[0] if nodes[0].is_leader() else nodes[1]
        follower = nodes[1] if leader is nodes[0] else nodes[0]
        await leader.execute(kv_command("kv_put", key="k", value="v"))
        await leader.execute(kv_command("kv_put", key="k2", value="v"))
        # The good follower applying a later write proves the leader has sent "k" to every member
        # in the rounds since: the outsider had its chance and must still hold nothing.
        await wait_until_async(
            lambda: follower.machine.kv_get("k2") is not None, message="the follower to apply"
        )
        assert nodes[2].machine.kv_get("k") is None
        assert not nodes[2].is_leader()
    finally:
        for n in nodes:
            n.close()


#: PySyncObj code that oct replaces, overrides or relies on the internals of (all through
#: ``octctl/state/pysyncobj_adapter.py``), by a hash of its source in 0.3.17. A change here means
#: an upgrade moved them: read the new code, re-check the adapter and the guard (the handshake that
#: makes a connection authenticated, how connections are created, read and parsed, and how large a
#: Raft message can be), then update the hash.
PYSYNCOBJ_SURFACE = {
    "TcpConnection.__init__": "49b541d35a74a131",
    "TcpConnection.connect": "7b26e6080226b385",
    "TcpConnection.disconnect": "318150905383a6a5",
    "TcpConnection.__processConnection": "b2854d89c1b97247",
    "TcpConnection.__tryReadBuffer": "e1e937d6e68eb4fd",
    "TcpConnection.__processRead": "002c11f3c6f60907",
    "TcpConnection.__processParseMessage": "4ecbfdad3baa2eac",
    "TcpServer.__onNewConnection": "eb2f93a2f1975c65",
    "TCPTransport.__init__": "4f0eef9cc5c06f5e",
    "TCPTransport._onTick": "86a1722daf4d6c48",
    "TCPTransport._onNewIncomingConnection": "27812f1826cd78ad",
    "TCPTransport._onIncomingMessageReceived": "8b7217b0cc17c96d",
    "TCPTransport._onOutgoingConnected": "b5d72590358c9987",
    "TCPTransport._onOutgoingMessageReceived": "6060942126931ca2",
    "TCPTransport.addNode": "8245fa6ac3ac9f36",
    "TCPTransport._onDisconnected": "ecba8d76dfc385fe",
    "SyncObj._applyCommand": "827f207d515b2d64",
    "SyncObj.__callErrCallback": "6037c14ef64c2763",
    "SyncObj.__sendAppendEntries": "9cb9073128c392fa",
    "SyncObj.__getEntries": "e29c4b33293b2101",
    "Serializer.getTransmissionData": "301962f9293db466",
    # durability (DurableJournal, use_durable_files): every journal change goes through these, the
    # vote is stored by setCurrentTerm, snapshots are replaced through atomicReplace, a send is where
    # the barrier sits, and a leader commits only in its tick
    "FileJournal.__init__": "bdaa496431fffae4",
    "FileJournal.add": "5d9d01d91db0af74",
    "FileJournal.clear": "eaaa101d613eeef3",
    "FileJournal.deleteEntriesFrom": "deb1f76175dc371d",
    "FileJournal.deleteEntriesTo": "3eb00b2a8aad5f65",
    "FileJournal.setCurrentTerm": "74aca18da6f0e104",
    "MetaStorer.storeMeta": "5337a561ca6ced75",
    "TCPTransport.send": "2fd6c84b8621427d",
    "Serializer.serialize": "a26f44b07da07430",
    "Serializer.setTransmissionData": "e40031f9e6d4e595",
    "SyncObj._onTick": "cc9eb08232d005ba",
    # elections (OctSyncObj._hurry_if_candidate_behind, LoopTransport._keep_voter_links): how a
    # vote request is answered, and that an idle connection is dropped when next used
    "SyncObj.__onMessageReceived": "ddfe34b6c0282179",
    "TcpConnection.__trySendBuffer": "6fc748d9120c1dfc",
}


def test_the_pysyncobj_internals_oct_patches_have_not_changed() -> None:
    from pysyncobj import journal, serializer, syncobj, tcp_server, transport

    classes = {
        "FileJournal": journal.FileJournal,
        "MetaStorer": journal.MetaStorer,
        "TcpConnection": tcp_connection.TcpConnection,
        "TcpServer": tcp_server.TcpServer,
        "TCPTransport": transport.TCPTransport,
        "SyncObj": syncobj.SyncObj,
        "Serializer": serializer.Serializer,
    }
    assert importlib.metadata.version("pysyncobj") == "0.3.17"
    changed = []
    for name, expected in PYSYNCOBJ_SURFACE.items():
        owner, attr = name.split(".")
        if attr.startswith("__") and not attr.endswith("__"):
            attr = f"_{owner}{attr}"  # name-mangled
        function = getattr(classes[owner], attr, None)
        if function is None:
            changed.append(f"{name}: gone")
            continue
        digest = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
        if digest != expected:
            changed.append(f"{name}: {digest}")
    assert not changed, f"PySyncObj code oct relies on changed: {changed}"

    # The attributes the adapter and the guard read and write (test_pysyncobj_adapter.py checks
    # the rest of the private surface, the globals the adapter replaces among them).
    conn = tcp_connection.TcpConnection(poller=object())
    for attribute in ("socket", "fileno", "poller", "lastReadTime", "readBuffer"):
        assert f"_TcpConnection__{attribute}" in vars(conn), attribute
    for attribute in ("encryptor", "sendRandKey", "recvRandKey", "recvLastTimestamp"):
        assert attribute in vars(conn), attribute
    init = inspect.getsource(syncobj.SyncObj.__init__)
    assert "self.__raftLog = " in init and "self.__transport = " in init
    conf = syncobj.SyncObjConf()  # the chunk sizes MAX_FRAME is derived from
    assert conf.appendEntriesBatchSizeBytes == conf.logCompactionBatchSize == 64 * 1024
