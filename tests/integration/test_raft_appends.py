"""A follower fed appends out of order and twice (``checked_append``, Raft §5.3): a real PySyncObj
follower (oct's ``OctSyncObj``, no network) keeps every entry it acknowledged and applied, where
PySyncObj's own handler cuts them off and logs CRITICAL; a real conflict still replaces the
conflicting tail."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pysyncobj import SyncObjConf

from octctl.state.pysyncobj_adapter import OctSyncObj, checked_append
from octctl.state.raft_wire import RaftCipher

NOOP = b"\x01"  # PySyncObj's NO_OP command: applying it touches no replicated object


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def lone_replica(peers: int = 1, **timeouts: float) -> OctSyncObj:
    """A real ``OctSyncObj`` with ``peers`` other voters that never answer: messages are handed to
    it with ``receive``. ``timeouts``: PySyncObj's election and connection timeouts."""
    conf = SyncObjConf(autoTick=False, dynamicMembershipChange=True, appendEntriesUseBatch=True, **timeouts)
    others = [free_address() for _ in range(peers)]
    return OctSyncObj(free_address(), others, conf, consumers=[], cipher=RaftCipher("pw"), max_entry=1 << 20)


@pytest.fixture
def follower() -> Iterator[OctSyncObj]:
    sync = lone_replica()
    try:
        yield sync
    finally:
        sync.destroy()


def append(
    term: int, prev: int, prev_term: int, indexes: list[tuple[int, int]], commit: int
) -> dict[str, Any]:
    """An append_entries message carrying NO_OP entries ``(index, term)``."""
    return {
        "type": "append_entries",
        "term": term,
        "prevLogIdx": prev,
        "prevLogTerm": prev_term,
        "entries": [(NOOP, index, entry_term) for index, entry_term in indexes],
        "commit_index": commit,
    }


def deliver(sync: OctSyncObj, message: dict[str, Any], *, unpatched: bool = False) -> None:
    sync.receive(sync.peers()[0], message, checked=not unpatched)
    sync.doTick(0.0)  # applies what is committed


def log_of(sync: OctSyncObj) -> list[tuple[int, int]]:
    return sync.log_positions()


def grown(sync: OctSyncObj) -> None:
    """Entries 2-4 of term 1 acknowledged and applied; 5-6 acknowledged, not yet committed."""
    deliver(sync, append(1, 1, 0, [(2, 1), (3, 1), (4, 1)], commit=4))
    deliver(sync, append(1, 4, 1, [(5, 1), (6, 1)], commit=4))
    assert log_of(sync) == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]
    assert sync.last_applied() == 4


@pytest.mark.parametrize(
    "late",
    [
        append(1, 1, 0, [(2, 1)], commit=2),  # the first append again, arriving last
        append(1, 2, 1, [(3, 1)], commit=3),  # one from the middle, reordered
        append(1, 4, 1, [], commit=4),  # an old heartbeat: entries of its own term follow
        append(1, 4, 1, [(5, 1)], commit=4),  # a shorter copy of the last append
    ],
)
def test_a_late_append_deletes_nothing(
    follower: OctSyncObj, late: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    grown(follower)
    with caplog.at_level(logging.DEBUG):
        deliver(follower, late)
    assert log_of(follower) == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]


def test_pysyncobjs_own_handler_loses_applied_entries(
    follower: OctSyncObj, caplog: pytest.LogCaptureFixture
) -> None:
    """The bug the check is for, shown on the same follower: what the test above guards against."""
    grown(follower)
    with caplog.at_level(logging.CRITICAL):
        deliver(follower, append(1, 1, 0, [(2, 1)], commit=2), unpatched=True)
    assert log_of(follower) == [(1, 0), (2, 1)]
    assert any("truncating already-applied" in r.getMessage() for r in caplog.records)


def test_a_new_leader_still_replaces_a_conflicting_tail(follower: OctSyncObj) -> None:
    grown(follower)
    deliver(follower, append(2, 4, 1, [(5, 2)], commit=4))  # term 2's leader never had 5-6 of term 1
    assert log_of(follower) == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2)]
    deliver(follower, append(2, 3, 1, [(4, 1), (5, 2), (6, 2)], commit=6))  # a resend that overlaps
    assert log_of(follower) == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)]


def test_a_new_leaders_heartbeat_drops_an_older_terms_unacknowledged_tail(follower: OctSyncObj) -> None:
    """No conflict is sent, but the tail (term 1, beyond what term 2's leader holds) cannot be
    committed any more: PySyncObj drops it, and so does oct."""
    grown(follower)
    deliver(follower, append(2, 4, 1, [], commit=4))
    assert log_of(follower) == [(1, 0), (2, 1), (3, 1), (4, 1)]


def test_the_check_on_plain_logs() -> None:
    log = [(NOOP, 1, 0), (NOOP, 2, 1), (NOOP, 3, 1), (NOOP, 4, 2)]
    assert checked_append(append(2, 4, 2, [(5, 2)], commit=4), log, term=2, applied=4) is not None
    assert checked_append(append(2, 2, 1, [(3, 1)], commit=3), log, term=2, applied=2) is None
    moved = checked_append(
        append(2, 1, 0, [(2, 1), (3, 1), (4, 2), (5, 2)], commit=4), log, term=2, applied=1
    )
    assert moved is not None and moved["prevLogIdx"] == 4 and moved["entries"] == [(NOOP, 5, 2)]
    old_term = append(1, 1, 0, [(2, 1)], commit=1)
    assert checked_append(old_term, log, term=2, applied=1) is old_term  # (PySyncObj ignores it itself)
