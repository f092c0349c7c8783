"""Elections that do not wait on timers for nothing.

A follower asked for its vote by a candidate whose log is behind its own stands for election at
once (``OctSyncObj._hurry_if_candidate_behind``) instead of waiting out its timer, which after a
leader stops under write load is the usual case (bench/raft_failover.py --fault pause). A real
PySyncObj follower (oct's ``OctSyncObj``, no network) with election timeouts of 20-30 s, so that
only the hurry can make an election due within a second. And followers' links to each other
stay open through a quiet spell, so a vote request between them is not lost (a real group)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from octctl.state.pysyncobj_adapter import HURRY_JITTER, OctSyncObj
from octctl.state.raft_sockets import KEEPALIVE
from tests.integration.test_raft_appends import NOOP, lone_replica
from tests.integration.test_raft_wire import raft_group

LONG = 20.0  # the follower's shortest election timeout


@pytest.fixture
def follower() -> Iterator[OctSyncObj]:
    """A follower of ``peers()[0]`` at term 1 holding entries 1-4; ``peers()[1]`` is the other voter."""
    sync = lone_replica(2, raftMinTimeout=LONG, raftMaxTimeout=LONG + 10, connectionTimeout=LONG + 10)
    try:
        leader = sync.peers()[0]
        append = {
            "type": "append_entries",
            "term": 1,
            "prevLogIdx": 1,
            "prevLogTerm": 0,
            "entries": [(NOOP, index, 1) for index in (2, 3, 4)],
            "commit_index": 4,
        }
        sync.receive(leader, append)
        sync.doTick(0.0)
        assert sync.log_positions()[-1] == (4, 1) and sync.leader() == leader
        yield sync
    finally:
        sync.destroy()


def vote_request(term: int, last_index: int, last_term: int) -> dict[str, Any]:
    return {"type": "request_vote", "term": term, "last_log_index": last_index, "last_log_term": last_term}


def candidate(sync: OctSyncObj) -> Any:
    return sync.peers()[1]


@pytest.mark.parametrize(
    "behind",
    [vote_request(2, 3, 1), vote_request(2, 9, 0)],  # fewer entries; more, but of an older term
    ids=["shorter", "older-term"],
)
def test_a_candidate_behind_our_log_makes_us_stand_at_once(
    follower: OctSyncObj, behind: dict[str, Any]
) -> None:
    follower.receive(candidate(follower), behind)
    assert follower.term() == 2 and follower.leader() is None  # the request deposed our leader
    assert follower.election_due() <= HURRY_JITTER


def test_an_up_to_date_candidate_gets_our_vote_and_no_rival(follower: OctSyncObj) -> None:
    follower.receive(candidate(follower), vote_request(2, 4, 1))
    assert follower.term() == 2
    assert follower.election_due() > LONG - 1  # the granted vote restarted the timer


def test_a_request_of_the_term_we_follow_a_leader_in_changes_nothing(follower: OctSyncObj) -> None:
    follower.receive(candidate(follower), vote_request(1, 3, 1))
    assert follower.term() == 1 and follower.leader() == follower.peers()[0]
    assert follower.election_due() > LONG - 1


def test_after_voting_this_term_a_behind_candidate_does_not_make_us_a_rival(follower: OctSyncObj) -> None:
    """We gave our vote to an up-to-date candidate at term 2; a second one at term 2 that is behind
    must not make us disrupt the election we voted in."""
    follower.receive(candidate(follower), vote_request(2, 4, 1))
    follower.receive(follower.peers()[0], vote_request(2, 3, 1))
    assert follower.term() == 2
    assert follower.election_due() > LONG - 1


async def test_followers_can_still_reach_each_other_after_a_quiet_spell(tmp_path: Path) -> None:
    """Followers of a healthy leader never talk to each other, and PySyncObj drops a connection it
    has read nothing from for ``connectionTimeout`` when it next uses it: the first vote request
    after the leader stopped was lost with it. Voters keep their links warm (``VOTER_KEEPALIVE``),
    so after twice that quiet spell a message between the followers still goes through, both ways."""
    nodes = await raft_group(tmp_path)
    try:
        leader = next(n for n in nodes if n.is_leader())
        a, b = (n for n in nodes if n is not leader)
        assert a.sync.conf.connectionTimeout < 2 * a.sync.conf.connectionTimeout <= 8
        await asyncio.sleep(a.sync.conf.connectionTimeout * 2)
        for sender, receiver in ((a, b), (b, a)):
            node = next(p for p in sender.sync.peers() if p.address == receiver.self_address)
            assert sender.sync.transport.send(node, KEEPALIVE), f"{sender.self_address}'s link is gone"
        assert leader.is_leader()  # (and nothing in the keepalives upset the group)
    finally:
        for n in nodes:
            n.close()
