"""A real three-replica group on disk: no acknowledgement (nor anything but a leader's append)
leaves a node while its journal holds an unsynced change, a write is answered only after its entry
was synced, and one sync covers a whole group commit (many concurrent writes, far fewer syncs)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from octctl.state.kv import kv_command
from octctl.state.machine import RaftNode
from octctl.state.pysyncobj_adapter import DurableJournal, HookedTransport
from tests.integration.test_raft_wire import free_addresses, raft_group
from tests.wait import wait_until_async


class Watch:
    """Counts one node's syncs and catches a send made while its journal is dirty."""

    def __init__(self, node: RaftNode) -> None:
        self.journal = node.sync.journal
        assert isinstance(self.journal, DurableJournal)
        self.syncs = 0
        self.synced_index = 0
        self.dirty_sends: list[str] = []
        sync, transport = self.journal.sync, node.sync.transport

        def counted_sync() -> None:
            if self.journal.dirty:
                self.syncs += 1
            sync()
            self.synced_index = node.sync.last_log_index()

        self.journal.sync = counted_sync  # type: ignore[method-assign]
        send = type(transport).send

        def watched_send(peer: Any, message: Any) -> Any:
            result = send(transport, peer, message)  # (the barrier runs first, inside)
            if self.journal.dirty:
                self.dirty_sends.append(str(message.get("type") if isinstance(message, dict) else message))
            return result

        transport.send = watched_send


async def test_writes_are_answered_only_from_synced_journals(tmp_path: Path) -> None:
    nodes = await raft_group(tmp_path)
    try:
        watches = [Watch(n) for n in nodes]
        leader = next(n for n in nodes if n.is_leader())
        lead = watches[nodes.index(leader)]

        async def write(i: int) -> None:
            await leader.execute(kv_command("kv_put", key=f"k{i}", value=str(i)))

        for i in range(10):  # one at a time: one entry, one sync each
            await write(i)
            assert not lead.journal.dirty and lead.synced_index == leader.sync.last_log_index()
        await asyncio.gather(*(write(i) for i in range(10, 210)))  # 200 at once: group commits
        await wait_until_async(
            lambda: all(n.machine.kv_get("k209") is not None for n in nodes), message="followers to apply"
        )
        followers = [w for w in watches if w is not lead]
        assert all(not w.dirty_sends for w in followers), [w.dirty_sends[:3] for w in followers]
        # the leader's appends may leave before its own sync (it overlaps their trip); nothing else
        assert set(lead.dirty_sends) <= {"append_entries"}, lead.dirty_sends[:5]
        assert lead.syncs >= 10
        assert lead.syncs < 10 + 200 // 4, f"{lead.syncs} syncs for 210 writes: no group commit"
        assert all(w.syncs >= 10 for w in followers), [w.syncs for w in followers]
    finally:
        for n in nodes:
            n.close()


async def test_an_idle_leader_heartbeats_a_non_voter_less_often_and_writes_reach_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two voters and a non-voter: idle, the leader sends the non-voter about two appends a second
    (the voter ten, which keep its election timer quiet); a write still reaches it in the same
    round trip as the voter's."""
    loop = asyncio.get_running_loop()
    voters = free_addresses(2)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    nodes = [RaftNode(voters[0], voters, tmp_path / "a", "s3cret", loop)]
    nodes.append(RaftNode(voters[1], voters, tmp_path / "b", "s3cret", loop))
    reader = RaftNode(free_addresses(1)[0], voters, tmp_path / "c", "s3cret", loop, voter=False)
    try:
        await wait_until_async(lambda: any(n.is_leader() for n in nodes), message="a leader")
        leader = next(n for n in nodes if n.is_leader())
        await leader.execute(kv_command("kv_put", key="k", value="first"))
        await wait_until_async(
            lambda: reader.machine.kv_get("k") is not None, message="the non-voter to apply"
        )
        sent: dict[str, int] = {"voter": 0, "non-voter": 0}
        transport = leader.sync.transport
        wire = HookedTransport.send  # below the filter: what really goes out

        def counted(self: Any, peer: Any, message: Any) -> Any:
            if self is transport and isinstance(message, dict) and message.get("type") == "append_entries":
                sent["voter" if leader.sync.votes(peer) else "non-voter"] += 1
            return wire(self, peer, message)

        monkeypatch.setattr(HookedTransport, "send", counted)
        await asyncio.sleep(2.0)
        assert sent["voter"] >= 10, sent  # every 0.1 s (a busy machine delays some)
        assert 2 <= sent["non-voter"] <= 6, sent  # every 0.5 s
        await leader.execute(kv_command("kv_put", key="k", value="second"))
        await wait_until_async(
            lambda: (reader.machine.kv_get("k") or {}).get("value") == "second",
            timeout=0.4,  # well before the next idle heartbeat would have carried it
            message="the write to reach the non-voter",
        )
        # Four 60 KB writes at once: one entry of 240 KB, which PySyncObj sends in 64 KB chunks
        # ("transmission"); none of them may be thinned.
        bigs = [secrets.token_urlsafe(45_000) for _ in range(4)]  # (incompressible)
        await asyncio.gather(
            *(leader.execute(kv_command("kv_put", key=f"big{i}", value=v)) for i, v in enumerate(bigs))
        )
        await wait_until_async(
            lambda: all(reader.machine.kv_get(f"big{i}") is not None for i in range(4)),
            timeout=5,
            message="large entries to reach the non-voter",
        )
    finally:
        for n in [*nodes, reader]:
            n.close()
